"""`edgesparse tune`: a multi-objective search over per-layer compression, device in the loop.

The coordinator and every worker run the same loop: reap expired leases, ask the study for a
point, build and measure it (search/trials.py), tell the study. Objectives: accuracy in the
artifact's runtime (maximise), latency p50 (minimise), artifact bytes (minimise). Constraints
(`max_accuracy_drop`, `max_latency_ms`, `max_bytes`) go to the sampler as constraints, not
penalties. Baselines are enqueued before anything is sampled: no compression, and uniform
keep fractions like the default recipe's.

After the proxy trials, the feasible Pareto set is rebuilt at full fidelity (fine-tune and
distillation as the default recipe does them) and measured again; both fronts are reported.
"""
from __future__ import annotations

import hashlib
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from edgesparse.errors import UserError
from edgesparse.search import leases
from edgesparse.search.space import DEFAULT_FAMILIES, SearchSpace
from edgesparse.search.trials import Base, TrialResult, run_trial

UNIFORM_BASELINES = (0.75, 0.55)      # keep fractions enqueued besides the default recipe's
PICK_RULES = ("fastest-within-budget", "most-accurate", "smallest-within-budget")
SAMPLERS = ("tpe", "ehvi", "descent", "nsga2", "random", "gp")   # the default first; random is the control
TPE_STARTUP = 10                      # random trials before TPE models the space
GP_STARTUP = 10                       # random trials before the Gaussian process models it


@dataclass(frozen=True)
class TuneSettings:
    trials: int = 60
    seed: int = 0
    sampler: str = SAMPLERS[0]             # one of SAMPLERS (docs/tune.md says why TPE)
    max_accuracy_drop: float | None = 1.0  # points, against the imported model's Keras accuracy
    max_latency_ms: float | None = None
    max_bytes: int | None = None
    lease_s: float = 120.0
    population: int = 12
    knobs: tuple[str, ...] = DEFAULT_FAMILIES   # knob families (space.py); a study stores them as a list
    latency_table: bool = False                 # proxy latency from a per-layer table (profile/layer_table.py)

    def check(self) -> None:
        """One line naming the flag, before anything is built (the recipe check would name a
        temporary recipe file the user never wrote)."""
        import math

        if self.trials < 1:
            raise UserError("--trials must be at least 1")
        for flag, value, low_ok in (("--max-accuracy-drop", self.max_accuracy_drop, True),
                                    ("--max-latency-ms", self.max_latency_ms, False),
                                    ("--max-bytes", self.max_bytes, False)):
            if value is None:
                continue
            if not math.isfinite(value) or value < 0 or (value == 0 and not low_ok):
                need = "a non-negative number of accuracy points, e.g. 1.0" if low_ok else "a positive number"
                raise UserError(f"{flag} {value:g}: must be {need}")
        if self.max_accuracy_drop is not None and self.max_accuracy_drop > 100:
            raise UserError(f"--max-accuracy-drop {self.max_accuracy_drop:g}: accuracy is in percent, so "
                            "at most 100 points can be lost; give points, e.g. 1.0")

    def constraints(self) -> dict[str, Any]:
        return {"max_accuracy_drop": self.max_accuracy_drop, "max_latency_ms": self.max_latency_ms,
                "max_bytes": self.max_bytes}


def constraint_values(result: TrialResult, reference: float | None, s: TuneSettings) -> dict[str, float]:
    """Optuna's convention: <= 0 is feasible. One value per constraint that is set."""
    values = {}
    if s.max_accuracy_drop is not None and reference is not None:
        acc = result.accuracy if result.accuracy is not None else 0.0
        values["max_accuracy_drop"] = (reference - acc) - s.max_accuracy_drop
    if s.max_latency_ms is not None:
        values["max_latency_ms"] = result.latency_ms - s.max_latency_ms
    if s.max_bytes is not None:
        values["max_bytes"] = float(result.bytes - s.max_bytes)
    return values


