"""Does the search beat the uniform ratios, and does its sampler beat random search?

For each model, at an equal budget of proxy trials (prune to the point's widths with least-squares
reconstruction, no fine-tune, int8 TFLite measured in LiteRT; the same trial `edgesparse tune`
runs), this compares:

- the uniform-ratio sweep (every group keeps the same fraction: the default recipe's way), at
  `--sweep` keep fractions;
- `edgesparse tune`'s search (its default sampler, or `--sampler`) and the random-search control, each at `--trials` trials
  and `--seeds` seeds, with the study in a fresh SQLite file per run.

Objectives compared: accuracy in LiteRT against MACs (latency here is the roofline estimate, which
is monotone in MACs, so MACs say the same and do not depend on this shared machine's load).

Reported per model: for each uniform point, the best searched point at <= its MACs (accuracy
gained, points) and the fewest MACs a searched point needs for >= its accuracy (MACs saved, %);
the hypervolume of (accuracy, MACs) per seed for the sampler and random (and in how many seeds
it wins); seconds per proxy trial and wall time of one study.

    python benchmarks/tune_front.py [--trials 60] [--seeds 5] [--models cnn,residual] [--space shipped|int8]
        [--parametrization keep|budget] [--budget-scale macs|keep] [--out DIR]

`--space shipped` is the space `edgesparse tune` searches on rpi4 (a keep fraction per group and
the precision, int8 or fp32); `--space int8` fixes the precision at int8 (the rpi4 default), so the
space holds the keep fractions only and latency and bytes move with MACs. Both samplers search the
same space and the same objectives (accuracy, latency, bytes); the hypervolume is reported in those
three AND in (accuracy, MACs).

`--parametrization budget` (stop 20) has both samplers search the keep fractions as a MAC budget
and per-group shares (benchmarks/budget_space.py, AMC's action space): the study's knobs are
`budget` and `share:<group>`, the keep point they map to is what a trial builds (its "point" user
attribute), the baselines are enqueued as (their budget, equal shares); random search there is
"budget-random". `keep` (the default) is the space as `edgesparse tune` searches it.

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

from common import ROOT, SAMPLE_DATA, load_average, machine_info, machine_lines  # noqa: E402  (puts ROOT on sys.path)

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
    # 16 channels: a proxy trial costs about what the sample CNN's does; Flatten, not global
    # pooling, keeps where a stroke is (a 32-channel global-pooling version reached 90% here).
    i = L.Input(x.shape[1:])
    h = L.ReLU()(L.BatchNormalization()(L.Conv2D(16, 3, padding="same", use_bias=False)(i)))
    for _ in range(2):
        r = L.ReLU()(L.BatchNormalization()(L.Conv2D(16, 3, padding="same", use_bias=False)(h)))
        r = L.BatchNormalization()(L.Conv2D(16, 3, padding="same", use_bias=False)(r))
        h = L.ReLU()(L.Add()([h, r]))
    h = L.Conv2D(32, 3, strides=2, padding="same", activation="relu")(h)
    o = L.Dense(10, activation="softmax")(L.Flatten()(h))
    m = keras.Model(i, o, name="digits_residual")
    m.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    m.fit(x, y, epochs=20, batch_size=64, verbose=0)
    m.save(path)
    return path


def restrict(base, space_name: str):
    """The base with the space the comparison searches: as shipped, or precision fixed at int8."""
    import dataclasses

    if space_name == "int8":
        knobs = tuple(k for k in base.space.knobs if k.name != "precision")
        base.space = dataclasses.replace(base.space, knobs=knobs, default_precision="int8")
    return base


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


# TPE set up otherwise than `edgesparse tune` does (multivariate, TPE_STARTUP random trials), to see
# what decides the comparison; each is measured at the same budget as the shipped sampler.
VARIANTS = {"tpe-startup20": {"multivariate": True, "n_startup_trials": 20},
            "tpe-startup5": {"multivariate": True, "n_startup_trials": 5},
            "tpe-independent": {"multivariate": False, "n_startup_trials": search.TPE_STARTUP}}


def make_sampler(name: str, settings, space=None):
    if name in VARIANTS:
        import optuna

        return optuna.samplers.TPESampler(seed=settings.seed, **VARIANTS[name])
    return search.make_sampler(settings, space=space)


def timed(sampler):
    """The sampler, with the seconds it spends choosing points added up in `.seconds` (GP fits
    its models on every ask: that is the cost the 5-minute line has to absorb)."""
    import optuna

    class Timed(optuna.samplers.BaseSampler):
        seconds = 0.0
        inner = sampler

        def _time(self, fn, *args):
            started = time.perf_counter()
            try:
                return fn(*args)
            finally:
                Timed.seconds += time.perf_counter() - started

        def infer_relative_search_space(self, study, trial):
            return self._time(sampler.infer_relative_search_space, study, trial)

        def sample_relative(self, study, trial, search_space):
            return self._time(sampler.sample_relative, study, trial, search_space)

        def sample_independent(self, study, trial, name, distribution):
            return self._time(sampler.sample_independent, study, trial, name, distribution)

        def before_trial(self, study, trial):
            return self._time(sampler.before_trial, study, trial)

        def after_trial(self, study, trial, state, values):
            return self._time(sampler.after_trial, study, trial, state, values)

        def reseed_rng(self):
            sampler.reseed_rng()

    return Timed()


def searched(base, sampler: str, seed: int, trials: int, folder: Path,
             max_accuracy_drop: float | None = None, mac_model=None,
             budget_scale: str = "macs") -> tuple[list[dict], float, float]:
    """One study of `trials` proxy trials, as `edgesparse tune` runs it; returns its rows, its
    wall time in seconds and the seconds its sampler spent. With a `mac_model` (budget_space.MacModel)
    the study searches the budget parametrization (its knob on `budget_scale`): each row then
    carries the budget it asked for (`budget`, a fraction of the full MACs; `budget_knob`, the
    knob's value), the MACs the model predicts for its rounded point (`macs_model`), and its
    unrounded point's (`macs_budget`)."""
    settings = search.TuneSettings(trials=trials, seed=seed, sampler=sampler if sampler in search.SAMPLERS
                                   else search.SAMPLERS[0], max_accuracy_drop=max_accuracy_drop)
    url = f"sqlite:///{folder / f'{base.name}-{sampler}-{seed}.db'}"
    chooser = timed(make_sampler(sampler, settings, base.space))
    if type(chooser.inner).__name__ != _SAMPLER_CLASS.get(sampler, "TPESampler"):
        raise SystemExit(f"--sampler {sampler}: built a {type(chooser.inner).__name__}")
    study = studies.open_study(url, "bench", {"bench": True}, sampler=chooser)
    baselines = search.baseline_points(base.space, None)
    if mac_model is not None:
        import copy

        from budget_space import BudgetSpace

        space = BudgetSpace(base.space, mac_model, budget_scale)
        baselines = [space.budget_map.params_of(p) for p in baselines]
        base = copy.copy(base)
        base.space = space
    search.enqueue_baselines(study, baselines)
    started = time.perf_counter()
    search.work(study, base, settings, trials)
    seconds = time.perf_counter() - started
    rows = search.trial_rows(study)
    if mac_model is not None:
        asked = {t.number: t.params for t in study.get_trials(deepcopy=False)}
        bmap = base.space.budget_map
        for r in rows:
            p = asked[r["number"]]
            r["budget"] = bmap.fraction(p["budget"], bmap.space.removed_layers(r["params"]))
            r["budget_knob"] = p["budget"]
            r["macs_model"] = round(mac_model.point_macs(bmap.space, r["params"]))
            r["macs_budget"] = round(mac_model.point_macs(bmap.space, bmap.point(p)))
    return rows, seconds, chooser.seconds


def mac_check(rows: list[dict], full: float) -> dict | None:
    """How well the MAC model predicts what a trial reports: the largest relative error of
    the model at the built (rounded) point, and how far the built point lands from the budget
    asked (median and largest |reported / (budget x full) - 1|): the SIMD rounding's share."""
    rows = [r for r in rows if r.get("macs_model") is not None and r.get("macs")]
    if not rows:
        return None
    model_err = [abs(r["macs_model"] / r["macs"] - 1) for r in rows]
    miss = sorted(abs(r["macs"] / (r["budget"] * full) - 1) for r in rows)
    return {"model_max_rel_err": round(max(model_err), 6), "model_exact": sum(e < 1e-9 for e in model_err),
            "n": len(rows), "budget_miss_median": round(miss[len(miss) // 2], 4),
            "budget_miss_max": round(miss[-1], 4)}


_SAMPLER_CLASS = {"random": "RandomSampler", "nsga2": "NSGAIISampler", "gp": "GPSampler", "descent": "_Descent", "ehvi": "_Ehvi"}


def infeasible(rows: list[dict]) -> int:
    return sum(1 for r in rows if not r.get("feasible", True))


def precision_counts(rows: list[dict], base) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rows:
        p = base.space.precision_of(r.get("params", {}))
        out[p] = out.get(p, 0) + 1
    return out


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


def hypervolume3(rows: list[dict], ref: tuple[float, float, float]) -> float:
    """Hypervolume in the search's own objectives (accuracy up, latency down, bytes down) above
    the reference (min accuracy, max latency, max bytes); Optuna's WFG on the minimised form."""
    import numpy as np
    from optuna._hypervolume import compute_hypervolume

    pts = np.array([(-r["accuracy"], r["latency_ms"], r["bytes"]) for r in rows
                    if r.get("accuracy") is not None and r["accuracy"] > ref[0]
                    and r["latency_ms"] < ref[1] and r["bytes"] < ref[2]], dtype=float)
    if not len(pts):
        return 0.0
    return float(compute_hypervolume(pts, np.array([-ref[0], ref[1], ref[2]], dtype=float)))


def _median(values: list) -> float | None:
    v = sorted(x for x in values if x is not None)
    if not v:
        return None
    return round(v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2, 3)


def _cell(value, unit: str = "") -> str:
    return "—" if value is None else f"{value:g}{unit}"


def summarise(m: dict) -> dict:
    """Per uniform point: the median over seeds of what one 60-trial search found against it."""
    runs = [p["dominance"] for p in m["per_seed"]]
    rows = []
    for i, u in enumerate(m["uniform"]):
        gains = [r[i]["gain_points"] for r in runs]
        saved = [r[i]["macs_saved_pct"] for r in runs]
        rows.append({"keep": u["keep"], "macs": u["macs"], "accuracy": u["accuracy"],
                     "gain_median": _median(gains), "gain_min": min((g for g in gains if g is not None), default=None),
                     "saved_median": _median(saved), "saved_min": min((x for x in saved if x is not None), default=None)})
    wins = sum(p["hv_ours"] > p["hv_random"] for p in m["per_seed"])
    wins3 = sum(p["hv3_ours"] > p["hv3_random"] for p in m["per_seed"])
    walls = [p["seconds_ours"] for p in m["per_seed"]] + [p["seconds_random"] for p in m["per_seed"]]
    return {"dominance": rows, "wins": wins, "wins3": wins3, "seeds_done": len(m["per_seed"]),
            "seconds_per_trial": round(sum(walls) / (len(walls) * m["trials"]), 2) if walls else None,
            "wall_60_median_s": _median(walls) if walls else None}


def run(models: list[str], trials: int, seeds: int, keeps: list[float], out: Path, sampler: str,
        first_seed: int = 0, space: str = "shipped", reuse_random: Path | None = None,
        max_accuracy_drop: float | None = None, parametrization: str = "keep", budget_scale: str = "macs") -> dict:
    """Seeds outermost, models inside, so a run cut short still has every model at the seeds done.
    The JSON is rewritten after every seed. `reuse_random`: an earlier run's JSON (same space,
    models, trials) whose random-search studies are taken instead of run again: random search
    with a seed draws the same points whatever it is compared with."""
    earlier = {}
    if reuse_random is not None:
        old = json.loads(Path(reuse_random).read_text())
        # A keep-parametrized run stores budget_scale None: the scale only matters with budget.
        scale = (old.get("budget_scale") or "macs") if parametrization == "budget" else budget_scale
        if old["space"] != space or old["trials"] != trials or old.get("parametrization", "keep") != parametrization \
                or scale != budget_scale:
            raise SystemExit(f"--reuse-random {reuse_random}: it searched the {old['space']} space with "
                             f"{old['trials']} trials, parametrization {old.get('parametrization', 'keep')}; "
                             f"reuse a run of --space {space} with {trials} trials, {parametrization}")
        earlier = {(n, p["seed"]): p for n, m in old["models"].items() for p in m["per_seed"]}
    results = {"machine": machine_info(), "trials": trials, "seeds": seeds, "sampler": sampler,
               "space": space, "max_accuracy_drop": max_accuracy_drop, "parametrization": parametrization,
               "budget_scale": budget_scale if parametrization == "budget" else None, "models": {}}
    bases, mac_models = {}, {}
    for name in models:
        path = ROOT / "sample_models" / "digits_cnn.keras" if name == "cnn" else residual_model(out / "digits_residual.keras")
        started = time.perf_counter()
        # The space these tables were measured in: keep fractions (+ precision). tune's depth knobs
        # (on by default since stop 18) are compared separately in benchmarks/tune_knobs.py.
        bases[name] = restrict(prepare(path, "rpi4", SAMPLE_DATA, agents=[], token_file=None, local=False,
                                       knobs=("keep", "precision")), space)
        prepared = time.perf_counter() - started
        if parametrization == "budget":
            from budget_space import MacModel

            mac_models[name] = MacModel.of(bases[name].plans["proxy"].pristine, bases[name].space)
        uni = sweep(bases[name], keeps)
        results["models"][name] = {"trials": trials, "groups": bases[name].space.group_sizes,
                                   "prepare_s": round(prepared, 1), "uniform": uni, "per_seed": [],
                                   "ref": (min(r["accuracy"] for r in uni) - 1.0, max(r["macs"] for r in uni) * 1.0001),
                                   "ref3": (min(r["accuracy"] for r in uni) - 1.0, max(r["latency_ms"] for r in uni) * 1.0001,
                                            max(r["bytes"] for r in uni) * 1.0001)}
        print(f"{name}: prepared in {prepared:.1f} s, uniform sweep done", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="tune-bench-") as tmp:
        for seed in range(first_seed, first_seed + seeds):
            for name in models:
                m, base = results["models"][name], bases[name]
                load_before = load_average()
                mm = mac_models.get(name)
                ours, s1, ask1 = searched(base, sampler, seed, trials, Path(tmp), max_accuracy_drop, mm, budget_scale)
                if (name, seed) in earlier:
                    e = earlier[(name, seed)]
                    rand, s2, ask2 = e["rows_random"], e["seconds_random"], e.get("ask_s_random")
                else:
                    rand, s2, ask2 = searched(base, "random", seed, trials, Path(tmp), max_accuracy_drop, mm, budget_scale)
                ref = tuple(m["ref"])
                m["per_seed"].append({"seed": seed, "hv_ours": search.hypervolume(ours, ref),
                                      "hv_random": search.hypervolume(rand, ref),
                                      "hv3_ours": hypervolume3(ours, tuple(m["ref3"])),
                                      "hv3_random": hypervolume3(rand, tuple(m["ref3"])),
                                      "seconds_ours": round(s1, 1), "seconds_random": round(s2, 1),
                                      "ask_s_ours": round(ask1, 2), "ask_s_random": None if ask2 is None else round(ask2, 2),
                                      "reused_random": (name, seed) in earlier,
                                      "infeasible_ours": infeasible(ours), "infeasible_random": infeasible(rand),
                                      "load_before": load_before, "load_after": load_average(),
                                      "precisions_ours": precision_counts(ours, base),
                                      "precisions_random": precision_counts(rand, base),
                                      "rows_ours": ours, "rows_random": rand,
                                      "mac_check": None if mm is None else mac_check(ours + rand, mm.full),
                                      "dominance": dominance(m["uniform"], ours),
                                      "front_ours": [{k: r[k] for k in ("accuracy", "macs", "widths")}
                                                     for r in search.pareto(ours)]})
                m.update(summarise(m))
                p = m["per_seed"][-1]
                print(f"{name} seed {seed}: hv {sampler} {p['hv_ours']:.4g} random {p['hv_random']:.4g}; "
                      f"{s1:.0f} s / {s2:.0f} s for {trials} trials; load {load_average()}",
                      file=sys.stderr, flush=True)
            (out / f"tune_front-{space}.json").write_text(json.dumps(results, indent=2, default=str))
            (out / f"tune_front-{space}.md").write_text(render(results))
    return results


def render(r: dict) -> str:
    s = r["sampler"] if r.get("parametrization", "keep") == "keep" else f"budget-{r['sampler']}"
    lines = [f"# edgesparse tune: searched front ({s}) vs uniform ratios, {s} vs random; space: {r.get('space', 'shipped')}", ""]
    lines += machine_lines(r["machine"]) + ["", f"{r['trials']} proxy trials per run, {r['seeds']} seeds asked.", ""]
    for name, m in r["models"].items():
        if "wins" not in m:
            continue
        spt = m["seconds_per_trial"]
        lines += [f"## {name} (groups {m['groups']})", "",
                  f"Seeds done: {m['seeds_done']}. Seconds per proxy trial (mean over every run, one process, "
                  f"one thread): {spt}; wall time of one {m['trials']}-trial study, median: "
                  f"{m['wall_60_median_s']} s. {s} hypervolume beats random in {m['wins']} of {m['seeds_done']} seeds in (accuracy, MACs), "
                  f"in {m['wins3']} of {m['seeds_done']} in the search's own (accuracy, latency, bytes).", "",
                  *_budget_lines(r, m),
                  "Against each uniform point, per 60-trial search (median and worst over seeds):", "",
                  "| uniform keep | MACs | accuracy % | points gained at <= MACs (median / worst) | MACs saved at >= accuracy (median / worst) |",
                  "|---|---|---|---|---|"]
        for d in m["dominance"]:
            lines.append(f"| {d['keep']} | {d['macs']:,} | {d['accuracy']:.2f} | {_cell(d['gain_median'])} / "
                         f"{_cell(d['gain_min'])} | {_cell(d['saved_median'], '%')} / {_cell(d['saved_min'], '%')} |")
        lines += ["", f"With the accuracy constraint, what `edgesparse tune` reports is the feasible trials' front: the "
                  f"hypervolume of the feasible trials only ({s} / random, {s} wins):", "",
                  "| seed | HV feasible (acc, MACs) | wins | HV feasible (acc, latency, bytes) | wins |", "|---|---|---|---|---|"]
        for p in m["per_seed"]:
            f = feasible_hypervolumes(p, m)
            lines.append(f"| {p['seed']} | {f[0]:.4g} / {f[1]:.4g} | {'yes' if f[0] > f[1] else 'no'} | "
                         f"{f[2]:.4g} / {f[3]:.4g} | {'yes' if f[2] > f[3] else 'no'} |")
        wins_f = [feasible_hypervolumes(p, m) for p in m["per_seed"]]
        lines += ["", f"Feasible-only: {s} wins {sum(f[0] > f[1] for f in wins_f)} of {len(wins_f)} in (accuracy, MACs), "
                  f"{sum(f[2] > f[3] for f in wins_f)} of {len(wins_f)} in (accuracy, latency, bytes)."]
        lines += ["", f"| seed | HV (acc, MACs) {s} | random | {s} wins | HV (acc, latency, bytes) {s} | random | {s} wins | "
                  f"wall s ({s} / random) | sampler s per trial ({s} / random) | infeasible trials ({s} / random) | "
                  f"load before -> after | precisions {s} / random |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {p['seed']} | {p['hv_ours']:.4g} | {p['hv_random']:.4g} | {'yes' if p['hv_ours'] > p['hv_random'] else 'no'} | "
                  f"{p['hv3_ours']:.4g} | {p['hv3_random']:.4g} | {'yes' if p['hv3_ours'] > p['hv3_random'] else 'no'} | "
                  f"{p['seconds_ours']} / {p['seconds_random']}{' (reused)' if p.get('reused_random') else ''} | "
                  f"{_per_trial(p.get('ask_s_ours'), r['trials'])} / {_per_trial(p.get('ask_s_random'), r['trials'])} | "
                  f"{_cell(p.get('infeasible_ours', infeasible(p.get('rows_ours', []))))} / "
                  f"{_cell(p.get('infeasible_random', infeasible(p.get('rows_random', []))))} | "
                  f"{p.get('load_before')} -> {p.get('load_after')} | "
                  f"{_counts(p.get('precisions_ours'))} / {_counts(p.get('precisions_random'))} |" for p in m["per_seed"]]
        lines.append("")
    return "\n".join(lines)


def _budget_lines(r: dict, m: dict) -> list[str]:
    """With the budget parametrization: what the control is, and how well the MAC model did."""
    if r.get("parametrization", "keep") != "budget":
        return []
    checks = [p["mac_check"] for p in m["per_seed"] if p.get("mac_check")]
    if not checks:
        return []
    n = sum(c["n"] for c in checks)
    exact = sum(c["model_exact"] for c in checks)
    return [f"Both samplers search the budget parametrization: 'random' below is budget-random. MAC model "
            f"(budget_space.py) against the MACs the {n} proxy trials reported: exact in {exact} of {n}, largest relative "
            f"error {max(c['model_max_rel_err'] for c in checks):.2g}; built point against the budget asked (SIMD "
            f"rounding): median miss per study {min(c['budget_miss_median'] for c in checks):.2%}-"
            f"{max(c['budget_miss_median'] for c in checks):.2%}, largest {max(c['budget_miss_max'] for c in checks):.2%}.", ""]


def feasible_hypervolumes(p: dict, m: dict) -> tuple[float, float, float, float]:
    """(acc, MACs) ours, random, then (acc, latency, bytes) ours, random, over the feasible trials."""
    ours = [r for r in p.get("rows_ours", []) if r.get("feasible", True)]
    rand = [r for r in p.get("rows_random", []) if r.get("feasible", True)]
    ref, ref3 = tuple(m["ref"]), tuple(m["ref3"])
    return (search.hypervolume(ours, ref), search.hypervolume(rand, ref),
            hypervolume3(ours, ref3), hypervolume3(rand, ref3))


def placement(rows: list[dict], ref: tuple) -> str:
    """Where a study spent its trials: the median MACs, and how many trials fell below the
    hypervolume's accuracy reference (they add nothing to the (accuracy, MACs) hypervolume)."""
    macs = sorted(r["macs"] for r in rows if r.get("macs") is not None)
    below = sum(1 for r in rows if r.get("accuracy") is not None and r["accuracy"] <= ref[0])
    return f"{macs[len(macs) // 2]:,} / {below}" if macs else "—"


def placement_lines(r: dict) -> list[str]:
    s = r["sampler"]
    lines = [f"| model | seed | median MACs of the trials / trials below the accuracy reference: {s} | random |",
             "|---|---|---|---|"]
    for name, m in r["models"].items():
        for p in m["per_seed"]:
            if "rows_ours" in p:
                lines.append(f"| {name} | {p['seed']} | {placement(p['rows_ours'], m['ref'])} | "
                             f"{placement(p['rows_random'], m['ref'])} |")
    return lines


def _per_trial(seconds: float | None, trials: int) -> str:
    return "—" if seconds is None else f"{seconds / trials:.3f}"


def _counts(c: dict | None) -> str:
    return "—" if not c else ", ".join(f"{k} {v}" for k, v in sorted(c.items()))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=60)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--models", default="cnn,residual")
    ap.add_argument("--sweep", default="0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0")
    ap.add_argument("--first-seed", type=int, default=0, help="continue a run cut short at this seed")
    ap.add_argument("--sampler", default=search.SAMPLERS[0], choices=(*search.SAMPLERS, *VARIANTS),
                    help="the sampler compared with random search (default: edgesparse tune's)")
    ap.add_argument("--space", default="shipped", choices=("shipped", "int8"),
                    help="shipped: keep fractions and precision; int8: precision fixed at int8")
    ap.add_argument("--reuse-random", type=Path, default=None,
                    help="an earlier tune_front-SPACE.json whose random-search studies are reused")
    ap.add_argument("--render", type=Path, default=None,
                    help="print the tables of an earlier tune_front-SPACE.json (and where each study's trials went); run nothing")
    ap.add_argument("--max-accuracy-drop", type=float, default=None,
                    help="give both samplers edgesparse tune's accuracy constraint (tune's default: 1 point); "
                         "default: none, as the tables were first measured")
    ap.add_argument("--parametrization", default="keep", choices=("keep", "budget"),
                    help="keep: a keep fraction per group (edgesparse tune's); budget: a MAC budget and per-group "
                         "shares mapped to keep fractions (benchmarks/budget_space.py), for both samplers")
    ap.add_argument("--budget-scale", default="macs", choices=("macs", "keep"),
                    help="with --parametrization budget, what the budget knob counts: the fraction of the full MACs "
                         "(macs), or the uniform keep fraction that spends as much (keep)")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "bench-tune")
    a = ap.parse_args(argv)
    if a.render is not None:
        done = json.loads(a.render.read_text())
        print(render(done) + "\n\n" + "\n".join(placement_lines(done)))
        return 0
    a.out.mkdir(parents=True, exist_ok=True)
    r = run(a.models.split(","), a.trials, a.seeds, [float(k) for k in a.sweep.split(",")], a.out, a.sampler,
            a.first_seed, a.space, a.reuse_random, a.max_accuracy_drop, a.parametrization, a.budget_scale)
    print(render(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
