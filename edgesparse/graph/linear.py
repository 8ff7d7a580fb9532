"""Layers as matrix products, so least squares, greedy selection and sparse refits can work on them.

A layer with a linear form computes `pre_activation = rows @ K + b`, with K the kernel as a
(taps * in, out) matrix and one row per output position:

- Dense: the input with every leading axis folded into rows.
- Conv1D / Conv2D (channels_last, groups=1): the im2col patch matrix, columns ordered
  (kh, kw, c_in) like the kernel (`tf.image.extract_patches` gives exactly that order).
  Conv1D is a Conv2D of height 1; 'causal' is a left pad then 'valid'.

Which layers have such a form, and how their rows are unfolded, is their rule's `im2col`
(graph/layers.py). Other layers (depthwise, separable, transposed convs, grouped convs, shared
layers) have none here: callers skip them and say why. `check_linear_form` compares the matrix
form with the layer's own output, so a layer we would get wrong is skipped, never silently refit.

The second half is "the activations at a layer's input": `input_model`, `layer_input`, `run`.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from edgesparse._tf import keras, tf
from edgesparse.graph.layers import kinds_with, rule_of

KERNEL_ATTRIBUTES = ("kernel", "recurrent_kernel", "depthwise_kernel", "pointwise_kernel", "embeddings")


# ----------------------------------------------------------------------------- the linear form

def has_linear_form(layer) -> bool:
    return rule_of(layer).im2col is not None


def why_not_linear(layer) -> str | None:
    """None when the layer is exactly `rows @ K + b` (then it can be refit or sparsified by
    mask); otherwise the reason, in the words the sparsity report uses."""
    kind = type(layer).__name__
    if not has_linear_form(layer):
        names = kinds_with(lambda r: r.im2col is not None)
        listed = ", ".join(names[:-1]) + " and " + names[-1]
        return f"{kind} keeps its weights dense (only {listed} are sparsified)"
    if len(getattr(layer, "_inbound_nodes", [])) > 1:
        return f"shared layer (called {len(layer._inbound_nodes)} times): one mask cannot fit every call"
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return "channels_first convolution"
    if getattr(layer, "groups", 1) != 1:
        return f"grouped convolution (groups={layer.groups})"
    return None


def input_rows(layer, x: np.ndarray) -> np.ndarray:
    """The rows the layer multiplies by its 2-D kernel: (samples x positions, taps x in)."""
    im2col = rule_of(layer).im2col
    if im2col is None:
        raise ValueError(f"{type(layer).__name__} is not a linear layer we can unfold")
    return im2col(layer, x)


def kernels_of(layer) -> list:
    """The layer's weight matrices (not biases or normalisation statistics), its sublayers' too:
    a MultiHeadAttention's EinsumDense projections, an LSTM cell's kernel and recurrent kernel."""
    found: dict[int, Any] = {}
    for part in (layer, *(m for m in layer.submodules if isinstance(m, keras.layers.Layer))):
        for a in KERNEL_ATTRIBUTES:
            w = getattr(part, a, None)
            if w is not None:
                found.setdefault(id(w), w)     # an LSTM's `kernel` is its cell's
    return list(found.values())


def kernel_2d(kernel: np.ndarray) -> np.ndarray:
    """(…taps, in, out) -> (taps*in, out), matching `input_rows`."""
    return kernel.reshape(-1, kernel.shape[-1])


def kernel_matrix(layer) -> np.ndarray:
    return kernel_2d(layer.kernel.numpy())


def taps(layer) -> int:
    """Kernel positions per input channel (1 for Dense)."""
    return int(np.prod(tuple(layer.kernel.shape)[:-2], dtype=np.int64))


def input_channels(layer) -> int:
    """c_in: the length of the axis N:M blocks run along."""
    return int(layer.kernel.shape[-2])


def has_bias(layer) -> bool:
    return bool(getattr(layer, "use_bias", False) and layer.bias is not None)


def bias_vector(layer) -> np.ndarray:
    if has_bias(layer):
        return layer.bias.numpy()
    return np.zeros(layer.kernel.shape[-1], dtype=np.float32)


def set_kernel_and_bias(layer, kernel2d: np.ndarray, bias: np.ndarray) -> None:
    """Write a refit kernel (and bias, when the layer has one) back into the layer."""
    layer.kernel.assign(kernel2d.reshape(tuple(layer.kernel.shape)).astype(np.float32))
    if has_bias(layer):
        layer.bias.assign(bias.astype(np.float32))


def check_linear_form(layer, x: np.ndarray) -> float:
    """Largest |layer(x) - activation(rows @ K + b)| on a few samples (relative to the scale)."""
    x = x[:8]
    want = np.asarray(layer(tf.convert_to_tensor(x, tf.float32), training=False))
    pre = input_rows(layer, x) @ kernel_matrix(layer) + bias_vector(layer)
    got = np.asarray(layer.activation(tf.convert_to_tensor(pre.reshape(want.shape), tf.float32)))
    scale = max(1.0, float(np.abs(want).max()))
    return float(np.abs(want - got).max() / scale)


def sampled_rows(layer, arrays: list[np.ndarray], max_rows: int, rng: np.random.Generator,
                 batch: int = 64) -> list[np.ndarray]:
    """`input_rows` of several aligned activation arrays (same samples), at most `max_rows`
    rows in all, the same rows from each. Unfolded batch by batch, so a large conv never holds
    every patch of every calibration sample in memory at once."""
    n = len(arrays[0])
    out: list[list[np.ndarray]] = [[] for _ in arrays]
    for start in range(0, n, batch):
        parts = [input_rows(layer, a[start:start + batch]) for a in arrays]
        quota = int(np.ceil(max_rows * min(batch, n - start) / n))
        if len(parts[0]) > quota:
            pick = np.sort(rng.choice(len(parts[0]), quota, replace=False))
            parts = [p[pick] for p in parts]
        for acc, p in zip(out, parts):
            acc.append(p)
    return [np.concatenate(acc) for acc in out]


# ----------------------------------------------------------------------------- a layer's inputs

def submodel(model, tensors: list):
    """A model from the model's inputs to some of its intermediate tensors."""
    return keras.Model(model.inputs, list(tensors))


def layer_input(model, name: str):
    """The input tensor of layer `name` at its call inside `model` (layers of a flattened
    nested model also have a call inside the old nested graph, which `layer.input` would give)."""
    layer = model.get_layer(name)
    for i, node in enumerate(layer._inbound_nodes):
        if f"{name}_ib-{i}" in model._network_nodes:
            t = node.input_tensors
            return t[0] if isinstance(t, list) and len(t) == 1 else t   # as `layer.input` gives it
    return layer.input


def input_model(model, name: str):
    """A model from the network's inputs to the input tensor of layer `name`."""
    return keras.Model(model.inputs, layer_input(model, name))


def takes_model_input(model, name: str) -> bool:
    """True when layer `name` reads one of the model's inputs directly."""
    t = layer_input(model, name)
    return any(t is i for i in model.inputs)


def run(model, x: np.ndarray, batch_size: int = 512) -> list[np.ndarray]:
    """Eager calls in batches: for the one-off submodels here, `predict` spends longer tracing
    a tf.function than computing."""
    parts: list[list[np.ndarray]] = []
    for start in range(0, len(x), batch_size):
        out = model(tf.convert_to_tensor(x[start:start + batch_size]), training=False)
        parts.append([t.numpy() for t in tf.nest.flatten(out)])
    return [np.concatenate(p) for p in zip(*parts)]
