"""Parameters and multiply-accumulates (MACs) of a tf_keras model, per layer and in total.

MACs are counted for one sample (batch 1) over the layers that do the arithmetic:
Dense, Conv1D/2D/3D, DepthwiseConv1D/2D, SeparableConv1D/2D and Conv2DTranspose.
Element-wise layers (BatchNorm, activations, adds) are a rounding error next to these and are
not counted, which is also what the literature's MAC figures do.
"""
from __future__ import annotations

from typing import Any

import numpy as np


def _prod(shape: Any) -> int:
    return int(np.prod([d for d in shape if d is not None])) if shape else 1


def _output_shape(layer) -> tuple:
    shape = layer.output_shape
    if isinstance(shape, list):  # multi-output layers: not one of ours
        shape = shape[0]
    return tuple(shape)


def _input_shape(layer) -> tuple:
    shape = layer.input_shape
    if isinstance(shape, list):
        shape = shape[0]
    return tuple(shape)


def _unwrap(layer):
    """tfmot wrappers (QuantizeWrapperV2, PruneLowMagnitude) hold the real layer in `.layer`."""
    while type(layer).__name__ in ("QuantizeWrapper", "QuantizeWrapperV2", "PruneLowMagnitude") \
            and hasattr(layer, "layer"):
        layer = layer.layer
    return layer


def layer_macs(layer) -> int:
    """MACs of one layer for a batch of one; 0 for layers that do no multiply-accumulate.

    Weights come from the (unwrapped) layer, call shapes from the layer as it sits in the graph.
    """
    inner = _unwrap(layer)
    kind = type(inner).__name__
    if kind not in _MAC_LAYERS:
        return 0
    return _MAC_LAYERS[kind](inner, _input_shape(layer), _output_shape(layer))


def _dense(layer, inp, out) -> int:
    k = layer.kernel.shape
    return int(k[0]) * int(k[1]) * _prod(out[1:-1])     # Dense on (batch, time, features) too


def _depthwise(layer, inp, out) -> int:
    k = layer.depthwise_kernel.shape                    # (*k, in, mult)
    return _prod(out[1:-1]) * _prod(k[:-2]) * int(k[-2]) * int(k[-1])


def _separable(layer, inp, out) -> int:
    pk = layer.pointwise_kernel.shape                   # (1.., in*mult, out)
    return _depthwise(layer, inp, out) + _prod(out[1:-1]) * int(pk[-2]) * int(pk[-1])


def _transpose(layer, inp, out) -> int:
    k = layer.kernel.shape                              # (*k, out, in): every input pixel scatters
    return _prod(inp[1:-1]) * _prod(k[:-2]) * int(k[-2]) * int(k[-1])


def _conv(layer, inp, out) -> int:
    k = layer.kernel.shape                              # (*k, in/groups, out)
    return _prod(out[1:-1]) * _prod(k[:-1]) * int(k[-1])


_MAC_LAYERS = {
    "Dense": _dense, "DepthwiseConv1D": _depthwise, "DepthwiseConv2D": _depthwise,
    "SeparableConv1D": _separable, "SeparableConv2D": _separable,
    "Conv1DTranspose": _transpose, "Conv2DTranspose": _transpose, "Conv3DTranspose": _transpose,
    "Conv1D": _conv, "Conv2D": _conv, "Conv3D": _conv,
}


def _leaf_layers(model):
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers and type(layer).__name__ in ("Functional", "Sequential", "Model"):
            yield from _leaf_layers(layer)
        else:
            yield layer


def macs_by_layer(model) -> dict[str, int]:
    return {layer.name: layer_macs(layer) for layer in _leaf_layers(model)}


def count_macs(model) -> int:
    return int(sum(macs_by_layer(model).values()))


def count_params(model) -> int:
    return int(model.count_params())


def model_summary(model) -> dict[str, int]:
    return {"params": count_params(model), "macs": count_macs(model)}
