"""ONNX nodes -> built-in tf_keras layers, one handler per operator (the table `OPS`).

ONNX image models are channels-first (NCHW); tf_keras layers, TFLite kernels and our channel
analysis are channels-last. Rather than wrapping every layer in transposes, each translated tensor
carries its *layout*: `perm[k]` is the ONNX axis that Keras axis k holds (NCHW -> NHWC is
(0, 2, 3, 1)). A Transpose node then only changes the bookkeeping, conv weights move to the
channels-last order, axis attributes are renumbered, and a layer is emitted only where a consumer
needs another layout (a Permute, or a plain Reshape when only size-1 axes move).

Flatten of an NCHW tensor orders features C, H, W; Flatten in NHWC orders them H, W, C. Instead of
a channels-first Permute before the Flatten, the flattened tensor remembers its feature `order`
and the following Dense gets its kernel rows permuted, so the channel analysis sees the plain
Conv -> Flatten -> Dense it understands.

Fail closed: an operator without a handler, or an attribute value a handler cannot reproduce
exactly, is a UserError naming the node.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from edgesparse._tf import keras
from edgesparse.errors import UserError


@dataclass
class Value:
    """One ONNX tensor as translated: a Keras tensor in some layout, or a constant."""

    keras: Any = None                    # KerasTensor (None for constants)
    const: np.ndarray | None = None
    perm: tuple[int, ...] = ()           # Keras axis k holds ONNX axis perm[k]; axis 0 is the batch
    order: np.ndarray | None = None      # rank 2 only: Keras feature j is ONNX feature order[j]
    flat_src: tuple | None = None        # (Keras shape, perm) of the tensor `order` was flattened from
    nonneg: bool = False                 # known >= 0 (after ReLU): zero padding then equals -inf padding
    dense: Any = None                    # the Dense layer that made it, while its bias can still absorb an affine

    @property
    def rank(self) -> int:
        return self.const.ndim if self.keras is None else len(self.perm)

    @property
    def keras_shape(self) -> tuple[int, ...]:
        return (1,) + tuple(int(d) for d in self.keras.shape[1:])

    @property
    def onnx_shape(self) -> tuple[int, ...]:
        if self.keras is None:
            return tuple(self.const.shape)
        k = self.keras_shape
        return tuple(k[self.perm.index(i)] for i in range(self.rank))


def identity(rank: int) -> tuple[int, ...]:
    return tuple(range(rank))


def channels_last(rank: int) -> tuple[int, ...]:
    return (0, *range(2, rank), 1) if rank >= 3 else identity(rank)


def _size_one_move(src: tuple[int, ...], dst: tuple[int, ...]) -> list[int] | None:
    """The axis permutation q (dst axis i is src axis q[i]) when `dst` is `src` with only its
    size-1 axes moved, batch axis fixed; else None."""
    if len(src) != len(dst):
        return None
    big = [i for i in range(1, len(src)) if src[i] != 1]
    ones = [i for i in range(1, len(src)) if src[i] == 1]
    if [src[i] for i in big] != [d for d in dst[1:] if d != 1]:
        return None
    big_it, ones_it = iter(big), iter(ones)
    return [0] + [next(big_it) if d != 1 else next(ones_it) for d in dst[1:]]


def _same_pads(size: int, k: int, s: int, d: int) -> tuple[int, int]:
    """The padding TensorFlow's padding='same' uses on one axis (extra at the end)."""
    total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2


