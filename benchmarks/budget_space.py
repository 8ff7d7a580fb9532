"""The keep fractions of a search space as a MAC budget and an allocation (AMC's action space).

A benchmark's module (tune_front.py --parametrization budget): measured at stop 20, it did not
beat random search, so `edgesparse tune` does not use it (docs/benchmarks.md).

Instead of one independent keep fraction per channel group, a point is

- `budget`: the fraction of the full model's MACs the point may spend, in [lowest, 1] (lowest:
  every group at its smallest keep fraction);
- `share:<group>`: how much of that budget the group gets, in [SHARE_LOW, 1]; only the ratios
  matter (the shares are divided by the largest).

They map deterministically to keep fractions that hit the budget: keep_g = clip(s * w_g, low_g, 1)
with the one scalar s found by bisection so that MACs(keeps) = budget * MACs(full). MACs are
non-decreasing in s, and increasing where any group is strictly inside its range, so s is unique
there; equal shares give keep_g = clip(s, low_g, 1) for every group: the uniform point.

MACs of a point (`MacModel.macs`) are counted from the widths alone, before anything is built:
each weighted layer's full MACs (graph/stats.py) times the kept fraction of its input side times
that of its output side (a depthwise conv, whose two sides are one group, scales linearly in it);
the other layers' MACs are constant (a SeparableConv's too: an
approximation; none in the benchmark models). Fractions are taken unrounded (so the map is continuous);
the SIMD rounding of the space comes after, so a built point misses the budget by its rounding.

Pure numpy and a SearchSpace: `MacModel.of(model, space)` is the only place that reads a model.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgesparse.search.space import KEEP_PREFIX, SearchSpace

BUDGET = "budget"
SHARE_PREFIX = "share:"
SHARE_LOW = 0.1          # a 10:1 ratio spans the whole keep range [0.1, 1], so budget 1 is always reachable
DECIMALS = 9             # keep fractions are rounded to this many decimals after bisection


@dataclass(frozen=True)
class LayerMacs:
    full: int                  # MACs at the model's own widths
    in_group: str | None       # the channel group its input side belongs to (None: fixed)
    out_group: str | None
    linear: bool = False       # a depthwise conv: MACs scale with its one group, not its square


@dataclass(frozen=True)
class MacModel:
    """How a point's MACs follow from its keep fractions."""
    layers: dict[str, LayerMacs]
    fixed: int                 # MACs of the layers no group touches (or that have no kernel)

    @classmethod
    def of(cls, model, space: SearchSpace) -> "MacModel":
        from edgesparse.graph.stats import macs_by_layer

        per_layer = macs_by_layer(model)
        kinds = {layer.name: type(layer).__name__ for layer in model.layers}
        layers = {}
        for name, rl in space.rank_layers.items():
            if name not in per_layer:
                continue
            layers[name] = LayerMacs(int(per_layer[name]), rl.in_group, rl.out_group,
                                     linear=kinds.get(name, "").startswith("DepthwiseConv"))
        # A depthwise conv has no `kernel`, so the space's weighted layers miss it: it carries the
        # channels of the group it is a member of.
        from edgesparse.graph.channels import ChannelGraph

        for g in ChannelGraph(model).prunable_groups:
            name = next((n for n in space.groups if n in g.producers), g.producers[0])
            for m in g.members:
                if m in per_layer and m not in layers and kinds.get(m, "").startswith("DepthwiseConv"):
                    layers[m] = LayerMacs(int(per_layer[m]), name, name, linear=True)
        fixed = int(sum(v for n, v in per_layer.items() if n not in layers))
        return cls(layers, fixed)

    @property
    def full(self) -> int:
        return self.fixed + sum(layer.full for layer in self.layers.values())

    def macs(self, keeps: dict[str, float], gone: set[str] = frozenset()) -> float:
        """MACs at per-group keep fractions (group name -> fraction; a missing group keeps all);
        layers in `gone` (dropped blocks) count nothing."""
        total = float(self.fixed)
        for name, layer in self.layers.items():
            if name in gone:
                continue
            fin = keeps.get(layer.in_group, 1.0) if layer.in_group is not None else 1.0
            fout = keeps.get(layer.out_group, 1.0) if layer.out_group is not None else 1.0
            total += layer.full * (fin if layer.linear else fin * fout)
        return total

    def point_macs(self, space: SearchSpace, point: dict[str, Any]) -> float:
        """MACs of a point of the space, at its keep fractions as given (rounded or not)."""
        keeps = {n[len(KEEP_PREFIX):]: float(v) for n, v in point.items() if n.startswith(KEEP_PREFIX)}
        return self.macs(keeps, space.removed_layers(point))


SCALES = ("macs", "keep")


