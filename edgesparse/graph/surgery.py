"""Surgery: build a genuinely smaller dense tf_keras model and copy the kept weights into it.

The new model is the old graph cloned layer by layer (`clone_model`, so Lambda, TF-op and
custom layers are rebuilt by Keras itself), with `filters`/`units` of each pruned producer set
to the number of channels it keeps. Weights are then copied, sliced along the axes that carry
removed channels: producer output columns and biases, BatchNorm vectors, depthwise kernels,
PReLU alphas, and the input rows of every following layer (through Concatenate offsets and
Flatten's channels-last striding, which the channel maps already encode).

`weight_index` says, for one layer, which indices of each weight survive (from the weight axes
of its rule in graph/layers.py). The same function drives both the copy and the parameter count
of a plan (`planned_params`), so the budget and the surgery can never disagree.
"""
from __future__ import annotations

import numpy as np

from edgesparse._tf import keras
from edgesparse.graph.channels import ChannelGraph
from edgesparse.graph.layers import IN, OUT, leaf_layers, rule_of, weight_axes

Keep = "np.ndarray | None"    # kept indices along an axis; None: all


def layer_keeps(graph: ChannelGraph, atom_keep: np.ndarray) -> dict[str, tuple]:
    """{layer name: (kept input channels, kept output channels)} for single-tensor layers."""
    keeps = {}
    for call in graph.calls:
        if call.kind == "InputLayer" or call.name in keeps:
            continue
        inp = graph.kept_positions(call.inputs[0], atom_keep) if len(call.inputs) == 1 else None
        out = graph.kept_positions(call.outputs[0], atom_keep) if len(call.outputs) == 1 else None
        keeps[call.name] = (inp, out)
    return keeps


def _full(idx, n) -> bool:
    return idx is None or len(idx) == n


def weight_index(layer, in_keep, out_keep) -> list[list]:
    """For each weight of `layer` (get_weights order): per axis, kept indices or None (all).

    The axes that carry channels come from the layer's rule (graph/layers.py)."""
    shapes = [tuple(w.shape) for w in layer.weights]
    index = [[None] * len(s) for s in shapes]
    axes = weight_axes(layer)
    if axes is None:
        # Anything else must see its channels untouched (the graph analysis guarantees it).
        for s in shapes:
            if s and not (_full(in_keep, s[-1]) or _full(out_keep, s[-1])):
                raise AssertionError(f"internal: {layer.name} ({type(layer).__name__}) would need slicing")
        return index
    for idx, ax in zip(index, axes):
        for axis, tag in ax.items():
            if tag == OUT:
                idx[axis] = out_keep
            elif tag == IN:
                idx[axis] = in_keep
            elif in_keep is not None:      # In(k): k consecutive positions per input channel
                k = tag.repeat
                idx[axis] = (np.asarray(in_keep)[:, None] * k + np.arange(k)[None, :]).ravel()
    return index


def slice_weights(layer, in_keep, out_keep) -> list[np.ndarray]:
    out = []
    for w, axes in zip(layer.get_weights(), weight_index(layer, in_keep, out_keep)):
        for axis, idx in enumerate(axes):
            if idx is not None:
                w = np.take(w, np.asarray(idx, dtype=np.int64), axis=axis)
        out.append(w)
    return out


def planned_params(model, keeps: dict[str, tuple]) -> int:
    """Parameters of the model that `keeps` describes, without building it."""
    total = 0
    for layer in leaf_layers(model):
        in_keep, out_keep = keeps.get(layer.name, (None, None))
        for w, axes in zip(layer.weights, weight_index(layer, in_keep, out_keep)):
            total += int(np.prod([len(i) if i is not None else d for i, d in zip(axes, w.shape)],
                                 dtype=np.int64))
    return total


def shrink(model, graph: ChannelGraph, atom_keep: np.ndarray):
    """The smaller model: same graph, fewer channels, weights copied. The input is untouched."""
    keeps = layer_keeps(graph, atom_keep)

    def clone_layer(layer):
        config = layer.get_config()
        _, out_keep = keeps.get(layer.name, (None, None))
        resize = rule_of(layer).resize
        if resize is not None and out_keep is not None:
            config = resize(config, len(out_keep))
        return layer.__class__.from_config(config)

    new = keras.models.clone_model(model, clone_function=clone_layer)
    for layer in new.layers:
        old = model.get_layer(layer.name)
        if not old.weights:
            continue
        in_keep, out_keep = keeps.get(layer.name, (None, None))
        layer.set_weights(slice_weights(old, in_keep, out_keep))
    return new

