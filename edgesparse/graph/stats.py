"""Parameters and multiply-accumulates (MACs) of a tf_keras model, per layer and in total.

MACs are counted for one sample (batch 1) over the layers that do the arithmetic: those whose
rule in graph/layers.py has a MAC formula (Dense, Conv1D/2D/3D, DepthwiseConv1D/2D,
SeparableConv1D/2D and the transposed convs, plus any registered custom layer).
Element-wise layers (BatchNorm, activations, adds) are a rounding error next to these and are
not counted, which is also what the literature's MAC figures do.

`layer_macs(layer, n_in, n_out)` counts at other channel widths too: the pruning planner counts
the MACs of a plan with the same formula, so a plan and the model it builds agree.
"""
from __future__ import annotations

from edgesparse.graph.layers import in_width, leaf_layers, out_width, rule_of, unwrap


def _shape(shape) -> tuple:
    if isinstance(shape, list):  # multi-output layers: not one of ours
        shape = shape[0]
    return tuple(shape)


def layer_macs(layer, n_in: int | None = None, n_out: int | None = None) -> int:
    """MACs of one layer for a batch of one (at its own widths unless given); 0 for layers that
    do no multiply-accumulate.

    Weights come from the (unwrapped) layer, call shapes from the layer as it sits in the graph.
    """
    inner = unwrap(layer)
    macs = rule_of(inner).macs
    if macs is None:
        return 0
    n_in = in_width(inner) if n_in is None else n_in
    n_out = out_width(inner) if n_out is None else n_out
    return int(macs(inner, _shape(layer.input_shape), _shape(layer.output_shape), n_in or 0, n_out or 0))


def macs_by_layer(model) -> dict[str, int]:
    return {layer.name: layer_macs(layer) for layer in leaf_layers(model)}


def count_macs(model) -> int:
    return int(sum(macs_by_layer(model).values()))


def count_params(model) -> int:
    return int(model.count_params())


def model_summary(model) -> dict[str, int]:
    return {"params": count_params(model), "macs": count_macs(model)}
