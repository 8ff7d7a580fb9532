"""Importance criteria, as plug-ins, each scoring the units of one whole group.

A criterion returns one score per unit of a group (higher = more important, keep it). Scores are
aggregated over every layer in the group: each layer's per-channel figures are normalised to a
mean of 1 (so a wide Flatten -> Dense does not drown a small conv) and summed per unit.

Data-aware criteria look at the inputs of the group's *consumers*: removing a unit is exactly
zeroing it at those inputs, whatever pass-through layers sit in between.

Add a criterion with `@register_criterion` on a `Criterion` subclass.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from edgesparse._tf import tf
from edgesparse.graph import linear as patches
from edgesparse.graph.channels import ChannelGraph, Group
from edgesparse.graph.layers import in_rows, out_columns, rule_of
from edgesparse.train.losses import sparse_cross_entropy

CRITERIA: dict[str, type["Criterion"]] = {}


def register_criterion(cls):
    CRITERIA[cls.name] = cls
    return cls


@dataclass
class ScoreInputs:
    """What criteria may use: the model, its graph, calibration inputs and maybe labels."""

    model: object
    graph: ChannelGraph
    x: np.ndarray | None = None
    y: np.ndarray | None = None
    seed: int = 0
    max_rows: int = 20000
    notes: list[str] = field(default_factory=list)
    _acts: dict = field(default_factory=dict)

    def activations(self, keys: list) -> dict:
        """Consumer-input activations on the calibration data, computed once per tensor."""
        missing = [k for k in keys if k not in self._acts]
        if missing:
            sub = patches.submodel(self.model, [self.graph.tensors[k] for k in missing])
            for k, a in zip(missing, patches.run(sub, self.x)):
                self._acts[k] = a
        return {k: self._acts[k] for k in keys}


class Criterion:
    name: ClassVar[str]
    needs_data: ClassVar[bool] = False
    needs_labels: ClassVar[bool] = False
    summary: ClassVar[str] = ""

    def scores(self, group: Group, inp: ScoreInputs) -> np.ndarray:   # pragma: no cover
        raise NotImplementedError


# ----------------------------------------------------------------------------- helpers


def _normalised(v: np.ndarray) -> np.ndarray:
    mean = float(np.mean(v)) if len(v) else 0.0
    return v / mean if mean > 0 else np.zeros_like(v)


def _to_units(group: Group, graph: ChannelGraph, pmap: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Sum per-position values into the group's units (positions of other groups ignored)."""
    out = np.zeros(group.size)
    mine = (pmap >= 0)
    mine[mine] = graph.atom_group[pmap[mine]] == group.id
    np.add.at(out, graph.atom_unit[pmap[mine]], values[mine])
    return out


def consumer_inputs(group: Group, graph: ChannelGraph) -> list:
    """The distinct input tensors of the group's consumers (where its channels are used)."""
    keys = []
    for name in group.consumers:
        key = graph.call_of(name).inputs[0]
        if key not in keys:
            keys.append(key)
    return keys


def _magnitude(group: Group, graph: ChannelGraph, norm) -> np.ndarray:
    total = np.zeros(group.size)
    for p in group.producers:
        cols = norm(out_columns(graph.layers[p]), axis=0)
        total += _normalised(_to_units(group, graph, graph.producer_atoms[p], cols))
    for c in group.consumers:
        rows = norm(in_rows(graph.layers[c]), axis=1)
        total += _normalised(_to_units(group, graph, graph.maps[graph.call_of(c).inputs[0]], rows))
    return total


# ----------------------------------------------------------------------------- criteria


@register_criterion
class L1(Criterion):
    name = "l1"
    summary = "sum of |w| of the group's output filters and of the following layers' input slices"

    def scores(self, group, inp):
        return _magnitude(group, inp.graph, lambda w, axis: np.abs(w).sum(axis=axis))


@register_criterion
class L2(Criterion):
    name = "l2"
    summary = "L2 norm of the group's output filters and of the following layers' input slices"

    def scores(self, group, inp):
        return _magnitude(group, inp.graph, lambda w, axis: np.sqrt((w ** 2).sum(axis=axis)))


