"""Small facts and copies of a functional tf_keras model that many modules need.

`output_activation` is the one place that decides whether a model ends in a softmax: the losses,
distillation, QAT, the from-scratch control and the import facts all ask it.
"""
from __future__ import annotations

from edgesparse._tf import keras
from edgesparse.graph.layers import unwrap

OUTPUT_ACTIVATIONS = ("softmax", "sigmoid")


def clone_with_weights(model):
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def _last_layer(model):
    layer = model.outputs[0]._keras_history.layer
    while isinstance(layer, keras.Model):            # a nested model: look inside it
        layer = layer.outputs[0]._keras_history.layer
    return unwrap(layer)                             # tfmot wrappers (QAT, pruning) hold the real layer


def output_activation(model) -> str:
    """"softmax", "sigmoid" or "logits": what the model's output layer ends with."""
    layer = _last_layer(model)
    if type(layer).__name__ == "Softmax":
        return "softmax"
    act = getattr(layer, "activation", None)
    act = getattr(act, "activation", act)            # QAT wraps it in a QuantizeAwareActivation
    name = act if isinstance(act, str) else getattr(act, "__name__", "")
    return name if name in OUTPUT_ACTIVATIONS else "logits"


def outputs_are_probabilities(model) -> bool:
    """True when the model ends in a softmax (so a loss must not apply one again)."""
    return output_activation(model) == "softmax"
