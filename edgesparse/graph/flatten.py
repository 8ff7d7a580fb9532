"""Flatten nested models into one functional graph, so their channels can be analysed.

Transfer-learning models are often `Input -> base_model(x) -> head`: the whole backbone is one
layer of the outer graph. We re-apply the inner layers directly to the outer tensors, which
gives one flat graph over the same layer objects (surgery then clones everything anyway).
When that is impossible (layer names that collide, unusual call signatures) the caller keeps
the nested model, and the analysis fails closed on it with a reason.
"""
from __future__ import annotations

from edgesparse._tf import keras, tf


def has_nested_models(model) -> bool:
    return any(isinstance(layer, keras.Model) for layer in model.layers)


def flatten_nested(model):
    """(flat model, names of the models flattened, None) or (model, [], reason it could not)."""
    if not has_nested_models(model):
        return model, [], None
    flattened: list[str] = []
    try:
        mapping: dict[int, object] = {id(t): t for t in tf.nest.flatten(model.inputs)}
        outputs = _replay(model, mapping, flattened)
        flat = keras.Model(model.inputs, outputs, name=model.name)
    except Exception as exc:    # noqa: BLE001 - any failure means: keep the nested model
        return model, [], f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return flat, flattened, None


def _replay(model, mapping: dict[int, object], flattened: list[str]):
    """Call every layer of `model` on mapped tensors; return the mapped outputs."""
    for depth in sorted(model._nodes_by_depth.keys(), reverse=True):
        for node in model._nodes_by_depth[depth]:
            layer = node.layer
            if isinstance(layer, keras.layers.InputLayer):
                continue
            args, kwargs = map_tensors((node.call_args, node.call_kwargs), mapping)
            if isinstance(layer, keras.Model) and getattr(layer, "_is_graph_network", False):
                inner_inputs = tf.nest.flatten(layer.inputs)
                given = tf.nest.flatten(args[0] if len(args) == 1 else args)
                if len(given) != len(inner_inputs):
                    raise ValueError(f"cannot map the inputs of nested model {layer.name}")
                for t_inner, t_outer in zip(inner_inputs, given):
                    mapping[id(t_inner)] = t_outer
                result = _replay(layer, mapping, flattened)
                flattened.append(layer.name)
            else:
                result = layer(*args, **kwargs)
            for original, new in zip(tf.nest.flatten(node.outputs), tf.nest.flatten(result)):
                mapping[id(original)] = new
    outs = [mapping[id(t)] for t in tf.nest.flatten(model.outputs)]
    return outs[0] if len(outs) == 1 else outs


def map_tensors(structure, mapping: dict[int, object]):
    """`structure` with every graph tensor swapped for the one `mapping` holds for it."""
    def swap(x):
        if hasattr(x, "_keras_history"):       # a symbolic tensor of the graph
            if id(x) not in mapping:
                raise ValueError("a tensor of the graph was used before it was computed")
            return mapping[id(x)]
        return x
    return tf.nest.map_structure(swap, structure)
