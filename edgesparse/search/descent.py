"""TPE with a NetAdapt-style descent from the no-compression baseline (`--sampler descent`).

Why: under an accuracy budget the front's cheap end decides most of what a search is worth
(the user's `--pick fastest-within-budget` lives there), and TPE learns to stay away from it:
constrained TPE puts every infeasible trial in its "bad" group, so it samples near the
feasible, expensive trials and rarely walks up to the constraint. NetAdapt (Yang et al. 2018)
walks there on purpose: from the current point, shrink one layer a step, keep the result if it
still meets the budget, repeat. Here every other trial after the start-up is such a step and
the rest are TPE's, which fills in the accurate part of the front.

A descent step, chosen from the study's history alone (so workers on several machines share
it, and a resumed study carries on where it stopped):

- it starts at the no-compression baseline; a round asks every move from the current parent:
  shrink one channel group by a share of its current width (DESCENT_SHARE, at least one SIMD
  unit) or drop one residual block the parent keeps, every other knob the parent's;
- when the round is told, the next parent is its feasible child that lost the least accuracy
  per unit of latency saved (NetAdapt picks the most accurate proposal at a fixed saving; ours
  differ in saving, so the ratio); a round with no feasible child is asked again at half the
  step; a group whose step falls below one SIMD unit, and a block dropped once, have no step
  left; with none left the descent ends and TPE takes every trial;
- a round's point already in the study is not asked again (its result counts), and while the
  round's last points run elsewhere, TPE takes the trial.

TPE's own trials are drawn again (up to RESAMPLES times, then at random) when their rounded
widths are a point the study has measured: on a residual CNN whose 16-channel groups round to four widths, plain
TPE spent 18-24 of 60 trials on repeats.

Each descent trial records its step in the user attribute `descent` (parent number, move,
attempt, point); the walk itself is replayed from the trials' points and results.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from edgesparse.search.space import DEPTH_PREFIX, DROP, KEEP, KEEP_PREFIX, SearchSpace, asked_value
from edgesparse.search.ehvi import key as _key
from edgesparse.search.tune import feasible as _feasible

DESCENT_KEY = "descent"
DESCENT_SHARE = 0.5      # a first step removes half of the group's current width
RESAMPLES = 20          # TPE draws per trial before a repeated point is accepted
COST = 1                 # objective index of latency (study.OBJECTIVES: accuracy, latency_ms, bytes)


def _optuna():
    import optuna

    return optuna


def make(inner, space: SearchSpace, seed: int | None, startup: int):
    """The sampler: `inner` (TPE) wrapped. The BaseSampler subclass is defined here, not at
    import, because optuna is an optional extra."""
    optuna = _optuna()

    class _Descent(optuna.samplers.BaseSampler):
        def __init__(self):
            self.inner = inner
            self.space = space
            self.startup = startup
            self._rng = np.random.default_rng(seed)
            self._proposals: dict[int, dict[str, Any]] = {}    # trial id -> the point it asks

        # ---- Optuna's sampler interface
        def reseed_rng(self) -> None:
            self._rng = np.random.default_rng()
            self.inner.reseed_rng()

        def before_trial(self, study, trial) -> None:
            self.inner.before_trial(study, trial)
            if trial.system_attrs.get("fixed_params") or trial.number < self.startup or trial.number % 2 == 0:
                return
            step = propose(study, self.space, self._rng)
            if step is None:
                return
            point, attrs = step
            study._storage.set_trial_user_attr(trial._trial_id, DESCENT_KEY, attrs)
            self._proposals[trial._trial_id] = point

        def infer_relative_search_space(self, study, trial):
            if trial._trial_id in self._proposals:
                return {}
            return self.inner.infer_relative_search_space(study, trial)

        def sample_relative(self, study, trial, search_space):
            if trial._trial_id in self._proposals:
                return {}
            params = self.inner.sample_relative(study, trial, search_space)
            if len(params) < len(self.space.knobs):       # TPE's start-up: independent draws
                return params
            # Rounded to the target's widths, TPE draws a point it has measured again and again
            # (a third of the trials on the residual CNN: docs/benchmarks.md); draw again.
            seen = _asked_keys(study)
            for _ in range(RESAMPLES):
                if _key(self.space.built(params)) not in seen:
                    return params
                params = self.inner.sample_relative(study, trial, search_space)
            # TPE is sure of one cell (the space's floor, say): an unmeasured point at random.
            for _ in range(10 * RESAMPLES):
                drawn = {name: float(self._rng.uniform(d.low, d.high))
                         if isinstance(d, optuna.distributions.FloatDistribution)
                         else d.choices[int(self._rng.integers(len(d.choices)))]
                         for name, d in search_space.items()}
                if _key(self.space.built(drawn)) not in seen:
                    return drawn
            return params

        def sample_independent(self, study, trial, name, distribution):
            point = self._proposals.get(trial._trial_id)
            if point is not None and name in point:
                return asked_value(point[name], distribution)
            return self.inner.sample_independent(study, trial, name, distribution)

        def after_trial(self, study, trial, state, values) -> None:
            self._proposals.pop(trial._trial_id, None)
            self.inner.after_trial(study, trial, state, values)

    return _Descent()


def _point(t) -> dict[str, Any]:
    d = t.user_attrs.get(DESCENT_KEY)
    return dict(t.user_attrs.get("point") or (d or {}).get("point") or t.params)




def _asked_keys(study) -> set[tuple]:
    return {_key(_point(t)) for t in study.get_trials(deepcopy=False) if t.params or t.user_attrs}


def moves(space: SearchSpace, point: dict[str, Any]) -> list[str]:
    """The moves a point allows: shrink any group, drop any block it keeps."""
    out = [f"{KEEP_PREFIX}{g}" for g in space.groups]
    out += [f"{DEPTH_PREFIX}{b}" for b in space.block_names if point.get(f"{DEPTH_PREFIX}{b}", KEEP) == KEEP]
    return out


def stepped(space: SearchSpace, point: dict[str, Any], move: str, attempt: int) -> dict[str, Any] | None:
    """The point after `move` at its `attempt`-th try (0 = the full step), or None when the move
    has no step left (below one SIMD unit, below the knob's range, a block tried before)."""
    out = dict(point)
    if move.startswith(DEPTH_PREFIX):
        if attempt > 0:
            return None
        out[move] = DROP
        return out
    group = move[len(KEEP_PREFIX):]
    size, unit = space.group_sizes[group], min(space.round_to, space.group_sizes[group])
    units = int(round(float(point[move]) * size / unit))
    shrink = math.floor(units * DESCENT_SHARE / 2 ** attempt)
    if attempt == 0:
        shrink = max(1, shrink)
    low = next(k.low for k in space.knobs if k.name == move)
    width = (units - shrink) * unit
    if shrink < 1 or width < unit or width / size < low - 1e-9:
        return None
    out[move] = width / size
    return out


def _root(done):
    """Where the descent starts: the no-compression baseline (tune enqueues it first), else the
    most accurate feasible trial."""
    for t in done:
        if t.user_attrs.get("baseline") == "none":
            return t
    feasible = [t for t in done if _feasible(t)]
    return max(feasible, key=lambda t: (t.values[0], -t.values[COST], -t.number)) if feasible else None


def _best_child(parent, children):
    """NetAdapt's choice among a round's feasible results: the least accuracy lost per unit of
    cost saved (a child as accurate as its parent costs nothing: then the biggest saving)."""
    ok = [c for c in children if _feasible(c) and c.values[COST] < parent.values[COST]]
    if not ok:
        return None

    def lost_per_saved(c):
        saved = parent.values[COST] - c.values[COST]
        return (max(0.0, parent.values[0] - c.values[0]) / saved, -saved, c.number)

    return min(ok, key=lost_per_saved)


def propose(study, space: SearchSpace, rng) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The next descent step: (the point to ask, its `descent` record), or None when the round
    in progress has every point asked (TPE takes the trial) or the descent has ended.

    The walk is replayed from the study each time: from the root, a round asks every move at the
    current step; when all its points are told, the best feasible child (`_best_child`) is the
    next parent; a round with none is asked again at half the step; no step left ends it. A
    round's point that is in the study already (TPE may have asked it) is not asked again: its
    result counts."""
    optuna = _optuna()
    state = optuna.trial.TrialState
    trials = study.get_trials(deepcopy=False, states=(state.COMPLETE, state.RUNNING, state.FAIL, state.WAITING))
    by_key: dict[tuple, list] = {}
    for t in trials:
        by_key.setdefault(_key(_point(t)), []).append(t)
    done = [t for t in trials if t.state == state.COMPLETE and t.values is not None]
    parent, attempt = _root(done), 0
    while parent is not None:
        base = _point(parent)
        round_ = {m: p for m in moves(space, base) if (p := stepped(space, base, m, attempt)) is not None}
        if not round_:
            return None
        asked = {m: by_key.get(_key(p), []) for m, p in round_.items()}
        fresh = [m for m, ts in asked.items() if not ts]
        if fresh:
            move = fresh[int(rng.integers(len(fresh)))]
            return round_[move], {"parent": parent.number, "move": move, "attempt": attempt,
                                  "point": round_[move]}
        if any(t.state in (state.RUNNING, state.WAITING) for ts in asked.values() for t in ts):
            return None
        child = _best_child(parent, [t for ts in asked.values() for t in ts if t.state == state.COMPLETE])
        if child is None:
            attempt += 1
        else:
            parent, attempt = child, 0
    return None
