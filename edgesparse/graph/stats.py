"""Parameters and multiply-accumulates (MACs) of a tf_keras model, per layer and in total.

MACs are counted for one sample (batch 1) over the layers that do the arithmetic: those whose
rule in graph/layers.py has a MAC formula (Dense, the convolutions, LSTM/GRU/SimpleRNN,
Attention, AdditiveAttention, MultiHeadAttention, plus any registered custom layer).
Element-wise layers (BatchNorm, LayerNorm, activations, adds) are a rounding error next to these
and are not counted, which is also what the literature's MAC figures do.

A total can only be as good as its layers: `uncounted_layers` names the layers it leaves out or
undercounts (a kind with weights that nobody taught edgesparse, a shape with unknown
dimensions, which count as 1). With any of them, `count_macs` is a lower bound, and whoever
shows the figure says so (`uncounted_warning`).

`layer_macs(layer, n_in, n_out)` counts at other channel widths too: the pruning planner counts
the MACs of a plan with the same formula, so a plan and the model it builds agree.
"""
from __future__ import annotations

from edgesparse.graph.layers import UNKNOWN, in_width, leaf_layers, out_width, rule_of, unwrap


def _shape(shape):
    """A layer's input or output shape: a tuple, or a list of tuples for a multi-tensor call."""
    return [tuple(s) for s in shape] if isinstance(shape, list) else tuple(shape)


def _first(shape) -> tuple:
    return shape[0] if isinstance(shape, list) else shape


def _formula_macs(layer, n_in: int | None, n_out: int | None) -> int | None:
    """The layer's MAC formula at these widths; None when its shapes leave it uncountable."""
    inner = unwrap(layer)
    macs = rule_of(inner).macs
    n_in = in_width(inner) if n_in is None else n_in
    n_out = out_width(inner) if n_out is None else n_out
    inp = _shape(layer.input_shape)
    if rule_of(inner).axes is not None:
        inp = _first(inp)             # channel-indexed layers read one tensor; attention reads several
    return macs(inner, inp, _first(_shape(layer.output_shape)), n_in or 0, n_out or 0)


def layer_macs(layer, n_in: int | None = None, n_out: int | None = None) -> int:
    """MACs of one layer for a batch of one (at its own widths unless given); 0 for layers that
    do no multiply-accumulate, and for those `uncounted_layers` names.

    Weights come from the (unwrapped) layer, call shapes from the layer as it sits in the graph.
    """
    if rule_of(unwrap(layer)).macs is None:
        return 0
    return int(_formula_macs(layer, n_in, n_out) or 0)


def macs_by_layer(model) -> dict[str, int]:
    return {layer.name: layer_macs(layer) for layer in leaf_layers(model)}


def count_macs(model) -> int:
    return int(sum(macs_by_layer(model).values()))


def _unknown_dims(shape) -> bool:
    return any(d is None for s in (shape if isinstance(shape, list) else [shape]) for d in tuple(s)[1:])


def uncounted_layers(model) -> dict[str, str]:
    """{layer name: why} for the layers whose MACs `count_macs` leaves out or undercounts."""
    why = {}
    for layer in leaf_layers(model):
        inner = unwrap(layer)
        rule = rule_of(inner)
        if rule.macs is None:
            if rule is UNKNOWN and inner.weights:
                why[layer.name] = f"{type(inner).__name__} has weights and no MAC formula"
        elif _formula_macs(layer, None, None) is None or \
                _unknown_dims(layer.input_shape) or _unknown_dims(layer.output_shape):
            why[layer.name] = "its shapes have unknown dimensions"
    return why


def uncounted_warning(model) -> str | None:
    """One line saying the MAC count is a lower bound, naming the layers; None when it is exact."""
    why = uncounted_layers(model)
    if not why:
        return None
    named = "; ".join(f"{name} ({reason})" for name, reason in list(why.items())[:5])
    more = f" and {len(why) - 5} more" if len(why) > 5 else ""
    return (f"MACs are a lower bound: they leave out {named}{more}; teach edgesparse a custom layer's "
            "MACs with register_layer(), or give the model fully known input shapes")


def count_params(model) -> int:
    return int(model.count_params())


def model_summary(model) -> dict[str, int]:
    return {"params": count_params(model), "macs": count_macs(model)}