@register_criterion
class BNScale(Criterion):
    name = "bn_scale"
    summary = "|gamma| of the BatchNorm layers in the group (network slimming); L2 when there is none"
    # "BatchNorm" here: any member whose rule has a per-channel scale (graph/layers.py)

    def scores(self, group, inp):
        g = inp.graph
        total = np.zeros(group.size)
        found = False
        for m in group.members:
            layer = g.layers[m]
            scale = rule_of(layer).scale
            gamma = scale(layer) if scale else None
            if gamma is not None:
                total += _normalised(_to_units(group, g, g.maps[g.call_of(m).inputs[0]], gamma))
                found = True
        if not found:
            inp.notes.append(f"bn_scale: group {group.id} has no BatchNorm; used l2 instead")
            return L2().scores(group, inp)
        return total


@register_criterion
class Random(Criterion):
    name = "random"
    summary = "seeded random scores: the baseline every paper compares with"

    def scores(self, group, inp):
        return np.random.default_rng([inp.seed, group.id]).random(group.size)


@register_criterion
class GroupNorm(Criterion):
    name = "group_norm"
    summary = ("L2 norm of every weight slice a unit owns across its group (what regularize's group "
               "lasso drives to zero): zeroed units go first")

    def scores(self, group, inp):
        from edgesparse.train.regularizers import unit_norms
        return unit_norms(inp.graph, [group.id]).get(group.id, np.zeros(group.size))


@register_criterion
class MovementScore(Criterion):
    """Movement pruning (Sanh et al. 2020): a short fine-tune of a copy of the model, and each
    unit's summed -w * dL/dw over it. One fine-tune serves every group (kept in the inputs' cache)."""

    name = "movement"
    needs_data = True
    needs_labels = True
    summary = "accumulated -w * dL/dw over a short fine-tune: units whose weights move towards zero go first"
    epochs, lr = 3, 1e-3

    def scores(self, group, inp):
        cache = inp._acts.setdefault(("movement",), {})
        if not cache:
            from edgesparse.graph.functional import clone_with_weights
            from edgesparse.train.losses import CrossEntropy
            from edgesparse.train.regularizers import Movement
            from edgesparse.train.trainer import train

            copy = clone_with_weights(inp.model)
            hook = Movement(copy, self.lr)
            train(copy, (inp.x, inp.y), loss=CrossEntropy(), epochs=self.epochs, lr=self.lr, seed=inp.seed,
                  post_step=[hook])
            cache.update(hook.unit_scores(ChannelGraph(copy)))
        return cache.get(tuple(sorted(group.producers)), np.zeros(group.size))


def _spatial_mean(a: np.ndarray, fn) -> np.ndarray:
    return fn(a).reshape(-1, a.shape[-1]).mean(axis=0)


@register_criterion
class Activation(Criterion):
    name = "activation"
    needs_data = True
    summary = "mean |activation| at the inputs of the following layers (calibration data)"

    def scores(self, group, inp):
        total = np.zeros(group.size)
        for key, a in inp.activations(consumer_inputs(group, inp.graph)).items():
            total += _normalised(_to_units(group, inp.graph, inp.graph.maps[key], _spatial_mean(a, np.abs)))
        return total


@register_criterion
class APoZ(Criterion):
    name = "apoz"
    needs_data = True
    summary = "fraction of non-zero activations at the inputs of the following layers (1 - APoZ)"

    def scores(self, group, inp):
        total = np.zeros(group.size)
        for key, a in inp.activations(consumer_inputs(group, inp.graph)).items():
            nonzero = _spatial_mean(a, lambda t: (np.abs(t) > 1e-12).astype(np.float64))
            total += _to_units(group, inp.graph, inp.graph.maps[key], nonzero) + 1e-9
        return _normalised(total)