def make_sampler(settings: TuneSettings, worker: str | None = None, space: SearchSpace | None = None):
    """TPE, NSGA-II and GP all read the constraints each trial sets (`Trial.set_constraint`).

    TPE (multivariate: the widths of consecutive groups interact) is the default: at a budget of
    60 trials NSGA-II with a small population runs a handful of generations, the first of them
    random, and did not beat random search (docs/benchmarks.md); TPE models the space after
    TPE_STARTUP trials (the enqueued baselines among them). `gp` is Optuna's Gaussian-process
    sampler (log constrained expected hypervolume improvement; running trials of other workers
    enter its q-batch acquisition, so it needs no constant liar); it needs torch, which is not
    in the `search` extra (docs/tune.md says why and what it measured). `descent` is that TPE
    with every other trial a NetAdapt-style step, starting from the no-compression baseline
    (search/descent.py); it needs the `space`. `ehvi` scores every point of the rounded space by
    expected feasible hypervolume improvement under a GP of accuracy and a fitted cost model
    (search/ehvi.py); it needs the `space` too."""
    import optuna

    # Every process that joins a study builds its own sampler: with the study's seed they would all
    # draw the same sequence and run each other's points (measured: 8 of 24 trials repeated with
    # two workers). The coordinator keeps the seed, so a one-machine run stays reproducible; a
    # worker mixes its name into it.
    seed = settings.seed if worker is None else int.from_bytes(
        hashlib.sha256(f"{settings.seed}:{worker}".encode()).digest()[:4], "little")
    if settings.sampler not in SAMPLERS:
        raise UserError(f"--sampler {settings.sampler!r}: choose one of {', '.join(SAMPLERS)}")
    if settings.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if settings.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=settings.population, seed=seed)
    if settings.sampler == "gp":
        return _gp_sampler(seed)
    if settings.sampler == "ehvi":
        from edgesparse.search import ehvi

        if space is None:
            raise ValueError("the ehvi sampler needs the search space")
        names = tuple(n for n, v in settings.constraints().items() if v is not None)
        return ehvi.make(space, seed, TPE_STARTUP, names)
    # constant_liar: trials running on other workers count as bad guesses, so parallel workers
    # spread out instead of all sampling next to the current best.
    tpe = optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=TPE_STARTUP,
                                     constant_liar=worker is not None)
    if settings.sampler == "descent":
        from edgesparse.search import descent

        if space is None:
            raise ValueError("the descent sampler needs the search space")
        return descent.make(tpe, space, seed, TPE_STARTUP)
    return tpe


def _gp_sampler(seed: int):
    import optuna

    try:
        import torch  # noqa: F401  (GPSampler imports it on its first modelled trial, too late to say why)
    except ImportError:
        raise UserError('--sampler gp needs torch, which is not installed: pip install "edgesparse[torch]" '
                        "(or choose --sampler tpe)") from None
    return optuna.samplers.GPSampler(seed=seed, n_startup_trials=GP_STARTUP)


def baseline_points(space: SearchSpace, default_keep: float | None) -> list[dict[str, Any]]:
    """No compression, then the uniform ratios: the default recipe's and a few gentler ones.
    Keeps that round to the same widths are one baseline, not two."""
    from edgesparse.search.space import KEEP_PREFIX, rounded

    keeps = [1.0] + ([default_keep] if default_keep else []) + list(UNIFORM_BASELINES)
    points, seen = [], set()
    for k in keeps:
        point = space.clip(space.uniform(k))
        widths = tuple(rounded(v, space.group_sizes[n[len(KEEP_PREFIX):]], space.round_to)
                       for n, v in sorted(point.items()) if n.startswith(KEEP_PREFIX))
        if widths not in seen:
            seen.add(widths)
            points.append(point)
    return points


def enqueue_baselines(study, points: list[dict[str, Any]]) -> None:
    """Enqueue each baseline once per study, even when several workers start together."""
    if study.user_attrs.get("baselines_enqueued"):
        return
    study.set_user_attr("baselines_enqueued", True)
    for i, p in enumerate(points):
        study.enqueue_trial(p, user_attrs={"baseline": "none" if i == 0 else "uniform"},
                            skip_if_exists=True)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _counted(study, budget: int, number: int) -> bool:
    """Whether trial `number` is within the study's budget of `budget` trials.

    Trials are counted in order of their numbers; failed trials do not count (their retry does).
    Several workers may ask at once: the ones past the budget are told PRUNED ("over budget"),
    never run, so the study ends with exactly `budget` completed trials."""
    import optuna

    alive = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING)
    before = [t for t in study.get_trials(deepcopy=False, states=alive) if t.number < number]
    return len(before) < budget


def finished(study) -> int:
    import optuna

    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))


