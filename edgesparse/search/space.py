"""The knobs a search turns, named by stable layer names so a point can be saved, replayed and
written into a recipe. Four families (`--knobs`, docs/tune.md):

- `keep:<producer>`: the fraction of a prunable channel group's units to keep, continuous in
  [min_keep, 1]; the group is named by its first producer layer (any producer of a group names
  it in `prune: {per_group: ...}`). Kept counts are rounded to the target's SIMD width when
  sampled, so nearby samples land on the same architecture.
- `depth:<add>`: keep or drop a residual block whose branch prune can remove whole, named by its
  Add layer (`prune: {blocks: [add, ...]}`). Only models with such blocks get depth knobs.
- `rank:<layer>`: factorise a layer lowrank can factorise, at a fraction of its full rank after
  pruning (rounded to the SIMD width like widths), or `none` (left whole). Opt-in.
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
DEPTH_PREFIX = "depth:"
RANK_PREFIX = "rank:"
KEEP, DROP = "keep", "drop"
NOT_FACTORISED = "none"
RANK_FRACTIONS = ("0.5", "0.25")       # of the full rank after pruning; categorical, so TPE sees 3 values
FAMILIES = ("keep", "depth", "rank", "precision")
DEFAULT_FAMILIES = ("keep", "depth", "precision")   # rank is opt-in: docs/tune.md says why


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
    group_producers: dict[str, tuple[str, ...]] = field(default_factory=dict)   # group name -> producers
    blocks: dict[str, tuple[str, ...]] = field(default_factory=dict)   # Add name -> its branch's layers
    rank_layers: dict[str, "RankLayer"] = field(default_factory=dict)

    @property
    def groups(self) -> list[str]:
        return [k.name[len(KEEP_PREFIX):] for k in self.knobs if k.name.startswith(KEEP_PREFIX)]

    @property
    def precisions(self) -> tuple[str, ...]:
        for k in self.knobs:
            if k.name == "precision":
                return k.choices
        return ()

    @property
    def block_names(self) -> list[str]:
        return [k.name[len(DEPTH_PREFIX):] for k in self.knobs if k.name.startswith(DEPTH_PREFIX)]

    @property
    def rank_names(self) -> list[str]:
        return [k.name[len(RANK_PREFIX):] for k in self.knobs if k.name.startswith(RANK_PREFIX)]

    def fingerprint(self) -> str:
        blob = json.dumps({"model": self.model_sha256, "round_to": self.round_to,
                           "knobs": [k.describe() for k in self.knobs]},
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def sample(self, trial) -> dict[str, Any]:
        """Ask an Optuna trial for every knob (the trial records the distributions), then round
        each keep fraction to a width the target's kernels like."""
        return self.built({k.name: trial.suggest_float(k.name, k.low, k.high) if k.kind == "float"
                           else trial.suggest_categorical(k.name, list(k.choices)) for k in self.knobs})

    def built(self, params: dict[str, Any]) -> dict[str, Any]:
        """The point that sampled values build: keep fractions rounded to the target's widths."""
        return {name: rounded(float(v), self.group_sizes[name[len(KEEP_PREFIX):]], self.round_to)
                if name.startswith(KEEP_PREFIX) else v for name, v in params.items()}

    def uniform(self, keep: float, precision: str | None = None) -> dict[str, Any]:
        """A point where every group keeps the same fraction: the default recipe's way."""
        point: dict[str, Any] = {f"{KEEP_PREFIX}{g}": float(keep) for g in self.groups}
        point.update({f"{DEPTH_PREFIX}{b}": KEEP for b in self.block_names})
        point.update({f"{RANK_PREFIX}{r}": NOT_FACTORISED for r in self.rank_names})
        if self.precisions:
            point["precision"] = precision or self.default_precision
        return point

    def precision_of(self, point: dict[str, Any]) -> str:
        return str(point.get("precision", self.default_precision))

    def dropped(self, point: dict[str, Any]) -> list[str]:
        """The Add names of the blocks the point removes (the `prune: {blocks: [...]}` list)."""
        return [b for b in self.block_names if point.get(f"{DEPTH_PREFIX}{b}", KEEP) == DROP]

    def removed_layers(self, point: dict[str, Any]) -> set[str]:
        return {n for b in self.dropped(point) for n in self.blocks[b]}

    def per_group(self, point: dict[str, Any]) -> dict[str, float]:
        """The `prune: {per_group: ...}` mapping of a point. A group whose producers all sit in a
        dropped branch is gone with it; a group whose naming producer was dropped but that lives
        on (tied through the Add) is named by a surviving producer."""
        gone = self.removed_layers(point)
        out = {}
        for group, keep in per_group(point).items():
            alive = [p for p in self.group_producers.get(group, (group,)) if p not in gone]
            if alive:
                out[alive[0]] = keep
        return out

    def ranks(self, point: dict[str, Any]) -> dict[str, int]:
        """The `lowrank: {ranks: ...}` mapping of a point: each factorised layer's rank, a fraction
        of its full rank at the point's widths, rounded to the SIMD width (at least one unit)."""
        gone = self.removed_layers(point)
        widths = {g: int(round(v * self.group_sizes[g])) for g, v in per_group(point).items()}
        out = {}
        for name in self.rank_names:
            value = point.get(f"{RANK_PREFIX}{name}", NOT_FACTORISED)
            if value == NOT_FACTORISED or name in gone:
                continue
            full = self.rank_layers[name].full_rank(widths, self.group_sizes)
            r = int(round(float(value) * full / self.round_to)) * self.round_to
            out[name] = max(1, min(full, r))
        return out

    def layer_widths(self, point: dict[str, Any]) -> dict[str, tuple[int, int]]:
        """(inputs, outputs) of every weighted layer the point keeps, at its widths: the keys of a
        per-layer latency table."""
        gone = self.removed_layers(point)
        widths = {g: int(round(v * self.group_sizes[g])) for g, v in per_group(point).items()}
        return {n: layer.at(widths, self.group_sizes) for n, layer in self.rank_layers.items() if n not in gone}

    def group_widths(self, group: str) -> list[int]:
        """Every width a sampled keep fraction of `group` rounds to (see `rounded`)."""
        knob = next((k for k in self.knobs if k.name == f"{KEEP_PREFIX}{group}"), None)
        size = self.group_sizes[group]
        if knob is None:
            return [size]
        low = int(round(rounded(knob.low, size, self.round_to) * size))
        return sorted({low, size, *range(low, size + 1, self.round_to)})

    def table_pairs(self) -> dict[str, list[tuple[int, int]]]:
        """Every (inputs, outputs) each weighted layer can have in this space: what a per-layer
        latency table measures. A layer whose two sides are one group (a depthwise conv) moves
        them together."""
        out = {}
        for name, layer in self.rank_layers.items():
            ins = self.group_widths(layer.in_group) if layer.in_group in self.group_sizes else [None]
            outs = self.group_widths(layer.out_group) if layer.out_group in self.group_sizes else [None]
            pairs = set()
            for i in ins:
                for o in (outs if layer.out_group != layer.in_group else [i]):
                    widths = {g: w for g, w in ((layer.in_group, i), (layer.out_group, o)) if w is not None}
                    pairs.add(layer.at(widths, self.group_sizes))
            out[name] = sorted(pairs)
        return out

    def clip(self, point: dict[str, Any]) -> dict[str, Any]:
        """The point moved inside the knobs' ranges (enqueued points must lie in the space)."""
        out = dict(point)
        for k in self.knobs:
            if k.kind == "float" and k.name in out:
                out[k.name] = float(min(max(out[k.name], k.low), k.high))
        return out


