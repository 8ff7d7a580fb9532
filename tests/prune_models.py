"""A zoo of tiny functional tf_keras models that exercise every path of the channel analysis.

Each builder returns an untrained model with randomised BatchNorm statistics (so BN is not the
identity and a wrong slice shows up in the outputs). `ZOO` lists the prunable ones by name.
"""
from __future__ import annotations

import numpy as np

from edgesparse._tf import keras, tf

L = keras.layers


def _randomise_bn(model, seed: int = 0):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape).astype("float32"),
                               rng.normal(0, 0.2, beta.shape).astype("float32"),
                               rng.normal(0, 0.2, mean.shape).astype("float32"),
                               rng.uniform(0.5, 1.5, var.shape).astype("float32")])
        elif layer.weights and not isinstance(layer, L.BatchNormalization):
            # Non-zero biases so a bias that is sliced wrongly changes the output.
            weights = layer.get_weights()
            for i, w in enumerate(weights):
                if w.ndim == 1 or isinstance(layer, L.PReLU):
                    weights[i] = rng.normal(0, 0.1, w.shape).astype("float32") + (
                        0.25 if isinstance(layer, L.PReLU) else 0.0)
            layer.set_weights(weights)
    return model


def conv_bn(seed=0):
    """Conv-BN-ReLU twice, max-pool, Flatten -> Dense head: the digits_cnn shape."""
    tf.random.set_seed(seed)
    i = L.Input((8, 8, 1))
    x = L.Conv2D(16, 3, padding="same", use_bias=False)(i)
    x = L.BatchNormalization()(x)
    x = L.ReLU()(x)
    x = L.Conv2D(32, 3, padding="same")(x)
    x = L.BatchNormalization()(x)
    x = L.ReLU()(x)
    x = L.MaxPooling2D()(x)
    x = L.Flatten()(x)
    x = L.Dense(32, activation="relu")(x)
    x = L.Dropout(0.1)(x)
    o = L.Dense(10, activation="softmax")(x)
    return _randomise_bn(keras.Model(i, o, name="conv_bn"), seed)


def residual(seed=0):
    """Two residual blocks: the Add ties the stem, both block outputs and the skip together."""
    tf.random.set_seed(seed)
    i = L.Input((8, 8, 3))
    x = L.Conv2D(16, 3, padding="same")(i)
    x = L.BatchNormalization()(x)
    x = L.ReLU()(x)
    for _ in range(2):
        y = L.Conv2D(24, 3, padding="same", activation="relu")(x)
        y = L.Conv2D(16, 3, padding="same")(y)
        y = L.BatchNormalization()(y)
        x = L.ReLU()(L.Add()([x, y]))
    x = L.Conv2D(32, 1)(x)
    x = L.GlobalAveragePooling2D()(x)
    o = L.Dense(10)(x)
    return _randomise_bn(keras.Model(i, o, name="residual"), seed)


def concat(seed=0):
    """Two branches concatenated on channels, then a conv over the concatenation (offsets)."""
    tf.random.set_seed(seed)
    i = L.Input((8, 8, 3))
    a = L.Conv2D(12, 3, padding="same", activation="relu")(i)
    b = L.Conv2D(20, 1, activation="relu")(i)
    b = L.ZeroPadding2D(1)(b)
    b = L.Cropping2D(1)(b)
    x = L.Concatenate()([a, b])
    x = L.BatchNormalization()(x)
    x = L.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = L.AveragePooling2D()(x)
    x = L.UpSampling2D()(x)
    x = L.Concatenate()([x, a])
    x = L.GlobalMaxPooling2D()(x)
    o = L.Dense(5)(x)
    return _randomise_bn(keras.Model(i, o, name="concat"), seed)


def mobile(seed=0):
    """Depthwise and separable convs (MobileNet-shaped), PReLU with per-channel alpha."""
    tf.random.set_seed(seed)
    i = L.Input((8, 8, 3))
    x = L.Conv2D(16, 3, padding="same")(i)
    x = L.BatchNormalization()(x)
    x = L.PReLU(shared_axes=[1, 2])(x)
    x = L.DepthwiseConv2D(3, padding="same")(x)
    x = L.BatchNormalization()(x)
    x = L.ReLU(6.0)(x)
    x = L.Conv2D(24, 1)(x)
    x = L.SeparableConv2D(32, 3, padding="same", depth_multiplier=2, activation="relu")(x)
    x = L.Conv2DTranspose(16, 3, strides=2, padding="same")(x)
    x = L.LeakyReLU()(x)
    x = L.GlobalAveragePooling2D()(x)
    o = L.Dense(4)(x)
    return _randomise_bn(keras.Model(i, o, name="mobile"), seed)


def conv1d(seed=0):
    """Conv1D stack with pooling and a Flatten -> Dense head."""
    tf.random.set_seed(seed)
    i = L.Input((16, 2))
    x = L.Conv1D(12, 3, padding="causal", activation="relu")(i)
    x = L.Conv1D(16, 3, padding="same")(x)
    x = L.BatchNormalization()(x)
    x = L.Activation("relu")(x)
    x = L.MaxPooling1D()(x)
    x = L.Flatten()(x)
    x = L.Dense(24, activation="relu")(x)
    o = L.Dense(3)(x)
    return _randomise_bn(keras.Model(i, o, name="conv1d"), seed)


def mlp(seed=0):
    """Dense 64-48-32-10 with a per-unit PReLU: the digits_mlp shape in miniature."""
    tf.random.set_seed(seed)
    i = L.Input((64,))
    x = L.Dense(48)(i)
    x = L.PReLU()(x)
    x = L.Dense(32, activation="relu")(x)
    o = L.Dense(10, activation="softmax")(x)
    return _randomise_bn(keras.Model(i, o, name="mlp"), seed)