@register_criterion
class Taylor(Criterion):
    name = "taylor"
    needs_data = True
    needs_labels = True
    summary = "|activation x gradient of the loss| summed per unit, averaged over samples (Molchanov)"

    def scores(self, group, inp):
        g = inp.graph
        keys = consumer_inputs(group, g)
        sub = patches.submodel(inp.model, [g.tensors[k] for k in keys] + list(inp.model.outputs))
        loss = sparse_cross_entropy(inp.model)
        per_sample = []
        for start in range(0, len(inp.x), 128):
            xb = tf.convert_to_tensor(inp.x[start:start + 128])
            yb = tf.convert_to_tensor(inp.y[start:start + 128])
            with tf.GradientTape() as tape:
                outs = sub(xb, training=False)
                acts, pred = outs[:len(keys)], outs[len(keys)]
                value = loss(yb, pred) * tf.cast(tf.shape(xb)[0], tf.float32)
            grads = tape.gradient(value, acts)
            batch = np.zeros((len(xb), group.size))
            for key, a, gr in zip(keys, acts, grads):
                prod = (a * gr).numpy().reshape(len(xb), -1, a.shape[-1]).sum(axis=1)
                for i in range(len(xb)):
                    batch[i] += _to_units(group, g, g.maps[key], prod[i])
            per_sample.append(batch)
        return np.abs(np.concatenate(per_sample)).mean(axis=0)


@register_criterion
class Greedy(Criterion):
    """ThiNet / He et al. 2017: remove first the units whose removal least changes the output
    of the following layers on calibration data.

    The change from removing a set T is ||sum_{c in T} z_c||^2, where z_c is unit c's
    contribution to the next layer's output. Its Gram matrix is exact and cheap:
    (X^T X) * (W W^T) for Dense, and the same on im2col patches summed over kernel taps for a
    conv. The greedy removal order becomes a score: the fraction of output energy lost when
    the unit is taken (a running maximum, so later units never score lower).
    """

    name = "thinet"
    needs_data = True
    summary = "greedy: remove the units whose removal least changes the next layer's output (ThiNet)"

    def scores(self, group, inp):
        g = inp.graph
        gram = np.zeros((group.size, group.size))
        rng = np.random.default_rng(inp.seed)
        usable = [c for c in group.consumers if patches.has_linear_form(g.layers[c])]
        if not usable:
            inp.notes.append(f"thinet: group {group.id} has no Dense/Conv consumer; used activation")
            return Activation().scores(group, inp)
        acts = inp.activations([g.call_of(c).inputs[0] for c in usable])
        for c in usable:
            layer, key = g.layers[c], g.call_of(c).inputs[0]
            rows = patches.sampled_rows(layer, [acts[key]], inp.max_rows, rng)[0].astype(np.float64)
            w = patches.kernel_2d(layer.get_weights()[0])
            k = patches.taps(layer)
            pos = rows.shape[1] // k
            m = (rows.T @ rows) * (w @ w.T)                      # (k*pos, k*pos)
            m = m.reshape(k, pos, k, pos).sum(axis=(0, 2))       # per input position
            onehot = np.zeros((pos, group.size))
            pmap = g.maps[key]
            for p in range(pos):
                a = pmap[p]
                if a >= 0 and g.atom_group[a] == group.id:
                    onehot[p, g.atom_unit[a]] = 1.0
            unit_gram = onehot.T @ m @ onehot
            scale = np.trace(unit_gram)
            if scale > 0:
                gram += unit_gram / scale
        return _greedy_order_scores(gram)


def _greedy_order_scores(gram: np.ndarray) -> np.ndarray:
    n = len(gram)
    removed = np.zeros(n, dtype=bool)
    cross = np.zeros(n)            # sum_{j in T} G[c, j]
    cost = 0.0
    total = max(float(gram.sum()), 1e-30)
    scores = np.zeros(n)
    best = 0.0
    for step in range(n):
        trial = cost + 2 * cross + np.diag(gram)
        trial[removed] = np.inf
        c = int(np.argmin(trial))
        cost = float(trial[c])
        removed[c] = True
        cross += gram[:, c]
        best = max(best, cost / total)
        scores[c] = best + 1e-9 * step        # strict order for ties
    return scores


def get_criterion(name: str) -> Criterion:
    from edgesparse.errors import UserError
    if name not in CRITERIA:
        raise UserError(f"unknown pruning criterion {name!r}; choose one of {', '.join(sorted(CRITERIA))}")
    return CRITERIA[name]()