class BudgetMap:
    """(budget, shares) <-> keep fractions of one space.

    `scale` is what the budget knob counts: `macs`, the fraction of the full model's MACs; or
    `keep`, the uniform keep fraction that would spend the same MACs (budget u means the MACs of
    every group at clip(u)): the same budgets, spread over the knob's range as the uniform sweep
    spreads them (MACs grow about as u squared), not evenly in MACs."""

    def __init__(self, space: SearchSpace, macs: MacModel, scale: str = "macs"):
        if scale not in SCALES:
            raise ValueError(f"budget scale {scale!r}: one of {', '.join(SCALES)}")
        self.scale = scale
        self.space = space
        self.mac_model = macs
        self.groups = space.groups
        knobs = {k.name: k for k in space.knobs}
        self.low = np.array([knobs[f"{KEEP_PREFIX}{g}"].low for g in self.groups], dtype=float)
        self.high = np.array([knobs[f"{KEEP_PREFIX}{g}"].high for g in self.groups], dtype=float)
        self.full = float(macs.full)
        self.lowest = self._macs(self.low) / self.full

    def fraction(self, value: float, gone: set[str] = frozenset()) -> float:
        """The budget knob's value as a fraction of the full model's MACs."""
        if self.scale == "macs":
            return float(value)
        return self._macs(np.clip(float(value), self.low, self.high), gone) / self.full

    def _macs(self, keeps: np.ndarray, gone: set[str] = frozenset()) -> float:
        return self.mac_model.macs(dict(zip(self.groups, keeps.tolist())), gone)

    def keeps(self, budget: float, shares: dict[str, float], gone: set[str] = frozenset()) -> dict[str, float]:
        """Per-group keep fractions whose MACs are `budget` x the full model's (budget clipped to
        what the space can reach)."""
        w = np.array([float(shares.get(g, 1.0)) for g in self.groups], dtype=float)
        w = np.clip(w, 0.0, None)
        w = w / w.max() if w.max() > 0 else np.ones_like(w)
        target = float(budget) * self.full

        def at(s: float) -> np.ndarray:
            return np.clip(s * w, self.low, self.high)

        lo, hi = 0.0, 1.0
        while self._macs(at(hi), gone) < target and hi < 1e6:
            hi *= 2.0
        if self._macs(at(hi), gone) <= target:
            return self._named(at(hi))
        if self._macs(at(lo), gone) >= target:
            return self._named(at(lo))
        for _ in range(100):
            mid = 0.5 * (lo + hi)
            if self._macs(at(mid), gone) < target:
                lo = mid
            else:
                hi = mid
            if hi - lo < 1e-13:
                break
        return self._named(at(0.5 * (lo + hi)))

    def _named(self, keeps: np.ndarray) -> dict[str, float]:
        return {g: round(float(k), DECIMALS) for g, k in zip(self.groups, keeps)}

    def point(self, params: dict[str, Any]) -> dict[str, Any]:
        """A point of the space (keep fractions unrounded) from a budget-space point: its budget
        and shares mapped, every other knob (precision, depth, rank) passed through."""
        shares = {n[len(SHARE_PREFIX):]: float(v) for n, v in params.items() if n.startswith(SHARE_PREFIX)}
        rest = {n: v for n, v in params.items() if n != BUDGET and not n.startswith(SHARE_PREFIX)}
        gone = self.space.removed_layers(rest)
        keeps = self.keeps(self.fraction(params[BUDGET], gone), shares, gone)
        return {**{f"{KEEP_PREFIX}{g}": k for g, k in keeps.items()}, **rest}

    def params_of(self, point: dict[str, Any]) -> dict[str, Any]:
        """The budget-space equivalent of a uniform point (every share equal): what a baseline is
        enqueued as. Its budget is the point's MACs (unrounded) over the full model's."""
        clipped = self.space.clip(point)
        if self.scale == "macs":
            value = self.mac_model.point_macs(self.space, clipped) / self.full
            out = {BUDGET: min(1.0, max(self.lowest, value))}
        else:
            keeps = [float(v) for n, v in point.items() if n.startswith(KEEP_PREFIX)]
            out = {BUDGET: min(1.0, max(float(self.low.min()), max(keeps)))}
        out.update({f"{SHARE_PREFIX}{g}": 1.0 for g in self.groups})
        out.update({n: v for n, v in point.items() if not n.startswith(KEEP_PREFIX)})
        return out

    def knobs(self) -> list[tuple[str, float, float]]:
        """(name, low, high) of the float knobs that replace the keep knobs."""
        low = self.lowest if self.scale == "macs" else float(self.low.min())
        return [(BUDGET, round(low, 6), 1.0)] + [(f"{SHARE_PREFIX}{g}", SHARE_LOW, 1.0) for g in self.groups]


class BudgetSpace:
    """A SearchSpace whose `sample` asks a trial for a budget and shares instead of keep
    fractions, and returns the keep point they map to (rounded to the SIMD width as the space
    rounds). Everything else is the space's own, so a trial builds it unchanged."""

    def __init__(self, space: SearchSpace, macs: MacModel, scale: str = "macs"):
        self._space = space
        self.budget_map = BudgetMap(space, macs, scale)

    def __getattr__(self, name):
        return getattr(self._space, name)

    def sample(self, trial) -> dict[str, Any]:
        from edgesparse.search.space import rounded

        params: dict[str, Any] = {}
        for name, low, high in self.budget_map.knobs():
            params[name] = trial.suggest_float(name, low, high)
        for k in self._space.knobs:
            if k.kind != "float":
                params[k.name] = trial.suggest_categorical(k.name, list(k.choices))
        point = self.budget_map.point(params)
        for k in self._space.knobs:
            if k.kind == "float":
                g = k.name[len(KEEP_PREFIX):]
                point[k.name] = rounded(point[k.name], self._space.group_sizes[g], self._space.round_to)
        return point