def squeeze_excite(seed=0):
    """A squeeze-and-excitation block (EfficientNet style, with a channel-keeping Reshape):
    Multiply ties the gate Dense to the conv it scales."""
    tf.random.set_seed(seed)
    i = L.Input((8, 8, 3))
    x = L.Conv2D(16, 3, padding="same", activation="relu")(i)
    s = L.GlobalAveragePooling2D()(x)
    s = L.Reshape((1, 1, 16))(s)            # keeps the channel axis: channels pass through
    s = L.Dense(4, activation="relu")(s)
    s = L.Dense(16, activation="sigmoid")(s)
    x = L.Multiply()([x, s])
    x = L.Conv2D(8, 1)(x)
    x = L.Flatten()(L.AveragePooling2D(4)(x))
    o = L.Dense(3)(x)
    return _randomise_bn(keras.Model(i, o, name="squeeze_excite"), seed)


def with_lambda(seed=0):
    """A Lambda and a Reshape: the groups they touch must be unprunable, the rest prunable."""
    tf.random.set_seed(seed)
    i = L.Input((8, 8, 1))
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="before_lambda")(i)
    x = L.Lambda(lambda t: t * 2.0, name="double")(x)
    x = L.Conv2D(12, 3, padding="same", activation="relu", name="free_conv")(x)
    x = L.Conv2D(6, 3, strides=2, padding="same", name="before_reshape")(x)
    x = L.Reshape((16 * 6,), name="reshape")(x)
    x = L.Dense(16, activation="relu", name="free_dense")(x)
    o = L.Dense(3, name="head")(x)
    return keras.Model(i, o, name="with_lambda")


def shared(seed=0):
    """One Conv2D called on two tensors: shared layers are not pruned."""
    tf.random.set_seed(seed)
    i = L.Input((8, 8, 4))
    conv = L.Conv2D(4, 3, padding="same", name="shared_conv")
    a = conv(i)
    b = conv(L.ReLU()(a))
    x = L.GlobalAveragePooling2D()(b)
    o = L.Dense(3)(x)
    return keras.Model(i, o, name="shared")


def ds_cnn(seed=0):
    """A DS-CNN keyword-spotting model in miniature (MFCC frames x coefficients): a Conv1D stem,
    then SeparableConv1D blocks with BatchNorm and ReLU, global average pooling, a softmax head."""
    tf.random.set_seed(seed)
    i = L.Input((20, 10))
    x = L.Conv1D(16, 5, strides=2, padding="same", use_bias=False)(i)
    x = L.BatchNormalization()(x)
    x = L.ReLU()(x)
    for width in (16, 24):
        x = L.SeparableConv1D(width, 3, padding="same", use_bias=False)(x)
        x = L.BatchNormalization()(x)
        x = L.ReLU()(x)
    x = L.GlobalAveragePooling1D()(x)
    o = L.Dense(4, activation="softmax")(x)
    return _randomise_bn(keras.Model(i, o, name="ds_cnn"), seed)


def mobilenet_v2(seed=0):
    """MobileNetV2-style: inverted residual blocks (1x1 expand, 3x3 depthwise, 1x1 linear project,
    skip Add when the shape allows) with BatchNorm and ReLU6."""
    tf.random.set_seed(seed)

    def block(x, expand, out, stride):
        width = int(x.shape[-1])
        y = L.Conv2D(width * expand, 1, use_bias=False)(x)
        y = L.BatchNormalization()(y)
        y = L.ReLU(6.0)(y)
        y = L.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False)(y)
        y = L.BatchNormalization()(y)
        y = L.ReLU(6.0)(y)
        y = L.Conv2D(out, 1, use_bias=False)(y)
        y = L.BatchNormalization()(y)
        return L.Add()([x, y]) if stride == 1 and out == width else y

    i = L.Input((12, 12, 3))
    x = L.Conv2D(8, 3, strides=2, padding="same", use_bias=False)(i)
    x = L.BatchNormalization()(x)
    x = L.ReLU(6.0)(x)
    x = block(x, 4, 8, 1)
    x = block(x, 4, 12, 2)
    x = block(x, 4, 12, 1)
    x = L.Conv2D(32, 1, use_bias=False)(x)
    x = L.BatchNormalization()(x)
    x = L.ReLU(6.0)(x)
    x = L.GlobalAveragePooling2D()(x)
    o = L.Dense(5, activation="softmax")(x)
    return _randomise_bn(keras.Model(i, o, name="mobilenet_v2"), seed)


def recurrent(cell: str = "LSTM", seed=0):
    """Conv1D -> LSTM/GRU -> Dense -> Dense (the probe's lstm.keras, smaller): the recurrent layer
    is not followed by the channel analysis, so only the hidden Dense group can be pruned."""
    tf.random.set_seed(seed)
    i = L.Input((6, 5))
    x = L.Conv1D(8, 3, activation="relu", name="conv")(i)
    x = getattr(L, cell)(6, name="rnn")(x)
    x = L.Dense(16, activation="relu", name="hidden")(x)
    o = L.Dense(3, activation="softmax", name="head")(x)
    return _randomise_bn(keras.Model(i, o, name=f"tiny_{cell.lower()}"), seed)


ZOO = {"conv_bn": conv_bn, "residual": residual, "concat": concat, "mobile": mobile,
       "conv1d": conv1d, "mlp": mlp, "squeeze_excite": squeeze_excite, "ds_cnn": ds_cnn,
       "mobilenet_v2": mobilenet_v2}


def sample_inputs(model, n: int = 32, seed: int = 0) -> np.ndarray:
    shape = tuple(model.inputs[0].shape[1:])
    return np.random.default_rng(seed).normal(size=(n,) + shape).astype("float32")
