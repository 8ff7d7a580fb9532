"""Do tune's depth and rank knobs find better fronts? (issue 13: which families are on by default)

For each model, at an equal budget of proxy trials per study (the trial `edgesparse tune` runs:
prune [+ drop blocks] [+ lowrank, no fine-tune], int8/fp32 TFLite verified in LiteRT), TPE with
the default seed schedule, this compares knob families:

- `cnn` (sample_models/digits_cnn.keras, no residual block): keep,precision against
  keep,rank,precision;
- `residual` (benchmarks/tune_front.py's residual CNN, two removable blocks): keep,precision
  against keep,depth,precision.

Scored by the hypervolume of (accuracy in LiteRT up, MACs down) above a reference shared by every
run of a model (50% accuracy, the uncompressed model's MACs), and of the search's own objectives
(accuracy, latency, bytes; latency is the roofline estimate here, so it does not depend on this
shared machine's load). Every seed of every arm is listed.

    python benchmarks/tune_knobs.py [--trials 30] [--seeds 3] [--models cnn,residual] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, SAMPLE_DATA, load_average, machine_info, machine_lines  # noqa: E402

from edgesparse.search import study as studies  # noqa: E402
from edgesparse.search import tune as search  # noqa: E402
from edgesparse.search.session import prepare  # noqa: E402

ARMS = {"cnn": [("keep", "precision"), ("keep", "rank", "precision")],
        "residual": [("keep", "precision"), ("keep", "depth", "precision")]}
REF_ACCURACY = 50.0


def model_path(name: str, out: Path) -> Path:
    if name == "cnn":
        return ROOT / "sample_models" / "digits_cnn.keras"
    from tune_front import residual_model   # the same residual CNN the front benchmark uses

    return residual_model(out / "digits_residual.keras")


def study_rows(base, seed: int, trials: int, folder: Path, tag: str) -> tuple[list[dict], float]:
    settings = search.TuneSettings(trials=trials, seed=seed, max_accuracy_drop=None)
    url = f"sqlite:///{folder / f'{tag}-{seed}.db'}"
    study = studies.open_study(url, "bench", {"bench": True}, sampler=search.make_sampler(settings))
    search.enqueue_baselines(study, search.baseline_points(base.space, None))
    started = time.perf_counter()
    search.work(study, base, settings, trials)
    return search.trial_rows(study), time.perf_counter() - started


def run(models: list[str], trials: int, seeds: int, out: Path) -> dict:
    from tune_front import hypervolume3

    results = {"machine": machine_info(), "trials": trials, "seeds": seeds, "models": {},
               "started_load": load_average()}
    with tempfile.TemporaryDirectory(prefix="tune-knobs-") as tmp:
        for name in models:
            path = model_path(name, out)
            bases = {",".join(arm): prepare(path, "rpi4", SAMPLE_DATA, agents=[], token_file=None, local=False,
                                            knobs=arm) for arm in ARMS[name]}
            m = results["models"][name] = {"arms": {a: {"knobs": [k.describe() for k in b.space.knobs],
                                                        "per_seed": []} for a, b in bases.items()}}
            for seed in range(seeds):
                for arm, base in bases.items():
                    rows, seconds = study_rows(base, seed, trials, Path(tmp), f"{name}-{arm}")
                    none = next(r for r in rows if r.get("baseline") == "none")
                    ref = (REF_ACCURACY, none["macs"] * 1.0001)
                    m.setdefault("ref", {"accuracy": REF_ACCURACY, "macs": ref[1],
                                         "latency_ms": none["latency_ms"] * 1.0001, "bytes": none["bytes"] * 1.0001})
                    front = search.pareto(rows)
                    m["arms"][arm]["per_seed"].append({
                        "seed": seed, "seconds": round(seconds, 1),
                        "hv": search.hypervolume(rows, ref),
                        "hv3": hypervolume3(rows, (REF_ACCURACY, m["ref"]["latency_ms"], m["ref"]["bytes"])),
                        "front": [{k: r.get(k) for k in ("accuracy", "macs", "latency_ms", "bytes", "removed_blocks",
                                                         "ranks", "widths")} | {"precision": r["params"].get("precision")}
                                  for r in front]})
                    p = m["arms"][arm]["per_seed"][-1]
                    print(f"{name} [{arm}] seed {seed}: hv {p['hv']:.4g} hv3 {p['hv3']:.4g}; {seconds:.0f} s; "
                          f"load {load_average()}", file=sys.stderr, flush=True)
                (out / "tune_knobs.json").write_text(json.dumps(results, indent=2, default=str))
                (out / "tune_knobs.md").write_text(render(results))
    results["ended_load"] = load_average()
    (out / "tune_knobs.json").write_text(json.dumps(results, indent=2, default=str))
    (out / "tune_knobs.md").write_text(render(results))
    return results


def render(r: dict) -> str:
    lines = ["# edgesparse tune: do the depth and rank knobs find better fronts?", ""]
    lines += machine_lines(r["machine"]) + ["", f"{r['trials']} proxy trials per study (TPE), seeds 0-{r['seeds'] - 1}; "
                                                f"load at start {r.get('started_load')}, at end {r.get('ended_load', 'running')}.", ""]
    for name, m in r["models"].items():
        arms = list(m["arms"])
        lines += [f"## {name}", "", "| seed | " + " | ".join(f"HV (acc, MACs) [{a}]" for a in arms) + " | "
                  + " | ".join(f"HV (acc, latency, bytes) [{a}]" for a in arms) + " | seconds |",
                  "|---" * (2 * len(arms) + 2) + "|"]
        seeds = min(len(m["arms"][a]["per_seed"]) for a in arms)
        for i in range(seeds):
            ps = [m["arms"][a]["per_seed"][i] for a in arms]
            lines.append(f"| {ps[0]['seed']} | " + " | ".join(f"{p['hv']:.4g}" for p in ps) + " | "
                         + " | ".join(f"{p['hv3']:.4g}" for p in ps) + " | " + " / ".join(str(p["seconds"]) for p in ps) + " |")
        if seeds:
            wins = sum(m["arms"][arms[1]]["per_seed"][i]["hv"] > m["arms"][arms[0]]["per_seed"][i]["hv"] for i in range(seeds))
            wins3 = sum(m["arms"][arms[1]]["per_seed"][i]["hv3"] > m["arms"][arms[0]]["per_seed"][i]["hv3"] for i in range(seeds))
            lines += ["", f"[{arms[1]}] beats [{arms[0]}] in {wins} of {seeds} seeds in (accuracy, MACs), "
                          f"{wins3} of {seeds} in (accuracy, latency, bytes).", ""]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--models", default="cnn,residual")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "bench-tune-knobs")
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    run([m for m in a.models.split(",") if m], a.trials, a.seeds, a.out)
    print(f"wrote {a.out}/tune_knobs.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
