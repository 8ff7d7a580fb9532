"""Sparsity penalties for the one training loop, applied as proximal steps after each optimizer step.

A penalty alone only makes weights small; the proximal step (soft-thresholding) makes them
exactly zero, so the prune or sparsify pass that follows cuts what training already emptied
and the cut changes nothing.

- `GroupLasso`: the channel units of `graph.channels.ChannelGraph`. A unit's norm is the L2 norm
  of every weight slice it owns across its group: producers' output columns and biases,
  BatchNorm gamma/beta, depthwise and PReLU slices, and the following layers' input rows
  (through Concatenate offsets and Flatten striding, which the channel maps encode), except the
  slices a BatchNorm normalises right after (a conv's column before its BN: scale-invariant, see
  `UnitSlices._slices`), which are only zeroed with their unit. The step
  is block soft-thresholding, w_u <- w_u * max(0, 1 - tau_u / ||w_u||), tau_u = lambda_g * lr *
  sqrt(size_u) (Yuan & Lin's group weight, so wide and narrow units shrink alike).
- `GroupLasso(..., slices="bn")` is network slimming (Liu et al. 2017): the same step on the
  BatchNorm scales only (a one-element group: plain L1 on gamma), for groups that carry a BN.
- `WeightL1`: elementwise soft-thresholding of the Dense/Conv kernels (unstructured sparsity
  that `sparsify` then keeps).

The controller: each group (or layer, for L1) has its own strength lambda, a variable updated
after every step: multiplied up while more units (weights) are alive than the schedule allows
at this point of training, and down once they are not. The units the schedule keeps (the
largest norms) are never thresholded, so the penalty cannot overshoot the requested width:
it removes exactly the weakest units, at the strength the data allows. Once the schedule has
reached its target a zeroed unit stays zero (the width is final; the optimizer's momentum would
otherwise revive units as the strength fades, and the cut would remove them alive). `Schedule` is the target
over training: constant, polynomial or cubic (Zhu & Gupta 2017) between two fractions of it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from edgesparse._tf import keras, tf
from edgesparse.graph.channels import ChannelGraph
from edgesparse.graph.surgery import weight_index

GROWTH = 1.05          # per step at least: lambda x 1.05 while too many are alive (x3.4 in 25 steps)
RANGE = 1e3            # ... and fast enough to grow by this factor within the schedule's ramp
DECAY = 0.9            # per step once the target is met: the penalty fades, survivors recover


@dataclass(frozen=True)
class Schedule:
    """The fraction of the way from "nothing removed" to the final target, over training.

    constant: the final target from the first step; polynomial: 1 - (1 - t)^power between
    `begin` and `end` (fractions of the run); cubic: polynomial with power 3 (Zhu & Gupta 2017:
    prune fast while redundancy is high, slowly near the end). After `end` the target holds, so
    the last part of the run trains the final architecture.
    """

    kind: Literal["constant", "polynomial", "cubic"] = "cubic"
    begin: float = 0.0
    end: float = 0.75
    power: float = 3.0

    def progress(self, t):
        """t: fraction of the run done (a float tensor); returns the fraction of the removal due."""
        if self.kind == "constant":
            return tf.ones_like(t)
        power = 3.0 if self.kind == "cubic" else float(self.power)
        span = max(self.end - self.begin, 1e-9)
        u = tf.clip_by_value((t - self.begin) / span, 0.0, 1.0)
        return 1.0 - tf.pow(1.0 - u, power)


@dataclass
class _Slice:
    variable: object          # a tf.Variable of some layer
    axis: int
    segments: np.ndarray      # per index along `axis`: the unit it belongs to, or -1 (no unit)


class _Controlled:
    """The shared part: per-controller lambda, the step counter, the schedule of kept counts."""

    def __init__(self, sizes: np.ndarray, keep: np.ndarray, schedule: Schedule, total_steps: int,
                 lr: float, start: np.ndarray, controlled: bool = True):
        self.n = len(sizes)
        self.sizes = tf.constant(sizes, tf.float32)                 # units (weights) per controller
        self.keep_final = tf.constant(keep, tf.float32)
        self.schedule, self.total_steps, self.lr = schedule, max(1, int(total_steps)), float(lr)
        self.controlled = controlled
        self.strength = tf.Variable(np.asarray(start, np.float32), trainable=False, name="reg_strength")
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="reg_step")
        ramp = max(1.0, (schedule.end if schedule.kind != "constant" else 0.5) * self.total_steps)
        self.growth = max(GROWTH, RANGE ** (1.0 / ramp))

    def allowed(self):
        """How many units each controller may keep alive at this step."""
        t = tf.cast(self.step, tf.float32) / float(self.total_steps)
        return self.sizes - (self.sizes - self.keep_final) * self.schedule.progress(t)

    def control(self, alive):
        if not self.controlled:
            return
        too_many = alive > tf.math.ceil(self.allowed())
        self.strength.assign(tf.where(too_many, self.strength * self.growth, self.strength * DECAY))


class UnitSlices:
    """Every weight slice each channel unit owns, across its group (see the module docstring).

    graph: a ChannelGraph; group_ids: the (prunable) groups to cover; which: "all" slices, or
    "bn" for the BatchNorm gammas only. Units are numbered group by group (`offsets`).
    """

    def __init__(self, graph: ChannelGraph, group_ids, which: Literal["all", "bn"] = "all"):
        self.graph = graph
        self.group_ids = [gid for gid in group_ids if graph.groups[gid].prunable]
        self.offsets, n = {}, 0
        for gid in self.group_ids:
            self.offsets[gid] = n
            n += graph.groups[gid].size
        self.n_units = n
        self.unit_group = np.concatenate([np.full(graph.groups[g].size, i) for i, g in enumerate(self.group_ids)]
                                         or [np.zeros(0, int)]).astype(np.int32)
        self.slices = self._slices(which)
        covered = np.zeros(n, bool)
        elements = np.zeros(n + 1)
        for s in self.slices:
            covered[s.segments[s.segments >= 0]] = True
            per_index = int(np.prod(s.variable.shape)) // int(s.variable.shape[s.axis])
            np.add.at(elements, np.where(s.segments >= 0, s.segments, n), per_index)
        self.uncovered = [gid for gid in self.group_ids
                          if not covered[self.offsets[gid]:self.offsets[gid] + graph.groups[gid].size].any()]
        self.root_size = tf.constant(np.sqrt(np.maximum(elements[:n], 1)), tf.float32)
        self._segs = [tf.constant(np.where(s.segments >= 0, s.segments, n), tf.int32) for s in self.slices]
        self._carried_segs = [tf.constant(np.where(s.segments >= 0, s.segments, n), tf.int32) for s in self.carried]

    def _segments(self, pmap: np.ndarray | None, length: int) -> np.ndarray | None:
        """Unit id per index of a weight axis of `length`, from the channel map of its tensor."""
        if pmap is None or not len(pmap) or length % len(pmap):
            return None
        seg = np.full(len(pmap), -1, dtype=np.int64)
        atoms = pmap >= 0
        groups = np.where(atoms, self.graph.atom_group[np.where(atoms, pmap, 0)], -1)
        for gid, off in self.offsets.items():
            mine = atoms & (groups == gid)
            seg[mine] = off + self.graph.atom_unit[pmap[mine]]
        # An axis may hold several entries per channel (a separable pointwise kernel's rows are
        # (input channel, multiplier) pairs, channel-major).
        return np.repeat(seg, length // len(pmap))

    def _slices(self, which: str) -> list[_Slice]:
        """The penalised slices; the scale-invariant ones go to `self.carried`."""
        g = self.graph
        out, seen = [], set()
        carried = self.carried = []
        for call in g.calls:
            layer = call.layer
            if call.kind == "InputLayer" or layer.name in seen or not layer.weights:
                continue
            seen.add(layer.name)
            if which == "bn" and call.kind != "BatchNormalization":
                continue
            in_map = g.maps.get(call.inputs[0]) if len(call.inputs) == 1 else None
            out_map = g.maps.get(call.outputs[0]) if len(call.outputs) == 1 else None
            # weight_index (the table surgery cuts by) says which axes carry input / output channels.
            in_axes = weight_index(layer, None if in_map is None else np.arange(len(in_map)), None)
            out_axes = weight_index(layer, None, None if out_map is None else np.arange(len(out_map)))
            # A layer whose output only a BatchNorm reads is scale-invariant per output channel: in
            # training the BN normalises a shrunk column back (its gradient grows as it shrinks),
            # and its moving statistics go stale, so the unit never reaches zero while validation
            # accuracy collapses (measured on the MobileNetV2-style net). Those slices are left out:
            # the BN's gamma/beta and the readers' rows carry the unit, and zero they make it exact.
            before_bn = call.kind != "BatchNormalization" and _only_batchnorm_reads(g, call)
            channelwise = call.kind in ("DepthwiseConv1D", "DepthwiseConv2D")
            for k, w in enumerate(layer.weights):
                # slimming penalises gamma only. Its beta is carried, zeroed with its unit: a unit
                # whose scale is zero still outputs beta, and the cut (no refit) would drop that
                # constant from the next layers (measured: up to -3.4 points at 3.3x, MobileNetV2-style)
                bn_shift = which == "bn" and w is getattr(layer, "beta", None)
                if not w.trainable or (which == "bn" and w is not getattr(layer, "gamma", None) and not bn_shift):
                    continue
                for axis in range(len(w.shape)):
                    invariant = bn_shift or (before_bn and (out_axes[k][axis] is not None
                                                            or (channelwise and in_axes[k][axis] is not None)))
                    pmap = in_map if in_axes[k][axis] is not None else (
                        out_map if out_axes[k][axis] is not None else None)
                    seg = self._segments(pmap, int(w.shape[axis]))
                    if seg is not None and (seg >= 0).any():
                        (carried if invariant else out).append(_Slice(w, axis, seg))
        return out

    def per_unit(self, values) -> "tf.Tensor":
        """Sum per unit of `values(variable)` (a tensor shaped like the variable) over every slice."""
        total = tf.zeros(self.n_units + 1)
        for s, seg in zip(self.slices, self._segs):
            v = values(s.variable)
            perm = [s.axis] + [a for a in range(len(v.shape)) if a != s.axis]
            per_index = tf.reduce_sum(tf.reshape(tf.transpose(v, perm), (int(v.shape[s.axis]), -1)), axis=1)
            total += tf.math.unsorted_segment_sum(per_index, seg, self.n_units + 1)
        return total[: self.n_units]

    def squared_norms(self):
        return self.per_unit(tf.square)

    def norms(self) -> np.ndarray:
        return np.sqrt(self.squared_norms().numpy())

    def by_group(self, values: np.ndarray) -> dict[int, np.ndarray]:
        return {gid: values[self.offsets[gid]:self.offsets[gid] + self.graph.groups[gid].size]
                for gid in self.group_ids}

    def scale(self, factor) -> None:
        """Multiply every slice of unit u by factor[u]; a unit zeroed (factor 0) is zeroed in its
        scale-invariant slices too, so it is zero in every slice it owns."""
        dead = tf.concat([tf.where(factor == 0.0, 0.0, 1.0), [1.0]], 0)
        factor = tf.concat([factor, [1.0]], 0)
        for slices, segs, f in ((self.slices, self._segs, factor), (self.carried, self._carried_segs, dead)):
            for s, seg in zip(slices, segs):
                shape = [1] * len(s.variable.shape)
                shape[s.axis] = -1
                s.variable.assign(s.variable * tf.reshape(tf.gather(f, seg), shape))


def _only_batchnorm_reads(graph: ChannelGraph, call) -> bool:
    if len(call.outputs) != 1:
        return False
    readers = [c for c in graph.calls if call.outputs[0] in c.inputs]
    return bool(readers) and all(c.kind == "BatchNormalization" for c in readers)


def unit_norms(graph: ChannelGraph, group_ids, which: Literal["all", "bn"] = "all") -> dict[int, np.ndarray]:
    """{group id: the group-lasso norm of each unit}: what `prune`'s group_norm criterion ranks."""
    units = UnitSlices(graph, group_ids, which)
    return units.by_group(units.norms()) if units.n_units else {}


