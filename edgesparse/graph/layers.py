"""What each Keras layer kind means to edgesparse: one `LayerRule` per kind, in one table.

In the manner of Torch-Pruning's `PrunerBox` and tfmot's `PruneRegistry`, every question about a
layer kind is answered here and nowhere else:

- `role`: how the layer carries channels through the channel analysis (graph/channels.py):
  a producer makes new channels, a channel-wise layer has per-channel weights and keeps the
  count, pass-through layers hand channels on, merges tie their inputs position by position,
  Concatenate joins them, Flatten tiles them. `None`: not understood, so the analysis fails
  closed on it (its MACs may still be counted).
- `refuse(layer, in_shape, out_shape)`: why this particular instance cannot carry prunable
  channels (grouped convs, depth multipliers, channels-mixing activations...), or None.
- `axes(layer)`: per weight (in `layer.weights` order), which axes carry input channels (`IN`),
  output channels (`OUT`) or input channels repeated `k` times (`In(k)`: a separable conv's
  pointwise rows). Surgery slices and grows along them, the planner counts parameters with
  them, the criteria read filters with them, and the widths below come from them.
- `macs(layer, in_shape, out_shape, n_in, n_out)`: multiply-accumulates for one sample at the
  given channel widths, so the same formula counts a model (graph/stats.py) and a plan (a layer
  without channel axes called on several tensors gets the list of their shapes); None
  when the shapes it needs are not known (graph/stats.py then names the layer as uncounted).
  A layer with `macs=None` does no multiply-accumulate worth counting (element-wise work:
  normalisations, activations); a layer nobody registered (`UNKNOWN`) is named as uncounted
  when it has weights.
- `im2col(layer, x)`: the layer's linear form, when it is `pre_activation = rows @ K + b` with K
  the kernel as a (taps * in, out) matrix (graph/linear.py).
- `resize(config, n)`: the layer's config with output width n (for surgery).
- `scale(layer)`: the per-channel multiplicative weight (BatchNorm's gamma), for criteria.
- `training_only`: a layer that must be gone before export (gates, masks).

Teach edgesparse a custom layer with `register_layer(MyLayer, rule)`; layers are looked up by
their exact class (a registered one first, then the tf_keras class name), never by a base
class: a subclass may compute something else, and an unknown layer fails closed.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum
from typing import Any, Callable

import numpy as np

from edgesparse._tf import keras, tf


class Role(str, Enum):
    INPUT = "input"
    PRODUCER = "producer"            # new output channels (Conv, Dense)
    CHANNELWISE = "channel-wise"     # per-channel weights, same channel count (BatchNorm, depthwise)
    PASS_THROUGH = "pass-through"    # channels unchanged, no per-channel weights (ReLU, pooling)
    MERGE = "element-wise merge"     # ties position i of every input (Add, Multiply)
    CONCAT = "concat"                # joins the inputs' channels at offsets
    FLATTEN = "flatten"              # tiles channels-last into one axis


IN, OUT = "in", "out"


@dataclass(frozen=True)
class In:
    """An axis holding `repeat` consecutive positions per input channel."""

    repeat: int


Axes = dict[int, Any]     # weight axis (may be negative) -> IN | OUT | In(k)


@dataclass(frozen=True)
class LayerRule:
    role: Role | None
    axes: Callable[[Any], list[Axes]] | None = None
    refuse: Callable[[Any, tuple, tuple], str | None] | None = None
    macs: Callable[[Any, tuple, tuple, int, int], int] | None = None
    im2col: Callable[[Any, np.ndarray], np.ndarray] | None = None
    resize: Callable[[dict, int], dict] | None = None
    scale: Callable[[Any], np.ndarray | None] | None = None
    training_only: bool = False


# ----------------------------------------------------------------------------- the registry

_BY_CLASS: dict[type, LayerRule] = {}
_BY_NAME: dict[str, LayerRule] = {}
UNKNOWN = LayerRule(role=None)


def register_layer(kind_or_class, rule: LayerRule) -> LayerRule:
    """Tell edgesparse what a layer kind means (a class, or a class name for built-ins)."""
    if isinstance(kind_or_class, str):
        _BY_NAME[kind_or_class] = rule
    else:
        _BY_CLASS[kind_or_class] = rule
    return rule


def rule_of(layer) -> LayerRule:
    """The rule for this layer; `UNKNOWN` (role None) when nobody registered its class."""
    cls = type(layer)
    if cls in _BY_CLASS:
        return _BY_CLASS[cls]
    if isinstance(layer, TrainingOnly):
        return _TRAINING_ONLY
    return _BY_NAME.get(cls.__name__, UNKNOWN)


def rule_named(kind: str) -> LayerRule:
    """A built-in rule by kind name, to register a custom layer that behaves like it."""
    return _BY_NAME[kind]


def kinds_with(predicate: Callable[[LayerRule], bool]) -> list[str]:
    return [k for k, r in _BY_NAME.items() if predicate(r)]


class TrainingOnly:
    """Mixin for layers that exist only while training (gates, masks): export refuses them.

    Without its own rule such a layer passes channels through; register a rule with
    `training_only=True` to say more (a channel-wise gate, say).
    """


_TRAINING_ONLY = LayerRule(role=Role.PASS_THROUGH, training_only=True)


def is_training_only(layer) -> bool:
    return rule_of(layer).training_only


def training_only_layers(model) -> list[str]:
    return [layer.name for layer in leaf_layers(model) if is_training_only(unwrap(layer))]


# ----------------------------------------------------------------------------- widths and axes

def weight_axes(layer) -> list[Axes] | None:
    rule = rule_of(layer)
    return None if rule.axes is None else rule.axes(layer)


# The built-in layers' weights in their get_weights() order, by attribute. A layer unwrapped from
# tfmot's QuantizeWrapper lists only its bias in `.weights` (the wrapper holds the kernel), but its
# attributes still point at every weight.
_WEIGHT_ATTRS = ("depthwise_kernel", "pointwise_kernel", "kernel", "bias", "gamma", "beta",
                 "moving_mean", "moving_variance", "alpha")


def weights_of(layer) -> list:
    """The layer's weight variables in the order its rule's axes describe."""
    named = [getattr(layer, a, None) for a in _WEIGHT_ATTRS]
    named = [w for w in named if w is not None and hasattr(w, "shape")]
    return named if named and len(named) >= len(layer.weights) else list(layer.weights)


def _width(layer, tag) -> int | None:
    axes = weight_axes(layer)
    if not axes:
        return None
    for w, ax in zip(weights_of(layer), axes):
        for axis, t in ax.items():
            if t == tag:
                return int(w.shape[axis])
    return None


def in_width(layer) -> int | None:
    """Input channels of a layer with channel-indexed weights; None otherwise."""
    return _width(layer, IN)


def out_width(layer) -> int | None:
    return _width(layer, OUT)


def _first_weight_with(layer, tag) -> tuple[np.ndarray, int]:
    for w, ax in zip((np.asarray(v) for v in weights_of(layer)), weight_axes(layer)):
        for axis, t in ax.items():
            if t == tag and w.ndim >= 2:
                return w, axis
    raise ValueError(f"{layer.name} has no weight matrix with {tag} channels")


def out_columns(layer) -> np.ndarray:
    """A producer's weights as one column per output channel: (fan-in, out)."""
    w, axis = _first_weight_with(layer, OUT)
    k = np.moveaxis(w, axis, -1)
    return k.reshape(-1, k.shape[-1])