def work(study, base: Base, settings: TuneSettings, budget: int,
         on_trial: Callable[[int, dict], None] | None = None, max_seconds: float | None = None) -> int:
    """Ask-evaluate-tell until the study holds `budget` completed trials. Returns how many this
    worker completed. A point that fails to build is told FAILED with the reason (a user error in
    a point is not a crash of the search)."""
    import optuna

    me = worker_name()
    done = 0
    started = time.monotonic()
    while True:
        leases.reap_expired(study)
        if finished(study) >= budget:
            return done
        if max_seconds is not None and time.monotonic() - started > max_seconds:
            return done
        if _alive(study) >= budget and not _waiting(study):
            time.sleep(0.5)         # the last trials run elsewhere: wait for them (or their reaping)
            continue
        trial = study.ask()
        point = base.space.sample(trial)
        trial.set_user_attr("point", point)     # the rounded widths: what was built
        retry = leases.RETRY_OF_KEY in trial.user_attrs
        if not retry and not _counted(study, budget, trial.number):
            trial.set_user_attr("over_budget", True)
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            if not _running_or_waiting(study):
                return done
            time.sleep(0.5)         # others are finishing the last trials; reap if they die
            continue
        try:
            with leases.held(study, trial, me, settings.lease_s):
                result = run_trial(base, point, "proxy")
        except UserError as exc:
            trial.set_user_attr("failed_because", str(exc))
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        record(trial, result, base, settings, me)
        study.tell(trial, result.values())
        done += 1
        if on_trial:
            on_trial(trial.number, {"point": point, **result_summary(result)})


def _alive(study) -> int:
    import optuna

    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING)
    return len(study.get_trials(deepcopy=False, states=states))


def _waiting(study) -> bool:
    import optuna

    return bool(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)))


def _running_or_waiting(study) -> bool:
    import optuna

    states = (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)
    return bool(study.get_trials(deepcopy=False, states=states))


def record(trial, result: TrialResult, base: Base, settings: TuneSettings, worker: str) -> None:
    constraints = constraint_values(result, base.reference_accuracy, settings)
    for key, value in constraints.items():
        trial.set_constraint(key, value)
    trial.set_user_attr("constraints", list(constraints.values()))
    trial.set_user_attr("result", result_summary(result))
    trial.set_user_attr("worker", worker)


def result_summary(r: TrialResult) -> dict[str, Any]:
    return {"accuracy": r.accuracy, "latency_ms": round(r.latency_ms, 4),
            "latency_source": r.latency_source, "bytes": r.bytes, "macs": r.macs,
            "params": r.params, "keras_accuracy": r.keras_accuracy, "widths": r.widths,
            "removed_blocks": r.removed_blocks, "ranks": r.ranks}


# ----------------------------------------------------------------------------- fronts


def feasible(trial) -> bool:
    return all(c <= 0 for c in trial.user_attrs.get("constraints", []))


