"""The knobs a search turns, named by stable layer names so a point can be saved, replayed and
written into a recipe.

- `keep:<producer>`: the fraction of a prunable channel group's units to keep, continuous in
  [min_keep, 1]; the group is named by its first producer layer (any producer of a group names
  it in `prune: {per_group: ...}`). Kept counts are rounded by the prune pass for the target's
  kernels after sampling, so nearby samples may land on the same architecture.
- `precision`: the artifact precision, where the target allows more than one.

A space has a fingerprint (the model file's hash plus the knobs and their ranges): a study that
was started with another model or another space is refused instead of mixed.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

KEEP_PREFIX = "keep:"


@dataclass(frozen=True)
class Knob:
    name: str
    kind: str                      # "float" | "categorical"
    low: float = 0.0
    high: float = 1.0
    choices: tuple[str, ...] = ()

    def describe(self) -> dict[str, Any]:
        if self.kind == "float":
            return {"name": self.name, "kind": self.kind, "low": self.low, "high": self.high}
        return {"name": self.name, "kind": self.kind, "choices": list(self.choices)}


@dataclass(frozen=True)
class SearchSpace:
    knobs: tuple[Knob, ...]
    model_sha256: str
    group_sizes: dict[str, int] = field(default_factory=dict)   # producer -> channels
    default_precision: str = "int8"                             # when precision is not a knob
    round_to: int = 1                                           # the target's SIMD width

    @property
    def groups(self) -> list[str]:
        return [k.name[len(KEEP_PREFIX):] for k in self.knobs if k.name.startswith(KEEP_PREFIX)]

    @property
    def precisions(self) -> tuple[str, ...]:
        for k in self.knobs:
            if k.name == "precision":
                return k.choices
        return ()

    def fingerprint(self) -> str:
        blob = json.dumps({"model": self.model_sha256, "round_to": self.round_to,
                           "knobs": [k.describe() for k in self.knobs]},
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def sample(self, trial) -> dict[str, Any]:
        """Ask an Optuna trial for every knob (the trial records the distributions), then round
        each keep fraction to a width the target's kernels like."""
        params: dict[str, Any] = {}
        for k in self.knobs:
            if k.kind == "float":
                value = trial.suggest_float(k.name, k.low, k.high)
                group = k.name[len(KEEP_PREFIX):]
                params[k.name] = rounded(value, self.group_sizes[group], self.round_to)
            else:
                params[k.name] = trial.suggest_categorical(k.name, list(k.choices))
        return params

    def uniform(self, keep: float, precision: str | None = None) -> dict[str, Any]:
        """A point where every group keeps the same fraction: the default recipe's way."""
        point: dict[str, Any] = {f"{KEEP_PREFIX}{g}": float(keep) for g in self.groups}
        if self.precisions:
            point["precision"] = precision or self.default_precision
        return point

    def precision_of(self, point: dict[str, Any]) -> str:
        return str(point.get("precision", self.default_precision))

    def clip(self, point: dict[str, Any]) -> dict[str, Any]:
        """The point moved inside the knobs' ranges (enqueued points must lie in the space)."""
        out = dict(point)
        for k in self.knobs:
            if k.kind == "float" and k.name in out:
                out[k.name] = float(min(max(out[k.name], k.low), k.high))
        return out


def per_group(point: dict[str, Any]) -> dict[str, float]:
    """The `prune: {per_group: ...}` mapping of a point (producer name -> keep fraction)."""
    return {name[len(KEEP_PREFIX):]: round(float(v), 6) for name, v in point.items()
            if name.startswith(KEEP_PREFIX)}


def rounded(fraction: float, size: int, round_to: int) -> float:
    """A keep fraction moved to the nearest width the target's kernels like: a multiple of
    `round_to` (its SIMD width), at least one unit, at most the whole group."""
    width = int(round(fraction * size / round_to)) * round_to
    width = min(size, max(min(round_to, size), width))
    return width / size


def build_space(model, model_sha256: str, precisions: list[str], min_keep: float = 0.1,
                round_to: int = 1) -> SearchSpace:
    """The space of one model: a keep fraction per prunable group, and the precisions given."""
    from edgesparse.graph.channels import ChannelGraph

    graph = ChannelGraph(model)
    knobs = []
    sizes = {}
    for g in graph.prunable_groups:
        name = g.producers[0]
        sizes[name] = g.size
        # A group of n units cannot keep less than one unit.
        low = max(min_keep, 1.0 / g.size)
        knobs.append(Knob(f"{KEEP_PREFIX}{name}", "float", low=round(low, 4), high=1.0))
    if len(precisions) > 1:
        knobs.append(Knob("precision", "categorical", choices=tuple(precisions)))
    return SearchSpace(tuple(knobs), model_sha256, sizes, default_precision=precisions[0],
                       round_to=max(1, int(round_to)))