def asked_value(value: Any, distribution) -> Any:
    """A point's value as an Optuna sampler returns it for `distribution`: a rounded width can sit
    a hair below its knob's low end, and the same width rounds back from inside the range."""
    from optuna.distributions import FloatDistribution

    if not isinstance(distribution, FloatDistribution):
        return value
    return min(max(float(value), distribution.low), distribution.high)


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


@dataclass(frozen=True)
class RankLayer:
    """A weighted layer's input and output channels, and the channel groups they belong to (None:
    not prunable, so fixed). After pruning, each side scales with its group's kept fraction
    (a Dense after a Flatten reads every kept channel at every position)."""
    inputs: int
    outputs: int
    in_group: str | None
    out_group: str | None
    factorisable: bool = False

    def at(self, widths: dict[str, int], sizes: dict[str, int]) -> tuple[int, int]:
        def side(n, group):
            if group is None or group not in widths:
                return n
            return max(1, int(round(n * widths[group] / sizes[group])))
        return side(self.inputs, self.in_group), side(self.outputs, self.out_group)

    def full_rank(self, widths: dict[str, int], sizes: dict[str, int]) -> int:
        return min(self.at(widths, sizes))


def build_space(model, model_sha256: str, precisions: list[str], min_keep: float = 0.1,
                round_to: int = 1, families: tuple[str, ...] = DEFAULT_FAMILIES) -> SearchSpace:
    """The space of one model: the knobs of the families asked for (see the module doc)."""
    from edgesparse.errors import UserError
    from edgesparse.graph.channels import ChannelGraph
    from edgesparse.graph.depth import residual_blocks

    unknown = [f for f in families if f not in FAMILIES]
    if unknown or not families:
        raise UserError(f"--knobs {','.join(families)}: choose from {', '.join(FAMILIES)} (comma-separated)")
    round_to = max(1, int(round_to))
    graph = ChannelGraph(model)
    knobs = []
    sizes, producers = {}, {}
    for g in graph.prunable_groups:
        name = g.producers[0]
        sizes[name] = g.size
        producers[name] = tuple(g.producers)
        if "keep" in families:
            # A group of n units cannot keep less than one unit.
            low = max(min_keep, 1.0 / g.size)
            knobs.append(Knob(f"{KEEP_PREFIX}{name}", "float", low=round(low, 4), high=1.0))
    blocks = {b.add: tuple(b.layers) for b in residual_blocks(model)} if "depth" in families else {}
    knobs += [Knob(f"{DEPTH_PREFIX}{add}", "categorical", choices=(KEEP, DROP)) for add in blocks]
    layers = weighted_layers(model, graph, {p: n for n, ps in producers.items() for p in ps})
    if "rank" in families:
        for name, layer in layers.items():
            # Rank 0.5 of a layer narrower than two SIMD widths saves nothing worth a knob.
            if layer.factorisable and min(layer.inputs, layer.outputs) >= 2 * round_to:
                knobs.append(Knob(f"{RANK_PREFIX}{name}", "categorical",
                                  choices=(NOT_FACTORISED, *RANK_FRACTIONS)))
    if "precision" in families and len(precisions) > 1:
        knobs.append(Knob("precision", "categorical", choices=tuple(precisions)))
    return SearchSpace(tuple(knobs), model_sha256, sizes, default_precision=precisions[0],
                       round_to=round_to, group_producers=producers, blocks=blocks, rank_layers=layers)


