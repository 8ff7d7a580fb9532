"""Does the search beat the uniform ratios, and does NSGA-II beat random search?

For each model, at an equal budget of proxy trials (prune to the point's widths with least-squares
reconstruction, no fine-tune, int8 TFLite measured in LiteRT; the same trial `edgesparse tune`
runs), this compares:

- the uniform-ratio sweep (every group keeps the same fraction: the default recipe's way), at
  `--sweep` keep fractions;
- `edgesparse tune`'s search (NSGA-II) and the random-search control, each at `--trials` trials
  and `--seeds` seeds, with the study in a fresh SQLite file per run.

Objectives compared: accuracy in LiteRT against MACs (latency here is the roofline estimate, which
is monotone in MACs, so MACs say the same and do not depend on this shared machine's load).

Reported per model: for each uniform point, the best searched point at <= its MACs (accuracy
gained, points) and the fewest MACs a searched point needs for >= its accuracy (MACs saved, %);
the hypervolume of (accuracy, MACs) per seed for NSGA-II and random (and in how many seeds
NSGA-II wins); seconds per proxy trial.

    python benchmarks/tune_front.py [--trials 60] [--seeds 5] [--models cnn,residual] [--out DIR]

Models: `cnn` is sample_models/digits_cnn.keras; `residual` is a small residual CNN trained here on
the same digits data (seeded, 20 epochs).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, SAMPLE_DATA, machine_info, machine_lines  # noqa: E402  (puts ROOT on sys.path)

from edgesparse.search import study as studies  # noqa: E402
from edgesparse.search import tune as search  # noqa: E402
from edgesparse.search.session import prepare  # noqa: E402
from edgesparse.search.trials import run_trial  # noqa: E402


def residual_model(path: Path) -> Path:
    """A small residual CNN on digits, trained once and cached beside the outputs."""
    if path.exists():
        return path
    import numpy as np

    from edgesparse._tf import keras

    keras.utils.set_random_seed(0)
    L = keras.layers
    d = np.load(SAMPLE_DATA)
    x, y = d["x_train"].astype("float32"), d["y_train"]
    i = L.Input(x.shape[1:])
    h = L.ReLU()(L.BatchNormalization()(L.Conv2D(32, 3, padding="same", use_bias=False)(i)))
    for _ in range(2):
        r = L.ReLU()(L.BatchNormalization()(L.Conv2D(32, 3, padding="same", use_bias=False)(h)))
        r = L.BatchNormalization()(L.Conv2D(32, 3, padding="same", use_bias=False)(r))
        h = L.ReLU()(L.Add()([h, r]))
    h = L.Conv2D(64, 3, strides=2, padding="same", activation="relu")(h)
    o = L.Dense(10, activation="softmax")(L.GlobalAveragePooling2D()(h))
    m = keras.Model(i, o, name="digits_residual")
    m.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    m.fit(x, y, epochs=20, batch_size=64, verbose=0)
    m.save(path)
    return path


def sweep(base, keeps: list[float]) -> list[dict]:
    rows = []
    for k in keeps:
        point = base.space.clip(base.space.uniform(k))
        r = run_trial(base, base.space.sample(_Fixed(point)), "proxy")
        rows.append({"keep": k, **search.result_summary(r)})
    return rows


class _Fixed:
    """An object with Optuna's suggest_* interface that returns a fixed point (for the sweep)."""

    def __init__(self, point):
        self.point = point

    def suggest_float(self, name, low, high):
        return self.point[name]

    def suggest_categorical(self, name, choices):
        return self.point.get(name, choices[0])


def searched(base, sampler: str, seed: int, trials: int, folder: Path) -> tuple[list[dict], float]:
    settings = search.TuneSettings(trials=trials, seed=seed, sampler=sampler, max_accuracy_drop=None)
    url = f"sqlite:///{folder / f'{sampler}-{seed}.db'}"
    study = studies.open_study(url, "bench", {"bench": True}, sampler=search.make_sampler(settings))
    search.enqueue_baselines(study, search.baseline_points(base.space, None))
    started = time.perf_counter()
    search.work(study, base, settings, trials)
    seconds = time.perf_counter() - started
    return search.trial_rows(study), seconds / trials


