"""L0 gates in training (Louizos et al. 2018): where the gates go, their expected-MAC penalty with
a controller, and folding them away at the end.

- `Gates(model)` puts one `graph.gates.HardConcreteGate` per channel unit of every prunable group
  with one producer, with `graph.surgery.insert`: right after the producer, or after the
  BatchNorm that alone reads it (a gate before a BN would be normalised away). There the gate
  is a per-channel scale of an affine output, so folding it is exact.
- `Gates.macs(p)`: the model's MACs when channel c of the gated producers is kept with
  probability (or indicator) p_c, through each layer's own MAC formula (graph/layers.py) at the
  expected widths E[n_in], E[n_out]: so the penalty is the expected number of MACs, not of gates,
  and `macs: 0.3` lets the gates find where cutting is cheap.
- `MacController`: the regularizer lambda * E[MACs] / MACs and, after each step, the controller:
  lambda grows while the deterministic gates keep more MACs than the schedule allows, and decays
  once they do not. After each batch the strongest gates that fit in the schedule's MACs are held
  open (`Gates.protect`), and each producer's `min_channels` strongest, so no layer empties and
  the gates cannot overshoot the target.
- `Gates.finish()`: the deterministic gate values multiplied into the producer's output columns
  and bias (or the BN's gamma and beta), every gate removed (`surgery.remove`), and the closed
  channels cut with `surgery.shrink`: no gate reaches export.

Groups tied across several producers (residual adds) keep their width: gating them needs one gate
shared by several tensors, which the one-call-per-layer graph does not have.
"""
from __future__ import annotations

import numpy as np

from edgesparse._tf import tf
from edgesparse.graph import surgery
from edgesparse.graph.channels import ChannelGraph
from edgesparse.graph.gates import CLOSED, HardConcreteGate
from edgesparse.graph.layers import OUT, Role, in_width, out_width, rule_of, weight_axes
from edgesparse.graph.stats import count_macs

GROWTH, DECAY = 1.05, 0.9       # the controller's factors per step (as train/regularizers.py's)
HOMOGENEOUS = ("linear", "relu")  # activations f with f(z x) = z f(x) for z >= 0: a gate after them folds


def _activation(layer) -> str:
    act = getattr(layer, "activation", None)
    return "linear" if act is None else getattr(act, "__name__", str(act))


def gate_sites(graph: ChannelGraph) -> tuple[dict[str, str], dict[str, str]]:
    """({producer: the layer after which its gate goes}, {producer: why it gets no gate})."""
    sites, skipped = {}, {}
    for g in graph.prunable_groups:
        if len(g.producers) != 1:
            skipped["+".join(g.producers)] = "tied to other producers (a residual add)"
            continue
        p = g.producers[0]
        call = graph.call_of(p)
        if _activation(call.layer) not in HOMOGENEOUS:
            skipped[p] = f"its {_activation(call.layer)} activation does not commute with a gate"
            continue
        readers = [c for c in graph.calls if call.outputs[0] in c.inputs]
        bns = [c for c in readers if c.kind == "BatchNormalization"]
        if not bns:
            sites[p] = p
        elif len(readers) == 1 and bns[0].layer.scale:
            sites[p] = bns[0].name
        else:
            skipped[p] = "its output is normalised by a BatchNorm that cannot hold the gate"
    return sites, skipped