class Translator:
    """Builds the Keras graph of one (optimised, static-shape) ONNX graph."""

    def __init__(self, graph, source, opset: int):
        self.graph = graph
        self.source = source
        self.opset = opset
        self.values: dict[str, Value] = {}
        self.consumers: dict[str, int] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers[name] = self.consumers.get(name, 0) + 1
        self.names: set[str] = set()
        self.layers_made = 0
        self.node: Any = None

    # ------------------------------------------------------------------ helpers

    def fail(self, why: str, fix: str = "") -> UserError:
        n = self.node
        # An unnamed node is named by what it writes: "(unnamed)" pointed nowhere.
        label = repr(n.name) if n is not None and n.name else \
            (f"producing {n.output[0]!r}" if n is not None and n.output else "(unnamed)")
        where = f"node {label} ({n.op_type})" if n is not None else "the graph"
        fix = fix or ("re-export the model without it, or replace it with operators listed in "
                      "docs/onnx.md")
        return UserError(f"cannot import {self.source}: {where} {why}; {fix}")

    def attr(self, name: str, default: Any = None) -> Any:
        from onnx import helper

        for a in self.node.attribute:
            if a.name == name:
                value = helper.get_attribute_value(a)
                return value.decode() if isinstance(value, bytes) else value
        return default

    def const(self, v: Value | None, what: str) -> np.ndarray:
        if v is None or v.keras is not None:
            raise self.fail(f"has a computed {what}; only constant {what}s are supported",
                            "export the model with constant weights and shapes (torch.onnx.export "
                            "with do_constant_folding=True)")
        return v.const

    def ints(self, attr: str, inputs: list, index: int, default=None) -> list[int] | None:
        """An integer list given as an attribute (older opsets) or a constant input (newer)."""
        value = self.attr(attr)
        if value is None and len(inputs) > index and inputs[index] is not None:
            value = self.const(inputs[index], attr).tolist()
        return default if value is None else [int(v) for v in np.atleast_1d(value)]

    def layer_name(self, suffix: str = "") -> str:
        base = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.node.name or self.node.output[0]).strip("_.-")
        base = (base or self.node.op_type.lower()) + suffix
        if not base[0].isalpha():
            base = "onnx_" + base
        name, i = base, 1
        while name in self.names:
            i += 1
            name = f"{base}_{i}"
        self.names.add(name)
        return name

    def call(self, layer_cls, x, *args, weights: list | None = None, suffix: str = "", **kwargs):
        """Make one built-in layer, call it on x (a Keras tensor or a list), set its weights."""
        try:
            layer = layer_cls(*args, name=self.layer_name(suffix), **kwargs)
            out = layer(x)
            if weights is not None:
                layer.set_weights([np.asarray(w, dtype=np.float32) for w in weights])
        except UserError:
            raise
        except Exception as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            raise self.fail(f"could not be made as a tf_keras {layer_cls.__name__} ({first})") from None
        self.layers_made += 1
        return out, layer

    # ------------------------------------------------------------------ layouts

    def materialize(self, v: Value) -> Value:
        """v with its feature order undone (rank 2): back to the ONNX feature order."""
        if v.order is None:
            return v
        shape, perm = v.flat_src
        x, _ = self.call(keras.layers.Reshape, v.keras, shape[1:], suffix="_unflatten")
        src = Value(x, perm=perm)
        back = self.to_layout(src, identity(len(perm)))
        x, _ = self.call(keras.layers.Flatten, back.keras, suffix="_flatten")
        return Value(x, perm=(0, 1), nonneg=v.nonneg)

    def to_layout(self, v: Value, perm: tuple[int, ...]) -> Value:
        v = self.materialize(v)
        if v.perm == perm:
            return v
        target = Value(None, perm=perm)
        onnx_shape = v.onnx_shape
        new_shape = tuple(onnx_shape[p] for p in perm)
        if _same_memory_order(v.perm, onnx_shape) and _same_memory_order(perm, onnx_shape):
            # Only size-1 axes move: a reshape, which keeps the channel axis where it was.
            x, _ = self.call(keras.layers.Reshape, v.keras, new_shape[1:], suffix="_layout")
        else:
            dims = tuple(v.perm.index(p) for p in perm[1:])
            x, _ = self.call(keras.layers.Permute, v.keras, dims, suffix="_permute")
        target.keras, target.nonneg = x, v.nonneg
        return target

    def reshape(self, v: Value, shape: tuple[int, ...]) -> Value:
        """v reshaped to the ONNX shape `shape` (batch axis kept); the result is in ONNX order."""
        src = v.onnx_shape
        if shape[0] != src[0]:
            raise self.fail(f"reshapes {src} to {shape}, which moves the batch axis",
                            "keep the batch axis first and unchanged")
        if tuple(shape) == src:
            return v
        moved = _size_one_move(src, tuple(shape))
        if moved is not None and v.order is None and v.keras is not None:
            # Only size-1 axes move (tf2onnx's folded Transposes around a 1-D op): bookkeeping,
            # like a Transpose; going through the file's order cost two Permute layers.
            inverse = np.argsort(moved)
            return Value(v.keras, perm=tuple(int(inverse[p]) for p in v.perm), nonneg=v.nonneg)
        if v.order is None and _same_memory_order(v.perm, src):
            if len(shape) == 2 and v.rank > 2:
                x, _ = self.call(keras.layers.Flatten, v.keras)
            else:
                x, _ = self.call(keras.layers.Reshape, v.keras, tuple(shape[1:]))
            return Value(x, perm=identity(len(shape)), nonneg=v.nonneg)
        if len(shape) == 2 and v.order is None:
            # Flatten in the Keras layout, and remember where each ONNX feature went.
            x, _ = self.call(keras.layers.Flatten, v.keras)
            inverse = [p - 1 for p in v.perm[1:]]
            order = np.arange(int(np.prod(src[1:]))).reshape(src[1:]).transpose(inverse).ravel()
            return Value(x, perm=(0, 1), order=order, flat_src=(v.keras_shape, v.perm), nonneg=v.nonneg)
        v = self.to_layout(v, identity(v.rank))
        x, _ = self.call(keras.layers.Reshape, v.keras, tuple(shape[1:]))
        return Value(x, perm=identity(len(shape)), nonneg=v.nonneg)

    def keras_const(self, v: Value, c: np.ndarray) -> np.ndarray:
        """A constant broadcast against v, moved into v's Keras layout (batch axis of size 1)."""
        c = np.asarray(c, dtype=np.float32)
        if c.ndim > v.rank:
            raise self.fail(f"broadcasts a constant of shape {c.shape} to a rank-{v.rank} tensor")
        c = c.reshape((1,) * (v.rank - c.ndim) + c.shape)
        if c.shape[0] != 1:
            raise self.fail(f"has a constant of shape {c.shape} that varies along the batch axis")
        c = c.transpose(v.perm)
        if v.order is not None and c.shape[-1] > 1:
            c = c[..., v.order]
        return c

    # ------------------------------------------------------------------ pieces used by handlers

    def affine(self, v: Value, scale, offset) -> Value:
        """y = v * scale + offset with constant scale/offset: a scalar Rescaling, a per-channel 1x1
        depthwise conv, or folded into the Dense that made v."""
        s = self.keras_const(v, scale)
        o = self.keras_const(v, offset)
        shape = np.broadcast_shapes(s.shape, o.shape)
        channels = v.keras_shape[-1]
        if s.size == 1 and o.size == 1:
            x, _ = self.call(keras.layers.Rescaling, v.keras, scale=float(s.ravel()[0]), offset=float(o.ravel()[0]))
            return Value(x, perm=v.perm, order=v.order, flat_src=v.flat_src)
        if any(d != 1 for d in shape[:-1]) or shape[-1] != channels:
            raise self.fail(f"applies a constant of shape {shape} (Keras layout) that is neither a scalar "
                            "nor one value per channel")
        s = np.broadcast_to(s, shape).reshape(channels)
        o = np.broadcast_to(o, shape).reshape(channels)
        if v.dense is not None:
            kernel, bias = v.dense.get_weights()
            v.dense.set_weights([kernel * s, bias * s + o])
            return Value(v.keras, perm=v.perm, dense=v.dense)
        if v.rank == 4:
            x, _ = self.call(keras.layers.DepthwiseConv2D, v.keras, 1, weights=[s.reshape(1, 1, channels, 1), o])
        elif v.rank == 3:
            x, _ = self.call(keras.layers.DepthwiseConv1D, v.keras, 1, weights=[s.reshape(1, channels, 1), o])
        else:
            raise self.fail("applies a per-feature constant to a 2-D tensor that no Dense layer made")
        return Value(x, perm=v.perm)

    def slice_axis(self, v: Value, axis: int, start: int, stop: int) -> Value:
        """v[..., start:stop, ...] on ONNX axis `axis`, with Cropping layers (tf_keras has no Slice)."""
        v = self.materialize(v)
        k = v.perm.index(axis)
        shape = v.keras_shape
        n = shape[k]
        if start == 0 and stop == n:
            return v
        if v.rank == 4 and k in (1, 2):
            crop = ((start, n - stop), (0, 0)) if k == 1 else ((0, 0), (start, n - stop))
            x, _ = self.call(keras.layers.Cropping2D, v.keras, crop)
        elif v.rank == 3 and k == 1:
            x, _ = self.call(keras.layers.Cropping1D, v.keras, (start, n - stop))
        else:
            # Bring the axis to the front, fold the rest into one, crop, and undo both.
            rest = [d for i, d in enumerate(shape[1:], 1) if i != k]
            dims = (k, *[i for i in range(1, v.rank) if i != k])
            x = v.keras
            if dims != tuple(range(1, v.rank)):
                x, _ = self.call(keras.layers.Permute, x, dims, suffix="_to_front")
            x, _ = self.call(keras.layers.Reshape, x, (n, int(np.prod(rest) if rest else 1)), suffix="_fold")
            x, _ = self.call(keras.layers.Cropping1D, x, (start, n - stop))
            x, _ = self.call(keras.layers.Reshape, x, (stop - start, *rest), suffix="_unfold")
            if dims != tuple(range(1, v.rank)):
                x, _ = self.call(keras.layers.Permute, x, tuple(int(i) + 1 for i in np.argsort(dims[:])),
                                 suffix="_back")
        return Value(x, perm=v.perm, nonneg=v.nonneg)

    def spatial_pads(self, pads: list[int], v: Value, kernel, strides, dilations, ceil_mode: int = 0):
        """ONNX pads -> 'valid', 'same' or explicit (begin, end) per spatial axis."""
        spatial = v.rank - 2
        auto = self.attr("auto_pad", "NOTSET")
        sizes = v.onnx_shape[2:]
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            same = [_same_pads(sizes[i], kernel[i], strides[i], dilations[i]) for i in range(spatial)]
            pairs = same if auto == "SAME_UPPER" else [(b, a) for a, b in same]
        elif auto == "VALID":
            pairs = [(0, 0)] * spatial
        else:
            pads = pads or [0] * (2 * spatial)
            pairs = [(pads[i], pads[i + spatial]) for i in range(spatial)]
        if ceil_mode:
            for i in range(spatial):
                span = sizes[i] + sum(pairs[i]) - ((kernel[i] - 1) * dilations[i] + 1)
                if span % strides[i]:
                    raise self.fail("uses ceil_mode=1 where it changes the output size",
                                    "export with ceil_mode=False or choose a size that divides evenly")
        if all(p == (0, 0) for p in pairs):
            return "valid", None
        if all(pairs[i] == _same_pads(sizes[i], kernel[i], strides[i], dilations[i]) for i in range(spatial)):
            return "same", None
        return "valid", pairs

    def zero_pad(self, v: Value, pairs) -> Value:
        if pairs is None:
            return v
        if any(a < 0 or b < 0 for a, b in pairs):
            raise self.fail("has negative padding")
        cls = keras.layers.ZeroPadding2D if v.rank == 4 else keras.layers.ZeroPadding1D
        arg = tuple(pairs) if v.rank == 4 else tuple(pairs[0])
        x, _ = self.call(cls, v.keras, arg, suffix="_pad")
        return Value(x, perm=v.perm, nonneg=v.nonneg)