class GroupLasso(_Controlled):
    """Block soft-thresholding of channel units, as a post-step hook; see the module docstring.

    graph: the model's ChannelGraph; keep: {group id: units to keep at the end} (groups not
    named are not penalised); slices: "all" (group lasso) or "bn" (network slimming);
    strength: a fixed lambda (no controller, nothing protected), None: the controller.
    """

    def __init__(self, graph: ChannelGraph, keep: dict[int, int], *, schedule: Schedule, total_steps: int,
                 lr: float, slices: Literal["all", "bn"] = "all", strength: float | None = None):
        self.graph = graph
        self.units = UnitSlices(graph, sorted(keep), slices)
        self.group_ids = self.units.group_ids
        self._unit_group = tf.constant(self.units.unit_group)
        sizes = np.array([graph.groups[g].size for g in self.group_ids], np.float32)
        keeps = np.array([min(keep[g], graph.groups[g].size) for g in self.group_ids], np.float32)
        if strength is None:
            start = self._initial_strength(total_steps, lr)
        else:
            start = np.full(len(self.group_ids), strength, np.float32)
        super().__init__(sizes, keeps, schedule, total_steps, lr, start, controlled=strength is None)
        # units zeroed once the schedule has reached its target: they stay zero (see __call__)
        self.dead = tf.Variable(tf.zeros(self.units.n_units, tf.bool), trainable=False, name="reg_dead")

    def _alive(self, norms):
        return tf.math.unsorted_segment_sum(tf.cast(norms > 0, tf.float32), self._unit_group, len(self.group_ids))

    def _protected(self, norms):
        """The units the schedule keeps at this step: each group's largest norms."""
        if not self.controlled:
            return tf.zeros_like(norms, tf.bool)
        allowed = tf.math.ceil(self.allowed())
        protected = []
        for i, gid in enumerate(self.group_ids):
            off, size = self.units.offsets[gid], self.graph.groups[gid].size
            rank = tf.argsort(tf.argsort(-norms[off:off + size]))        # 0 = largest
            protected.append(tf.cast(rank, tf.float32) < allowed[i])
        return tf.concat(protected, 0)

    def __call__(self, model) -> None:
        """The post-step hook: one proximal step, then the controller."""
        if not self.units.n_units:
            return
        # After the ramp the width is final, so a unit zeroed then stays zero. Without this the
        # optimizer's momentum revives zeroed units (slimming's BN scales most) whenever the
        # controller relaxes the strength, the run ends above its target (slimming on the
        # MobileNetV2-style net at 3.3x: 0.315-0.319 of the MACs in the last epoch, 0.296 asked),
        # and the cut after it removes units that are not zero, with no refit.
        norms = tf.where(self.dead, 0.0, tf.sqrt(self.units.squared_norms()))
        tau = tf.gather(self.strength, self._unit_group) * self.lr * self.units.root_size
        factor = tf.maximum(0.0, 1.0 - tau / tf.maximum(norms, 1e-12))
        factor = tf.where(self._protected(norms), tf.ones_like(factor), factor)
        factor = tf.where(self.dead, tf.zeros_like(factor), factor)
        self.units.scale(factor)
        if self.controlled:
            ramp_done = self.schedule.progress(tf.cast(self.step, tf.float32) / float(self.total_steps)) >= 1.0
            self.dead.assign(self.dead | (ramp_done & (norms * factor == 0.0)))
        self.step.assign_add(1)
        self.control(self._alive(norms * factor))

    def _initial_strength(self, total_steps: int, lr: float) -> np.ndarray:
        """A start that shrinks the median unit by about 1% per tenth of the run; the controller
        takes over from there (it multiplies lambda by up to 1.05 per step)."""
        per_elem = self.units.norms() / np.maximum(self.units.root_size.numpy(), 1e-12)
        start = []
        for i, _ in enumerate(self.group_ids):
            mine = per_elem[self.units.unit_group == i]
            med = float(np.median(mine)) if len(mine) else 0.0
            start.append(max(med, 1e-6) * 0.01 / (lr * max(1, total_steps) / 10))
        return np.asarray(start, np.float32)

    def alive_units(self) -> dict[int, np.ndarray]:
        """{group id: boolean mask of units whose norm is not zero}."""
        return {gid: n > 0 for gid, n in self.units.by_group(self.units.norms()).items()}

    def atom_keep(self) -> np.ndarray:
        """The channel graph's atom mask that removes exactly the zeroed units (for surgery)."""
        removed = {gid: np.flatnonzero(~alive) for gid, alive in self.alive_units().items()}
        return self.graph.atom_keep_from_units(removed)

    def strengths(self) -> dict[int, float]:
        return {gid: float(v) for gid, v in zip(self.group_ids, self.strength.numpy())}