class Gates:
    """A gated copy of `model` (`self.model`) and the arithmetic over its gates."""

    def __init__(self, model, init_open: float = 0.9):
        graph = ChannelGraph(model)
        self.sites, self.skipped = gate_sites(graph)
        gated = model
        for p, after in self.sites.items():
            gated = surgery.insert(gated, after, HardConcreteGate(init_open, name=f"{p}_l0_gate"))
        self.model = gated
        self.gates = {p: gated.get_layer(f"{p}_l0_gate") for p in self.sites}
        self.variables = [g.log_alpha for g in self.gates.values()]
        self.graph = ChannelGraph(gated)
        self.full_macs = count_macs(model)
        # position of every gated channel in the concatenation of all gates
        index = np.full(len(self.graph.atom_producer), -1, np.int64)
        offset = 0
        self.spans = {}
        for p, gate in self.gates.items():
            n = int(gate.log_alpha.shape[0])
            index[self.graph.producer_atoms[p]] = np.arange(offset, offset + n)
            self.spans[p] = (offset, offset + n)
            offset += n
        self.n = offset
        self.terms = [t for t in (self._term(c, index) for c in self.graph.calls) if t is not None]

    def _term(self, call, index):
        layer = call.layer
        formula = rule_of(layer).macs
        if formula is None or len(call.inputs) != 1:
            return None

        def positions(key, width):
            m = self.graph.maps.get(key)
            if m is None or width is None or len(m) != width:
                return None
            pos = np.where(m >= 0, index[np.maximum(m, 0)], -1)
            return np.where(pos >= 0, pos, self.n)       # self.n: the appended "always kept"

        n_in, n_out = in_width(layer), out_width(layer)
        return (layer, formula, tuple(layer.input_shape), tuple(layer.output_shape),
                n_in, n_out, positions(call.inputs[0], n_in), positions(call.outputs[0], n_out))

    def macs(self, kept):
        """MACs (a tensor, or a float for a numpy `kept`) with gated channel c kept at kept[c]."""
        eager = isinstance(kept, np.ndarray)
        ext = np.append(kept, 1.0) if eager else tf.concat([kept, [1.0]], 0)

        def width(n, pos):
            if pos is None:
                return n or 0
            return float(ext[pos].sum()) if eager else tf.reduce_sum(tf.gather(ext, pos))
        total = 0.0
        for layer, formula, ishape, oshape, n_in, n_out, pin, pout in self.terms:
            total += formula(layer, ishape, oshape, width(n_in, pin), width(n_out, pout))
        return total

    def log_alpha(self) -> np.ndarray:
        return np.concatenate([g.log_alpha.numpy() for g in self.gates.values()]) if self.n else np.zeros(0)

    def open_probability(self):
        return tf.concat([g.open_probability() for g in self.gates.values()], 0)

    def is_open(self):
        return tf.cast(tf.concat(self.variables, 0) > CLOSED, tf.float32)

    def least_macs(self, min_channels: int) -> float:
        """The fraction of MACs left with every gated producer at `min_channels` open."""
        kept = np.zeros(self.n)
        for a, b in self.spans.values():
            kept[a:a + min(min_channels, b - a)] = 1.0
        return self.macs(kept) / max(self.full_macs, 1)

    def protect(self, allowed: float, min_channels: int) -> None:
        """Keep open the strongest gates (largest log_alpha) that fit in `allowed` of the MACs, and
        each producer's `min_channels` strongest whatever the budget (no layer empties): the
        penalty can only shut the others, so the gates cannot overshoot the schedule."""
        la = self.log_alpha()
        base = np.zeros(self.n, bool)
        for a, b in self.spans.values():
            base[a + np.argsort(-la[a:b])[:min_channels]] = True
        rest = [c for c in np.argsort(-la) if not base[c]]

        def kept(k: int) -> np.ndarray:
            m = base.copy()
            m[rest[:k]] = True
            return m
        lo, hi = 0, len(rest)                  # the largest k whose MACs fit (MACs grow with k)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if self.macs(kept(mid).astype(float)) <= allowed * self.full_macs else (lo, mid - 1)
        self._set(np.where(kept(lo), np.maximum(la, CLOSED + 0.5), la))

    def _set(self, la: np.ndarray) -> None:
        for p, (a, b) in self.spans.items():
            self.gates[p].log_alpha.assign(la[a:b].astype(np.float32))

    def close_to(self, target: float, min_channels: int) -> int:
        """Close the weakest open gates (smallest log_alpha, no gate below `min_channels` open)
        until the deterministic MACs are at most `target` of the full model's; returns how many."""
        la = self.log_alpha()
        kept = (la > CLOSED).astype(float)
        owner = np.zeros(self.n, np.int64)
        for i, (a, b) in enumerate(self.spans.values()):
            owner[a:b] = i
        left = np.bincount(owner, weights=kept, minlength=len(self.spans))
        closed = 0
        for c in np.argsort(la):
            if self.macs(kept) <= target * self.full_macs:
                break
            if kept[c] and left[owner[c]] > min_channels:
                kept[c], left[owner[c]] = 0.0, left[owner[c]] - 1
                closed += 1
        self._set(np.where(kept == 0, np.minimum(la, CLOSED - 1.0), la))
        return closed

    def open_fraction(self) -> dict[str, float]:
        return {p: float(np.mean(g.log_alpha.numpy() > CLOSED)) for p, g in self.gates.items()}

    def finish(self):
        """The ungated, smaller model: gates folded into their sites, removed, closed channels cut."""
        for p, gate in self.gates.items():
            _fold(self.model.get_layer(self.sites[p]), gate.value())
        closed = self.graph.full_keep()
        for p, gate in self.gates.items():
            closed[self.graph.producer_atoms[p][gate.value() <= 0]] = False
        _absorb_constants(self.model, self.graph, closed)
        model = self.model
        for gate in self.gates.values():
            model = surgery.remove(model, gate.name)
        graph = ChannelGraph(model)
        keep = graph.full_keep()
        for p, gate in self.gates.items():
            keep[graph.producer_atoms[p][gate.value() <= 0]] = False
        return surgery.shrink(model, graph, keep)