def _same_memory_order(perm: tuple[int, ...], onnx_shape: tuple[int, ...]) -> bool:
    """Whether a tensor in layout `perm` has its elements in ONNX row-major order (the axes that
    are out of order all have size 1)."""
    kept = [p for p in perm if onnx_shape[p] != 1]
    return kept == sorted(kept)


# ----------------------------------------------------------------------------- handlers
# Each handler takes (translator, inputs) and returns one Value per ONNX output.

Handler = Callable[[Translator, list], list]
OPS: dict[str, Handler] = {}
# What each operator becomes: the table in docs/onnx.md (a test keeps the two in step).
OP_NOTES: dict[str, str] = {}


def op(*names: str, note: str):
    def register(fn: Handler) -> Handler:
        for n in names:
            OPS[n] = fn
            OP_NOTES[n] = note
        return fn
    return register


def _spatial(t: Translator, x: Value) -> Value:
    if x.rank not in (3, 4):
        raise t.fail(f"works on a rank-{x.rank} tensor; 1-D and 2-D (rank 3 and 4) inputs are supported")
    return t.to_layout(x, channels_last(x.rank))


@op("Conv", note="Conv2D / Conv1D (group 1), DepthwiseConv2D / DepthwiseConv1D (group = channels); "
                 "asymmetric padding becomes ZeroPadding")
