"""Layers as matrix products, so least squares and greedy selection can work on them.

A Dense layer is `x @ W + b`; a Conv1D/Conv2D is the same product on im2col patches
(`tf.image.extract_patches`, whose (row, column, channel) order matches the kernel's
(kh, kw, in) layout once the kernel is reshaped to (kh*kw*in, out)). Both give rows of inputs
and a 2-D kernel, which is all reconstruction and the greedy criterion need.
"""
from __future__ import annotations

import numpy as np

from edgesparse._tf import keras, tf

LINEAR_KINDS = {"Dense", "Conv1D", "Conv2D"}


def submodel(model, tensors: list):
    """A model from the model's inputs to some of its intermediate tensors."""
    return keras.Model(model.inputs, list(tensors))


def layer_input(model, name: str):
    """The input tensor of layer `name` at its call inside `model` (layers of a flattened
    nested model also have a call inside the old nested graph, which `layer.input` would give)."""
    layer = model.get_layer(name)
    for i, node in enumerate(layer._inbound_nodes):
        if f"{name}_ib-{i}" in model._network_nodes:
            return node.input_tensors
    return layer.input


def run(model, x: np.ndarray, batch_size: int = 512) -> list[np.ndarray]:
    """Eager calls in batches: for the one-off submodels here, `predict` spends longer tracing
    a tf.function than computing."""
    parts: list[list[np.ndarray]] = []
    for start in range(0, len(x), batch_size):
        out = model(tf.convert_to_tensor(x[start:start + batch_size]), training=False)
        parts.append([t.numpy() for t in tf.nest.flatten(out)])
    return [np.concatenate(p) for p in zip(*parts)]


def input_rows(layer, x: np.ndarray) -> np.ndarray:
    """The rows the layer multiplies by its 2-D kernel: (samples x positions, taps x in)."""
    kind = type(layer).__name__
    if kind == "Dense":
        return x.reshape(-1, x.shape[-1])
    if kind == "Conv2D":
        return _patches_2d(x, layer.kernel_size, layer.strides, layer.dilation_rate, layer.padding)
    if kind == "Conv1D":
        k, s, d = layer.kernel_size[0], layer.strides[0], layer.dilation_rate[0]
        padding = layer.padding
        if padding == "causal":
            x = np.pad(x, ((0, 0), (d * (k - 1), 0), (0, 0)))
            padding = "valid"
        return _patches_2d(x[:, None], (1, k), (1, s), (1, d), padding)
    raise ValueError(f"{kind} is not a linear layer we can unfold")


def _patches_2d(x, kernel, strides, dilation, padding) -> np.ndarray:
    p = tf.image.extract_patches(
        tf.convert_to_tensor(x, tf.float32), sizes=[1, *kernel, 1], strides=[1, *strides, 1],
        rates=[1, *dilation, 1], padding=padding.upper())
    p = p.numpy()
    return p.reshape(-1, p.shape[-1])


def kernel_2d(kernel: np.ndarray) -> np.ndarray:
    """(…taps, in, out) -> (taps*in, out), matching `input_rows`."""
    return kernel.reshape(-1, kernel.shape[-1])


def taps(layer) -> int:
    kind = type(layer).__name__
    return 1 if kind == "Dense" else int(np.prod(layer.kernel_size))


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
