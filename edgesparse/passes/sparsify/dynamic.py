"""Sparse training on masks: gradual magnitude pruning (gmp), SET and RigL, and block patterns.

All three train with the one training loop (train/trainer.py) on the same masks (train/masks.py:
masked weights stay exactly zero and carry no optimizer moments, the sparse optimizer); the
mask changes are a callback every `update_every` steps (train/callbacks.py `MaskUpdate`).

- gmp   (Zhu & Gupta 2017): start dense, prune by magnitude on the cubic schedule
        s(t) = s_l * (1 - (1 - t/T)^3) at every update until `end_fraction` of training, where
        each layer l reaches exactly its own final sparsity s_l from the per-layer allocation
        (ERK by default): a global threshold at 98% would empty layers (DESIGN.md trap 16).
- set   (Mocanu et al. 2018) and rigl (Evci et al. 2020): constant sparsity. At each update
        drop the `f(t)` fraction of active weights with the smallest magnitude and regrow as
        many: SET at random, RigL where the dense gradient (one batch, every update) is largest.
        f(t) = drop_fraction/2 * (1 + cos(pi t / T)), T = end_fraction of training; regrown
        weights start at zero with zero moments. We follow google-research/rigl
        (rigl_tf2/mask_updaters.py): the just-dropped positions may be regrown.
- static: the initial mask, never updated (the benchmark's control).

The initial mask of set/rigl/static is the top-|w| of the given (trained) weights, or random
(`init="random"`, training from scratch as in the papers: the given weights are taken as a fresh
draw of their initialisers, and the kept ones are rescaled to the variance their initialiser
targets for the fan-in and fan-out the mask leaves them, train/sparse_init.py). A block pattern (`block1x4`) masks
whole blocks of `b` consecutive input channels of one output unit of a Dense kernel (the
TFLite weight [out, in]'s inner axis, which LiteRT's FULLY_CONNECTED runs sparse: DESIGN trap 4);
every score is summed over the block. `layer_blocks` gives single layers their own block
(`pattern: auto-block` blocks only the Dense layers measured faster so: latency.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgesparse._tf import tf
from edgesparse.errors import UserError
from edgesparse.graph.functional import clone_with_weights
from edgesparse.graph import linear
from edgesparse.passes.sparsify.masks import keep_counts, layer_densities
from edgesparse.passes.sparsify.refit import LayerRecord
from edgesparse.train.callbacks import MaskUpdate
from edgesparse.train.losses import CrossEntropy
from edgesparse.train.masks import Masks
from edgesparse.train.sparse_init import rescale_to_sparse_fans
from edgesparse.train.trainer import train

DYNAMIC_METHODS = ("gmp", "set", "rigl")
GRADIENT_BATCH = 256        # samples in RigL's dense-gradient batch


@dataclass(frozen=True)
class Settings:
    method: str                     # gmp | set | rigl | static
    sparsity: float
    allocation: str = "erk"
    block: int = 1                  # 1: unstructured; 4 / 16: 1xb blocks on Dense kernels
    layer_blocks: tuple[tuple[str, int], ...] = ()   # per-layer block, over `block` (auto-block's choice)
    update_every: int = 100
    drop_fraction: float = 0.3
    end_fraction: float = 0.75
    epochs: int = 4
    batch_size: int = 32
    learning_rate: float = 1e-3
    lr_schedule: str = "constant"
    init: str = "magnitude"         # magnitude (keep the given weights' largest) | random
    seed: int = 0


def total_steps(samples: int, batch_size: int, epochs: int) -> int:
    return max(1, math.ceil(samples / batch_size)) * epochs


def last_update_step(settings: Settings, samples: int) -> int:
    """The last step at which masks may change: `end_fraction` of training."""
    return int(total_steps(samples, settings.batch_size, settings.epochs) * settings.end_fraction)


def check_schedule(settings: Settings, samples: int) -> None:
    """An update interval longer than the updating part of training: refuse before training."""
    if settings.method == "static":
        return
    last = last_update_step(settings, samples)
    if settings.update_every > last:
        steps = total_steps(samples, settings.batch_size, settings.epochs)
        raise UserError(f"sparsify {settings.method}: update_every={settings.update_every} steps but "
                        f"masks may change only in the first {last} of {steps} training steps "
                        f"({samples} samples / batch {settings.batch_size} x {settings.epochs} epochs "
                        f"x end_fraction {settings.end_fraction:g}); lower update_every or raise epochs")


def drop_fraction_at(step: int, settings: Settings, last_step: int) -> float:
    """RigL's cosine decay of the drop fraction, to 0 at the last update step."""
    return settings.drop_fraction / 2.0 * (1.0 + math.cos(math.pi * min(step, last_step) / max(1, last_step)))