def _conv(t: Translator, ins):
    x = _spatial(t, ins[0])
    w = t.const(ins[1], "weight")
    b = t.const(ins[2], "bias") if len(ins) > 2 and ins[2] is not None else None
    spatial = x.rank - 2
    out_c, in_per_group, *kernel = w.shape
    channels = x.onnx_shape[1]
    group = int(t.attr("group", 1))
    strides = t.attr("strides") or [1] * spatial
    dilations = t.attr("dilations") or [1] * spatial
    padding, pairs = t.spatial_pads(t.attr("pads"), x, kernel, strides, dilations)
    x = t.zero_pad(x, pairs)
    common = dict(strides=tuple(strides), padding=padding, dilation_rate=tuple(dilations), use_bias=b is not None)
    if group == 1:
        cls = keras.layers.Conv2D if spatial == 2 else keras.layers.Conv1D
        kernel_w = w.transpose(2, 3, 1, 0) if spatial == 2 else w.transpose(2, 1, 0)
        weights = [kernel_w] + ([b] if b is not None else [])
        y, _ = t.call(cls, x.keras, out_c, tuple(kernel), **common, weights=weights)
    elif group == channels and in_per_group == 1:
        mult = out_c // channels
        cls = keras.layers.DepthwiseConv2D if spatial == 2 else keras.layers.DepthwiseConv1D
        w = w.reshape(channels, mult, *kernel)
        kernel_w = w.transpose(2, 3, 0, 1) if spatial == 2 else w.transpose(2, 0, 1)
        weights = [kernel_w] + ([b] if b is not None else [])
        y, _ = t.call(cls, x.keras, tuple(kernel), depth_multiplier=mult, **common, weights=weights)
    else:
        raise t.fail(f"is a grouped convolution (group={group} of {channels} channels), which the channel "
                     "analysis cannot prune", "use group=1 or depthwise (group = channels) convolutions")
    return [Value(y, perm=x.perm)]


@op("ConvTranspose", note="Conv2DTranspose (group 1, dilation 1); pads become Cropping2D")
def _conv_transpose(t: Translator, ins):
    x = _spatial(t, ins[0])
    if x.rank != 4:
        raise t.fail("is a 1-D transposed convolution; only 2-D is supported")
    w = t.const(ins[1], "weight")
    b = t.const(ins[2], "bias") if len(ins) > 2 and ins[2] is not None else None
    if int(t.attr("group", 1)) != 1 or any(d != 1 for d in (t.attr("dilations") or [1, 1])):
        raise t.fail("is grouped or dilated", "use group=1, dilation=1 transposed convolutions")
    if t.attr("output_shape") is not None or t.attr("auto_pad", "NOTSET") != "NOTSET":
        raise t.fail("sets output_shape or auto_pad", "export with explicit pads")
    _, out_c, kh, kw = w.shape
    strides = tuple(t.attr("strides") or [1, 1])
    out_pad = tuple(t.attr("output_padding") or [0, 0])
    pads = t.attr("pads") or [0, 0, 0, 0]
    weights = [w.transpose(2, 3, 1, 0)] + ([b] if b is not None else [])
    y, _ = t.call(keras.layers.Conv2DTranspose, x.keras, out_c, (kh, kw), strides=strides, padding="valid",
                  output_padding=out_pad, use_bias=b is not None, weights=weights)
    if any(pads):
        y, _ = t.call(keras.layers.Cropping2D, y, ((pads[0], pads[2]), (pads[1], pads[3])), suffix="_crop")
    return [Value(y, perm=x.perm)]


@op("Gemm", note="Dense (constant B; alpha, beta and transB folded into the weights)")
def _gemm(t: Translator, ins):
    a = ins[0]
    if a.rank != 2 or int(t.attr("transA", 0)):
        raise t.fail("has a transposed or non-2-D first input")
    b = t.const(ins[1], "weight") * float(t.attr("alpha", 1.0))
    kernel = b.T if int(t.attr("transB", 0)) else b
    units = kernel.shape[1]
    c = t.const(ins[2], "bias") if len(ins) > 2 and ins[2] is not None else np.zeros(units, np.float32)
    bias = np.broadcast_to(np.asarray(c, np.float32) * float(t.attr("beta", 1.0)), (1, units)).reshape(units)
    return [_dense(t, a, kernel, bias)]


@op("MatMul", note="Dense (constant right-hand side)")
def _matmul(t: Translator, ins):
    kernel = t.const(ins[1], "right-hand side")
    if kernel.ndim != 2:
        raise t.fail(f"multiplies by a constant of rank {kernel.ndim}; only 2-D weights are supported")
    a = ins[0] if ins[0].rank == 2 else t.to_layout(ins[0], identity(ins[0].rank))
    return [_dense(t, a, kernel, np.zeros(kernel.shape[1], np.float32))]


def _dense(t: Translator, a: Value, kernel: np.ndarray, bias: np.ndarray) -> Value:
    if a.order is not None:
        kernel = kernel[a.order]          # Flatten of NHWC: Keras feature j is ONNX feature order[j]
    y, layer = t.call(keras.layers.Dense, a.keras, kernel.shape[1], weights=[kernel, bias])
    return Value(y, perm=identity(a.rank), dense=layer)


@op("BatchNormalization", note="BatchNormalization (inference statistics)")
def _batchnorm(t: Translator, ins):
    x = ins[0]
    if x.rank >= 3:
        x = t.to_layout(x, channels_last(x.rank))
    scale, bias, mean, var = (t.const(v, "statistic") for v in ins[1:5])
    if x.order is not None:
        scale, bias, mean, var = (p[x.order] for p in (scale, bias, mean, var))
    y, _ = t.call(keras.layers.BatchNormalization, x.keras, axis=-1, epsilon=float(t.attr("epsilon", 1e-5)),
                  weights=[scale, bias, mean, var])
    return [Value(y, perm=x.perm, order=x.order, flat_src=x.flat_src)]


