"""Depth removal: residual blocks whose branch can be dropped, scored and removed whole.

A residual block is an `Add` of two tensors where one (the skip) is an identity path and the
other (the branch) is computed from the skip alone, by layers nothing outside the branch uses.
Dropping the branch turns the Add into the identity: `relu(x + f(x))` becomes `relu(x)`. On
small models the per-operator cost dominates latency (DESIGN trap 5), so removing a block's
operators buys more than removing the same MACs as channels.

`residual_blocks` finds them; `branch_ratios` scores them (the branch output's RMS over the
skip's on calibration inputs: a branch that adds little goes first); `drop_blocks` rebuilds the
functional model without the chosen branches (layers cloned, weights copied, the input untouched).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgesparse._tf import keras, tf
from edgesparse.graph.channels import TensorKey, _topological_calls, tensor_key


@dataclass(frozen=True)
class Block:
    add: str                      # the Add layer
    skip: TensorKey               # its identity input
    branch_out: TensorKey         # its other input
    layers: tuple[str, ...]       # the branch's layers, inputs first

    def describe(self) -> dict:
        return {"add": self.add, "layers": list(self.layers)}


def residual_blocks(model) -> list[Block]:
    calls = _topological_calls(model)
    producer = {k: c for c in calls for k in c.outputs}
    consumers: dict[TensorKey, list[str]] = {}
    uses: dict[str, int] = {}
    for c in calls:
        uses[c.name] = uses.get(c.name, 0) + 1
        for k in c.inputs:
            consumers.setdefault(k, []).append(c.name)
    outputs = {tensor_key(t) for t in tf.nest.flatten(model.outputs)}
    blocks = []
    for c in calls:
        if c.kind != "Add" or len(c.inputs) != 2:
            continue
        for skip, out in (c.inputs, c.inputs[::-1]):
            layers = _branch(skip, out, producer)
            if layers is None or not layers or any(uses[n] > 1 for n in layers):
                continue
            inside = set(layers) | {c.name}
            private = all(set(consumers.get(k, [])) <= inside and k not in outputs
                          for n in layers for k in producer_outputs(calls, n))
            if private and consumers.get(out) == [c.name]:
                order = [x.name for x in calls if x.name in layers]
                blocks.append(Block(c.name, skip, out, tuple(order)))
                break
    return blocks


def producer_outputs(calls, name: str) -> list[TensorKey]:
    return [k for c in calls if c.name == name for k in c.outputs]


def _branch(skip: TensorKey, out: TensorKey, producer) -> list[str] | None:
    """The layers computing `out` from `skip` alone; None when the branch reads anything else."""
    layers, stack, seen = set(), [out], set()
    while stack:
        key = stack.pop()
        if key == skip or key in seen:
            continue
        seen.add(key)
        call = producer[key]
        if call.kind == "InputLayer" or not call.inputs:
            return None
        layers.add(call.name)
        stack.extend(call.inputs)
    return sorted(layers)


def branch_ratios(model, blocks: list[Block], x: np.ndarray, batch: int = 256) -> dict[str, float]:
    """{add name: RMS(branch output) / RMS(skip)} on the inputs `x`."""
    calls = {k: c for c in _topological_calls(model) for k in c.outputs}

    def tensor(key):
        node = calls[key].layer._inbound_nodes[key[1]]
        return tf.nest.flatten(node.outputs)[key[2]]
    wanted = [t for b in blocks for t in (tensor(b.branch_out), tensor(b.skip))]
    if not wanted:
        return {}
    probe = keras.Model(model.inputs, wanted)
    sums = np.zeros(len(wanted))
    for s in range(0, len(x), batch):
        outs = probe(x[s:s + batch], training=False)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        sums += [float(tf.reduce_sum(tf.square(o))) for o in outs]
    return {b.add: float(np.sqrt(sums[2 * i] / max(sums[2 * i + 1], 1e-30))) for i, b in enumerate(blocks)}


def drop_blocks(model, blocks: list[Block]):
    """The model rebuilt without the branches of `blocks` (each Add becomes its skip)."""
    removed = {n for b in blocks for n in b.layers}
    skip_of = {b.add: b.skip for b in blocks}
    new: dict[TensorKey, object] = {}
    for call in _topological_calls(model):
        layer = call.layer
        if call.kind == "InputLayer":
            t = keras.Input(batch_shape=layer.get_config()["batch_input_shape"], dtype=layer.dtype,
                            name=layer.name)
            new[call.outputs[0]] = t
            continue
        if call.name in removed:
            continue
        if call.name in skip_of:
            new[call.outputs[0]] = new[skip_of[call.name]]
            continue
        clone = layer.__class__.from_config(layer.get_config())
        args = [new[k] for k in call.inputs]
        outs = clone(args[0] if len(args) == 1 else args)
        for k, t in zip(call.outputs, tf.nest.flatten(outs)):
            new[k] = t
        if layer.weights:
            clone.set_weights(layer.get_weights())
    ins = [new[tensor_key(t)] for t in model.inputs]
    outs = [new[tensor_key(t)] for t in tf.nest.flatten(model.outputs)]
    return keras.Model(ins, outs if len(outs) > 1 else outs[0], name=model.name)
