"""Surgery: build a genuinely smaller dense tf_keras model and copy the kept weights into it.

The new model is the old graph cloned layer by layer (`clone_model`, so Lambda, TF-op and
custom layers are rebuilt by Keras itself), with `filters`/`units` of each pruned producer set
to the number of channels it keeps. Weights are then copied, sliced along the axes that carry
removed channels: producer output columns and biases, BatchNorm vectors, depthwise kernels,
PReLU alphas, and the input rows of every following layer (through Concatenate offsets and
Flatten's channels-last striding, which the channel maps already encode).

`weight_index` says, for one layer, which indices of each weight survive. The same function
drives both the copy and the parameter count of a plan, so the budget and the surgery can
never disagree.
"""
from __future__ import annotations

import numpy as np

from edgesparse._tf import keras
from edgesparse.graph.channels import ChannelGraph, PRODUCERS

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
    """For each weight of `layer` (get_weights order): per axis, kept indices or None (all)."""
    kind = type(layer).__name__
    shapes = [tuple(w.shape) for w in layer.weights]
    none = [[None] * len(s) for s in shapes]
    if kind == "Dense" or kind in ("Conv1D", "Conv2D"):
        idx = none
        idx[0][-2], idx[0][-1] = in_keep, out_keep
        if len(shapes) > 1:
            idx[1][0] = out_keep
        return idx
    if kind == "Conv2DTranspose":
        idx = none
        idx[0][-2], idx[0][-1] = out_keep, in_keep
        if len(shapes) > 1:
            idx[1][0] = out_keep
        return idx
    if kind in ("SeparableConv1D", "SeparableConv2D"):
        idx = none
        mult = shapes[0][-1]
        idx[0][-2] = in_keep
        if in_keep is not None:   # pointwise rows are (input channel, multiplier) pairs
            idx[1][-2] = (np.asarray(in_keep)[:, None] * mult + np.arange(mult)[None, :]).ravel()
        idx[1][-1] = out_keep
        if len(shapes) > 2:
            idx[2][0] = out_keep
        return idx
    if kind in ("DepthwiseConv1D", "DepthwiseConv2D"):
        idx = none
        idx[0][-2] = in_keep
        if len(shapes) > 1:
            idx[1][0] = in_keep
        return idx
    if kind == "BatchNormalization":
        return [[in_keep] for _ in shapes]
    if kind == "PReLU":
        channels = shapes[0][-1]
        idx = none
        if in_keep is not None and channels > 1:
            idx[0][-1] = in_keep
        return idx
    # Anything else must see its channels untouched (the graph analysis guarantees it).
    for s in shapes:
        if s and not (_full(in_keep, s[-1]) or _full(out_keep, s[-1])):
            raise AssertionError(f"internal: {layer.name} ({kind}) would need slicing")
    return none


def slice_weights(layer, in_keep, out_keep) -> list[np.ndarray]:
    out = []
    for w, axes in zip(layer.get_weights(), weight_index(layer, in_keep, out_keep)):
        for axis, idx in enumerate(axes):
            if idx is not None:
                w = np.take(w, np.asarray(idx, dtype=np.int64), axis=axis)
        out.append(w)
    return out


def count_params(model, keeps: dict[str, tuple]) -> int:
    """Parameters of the model that `keeps` describes, without building it."""
    total = 0
    for layer in _leaf_layers(model):
        in_keep, out_keep = keeps.get(layer.name, (None, None))
        for w, axes in zip(layer.weights, weight_index(layer, in_keep, out_keep)):
            total += int(np.prod([len(i) if i is not None else d for i, d in zip(axes, w.shape)],
                                 dtype=np.int64))
    return total


def _leaf_layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _leaf_layers(layer)
        else:
            yield layer


def shrink(model, graph: ChannelGraph, atom_keep: np.ndarray):
    """The smaller model: same graph, fewer channels, weights copied. The input is untouched."""
    keeps = layer_keeps(graph, atom_keep)

    def clone_layer(layer):
        config = layer.get_config()
        _, out_keep = keeps.get(layer.name, (None, None))
        kind = type(layer).__name__
        if kind in PRODUCERS and out_keep is not None:
            config["units" if kind == "Dense" else "filters"] = int(len(out_keep))
        elif kind == "Reshape" and out_keep is not None:     # channel-keeping reshape: new width
            config["target_shape"] = tuple(config["target_shape"][:-1]) + (int(len(out_keep)),)
        return layer.__class__.from_config(config)

    new = keras.models.clone_model(model, clone_function=clone_layer)
    for layer in new.layers:
        old = model.get_layer(layer.name)
        if not old.weights:
            continue
        in_keep, out_keep = keeps.get(layer.name, (None, None))
        layer.set_weights(slice_weights(old, in_keep, out_keep))
    return new