ABSORBS = ("Dense", "Conv1D", "Conv2D")


def _absorb_constants(model, graph: ChannelGraph, keep: np.ndarray) -> None:
    """A closed channel is 0 after its gate, but a bias further on (a depthwise conv's, a BN's
    shift) can turn it into a constant that the next Dense/Conv reads: add that constant's
    contribution to the reader's bias, so cutting the channel changes nothing (exactly for Dense
    and 1x1 convs; wider convs with 'same' padding differ at the borders)."""
    readers = []
    for call in graph.calls:
        if call.kind not in ABSORBS or len(call.inputs) != 1 or not call.layer.use_bias:
            continue
        m = graph.maps.get(call.inputs[0])
        if m is not None and ((m >= 0) & ~keep[np.maximum(m, 0)]).any():
            readers.append((call, np.flatnonzero((m >= 0) & ~keep[np.maximum(m, 0)])))
    if not readers:
        return
    from edgesparse._tf import keras

    probe = keras.Model(model.inputs, [graph.tensors[c.inputs[0]] for c, _ in readers])
    zeros = [np.zeros((1,) + tuple(t.shape[1:]), np.float32) for t in model.inputs]
    values = probe(zeros if len(zeros) > 1 else zeros[0], training=False)
    values = values if isinstance(values, (list, tuple)) else [values]
    for (call, gone), v in zip(readers, values):
        v = np.asarray(v).reshape(-1, np.asarray(v).shape[-1]).mean(axis=0)    # input-independent: a constant
        kernel, bias = call.layer.get_weights()[:2]
        rows = np.moveaxis(kernel, -2, 0).reshape(kernel.shape[-2], -1, kernel.shape[-1]).sum(axis=1)
        call.layer.bias.assign(bias + v[gone] @ rows[gone])


def _fold(layer, z: np.ndarray) -> None:
    """Multiply the per-channel output of `layer` (a producer, or a BatchNorm) by z."""
    weights = layer.get_weights()
    if rule_of(layer).role is Role.PRODUCER:
        for i, axes in enumerate(weight_axes(layer)):
            for axis, tag in axes.items():
                if tag == OUT:
                    shape = [1] * weights[i].ndim
                    shape[axis] = -1
                    weights[i] = weights[i] * z.reshape(shape)
    else:                                   # BatchNorm: gamma and beta (the scale and the shift)
        n = 1 + int(layer.center)
        weights[:n] = [w * z for w in weights[:n]]
    layer.set_weights(weights)


class MacController:
    """The gates' penalty and its controller (see the module docstring)."""

    def __init__(self, gates: Gates, target: float, schedule, total_steps: int, min_channels: int = 1,
                 start: float = 0.05):
        self.gates, self.target, self.schedule = gates, float(target), schedule
        self.total_steps, self.min_channels = max(1, int(total_steps)), int(min_channels)
        self.strength = tf.Variable(start, dtype=tf.float32, trainable=False, name="l0_strength")
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="l0_step")
        self.n = 1

    def allowed(self):
        t = tf.cast(self.step, tf.float32) / float(self.total_steps)
        return 1.0 - (1.0 - self.target) * self.schedule.progress(t)

    def penalty(self, model):
        """The regularizer: lambda x the expected fraction of MACs kept."""
        return self.strength * self.gates.macs(self.gates.open_probability()) / float(self.gates.full_macs)

    def __call__(self, model) -> None:
        self.step.assign_add(1)
        frac = self.gates.macs(self.gates.is_open()) / float(self.gates.full_macs)
        self.strength.assign(tf.where(frac > self.allowed(), self.strength * GROWTH, self.strength * DECAY))

    def callback(self):
        """After every batch (eagerly): protect the gates that fit in the schedule's MACs."""
        from edgesparse._tf import keras

        controller = self

        class Protect(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                controller.gates.protect(float(controller.allowed()), controller.min_channels)
        return Protect()

    def epoch_row(self) -> dict:
        frac = float(self.gates.macs(self.gates.is_open().numpy())) / self.gates.full_macs
        return {"kept": round(float(np.mean(self.gates.log_alpha() > CLOSED)), 4), "macs": round(frac, 4)}