def in_rows(layer) -> np.ndarray:
    """A consumer's weights as one row per input channel: (in, fan-out)."""
    w, axis = _first_weight_with(layer, IN)
    k = np.moveaxis(w, axis, 0)
    return k.reshape(k.shape[0], -1)


def leaf_layers(model):
    """Every layer of the model, nested functional/Sequential models opened (a subclassed model
    has no graph to open and counts as one layer)."""
    for layer in model.layers:
        if isinstance(layer, keras.Model) and getattr(layer, "_is_graph_network", False):
            yield from leaf_layers(layer)
        else:
            yield layer


TFMOT_WRAPPERS = ("QuantizeWrapper", "QuantizeWrapperV2", "PruneLowMagnitude")


def unwrap(layer):
    """tfmot wrappers (QuantizeWrapperV2, PruneLowMagnitude) hold the real layer in `.layer`."""
    while type(layer).__name__ in TFMOT_WRAPPERS and hasattr(layer, "layer"):
        layer = layer.layer
    return layer


# ----------------------------------------------------------------------------- MACs

def _prod(shape) -> int:
    return int(np.prod([d for d in shape if d is not None])) if shape else 1


def _macs_dense(layer, inp, out, n_in, n_out) -> int:
    return n_in * n_out * _prod(out[1:-1])              # Dense on (batch, time, features) too


def _macs_conv(layer, inp, out, n_in, n_out) -> int:
    taps = _prod(layer.kernel.shape[:-2])               # kernel (*k, in/groups, out)
    return _prod(out[1:-1]) * taps * n_in * n_out