def weighted_layers(model, graph, group_of_producer: dict[str, str]) -> dict[str, RankLayer]:
    """Every Dense/Conv-like layer with a kernel: its channels and groups, and whether lowrank can
    factorise it."""
    from edgesparse.passes.lowrank.forms import forms_for, why_not

    consumer_group = {}
    for g in graph.prunable_groups:
        for c in g.consumers + g.members:      # a depthwise conv is a member: it carries the channels
            consumer_group[c] = group_of_producer[g.producers[0]]
    out = {}
    for layer in model.layers:
        kernel = getattr(layer, "kernel", None)
        if kernel is None or len(kernel.shape) < 2:
            continue
        shape = tuple(int(d) for d in kernel.shape)
        if type(layer).__name__.endswith("Transpose"):       # (kh, kw, outputs, inputs)
            shape = shape[:-2] + (shape[-1], shape[-2])
        factorisable = why_not(layer) is None and bool(forms_for(layer, "auto"))
        in_group = consumer_group.get(layer.name)
        if type(layer).__name__ == "DepthwiseConv2D":     # outputs = inputs x multiplier, one group
            out[layer.name] = RankLayer(shape[-2], shape[-2] * shape[-1], in_group, in_group, False)
            continue
        out[layer.name] = RankLayer(shape[-2], shape[-1], in_group, group_of_producer.get(layer.name),
                                    factorisable)
    return out