def _unary(t: Translator, x: Value, cls, *args, nonneg=False, **kwargs) -> Value:
    y, _ = t.call(cls, x.keras, *args, **kwargs)
    return Value(y, perm=x.perm, order=x.order, flat_src=x.flat_src, nonneg=nonneg)


@op("Relu", note="ReLU")
def _relu(t, ins):
    return [_unary(t, ins[0], keras.layers.ReLU, nonneg=True)]


@op("Clip", note="ReLU(max_value) when min is 0 (ReLU6 for Clip(0, 6))")
def _clip(t, ins):
    lo, hi = t.attr("min"), t.attr("max")
    if len(ins) > 1 and ins[1] is not None:
        lo = float(t.const(ins[1], "min"))
    if len(ins) > 2 and ins[2] is not None:
        hi = float(t.const(ins[2], "max"))
    if lo is None or float(lo) != 0.0:
        raise t.fail(f"clips to [{lo}, {hi}]; only clips with min 0 (ReLU, ReLU6) are supported")
    return [_unary(t, ins[0], keras.layers.ReLU, max_value=None if hi is None else float(hi), nonneg=True)]


@op("LeakyRelu", note="LeakyReLU")
def _leaky(t, ins):
    return [_unary(t, ins[0], keras.layers.LeakyReLU, alpha=float(t.attr("alpha", 0.01)))]


@op("Elu", note="ELU")
def _elu(t, ins):
    return [_unary(t, ins[0], keras.layers.ELU, alpha=float(t.attr("alpha", 1.0)))]


@op("Sigmoid", note="Activation('sigmoid')")
def _sigmoid(t, ins):
    return [_unary(t, ins[0], keras.layers.Activation, "sigmoid", nonneg=True)]


@op("Tanh", note="Activation('tanh')")
def _tanh(t, ins):
    return [_unary(t, ins[0], keras.layers.Activation, "tanh")]


def _hard_sigmoid(t: Translator, x: Value, alpha: float, beta: float) -> Value:
    # clip(alpha * x + beta, 0, 1): tf_keras's hard_sigmoid is only the alpha=0.2 case.
    if abs(alpha - 0.2) < 1e-7 and abs(beta - 0.5) < 1e-7:
        return _unary(t, x, keras.layers.Activation, "hard_sigmoid", nonneg=True)
    y, _ = t.call(keras.layers.Rescaling, x.keras, scale=alpha, offset=beta)
    y, _ = t.call(keras.layers.ReLU, y, max_value=1.0, suffix="_clip")
    return Value(y, perm=x.perm, order=x.order, flat_src=x.flat_src, nonneg=True)


@op("HardSigmoid", note="Activation('hard_sigmoid'), or Rescaling + ReLU(1) for other alpha/beta")
def _hardsigmoid(t, ins):
    return [_hard_sigmoid(t, ins[0], float(t.attr("alpha", 0.2)), float(t.attr("beta", 0.5)))]


@op("HardSwish", note="x * hard_sigmoid(x): Rescaling + ReLU(1) + Multiply")
def _hardswish(t, ins):
    x = ins[0]
    gate = _hard_sigmoid(t, x, 1 / 6, 0.5)
    y, _ = t.call(keras.layers.Multiply, [x.keras, gate.keras])
    return [Value(y, perm=x.perm, order=x.order, flat_src=x.flat_src)]


@op("PRelu", note="PReLU (slopes shared over the spatial axes)")
def _prelu(t, ins):
    x = ins[0] if ins[0].rank < 3 else t.to_layout(ins[0], channels_last(ins[0].rank))
    slope = t.keras_const(x, t.const(ins[1], "slope"))[0]
    shared = [i for i in range(1, x.rank) if slope.shape[i - 1] == 1 and x.keras_shape[i] != 1]
    alpha = np.broadcast_to(slope, tuple(1 if i in shared else x.keras_shape[i] for i in range(1, x.rank)))
    return [_unary(t, x, keras.layers.PReLU, shared_axes=shared or None, weights=[alpha])]


@op("Softmax", note="Softmax on the same axis")
def _softmax(t, ins):
    x = ins[0]
    axis = int(t.attr("axis", -1 if t.opset >= 13 else 1)) % x.rank
    if axis == 0:
        # Over the batch: each sample's output would depend on the others in its batch.
        raise t.fail("normalises over the batch axis (axis 0), so a sample's output depends on the "
                     "rest of its batch", "export the model with the softmax over the class axis (axis=-1)")
    if t.opset < 13 and axis != x.rank - 1:
        raise t.fail("is an opset < 13 Softmax over several axes", "export with opset 13 or newer")
    keras_axis = x.perm.index(axis)
    return [_unary(t, x, keras.layers.Softmax, axis=keras_axis if keras_axis < x.rank - 1 else -1)]


@op("Identity", "Dropout", note="nothing (inference)")
def _identity(t, ins):
    return [ins[0]]


# -- element-wise