def _macs_depthwise(layer, inp, out, n_in, n_out) -> int:
    k = layer.depthwise_kernel.shape                    # (*k, in, mult)
    return _prod(out[1:-1]) * _prod(k[:-2]) * n_in * int(k[-1])


def _macs_separable(layer, inp, out, n_in, n_out) -> int:
    mult = int(layer.depthwise_kernel.shape[-1])
    return _macs_depthwise(layer, inp, out, n_in, n_out) + _prod(out[1:-1]) * n_in * mult * n_out


def _macs_transpose(layer, inp, out, n_in, n_out) -> int:
    taps = _prod(layer.kernel.shape[:-2])               # kernel (*k, out, in): every input pixel scatters
    return _prod(inp[1:-1]) * taps * n_out * n_in


# Recurrent layers: per timestep every gate is a Dense on the input and one on the state, so
# T * gates * units * (input + units). The element-wise gate arithmetic (sigmoids, tanh, the
# products with the cell state) is a few times units per step and is not counted, as for BatchNorm.
_RECURRENT_GATES = {"SimpleRNN": 1, "GRU": 3, "LSTM": 4}


def _macs_recurrent(layer, inp, out, n_in, n_out) -> int | None:
    if len(inp) != 3 or inp[1] is None or inp[2] is None:
        return None                                     # unknown sequence length: cannot count
    units = int(layer.units)
    return int(inp[1]) * _RECURRENT_GATES[type(layer).__name__] * units * (int(inp[2]) + units)


def _macs_bidirectional(layer, inp, out, n_in, n_out) -> int | None:
    counts = [rule_of(rnn).macs(rnn, inp, out, 0, 0) if rule_of(rnn).macs else None
              for rnn in (layer.forward_layer, layer.backward_layer)]
    return None if None in counts else sum(counts)


def _attention_inputs(inp) -> tuple | None:
    """(query, value, key) shapes of an [query, value(, key)] call; None if any dim is unknown."""
    shapes = inp if isinstance(inp, list) else [inp]
    shapes = [tuple(s) for s in shapes] + [tuple(shapes[-1])] * (3 - len(shapes))
    return None if any(d is None for s in shapes for d in s[1:]) else tuple(shapes[:3])


def _macs_attention(layer, inp, out, n_in, n_out) -> int | None:
    # Attention (dot or concat score) and AdditiveAttention: one score per (query, key) pair over
    # the feature axis, then the score-weighted sum of the values; softmax and scaling not counted.
    shapes = _attention_inputs(inp)
    if shapes is None:
        return None
    q, v, k = shapes
    return _prod(q[1:-1]) * _prod(k[1:-1]) * (int(q[-1]) + int(v[-1]))


def _macs_multi_head_attention(layer, inp, out, n_in, n_out) -> int | None:
    # The Q/K/V/output projections (EinsumDense sublayers), then per head the Q.K scores over the
    # attention axes and the score-weighted sum of the values; softmax and dropout not counted.
    shapes = _attention_inputs([getattr(layer, f"_{n}_shape", None) for n in ("query", "value", "key")])
    dense = [getattr(layer, f"_{n}_dense", None) for n in ("query", "key", "value", "output")]
    if shapes is None or any(getattr(d, "kernel", None) is None for d in dense):
        return None
    q, v, k = shapes
    query, key, value, output = (tuple(int(n) for n in d.kernel.shape) for d in dense)
    heads, key_dim, value_dim = query[-2], query[-1], value[-1]
    axes = layer._attention_axes or range(1, len(k) - 1)         # None until built
    attended = _prod([k[a] for a in axes])                        # key positions each query sees
    return (_prod(q[1:-1]) * (_prod(query) + _prod(output)) + _prod(k[1:-1]) * _prod(key)
            + _prod(v[1:-1]) * _prod(value) + heads * _prod(q[1:-1]) * attended * (key_dim + value_dim))


# ----------------------------------------------------------------------------- weight axes

def _bias(layer, tag) -> list[Axes]:
    return [{0: tag}] if getattr(layer, "use_bias", False) and getattr(layer, "bias", None) is not None else []


def _axes_conv(layer) -> list[Axes]:                    # Dense, Conv1D/2D/3D: (..., in, out)
    return [{-2: IN, -1: OUT}] + _bias(layer, OUT)


def _axes_transpose(layer) -> list[Axes]:               # Conv*Transpose: (..., out, in)
    return [{-2: OUT, -1: IN}] + _bias(layer, OUT)