def pareto(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Non-dominated rows (accuracy up, latency down, bytes down) among the feasible ones."""
    pts = [r for r in rows if r.get("feasible", True) and r.get("accuracy") is not None]
    front = []
    for r in pts:
        if not any(_dominates(o, r) for o in pts if o is not r):
            front.append(r)
    return sorted(front, key=lambda r: r["latency_ms"])


def _dominates(a: dict, b: dict) -> bool:
    ge = a["accuracy"] >= b["accuracy"] and a["latency_ms"] <= b["latency_ms"] and a["bytes"] <= b["bytes"]
    gt = a["accuracy"] > b["accuracy"] or a["latency_ms"] < b["latency_ms"] or a["bytes"] < b["bytes"]
    return ge and gt


def hypervolume(rows: list[dict[str, Any]], ref: tuple[float, float], key: str = "macs") -> float:
    """2-D hypervolume of (accuracy up, `key` down) above the reference (min accuracy, max key):
    the area the front dominates. Used to compare samplers at an equal budget."""
    pts = sorted(((r["accuracy"], r[key]) for r in rows
                  if r.get("accuracy") is not None and r.get(key) is not None
                  and r["accuracy"] > ref[0] and r[key] < ref[1]), key=lambda p: p[1])
    area, best_acc = 0.0, ref[0]
    for i, (acc, cost) in enumerate(pts):
        best_acc = max(best_acc, acc)
        nxt = pts[i + 1][1] if i + 1 < len(pts) else ref[1]
        area += (best_acc - ref[0]) * (nxt - cost)
    return float(area)


def trial_rows(study) -> list[dict[str, Any]]:
    import optuna

    rows = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        r = dict(t.user_attrs.get("result", {}))
        r.update(number=t.number, params=dict(t.user_attrs.get("point", t.params)), feasible=feasible(t),
                 constraints=t.user_attrs.get("constraints", []),
                 baseline=t.user_attrs.get("baseline"), worker=t.user_attrs.get("worker"))
        rows.append(r)
    return rows


# Relative latency gap below which two trials count as equally fast when picking.
LATENCY_TIE = 0.02


def pick(rows: list[dict[str, Any]], rule: str, reference: float | None,
         max_drop: float | None) -> dict[str, Any] | None:
    """The chosen point of a front under `rule`, or None when no row qualifies. A fine-tuned
    point that no longer meets a constraint (its latency or size moved) does not qualify."""
    ok = [r for r in rows if r.get("accuracy") is not None and r.get("feasible", True)]
    if rule in ("fastest-within-budget", "smallest-within-budget") and reference is not None \
            and max_drop is not None:
        ok = [r for r in ok if reference - r["accuracy"] <= max_drop + 1e-9]
    if not ok:
        return None
    if rule == "fastest-within-budget":
        # Latencies this close are one measurement's noise (a trial profiles for 0.3 s): the
        # point a sub-microsecond gap would pick can have more MACs and less accuracy than its
        # tie (measured, docs/benchmarks.md). Among the ties, the most accurate, then the fewest MACs.
        fastest = min(r["latency_ms"] for r in ok)
        ties = [r for r in ok if r["latency_ms"] <= fastest * (1 + LATENCY_TIE)]
        return min(ties, key=lambda r: (-r["accuracy"], r.get("macs") or 0, r["latency_ms"]))
    if rule == "smallest-within-budget":
        return min(ok, key=lambda r: (r["bytes"], -r["accuracy"]))
    return max(ok, key=lambda r: (r["accuracy"], -r["latency_ms"]))


def unmet_constraints(rows: list[dict[str, Any]], settings: TuneSettings,
                      reference: float | None) -> str:
    """Why no row is feasible, for the --pick error: each constraint no row meets, with the
    closest value, or the constraints that are met one at a time but never together."""
    names = [n for n, v in settings.constraints().items()
             if v is not None and (n != "max_accuracy_drop" or reference is not None)]
    flags = {n: "--" + n.replace("_", "-") for n in names}
    never = []
    for i, name in enumerate(names):
        values = [r["constraints"][i] for r in rows if len(r.get("constraints", [])) == len(names)]
        if values and min(values) > 0:
            limit = settings.constraints()[name]
            never.append(f"{flags[name]} {limit:g} (the closest trial is {min(values):.4g} over it)")
    if never:
        return "no trial meets " + "; ".join(never)
    if not rows:
        return "no trial completed"
    return "no trial meets " + " and ".join(f"{flags[n]} {settings.constraints()[n]:g}" for n in names) + \
        " together"


def closest_to_feasible(rows: list[dict[str, Any]], n: int = 3) -> list[dict[str, Any]]:
    """When nothing is feasible: the trials that violate the constraints least."""
    return sorted(rows, key=lambda r: sum(max(0.0, c) for c in r.get("constraints", [])))[:n]


def remeasure(base: Base, front: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The proxy front measured on the device for real: how good the latency table's estimates
    were for the points that matter. Each point is rebuilt (same seed, same artifact)."""
    out = []
    for row in front:
        measured = run_trial(base, row["params"], "proxy", measured=True)
        est = row["latency_ms"]
        out.append({"number": row["number"], "table_ms": est, "measured_ms": round(measured.latency_ms, 4),
                    "error_pct": round(100.0 * (est - measured.latency_ms) / measured.latency_ms, 1),
                    "measured_on": measured.latency_source})
        row["measured_ms"] = out[-1]["measured_ms"]
    return out


def refine(base: Base, front: list[dict[str, Any]], settings: TuneSettings, workdir: Path,
           on_point: Callable[[int, dict], None] | None = None) -> list[dict[str, Any]]:
    """Rebuild each front point at full fidelity (fine-tune + distill), measured again."""
    out = []
    for row in front:
        d = workdir / f"trial-{row['number']}"
        result = run_trial(base, row["params"], "full", keep_dir=d)
        r = {**result_summary(result), "number": row["number"], "params": row["params"],
             "recipe": result.recipe, "proxy": {k: row.get(k) for k in ("accuracy", "latency_ms", "bytes", "macs")}}
        r["constraints"] = list(constraint_values(result, base.reference_accuracy, settings).values())
        r["feasible"] = all(c <= 0 for c in r["constraints"])
        out.append(r)
        if on_point:
            on_point(row["number"], r)
    return out