def dominance(uniform: list[dict], found: list[dict]) -> list[dict]:
    out = []
    for u in uniform:
        cheaper = [f for f in found if f["macs"] <= u["macs"]]
        gain = max((f["accuracy"] for f in cheaper), default=None)
        as_good = [f["macs"] for f in found if f["accuracy"] >= u["accuracy"]]
        saved = None if not as_good else 100.0 * (1 - min(as_good) / u["macs"])
        out.append({"keep": u["keep"], "macs": u["macs"], "accuracy": u["accuracy"],
                    "gain_points": None if gain is None else round(gain - u["accuracy"], 3),
                    "macs_saved_pct": None if saved is None else round(saved, 1)})
    return out


def run(models: list[str], trials: int, seeds: int, keeps: list[float], out: Path) -> dict:
    results = {"machine": machine_info(), "trials": trials, "seeds": seeds, "models": {}}
    for name in models:
        path = ROOT / "sample_models" / "digits_cnn.keras" if name == "cnn" else residual_model(out / "digits_residual.keras")
        base = prepare(path, "rpi4", SAMPLE_DATA, agents=[], token_file=None, local=False)
        uni = sweep(base, keeps)
        ref = (min(r["accuracy"] for r in uni) - 1.0, max(r["macs"] for r in uni) * 1.0001)
        per_seed, all_found, spt = [], [], []
        with tempfile.TemporaryDirectory(prefix="tune-bench-") as tmp:
            for seed in range(seeds):
                nsga, s1 = searched(base, "nsga2", seed, trials, Path(tmp))
                rand, s2 = searched(base, "random", seed, trials, Path(tmp))
                spt += [s1, s2]
                all_found += nsga
                per_seed.append({"seed": seed, "hv_nsga2": search.hypervolume(nsga, ref),
                                 "hv_random": search.hypervolume(rand, ref)})
                print(f"{name} seed {seed}: hv nsga2 {per_seed[-1]['hv_nsga2']:.4g} random "
                      f"{per_seed[-1]['hv_random']:.4g}", file=sys.stderr)
        results["models"][name] = {
            "uniform": uni, "dominance": dominance(uni, all_found),
            "hypervolume": per_seed,
            "nsga2_wins": sum(p["hv_nsga2"] > p["hv_random"] for p in per_seed),
            "seconds_per_trial": round(sum(spt) / len(spt), 2)}
    return results


def render(r: dict) -> str:
    lines = ["# edgesparse tune: searched front vs uniform ratios, NSGA-II vs random", ""]
    lines += machine_lines(r["machine"]) + ["", f"{r['trials']} proxy trials per run, {r['seeds']} seeds.", ""]
    for name, m in r["models"].items():
        lines += [f"## {name}", "", f"Seconds per proxy trial: {m['seconds_per_trial']} "
                  f"(60 trials: {60 * m['seconds_per_trial'] / 60:.1f} min). NSGA-II hypervolume beats "
                  f"random in {m['nsga2_wins']} of {len(m['hypervolume'])} seeds.", "",
                  "| uniform keep | MACs | accuracy % | searched: points gained at <= MACs | searched: MACs saved at >= accuracy |",
                  "|---|---|---|---|---|"]
        for d in m["dominance"]:
            lines.append(f"| {d['keep']} | {d['macs']:,} | {d['accuracy']:.2f} | {d['gain_points']} | "
                         f"{d['macs_saved_pct']}% |")
        lines += ["", "| seed | hypervolume NSGA-II | hypervolume random |", "|---|---|---|"]
        lines += [f"| {p['seed']} | {p['hv_nsga2']:.4g} | {p['hv_random']:.4g} |" for p in m["hypervolume"]]
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=60)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--models", default="cnn,residual")
    ap.add_argument("--sweep", default="0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "bench-tune")
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    r = run(a.models.split(","), a.trials, a.seeds, [float(k) for k in a.sweep.split(",")], a.out)
    (a.out / "tune_front.json").write_text(json.dumps(r, indent=2, default=str))
    text = render(r)
    (a.out / "tune_front.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