class WeightL1(_Controlled):
    """Elementwise soft-thresholding of Dense/Conv kernels with a per-layer controller.

    sparsity: the final fraction of zeros in each kernel (None: a fixed `strength`, no target).
    """

    KINDS = ("Dense", "Conv1D", "Conv2D", "SeparableConv1D", "SeparableConv2D", "DepthwiseConv1D",
             "DepthwiseConv2D", "Conv2DTranspose")

    def __init__(self, model, sparsity: float | None, *, schedule: Schedule, total_steps: int, lr: float,
                 strength: float | None = None, skip: tuple[str, ...] = ()):
        self.kernels = [layer.kernel for layer in _leaf_layers(model)
                        if type(layer).__name__ in self.KINDS and layer.name not in skip
                        and getattr(layer, "kernel", None) is not None]
        sizes = np.array([int(np.prod(k.shape)) for k in self.kernels], np.float32)
        keep = np.floor(sizes * (1.0 - (sparsity or 0.0)))
        if strength is None and sparsity is not None:
            med = [float(np.median(np.abs(k.numpy()))) for k in self.kernels]
            start = np.array([max(m, 1e-6) * 0.01 / (lr * max(1, total_steps) / 10) for m in med], np.float32)
        else:
            start = np.full(len(self.kernels), strength or 0.0, np.float32)
        super().__init__(sizes, keep, schedule, total_steps, lr, start,
                         controlled=strength is None and sparsity is not None)

    def __call__(self, model) -> None:
        allowed = tf.math.ceil(self.allowed())
        alive = []
        for i, k in enumerate(self.kernels):
            mag = tf.reshape(tf.abs(k), [-1])
            keep_n = tf.cast(tf.minimum(allowed[i], self.sizes[i]), tf.int32)
            # Protected: the `keep_n` largest magnitudes (never thresholded).
            kth = tf.cond(keep_n > 0, lambda: tf.math.top_k(mag, k=tf.maximum(keep_n, 1)).values[-1],
                          lambda: tf.constant(np.inf, tf.float32))
            if not self.controlled:
                kth = tf.constant(np.inf, tf.float32)
            tau = self.strength[i] * self.lr
            shrunk = tf.sign(k) * tf.maximum(tf.abs(k) - tau, 0.0)
            new = tf.where(tf.abs(k) >= kth, k, shrunk)
            k.assign(new)
            alive.append(tf.reduce_sum(tf.cast(tf.not_equal(new, 0.0), tf.float32)))
        self.step.assign_add(1)
        if alive:
            self.control(tf.stack(alive))

    def zero_fraction(self) -> float:
        zeros = sum(int(np.sum(k.numpy() == 0)) for k in self.kernels)
        return zeros / max(1, sum(int(np.prod(k.shape)) for k in self.kernels))

    def strengths(self) -> dict[str, float]:
        return {k.name: float(v) for k, v in zip(self.kernels, self.strength.numpy())}