def _binary(t: Translator, ins, layer_cls, const_form):
    a, b = ins
    if a.keras is None and b.keras is None:
        raise t.fail("has only constant inputs (onnxruntime should have folded it)")
    if a.keras is None or b.keras is None:
        if const_form is None:
            raise t.fail("has a constant operand", "only Add, Sub, Mul and Div take a constant")
        x, c, const_first = (b, a.const, True) if a.keras is None else (a, b.const, False)
        return [const_form(t, x, c, const_first)]
    if layer_cls is None:
        raise t.fail("divides two computed tensors", "only division by a constant is supported")
    # Both computed: same rank and layout; the bigger one (the feature map) decides the layout.
    ranks = {a.rank, b.rank}
    if len(ranks) != 1:
        raise t.fail(f"broadcasts tensors of ranks {sorted(ranks)}; give both the same rank")
    if a.order is not None or b.order is not None:
        if a.order is None or b.order is None or not np.array_equal(a.order, b.order):
            a, b = t.materialize(a), t.materialize(b)
    lead = a if np.prod(a.onnx_shape) >= np.prod(b.onnx_shape) else b
    xs = [t.to_layout(v, lead.perm) if v.order is None else v for v in (a, b)]
    y, _ = t.call(layer_cls, [v.keras for v in xs])
    first = xs[0]
    return [Value(y, perm=lead.perm, order=first.order, flat_src=first.flat_src,
                  nonneg=a.nonneg and b.nonneg and layer_cls in (keras.layers.Add, keras.layers.Multiply))]


def _add_const(t, x, c, const_first):
    return t.affine(x, 1.0, c)


def _sub_const(t, x, c, const_first):
    return t.affine(x, -1.0, c) if const_first else t.affine(x, 1.0, -np.asarray(c))


def _mul_const(t, x, c, const_first):
    return t.affine(x, c, 0.0)


def _div_const(t, x, c, const_first):
    if const_first:
        raise t.fail("divides a constant by a tensor", "only division by a constant is supported")
    return t.affine(x, 1.0 / np.asarray(c, np.float64), 0.0)


@op("Add", note="Add (broadcasting), or Rescaling / 1x1 DepthwiseConv2D / the Dense bias for a constant")
def _add(t, ins):
    return _binary(t, ins, keras.layers.Add, _add_const)


@op("Sub", note="Subtract, or an affine layer as for Add")
def _sub(t, ins):
    return _binary(t, ins, keras.layers.Subtract, _sub_const)


@op("Mul", note="Multiply (broadcasting: squeeze-excite), or an affine layer for a constant")
def _mul(t, ins):
    return _binary(t, ins, keras.layers.Multiply, _mul_const)


@op("Div", note="an affine layer (division by a constant only)")
def _div(t, ins):
    return _binary(t, ins, None, _div_const)


@op("Concat", note="Concatenate (axis renumbered for the channels-last layout)")
def _concat(t, ins):
    if any(v.keras is None for v in ins):
        raise t.fail("concatenates a constant", "only computed tensors can be concatenated")
    axis = int(t.attr("axis")) % ins[0].rank
    lead = max(ins, key=lambda v: v.rank >= 3 and v.perm == channels_last(v.rank))
    xs = [t.to_layout(v, lead.perm) for v in ins]
    y, _ = t.call(keras.layers.Concatenate, [v.keras for v in xs], axis=xs[0].perm.index(axis))
    return [Value(y, perm=xs[0].perm, nonneg=all(v.nonneg for v in ins))]


# -- pooling

@op("MaxPool", "AveragePool", note="MaxPooling2D/1D, AveragePooling2D/1D ('same' or ZeroPadding where exact)")
def _pool(t: Translator, ins):
    x = _spatial(t, ins[0])
    spatial = x.rank - 2
    kernel = list(t.attr("kernel_shape"))
    strides = t.attr("strides") or [1] * spatial
    if any(d != 1 for d in (t.attr("dilations") or [1] * spatial)):
        raise t.fail("is a dilated pool")
    if len(t.node.output) > 1 and t.node.output[1]:
        raise t.fail("returns indices", "use a MaxPool without the Indices output")
    padding, pairs = t.spatial_pads(t.attr("pads"), x, kernel, strides, [1] * spatial, int(t.attr("ceil_mode", 0)))
    is_max = t.node.op_type == "MaxPool"
    if pairs is not None:
        # Zero padding equals ONNX's padding only where it cannot win a max, or is counted in an average.
        exact = x.nonneg if is_max else bool(t.attr("count_include_pad", 0))
        if not exact:
            raise t.fail(f"pads {pairs} unlike TensorFlow's 'same', on an input that may be negative"
                         if is_max else f"pads {pairs} but excludes the padding from the average",
                         "pad so that the output is ceil(size / stride) ('same'), or put the pool after a ReLU")
        x = t.zero_pad(x, pairs)
    elif padding == "same" and not is_max and int(t.attr("count_include_pad", 0)):
        raise t.fail("averages padding as zeros (count_include_pad=1)", "export with count_include_pad=False")
    if spatial == 2:
        cls = keras.layers.MaxPooling2D if is_max else keras.layers.AveragePooling2D
    else:
        cls = keras.layers.MaxPooling1D if is_max else keras.layers.AveragePooling1D
    size = tuple(kernel) if spatial == 2 else kernel[0]
    stride = tuple(strides) if spatial == 2 else strides[0]
    y, _ = t.call(cls, x.keras, size, strides=stride, padding=padding)
    return [Value(y, perm=x.perm, nonneg=x.nonneg)]


def _global_pool(t: Translator, x: Value, is_max: bool, keepdims: bool) -> Value:
    x = _spatial(t, x)
    if x.rank == 4:
        cls = keras.layers.GlobalMaxPooling2D if is_max else keras.layers.GlobalAveragePooling2D
    else:
        cls = keras.layers.GlobalMaxPooling1D if is_max else keras.layers.GlobalAveragePooling1D
    y, _ = t.call(cls, x.keras, keepdims=keepdims)
    return Value(y, perm=x.perm if keepdims else (0, 1), nonneg=x.nonneg)