def _axes_separable(layer) -> list[Axes]:
    mult = int(layer.depthwise_kernel.shape[-1])        # pointwise rows: (input channel, multiplier) pairs
    return [{-2: IN}, {-2: In(mult), -1: OUT}] + _bias(layer, OUT)


def _axes_depthwise(layer) -> list[Axes]:
    return [{-2: IN}] + _bias(layer, IN)


def _axes_batchnorm(layer) -> list[Axes]:
    return [{0: IN} for _ in layer.weights]


def _axes_prelu(layer) -> list[Axes]:
    # alpha shared over the channels (one value) is not indexed by channel
    return [{-1: IN} if layer.weights[0].shape[-1] > 1 else {}]


# ----------------------------------------------------------------------------- refusals

def _refuse_grouped(layer, in_shape, out_shape) -> str | None:
    if getattr(layer, "groups", 1) != 1:
        return f"grouped convolution (groups={layer.groups})"
    return None


def _refuse_separable(layer, in_shape, out_shape) -> str | None:
    grouped = _refuse_grouped(layer, in_shape, out_shape)
    if grouped is None and layer.depth_multiplier < 1:
        return "separable conv with depth_multiplier < 1"
    return grouped


def _refuse_depthwise(layer, in_shape, out_shape) -> str | None:
    if layer.depth_multiplier != 1:
        return f"depthwise conv with depth_multiplier={layer.depth_multiplier} changes the channel count"
    return None


def _refuse_batchnorm(layer, in_shape, out_shape) -> str | None:
    rank = len(in_shape)
    axes = [a % rank for a in layer.axis]
    return None if axes == [rank - 1] else f"BatchNormalization over axis {layer.axis}, not the channel axis"


def _refuse_reshape(layer, in_shape, out_shape) -> str | None:
    # Row-major: a reshape that keeps the last axis keeps every channel where it was
    # (the squeeze-excite (C,) -> (1, 1, C) reshape, for one).
    if in_shape and out_shape and in_shape[-1] is not None and in_shape[-1] == out_shape[-1]:
        return None
    return "Reshape that changes the channel axis"


def _refuse_rescaling(layer, in_shape, out_shape) -> str | None:
    if np.ndim(layer.scale) == 0 and np.ndim(layer.offset) == 0:
        return None
    return "Rescaling with per-channel scale or offset"


CHANNEL_MIXING_ACTIVATIONS = {"softmax", "log_softmax"}     # removing one channel changes the others


def _refuse_activation(layer, in_shape, out_shape) -> str | None:
    name = getattr(layer.activation, "__name__", "")
    return f"{name} mixes channels" if name in CHANNEL_MIXING_ACTIVATIONS else None


# ----------------------------------------------------------------------------- linear forms

def _patches_2d(x, kernel, strides, dilation, padding) -> np.ndarray:
    p = tf.image.extract_patches(
        tf.convert_to_tensor(x, tf.float32), sizes=[1, *kernel, 1], strides=[1, *strides, 1],
        rates=[1, *dilation, 1], padding=padding.upper())
    p = p.numpy()
    return p.reshape(-1, p.shape[-1])


def _rows_dense(layer, x: np.ndarray) -> np.ndarray:
    return x.reshape(-1, x.shape[-1])


def _rows_conv2d(layer, x: np.ndarray) -> np.ndarray:
    # extract_patches orders each patch (row, column, channel): the kernel's (kh, kw, in) layout
    return _patches_2d(x, layer.kernel_size, layer.strides, layer.dilation_rate, layer.padding)


def _rows_conv1d(layer, x: np.ndarray) -> np.ndarray:
    # a Conv1D is a Conv2D of height 1; 'causal' is a left pad then 'valid'
    k, s, d = layer.kernel_size[0], layer.strides[0], layer.dilation_rate[0]
    padding = layer.padding
    if padding == "causal":
        x = np.pad(x, ((0, 0), (d * (k - 1), 0), (0, 0)))
        padding = "valid"
    return _patches_2d(np.asarray(x)[:, None], (1, k), (1, s), (1, d), padding)


# ----------------------------------------------------------------------------- config edits

def _resize_units(config: dict, n: int) -> dict:
    return {**config, "units": int(n)}


def _resize_filters(config: dict, n: int) -> dict:
    return {**config, "filters": int(n)}


def _resize_reshape(config: dict, n: int) -> dict:      # a channel-keeping reshape: new width
    return {**config, "target_shape": tuple(config["target_shape"][:-1]) + (int(n),)}


def _gamma(layer) -> np.ndarray | None:
    return np.abs(layer.get_weights()[0]) if layer.scale else None