def _leaf_layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _leaf_layers(layer)
        else:
            yield layer


class Movement:
    """Post-step hook accumulating movement scores (Sanh et al. 2020): S = -sum_t w_t * dL/dw_t.

    The gradient step is w_{t+1} - w_t = -lr * g_t for SGD, so S is measured as
    sum_t w_t * (w_{t+1} - w_t) / lr on the weights themselves, whatever the optimizer: it is
    negative for weights that move towards zero (they matter least) and positive for weights
    that grow. `unit_scores` sums it over every slice of each channel unit.
    """

    def __init__(self, model, lr: float):
        self.lr = float(lr)
        self.variables = [w for w in model.trainable_weights]
        self.previous = [tf.Variable(w.read_value(), trainable=False) for w in self.variables]
        self.scores = [tf.Variable(tf.zeros_like(w), trainable=False) for w in self.variables]
        self._index = {w.ref(): i for i, w in enumerate(self.variables)}

    def __call__(self, model) -> None:
        for w, prev, score in zip(self.variables, self.previous, self.scores):
            score.assign_add(prev * (w - prev) / self.lr)
            prev.assign(w)

    def unit_scores(self, graph: ChannelGraph) -> dict[tuple, np.ndarray]:
        """{sorted producer names of a group: movement score of each unit}."""
        units = UnitSlices(graph, [g.id for g in graph.prunable_groups])
        if not units.n_units:
            return {}
        def score_of(v):
            i = self._index.get(v.ref())
            return self.scores[i] if i is not None else tf.zeros_like(v)
        per_unit = units.by_group(units.per_unit(score_of).numpy())
        return {tuple(sorted(graph.groups[gid].producers)): s for gid, s in per_unit.items()}