@op("GlobalAveragePool", "GlobalMaxPool", note="GlobalAveragePooling2D / GlobalMaxPooling2D (keepdims)")
def _gpool(t, ins):
    return [_global_pool(t, ins[0], t.node.op_type == "GlobalMaxPool", keepdims=True)]


@op("ReduceMean", "ReduceMax", note="global pooling, when it reduces exactly the spatial axes")
def _reduce(t, ins):
    x = ins[0]
    axes = t.ints("axes", ins, 1)
    if axes is None or sorted(a % x.rank for a in axes) != list(range(2, x.rank)) or x.rank < 3:
        raise t.fail(f"reduces axes {axes} of a rank-{x.rank} tensor; only the spatial axes (global pooling) "
                     "are supported")
    return [_global_pool(t, x, t.node.op_type == "ReduceMax", keepdims=bool(t.attr("keepdims", 1)))]


# -- shapes

@op("Flatten", note="Flatten; the next Dense gets its rows permuted (no channels-first Permute)")
def _flatten(t, ins):
    x = ins[0]
    if int(t.attr("axis", 1)) != 1:
        raise t.fail("flattens from an axis other than 1", "flatten everything but the batch axis")
    return [t.reshape(x, (x.onnx_shape[0], int(np.prod(x.onnx_shape[1:]))))]


@op("Reshape", note="Flatten / Reshape (a classifier head's reshapes; batch axis kept)")
def _reshape(t, ins):
    x = ins[0]
    target = [int(d) for d in t.const(ins[1], "shape")]
    src = x.onnx_shape
    if int(t.attr("allowzero", 0)) and 0 in target:
        raise t.fail("uses allowzero=1")
    target = [src[i] if d == 0 else d for i, d in enumerate(target)]
    if -1 in target:
        known = int(np.prod([d for d in target if d != -1]))
        target[target.index(-1)] = int(np.prod(src)) // known
    return [t.reshape(x, tuple(target))]


@op("Squeeze", "Unsqueeze", note="Reshape (or nothing)")
def _squeeze(t, ins):
    x = ins[0]
    axes = t.ints("axes", ins, 1)
    src = list(x.onnx_shape)
    if t.node.op_type == "Squeeze":
        axes = [a % len(src) for a in (axes if axes is not None else [i for i, d in enumerate(src) if d == 1])]
        shape = [d for i, d in enumerate(src) if i not in axes]
    else:
        rank = len(src) + len(axes)
        axes = sorted(a % rank for a in axes)
        shape, it = [], iter(src)
        for i in range(rank):
            shape.append(1 if i in axes else next(it))
    if 0 in axes:
        raise t.fail("squeezes or inserts the batch axis")
    if x.keras is not None and x.order is None and x.perm != identity(x.rank):
        return [_squeeze_in_layout(t, x, axes, t.node.op_type == "Squeeze", shape)]
    return [t.reshape(x, tuple(shape))]


def _squeeze_in_layout(t, x: Value, axes: list[int], squeeze: bool, shape: list[int]) -> Value:
    """Squeeze/Unsqueeze of size-1 axes on a tensor held in another layout than the file's: the
    size-1 axes leave or join the Keras tensor where they are, and the layout is kept. Going
    through the file's order instead turned tf2onnx's Conv1D (Unsqueeze, Conv, Squeeze) into
    channels-first tensors, which its BatchNormalization's per-channel Mul could not follow."""
    perm = list(x.perm)
    if squeeze:
        for a in sorted(axes, reverse=True):
            perm.remove(a)
            perm = [p - 1 if p > a else p for p in perm]
    else:
        for a in axes:                       # ascending: each index is in the grown tensor
            after = [p for p in perm if p >= a]
            # Beside the axis now at its index (or last): a size-1 axis keeps memory order there.
            at = perm.index(min(after)) if after else len(perm)
            perm = [p + 1 if p >= a else p for p in perm]
            perm.insert(at, a)
    keras_shape = tuple(shape[p] for p in perm)     # `shape`: the result's ONNX shape
    y, _ = t.call(keras.layers.Reshape, x.keras, keras_shape[1:])
    return Value(y, perm=tuple(perm), nonneg=x.nonneg)


@op("Transpose", note="nothing: the layout bookkeeping absorbs it (a Permute only where needed)")
def _transpose(t, ins):
    x = t.materialize(ins[0])
    perm = t.attr("perm") or list(reversed(range(x.rank)))
    if perm[0] != 0:
        raise t.fail("moves the batch axis", "keep the batch axis first")
    inverse = list(np.argsort(perm))
    return [Value(x.keras, perm=tuple(int(inverse[p]) for p in x.perm), nonneg=x.nonneg)]


@op("Pad", note="ZeroPadding2D / ZeroPadding1D (constant 0 on spatial axes)")
def _pad(t, ins):
    x = _spatial(t, ins[0])
    mode = t.attr("mode", "constant")
    pads = t.ints("pads", ins, 1)
    value = float(t.attr("value", 0.0))
    if len(ins) > 2 and ins[2] is not None and t.const(ins[2], "value").size:
        value = float(t.const(ins[2], "value").ravel()[0])
    if len(ins) > 3 and ins[3] is not None:
        raise t.fail("pads selected axes (axes input)", "pad all axes")
    if mode != "constant" or value != 0.0:
        raise t.fail(f"pads with mode {mode!r} and value {value}; only zero padding is supported")
    r = x.rank
    if any(pads[i] or pads[i + r] for i in (0, 1)):
        raise t.fail("pads the batch or channel axis")
    return [t.zero_pad(x, [(pads[i], pads[i + r]) for i in range(2, r)])]