def cubic_sparsity(final: float, progress: float) -> float:
    """Zhu & Gupta's cubic schedule from 0 to `final` as progress runs from 0 to 1."""
    p = min(max(progress, 0.0), 1.0)
    return final * (1.0 - (1.0 - p) ** 3)


# ------------------------------------------------------------------------------ the unit grid


class Grid:
    """A kernel seen as units: single weights, or 1xb blocks along the Dense input axis."""

    def __init__(self, layer, block: int):
        self.shape = tuple(int(d) for d in layer.kernel.shape)
        self.block = block
        if block > 1:
            if type(layer).__name__ != "Dense":
                raise UserError(f"block patterns are for Dense layers; {layer.name} is "
                                f"{type(layer).__name__} (use pattern 'unstructured' for it)")
            if self.shape[0] % block:
                raise UserError(f"pattern block1x{block}: {layer.name} has {self.shape[0]} inputs, not a "
                                f"multiple of {block}; use a width that is, or pattern 'unstructured'")
            self.units = (self.shape[0] // block, self.shape[1])
        else:
            self.units = self.shape

    @property
    def size(self) -> int:
        return int(np.prod(self.units))

    def to_units(self, score: np.ndarray) -> np.ndarray:
        if self.block == 1:
            return score
        return score.reshape(self.units[0], self.block, self.units[1]).sum(axis=1)

    def to_elements(self, unit_mask: np.ndarray) -> np.ndarray:
        return unit_mask if self.block == 1 else np.repeat(unit_mask, self.block, axis=0)


def _topk(score: np.ndarray, k: int, allowed: np.ndarray | None = None) -> np.ndarray:
    """Mask of the k highest scores (only among `allowed`), ties broken by position."""
    flat = score.ravel().astype(np.float64)
    if allowed is not None:
        flat = np.where(allowed.ravel(), flat, -np.inf)
    keep = np.zeros(flat.size, dtype=bool)
    if k > 0:
        keep[np.argsort(-flat, kind="stable")[:k]] = True
    return keep.reshape(score.shape)


def drop_and_grow(mask: np.ndarray, drop_score: np.ndarray, grow_score: np.ndarray,
                  fraction: float) -> np.ndarray:
    """Drop `fraction` of the active units with the lowest drop score, regrow as many inactive
    ones with the highest grow score: the number of active units is unchanged."""
    active = int(mask.sum())
    n_drop = int(active * fraction)
    if n_drop == 0:
        return mask.copy()
    kept = _topk(drop_score, active - n_drop, allowed=mask)
    grown = _topk(grow_score, n_drop, allowed=~kept)
    return kept | grown


# ------------------------------------------------------------------------------ training


@dataclass
class DynamicResult:
    model: Any
    layers: list[LayerRecord] = field(default_factory=list)
    updates: list[dict[str, Any]] = field(default_factory=list)   # per mask update: step, fraction, sparsity
    history: dict[str, list[float]] = field(default_factory=dict)
    last_update_step: int = 0
    total_steps: int = 0


def maskable_layers(model, block: int) -> list:
    """Dense/Conv layers the masks cover; with a block pattern, Dense layers only."""
    layers = [l for l in model.layers if linear.why_not_linear(l) is None]
    if block > 1:
        layers = [l for l in layers if type(l).__name__ == "Dense"]
    return layers


def planned_densities(model, sparsity: float, allocation: str) -> dict[str, float]:
    """The density each maskable layer gets from the allocation (what sparse_train will keep)."""
    layers = maskable_layers(model, 1)
    shapes = [tuple(int(d) for d in l.kernel.shape) for l in layers]
    return {l.name: float(d) for l, d in zip(layers, layer_densities(shapes, sparsity, allocation))}


def _unit_counts(grids: list[Grid], sparsity: float, allocation: str) -> list[int]:
    densities = layer_densities([g.shape for g in grids], sparsity, allocation)
    counts = keep_counts([g.units for g in grids], densities, sparsity)
    return [max(1, c) for c in counts]          # never empty a layer


def sparse_train(model, x: np.ndarray, y: np.ndarray, settings: Settings, progress=None,
                 label: str | None = None) -> DynamicResult:
    """Train a sparse copy of `model` (the given model is not changed)."""
    x, y = np.asarray(x, np.float32), np.asarray(y)
    check_schedule(settings, len(x))
    net = clone_with_weights(model)
    layers = maskable_layers(net, settings.block)
    if not layers:
        raise UserError(f"{model.name} has no layer to sparsify with {settings.method}"
                        + (" (block patterns take Dense layers)" if settings.block > 1 else ""))
    own = dict(settings.layer_blocks)
    grids = {l.name: Grid(l, own.get(l.name, settings.block)) for l in layers}
    counts = dict(zip(grids, _unit_counts(list(grids.values()), settings.sparsity, settings.allocation)))
    rng = np.random.default_rng(settings.seed)
    last = last_update_step(settings, len(x))
    steps = total_steps(len(x), settings.batch_size, settings.epochs)

    def magnitude(name: str) -> np.ndarray:
        return grids[name].to_units(np.abs(net.get_layer(name).kernel.numpy()))

    initial = {}
    for name, grid in grids.items():
        if settings.method == "gmp":
            unit = np.ones(grid.units, dtype=bool)
        elif settings.init == "random":
            unit = _topk(rng.random(grid.units), counts[name])
        else:
            unit = _topk(magnitude(name), counts[name])
        initial[name] = grid.to_elements(unit)
        if settings.method != "gmp" and settings.init == "random":
            # From scratch: the kept weights of a dense draw would give each unit ~density of
            # the variance its initialiser targets and the signal would vanish through the
            # layers; scale them to their sparse fans (train/sparse_init.py, as RigL does).
            rescale_to_sparse_fans(net.get_layer(name), initial[name])
    masks = Masks(net, initial)
    updates: list[dict[str, Any]] = []
    loss = CrossEntropy()

    def dense_gradients() -> dict[str, np.ndarray]:
        idx = rng.choice(len(x), size=min(GRADIENT_BATCH, len(x)), replace=False)
        kernels = [net.get_layer(n).kernel for n in grids]
        with tf.GradientTape() as tape:
            value = loss(net, tf.constant(x[idx]), tf.constant(y[idx]), training=False)
        return {n: np.abs(g.numpy()) for n, g in zip(grids, tape.gradient(value, kernels))}

    def regrow(_net, step: int) -> None:
        fraction = drop_fraction_at(step, settings, last)
        grads = dense_gradients() if settings.method == "rigl" else None
        moved = 0
        for name, grid in grids.items():
            unit = grid.to_units(masks.mask(name).astype(np.float32)) > 0
            grow = grid.to_units(grads[name]) if grads is not None else rng.random(grid.units)
            new = drop_and_grow(unit, magnitude(name), grow, fraction)
            moved += masks.update(name, grid.to_elements(new))["grown"]
        updates.append({"step": step, "drop_fraction": round(fraction, 6), "grown": moved,
                        "sparsity": round(masks.sparsity(), 6)})

    n_prune_updates = max(1, last // settings.update_every)

    def prune(_net, step: int) -> None:
        progress_ = (step // settings.update_every) / n_prune_updates
        for name, grid in grids.items():
            final_keep = counts[name]
            if progress_ >= 1.0:
                keep = final_keep          # exactly the allocation at the last update
            else:
                s_final = 1.0 - final_keep / grid.size
                keep = max(final_keep, int(round(grid.size * (1.0 - cubic_sparsity(s_final, progress_)))))
            unit = grid.to_units(masks.mask(name).astype(np.float32)) > 0
            masks.update(name, grid.to_elements(_topk(magnitude(name), keep, allowed=unit)))
        updates.append({"step": step, "progress": round(progress_, 6), "sparsity": round(masks.sparsity(), 6)})

    fn = {"gmp": prune, "set": regrow, "rigl": regrow, "static": None}[settings.method]
    callback = MaskUpdate(masks, fn, n=settings.update_every, last_step=last, net=net)
    result = train(net, (x, y), loss=loss, epochs=settings.epochs, lr=settings.learning_rate,
                   batch_size=settings.batch_size, seed=settings.seed, schedule=settings.lr_schedule,
                   callbacks=[callback], post_step=[masks.apply], progress=progress,
                   label=label or f"sparsify: {settings.method} training")
    final = masks.strip()
    records = []
    for layer in net.layers:
        kernels = [k.numpy() for k in linear.kernels_of(layer)]
        if not kernels:
            continue
        size = int(sum(k.size for k in kernels))
        zeros = int(sum((k == 0).sum() for k in kernels))   # counted, not trusted
        skipped = None
        if layer.name not in final:
            skipped = linear.why_not_linear(layer) or "block patterns take Dense layers only"
        records.append(LayerRecord(layer=layer.name, kind=type(layer).__name__,
                                   shape=[int(d) for d in kernels[0].shape], weights=size, zeros=zeros,
                                   sparsity=round(zeros / size, 4), skipped=skipped,
                                   criterion=None if skipped else settings.method))
    return DynamicResult(model=net, layers=records, updates=updates, history=result.history,
                         last_update_step=last, total_steps=steps)