# ----------------------------------------------------------------------------- the table

_CONV = LayerRule(Role.PRODUCER, axes=_axes_conv, refuse=_refuse_grouped, macs=_macs_conv,
                  resize=_resize_filters)
register_layer("Dense", LayerRule(Role.PRODUCER, axes=_axes_conv, macs=_macs_dense,
                                  im2col=_rows_dense, resize=_resize_units))
register_layer("Conv1D", replace(_CONV, im2col=_rows_conv1d))
register_layer("Conv2D", replace(_CONV, im2col=_rows_conv2d))
register_layer("Conv2DTranspose", LayerRule(Role.PRODUCER, axes=_axes_transpose, refuse=_refuse_grouped,
                                            macs=_macs_transpose, resize=_resize_filters))
for _kind in ("SeparableConv1D", "SeparableConv2D"):
    register_layer(_kind, LayerRule(Role.PRODUCER, axes=_axes_separable, refuse=_refuse_separable,
                                    macs=_macs_separable, resize=_resize_filters))
# Counted, but the channel analysis does not follow them (it fails closed there).
register_layer("Conv3D", LayerRule(None, axes=_axes_conv, macs=_macs_conv))
for _kind in ("Conv1DTranspose", "Conv3DTranspose"):
    register_layer(_kind, LayerRule(None, axes=_axes_transpose, macs=_macs_transpose))

# Counted, not followed by the channel analysis: the groups they read and write keep their width.
for _kind in _RECURRENT_GATES:
    register_layer(_kind, LayerRule(None, macs=_macs_recurrent))
register_layer("Bidirectional", LayerRule(None, macs=_macs_bidirectional))
for _kind in ("Attention", "AdditiveAttention"):
    register_layer(_kind, LayerRule(None, macs=_macs_attention))
register_layer("MultiHeadAttention", LayerRule(None, macs=_macs_multi_head_attention))
# Known to do only element-wise work or a lookup (no MACs counted), not followed by the channel
# analysis.
for _kind in ("LayerNormalization", "GroupNormalization", "UnitNormalization", "Normalization", "Embedding"):
    register_layer(_kind, LayerRule(None))

for _kind in ("DepthwiseConv1D", "DepthwiseConv2D"):
    register_layer(_kind, LayerRule(Role.CHANNELWISE, axes=_axes_depthwise, refuse=_refuse_depthwise,
                                    macs=_macs_depthwise))
register_layer("BatchNormalization", LayerRule(Role.CHANNELWISE, axes=_axes_batchnorm,
                                               refuse=_refuse_batchnorm, scale=_gamma))
register_layer("PReLU", LayerRule(Role.CHANNELWISE, axes=_axes_prelu))

_PASS = LayerRule(Role.PASS_THROUGH)
for _kind in ("Dropout", "SpatialDropout1D", "SpatialDropout2D", "GaussianNoise", "GaussianDropout",
              "AlphaDropout", "ActivityRegularization", "ReLU", "LeakyReLU", "ELU", "ThresholdedReLU",
              "MaxPooling1D", "MaxPooling2D", "AveragePooling1D", "AveragePooling2D",
              "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalMaxPooling1D",
              "GlobalMaxPooling2D", "ZeroPadding1D", "ZeroPadding2D", "UpSampling1D", "UpSampling2D",
              "Cropping1D", "Cropping2D"):
    register_layer(_kind, _PASS)
register_layer("Activation", replace(_PASS, refuse=_refuse_activation))
# The ONNX frontend's Softmax: understood, and like Activation("softmax") it mixes its channels.
register_layer("Softmax", replace(_PASS, refuse=lambda layer, i, o: "softmax mixes channels"))
register_layer("Reshape", replace(_PASS, refuse=_refuse_reshape, resize=_resize_reshape))
register_layer("Rescaling", replace(_PASS, refuse=_refuse_rescaling))
for _kind in ("Add", "Subtract", "Multiply", "Maximum", "Minimum", "Average"):
    register_layer(_kind, LayerRule(Role.MERGE))
register_layer("Concatenate", LayerRule(Role.CONCAT))
register_layer("Flatten", LayerRule(Role.FLATTEN))
register_layer("InputLayer", LayerRule(Role.INPUT))

# The L0 gate (graph/gates.py registers its class with this rule): per-channel weights and the
# same channel count, so the channel graph sees through it and shrink slices it; never exported.
GATE = LayerRule(Role.CHANNELWISE, axes=lambda layer: [{0: IN}], training_only=True)