def _nearest_index(out: int, scale: float, size: int, coord: str, mode: str) -> np.ndarray:
    """Which input index ONNX's nearest Resize reads for each output index."""
    x = np.arange(out, dtype=np.float64)
    if coord == "asymmetric":
        src = x / scale
    elif coord in ("half_pixel", "pytorch_half_pixel"):
        src = (x + 0.5) / scale - 0.5
    elif coord == "tf_half_pixel_for_nn":
        src = (x + 0.5) / scale
    elif coord == "align_corners":
        src = x * (size - 1) / max(out - 1, 1)
    else:
        return np.full(out, -1)
    pick = {"floor": np.floor, "ceil": np.ceil,
            "round_prefer_floor": lambda v: np.where(v - np.floor(v) == 0.5, np.floor(v), np.round(v)),
            "round_prefer_ceil": lambda v: np.where(v - np.floor(v) == 0.5, np.ceil(v), np.round(v))}[mode]
    return np.clip(pick(src), 0, size - 1).astype(int)


@op("Resize", "Upsample", note="UpSampling2D (integer scales; nearest, or bilinear with half_pixel)")
def _resize(t: Translator, ins):
    x = _spatial(t, ins[0])
    if x.rank != 4:
        raise t.fail("resizes a 1-D signal; only 2-D resizing is supported")
    src = x.onnx_shape
    if t.node.op_type == "Upsample" or t.opset == 10:
        scales = list(t.attr("scales") or t.const(ins[1], "scales"))
    else:
        scales = None
        if len(ins) > 2 and ins[2] is not None and t.const(ins[2], "scales").size:
            scales = list(t.const(ins[2], "scales"))
        elif len(ins) > 3 and ins[3] is not None:
            sizes = t.const(ins[3], "sizes")
            scales = [o / i for o, i in zip(sizes, src)]
    if scales is None or len(scales) != 4 or scales[0] != 1 or scales[1] != 1:
        raise t.fail(f"resizes with scales {scales}; only the spatial axes may be scaled")
    factors = [int(round(s)) for s in scales[2:]]
    if any(abs(s - f) > 1e-6 or f < 1 for s, f in zip(scales[2:], factors)):
        raise t.fail(f"resizes by {scales[2:]}; only whole-number upsampling is supported")
    mode = t.attr("mode", "nearest")
    if t.node.op_type == "Upsample":
        coord, nearest = "asymmetric", "floor"
    else:
        coord = t.attr("coordinate_transformation_mode", "half_pixel")
        nearest = t.attr("nearest_mode", "round_prefer_floor")
    if mode == "nearest":
        for f, n in zip(factors, src[2:]):
            if not np.array_equal(_nearest_index(n * f, f, n, coord, nearest), np.arange(n * f) // f):
                raise t.fail(f"uses nearest resizing ({coord}, {nearest}) that does not repeat pixels",
                             "export nearest upsampling with coordinate_transformation_mode='asymmetric' "
                             "and nearest_mode='floor' (PyTorch's default)")
        interpolation = "nearest"
    elif mode in ("linear", "bilinear") and coord in ("half_pixel", "pytorch_half_pixel") \
            and t.node.op_type == "Resize":
        interpolation = "bilinear"
    else:
        raise t.fail(f"uses {mode} resizing with {coord} coordinates",
                     "use nearest, or bilinear with align_corners=False")
    y, _ = t.call(keras.layers.UpSampling2D, x.keras, size=tuple(factors), interpolation=interpolation)
    return [Value(y, perm=x.perm, nonneg=x.nonneg)]


@op("Split", note="Cropping layers, one per part (tf_keras has no Split layer)")
def _split(t: Translator, ins):
    x = ins[0]
    axis = int(t.attr("axis", 0)) % x.rank
    if axis == 0:
        raise t.fail("splits the batch axis")
    n = x.onnx_shape[axis]
    parts = t.ints("split", ins, 1)
    if parts is None:
        count = int(t.attr("num_outputs", len(t.node.output)))
        each = -(-n // count)
        parts = [min(each, n - i * each) for i in range(count)]
    starts = np.concatenate([[0], np.cumsum(parts)]).astype(int)
    return [t.slice_axis(x, axis, int(starts[i]), int(starts[i + 1])) for i in range(len(parts))]


@op("Slice", note="Cropping layers (step 1)")
def _slice(t: Translator, ins):
    x = ins[0]
    if t.opset < 10:
        starts, ends, axes, steps = t.attr("starts"), t.attr("ends"), t.attr("axes"), None
    else:
        starts, ends = t.ints("starts", ins, 1), t.ints("ends", ins, 2)
        axes, steps = t.ints("axes", ins, 3), t.ints("steps", ins, 4)
    axes = axes if axes is not None else list(range(len(starts)))
    if steps and any(s != 1 for s in steps):
        raise t.fail(f"slices with steps {steps}; only step 1 is supported")
    shape = x.onnx_shape
    for start, end, axis in zip(starts, ends, axes):
        axis = int(axis) % x.rank
        n = shape[axis]
        start, end = (max(0, min(n, s + n if s < 0 else s)) for s in (int(start), int(end)))
        if axis == 0 and (start, end) != (0, n):
            raise t.fail("slices the batch axis")
        x = t.slice_axis(x, axis, start, end)
    return [x]


@op("Constant", note="a constant (weights, shapes)")
def _constant(t: Translator, ins):
    from onnx import numpy_helper

    for a in t.node.attribute:
        if a.name == "value":
            return [Value(const=numpy_helper.to_array(a.t))]
        if a.name in ("value_float", "value_int"):
            return [Value(const=np.asarray(a.f if a.name == "value_float" else a.i))]
        if a.name in ("value_floats", "value_ints"):
            return [Value(const=np.asarray(list(a.floats if a.name == "value_floats" else a.ints)))]
    raise t.fail("holds a kind of constant that is not a tensor or a number")