def recalibrate_batchnorm(model, x: np.ndarray, batch_size: int = 256) -> int:
    """Set every BatchNorm's moving mean and variance to the statistics of its input over `x`,
    in inference mode, layer by layer in graph order (each BN sees the ones before it already
    recalibrated). Returns how many BNs were set.

    Why: a penalty that shrinks units every step (the proximal step, closing gates) changes the
    activations faster than the moving averages follow (momentum 0.99 is about 100 steps, several
    epochs on a small data set), so the model in inference mode is judged, cut and exported with
    statistics of weights it no longer has: on the MobileNetV2-style net that alone cost 10 to 40
    points of validation accuracy mid-run."""
    bns = [layer for layer in _leaf_layers(model) if type(layer).__name__ == "BatchNormalization"]
    for layer in bns:
        probe = keras.Model(model.inputs, layer.input)
        total, total_sq, n = 0.0, 0.0, 0
        for s in range(0, len(x), batch_size):
            a = np.asarray(probe(x[s:s + batch_size], training=False), np.float64)
            a = np.moveaxis(a, layer.axis[0] if isinstance(layer.axis, (list, tuple)) else layer.axis, -1)
            a = a.reshape(-1, a.shape[-1])
            total, total_sq, n = total + a.sum(0), total_sq + (a * a).sum(0), n + len(a)
        mean = total / max(n, 1)
        var = np.maximum(total_sq / max(n, 1) - mean * mean, 0.0)
        layer.moving_mean.assign(mean.astype(np.float32))
        layer.moving_variance.assign(var.astype(np.float32))
    return len(bns)
