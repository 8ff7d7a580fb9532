"""Budgets: how many units each group loses.

Three ways to say how much to prune:
- `ratio`:  the fraction of channels (units) REMOVED, e.g. 0.5 removes half of them;
- `macs`:   the fraction of multiply-accumulates to KEEP, e.g. 0.5 = at most half the MACs;
- `params`: the fraction of parameters to KEEP.

Allocation:
- `uniform`: every prunable group loses the same fraction (found by bisection for MAC and
  parameter targets);
- `global`: units of all groups compete on their group-normalised scores;
- `sensitivity`: each group may lose as much as keeps its measured accuracy drop under a common
  tolerance, and the tolerance is bisected to meet the budget.

Every group keeps at least `min_channels` units, and its kept count is rounded UP to a multiple
of `round_to` (the target's SIMD width), so the budget is met with the constraints applied.

Per-group overrides (`per_group`, a keep fraction per producer layer name, e.g. set by a search)
pin that group's kept width exactly (no rounding: whoever set it chose it); the allocation
spreads the rest of the budget over the other groups.
MACs and parameters of a plan are computed from the channel maps without building the model.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edgesparse._tf import keras
from edgesparse.errors import UserError
from edgesparse.graph.channels import ChannelGraph
from edgesparse.graph.stats import count_macs, layer_macs
from edgesparse.graph.surgery import layer_keeps, planned_params

Removal = dict[int, np.ndarray]      # group id -> indices of removed units


@dataclass(frozen=True)
class Budget:
    kind: str          # "ratio" | "macs" | "params"
    value: float

    def describe(self) -> str:
        pct = f"{100 * self.value:.2f}".rstrip("0").rstrip(".") + "%"
        if self.kind == "ratio":
            return f"remove {pct} of the channels"
        return f"keep at most {pct} of the {'MACs' if self.kind == 'macs' else 'parameters'}"


def macs_of(graph: ChannelGraph, keeps: dict[str, tuple]) -> int:
    """MACs (batch 1) of the model a plan describes: each layer's MAC formula
    (graph/layers.py) at its kept widths."""
    total = 0
    seen = set()
    for call in graph.calls:
        layer = call.layer
        if layer.name in seen:
            continue
        seen.add(layer.name)
        if isinstance(layer, keras.Model):          # a nested model is not pruned inside
            total += count_macs(layer)
            continue
        in_keep, out_keep = keeps.get(layer.name, (None, None))
        total += layer_macs(layer, None if in_keep is None else len(in_keep),
                            None if out_keep is None else len(out_keep))
    return int(total)


def per_group_widths(graph: ChannelGraph, per_group: dict[str, float] | None) -> dict[str, int]:
    """Keep fractions by producer name -> kept widths (units), checked against the channel graph
    before any work: an unknown name, or one whose group cannot be pruned, is a UserError."""
    if not per_group:
        return {}
    owner = {name: g for g in graph.groups for name in g.producers}
    valid = sorted(name for g in graph.prunable_groups for name in g.producers)
    widths, seen = {}, {}
    for name, keep in per_group.items():
        g = owner.get(name)
        if g is None:
            few = ", ".join(valid[:6]) + (", ..." if len(valid) > 6 else "")
            raise UserError(f"prune per_group names {name!r}, which produces no channel group of this model; "
                            f"groups are named by their producer layers: {few}")
        if not g.prunable:
            raise UserError(f"prune per_group names {name!r}, whose channel group cannot be pruned "
                            f"({(g.reasons or ['fixed width'])[0]}); remove it from per_group")
        width = max(1, int(round(keep * g.size)))
        if seen.get(g.id, width) != width:
            raise UserError(f"prune per_group gives two widths to one channel group ({', '.join(g.producers)}); "
                            "name each group once")
        seen[g.id] = width
        widths[name] = width
    return widths


def reachable(fraction: float) -> float:
    """A kept fraction rounded UP to 4 decimals: a budget a plan at `fraction` meets."""
    return math.ceil(fraction * 10_000 - 1e-6) / 10_000


class Planner:
    """Turns scores and a budget into a removal plan, honouring min channels and rounding.
    `widths` (producer name -> kept units, from `per_group_widths`) pins those groups."""

    def __init__(self, graph: ChannelGraph, scores: dict[int, np.ndarray],
                 min_channels: int = 1, round_to: int = 1, widths: dict[str, int] | None = None):
        self.graph = graph
        self.scores = scores
        self.min_channels = max(1, int(min_channels))
        self.round_to = max(1, int(round_to))
        self.groups = {g.id: g for g in graph.prunable_groups}
        self.pinned = {g.id: min(g.size, w) for g in self.groups.values()
                       for name, w in (widths or {}).items() if name in g.producers}
        self.order = {gid: np.argsort(scores[gid], kind="stable") for gid in self.groups}
        full = layer_keeps(graph, graph.full_keep())
        self.macs_full = macs_of(graph, full)
        self.params_full = planned_params(graph.model, full)

    # ---------------------------------------------------------------- constraints

    def allowed_removal(self, gid: int, wanted: int) -> int:
        size = self.groups[gid].size
        keep = max(size - int(wanted), min(self.min_channels, size))
        keep = min(size, int(math.ceil(keep / self.round_to) * self.round_to))
        return size - keep

    def removal(self, counts: dict[int, int]) -> Removal:
        """Remove the lowest-scored units of each group, counts adjusted to the constraints."""
        plan = {}
        for gid, n in counts.items():
            n = self.groups[gid].size - self.pinned[gid] if gid in self.pinned else self.allowed_removal(gid, n)
            removed = list(self.order[gid][:n])
            plan[gid] = np.array(self._keep_every_producer(gid, removed), dtype=np.int64)
        return plan

    def _keep_every_producer(self, gid: int, removed: list[int]) -> list[int]:
        """A unit may hold channels of only some producers (Concatenate then Add): put back the
        best removed units until every producer keeps min_channels of its own."""
        g, graph = self.groups[gid], self.graph
        for p in g.producers:
            atoms = graph.producer_atoms[p]
            need = min(self.min_channels, len(atoms))
            while removed:
                gone = set(removed)
                kept = sum(1 for a in atoms if int(graph.atom_unit[a]) not in gone)
                if kept >= need:
                    break
                mine = [u for u in removed if any(graph.atom_producer[a] == p for a in g.units[u])]
                if not mine:
                    break
                removed.remove(mine[-1])       # the highest-scored removed unit of this producer
        return removed

    # ---------------------------------------------------------------- measures

    def keeps(self, removed: Removal) -> dict[str, tuple]:
        return layer_keeps(self.graph, self.graph.atom_keep_from_units(removed))

    def kept_fraction(self, kind: str, removed: Removal) -> float:
        """Fraction kept of MACs/params, or for `ratio` the fraction of channels REMOVED."""
        if kind == "ratio":
            total = sum(g.size for g in self.groups.values())
            return sum(len(v) for v in removed.values()) / max(total, 1)
        keeps = self.keeps(removed)
        if kind == "macs":
            return macs_of(self.graph, keeps) / max(self.macs_full, 1)
        return planned_params(self.graph.model, keeps) / max(self.params_full, 1)

    def least_kept(self, kind: str) -> float:
        """The least fraction of MACs or parameters a plan can keep: every group at
        min_channels, rounded up to round_to (pinned groups at their width)."""
        return self.kept_fraction(kind, self.removal({gid: g.size for gid, g in self.groups.items()}))

    def meets(self, budget: Budget, removed: Removal) -> bool:
        got = self.kept_fraction(budget.kind, removed)
        return got >= budget.value - 1e-9 if budget.kind == "ratio" else got <= budget.value + 1e-9

    # ---------------------------------------------------------------- allocation

    def uniform(self, budget: Budget) -> Removal:
        def at(r: float) -> Removal:
            return self.removal({gid: int(round(r * g.size)) for gid, g in self.groups.items()})
        if budget.kind == "ratio" and not self.pinned:
            return at(budget.value)
        return self._bisect(budget, at, 0.0, 1.0)

    def global_(self, budget: Budget) -> Removal:
        gids = [g for g in self.groups if g not in self.pinned]   # pinned groups do not compete
        normed = np.concatenate([self.scores[g] / max(float(np.mean(self.scores[g])), 1e-30) for g in gids]
                                or [np.zeros(0)])
        owner = np.concatenate([np.full(self.groups[g].size, g) for g in gids] or [np.zeros(0, np.int64)])
        ranked = owner[np.argsort(normed, kind="stable")]

        def at(frac: float) -> Removal:
            n = int(round(frac * len(ranked)))
            counts = {g: int(np.sum(ranked[:n] == g)) for g in self.groups}
            return self.removal(counts)
        if budget.kind == "ratio" and not self.pinned:
            return at(budget.value)
        return self._bisect(budget, at, 0.0, 1.0)

    def from_sensitivity(self, budget: Budget, curves: dict[int, tuple[np.ndarray, np.ndarray]]) -> Removal:
        """curves: group id -> (ratios, accuracy drop at each). A common tolerance on the drop
        sets each group's ratio (the largest ratio whose drop stays under it)."""
        def ratio_at(gid: int, tol: float) -> float:
            ratios, drops = curves[gid]
            ok = ratios[drops <= tol]
            return float(ok.max()) if len(ok) else 0.0

        def at(t: float) -> Removal:
            tol = t * span
            return self.removal({gid: int(round(ratio_at(gid, tol) * g.size)) for gid, g in self.groups.items()})
        span = max([float(np.max(d)) for _, d in curves.values()] + [1e-6]) * 1.0001
        return self._bisect(budget, at, 0.0, 1.0, what="with the ratios the sensitivity analysis tried")

    def _bisect(self, budget: Budget, at, lo: float, hi: float, what: str = "") -> Removal:
        """Smallest setting in [lo, hi] whose plan meets the budget (plans grow with the setting)."""
        best = at(hi)
        if not self.meets(budget, best):
            got = self.kept_fraction(budget.kind, best)
            raise UserError(
                f"cannot reach the target ({budget.describe()}): pruning every group to "
                f"min_channels={self.min_channels} (round_to={self.round_to}){' ' + what if what else ''} still keeps "
                f"{got:.1%}, the least this model can keep; set `{budget.kind}` of the prune pass to "
                f"{reachable(got)} or more (--{budget.kind} for `edgesparse prune`)"
                + (", or lower min_channels/round_to" if self.min_channels > 1 or self.round_to > 1 else
                   "; what stays is in groups it cannot prune (`edgesparse inspect` lists them and why)"))
        if self.meets(budget, at(lo)):
            return at(lo)
        for _ in range(40):
            mid = (lo + hi) / 2
            plan = at(mid)
            if self.meets(budget, plan):
                hi, best = mid, plan
            else:
                lo = mid
            if hi - lo < 1e-5:
                break
        return best
