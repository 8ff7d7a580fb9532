"""The L0 hard-concrete gate layer (Louizos et al. 2018): one stochastic gate per channel.

It lives in graph/ because the channel table (graph/layers.py `GATE`) must know it: a gate is a
training-only, channel-wise layer the channel graph sees through, so a gated model has the same
channel groups as the ungated one and `shrink` slices gates like any per-channel weight. The
training side (where gates go, the expected-MAC penalty, folding) is `train/gates.py`.

The gate multiplies channel c by z_c = clip(sigmoid((log u - log(1-u) + log_alpha_c) / beta) *
(zeta - gamma) + gamma, 0, 1), u ~ U(0, 1), while training, and by the deterministic
clip(sigmoid(log_alpha_c) * (zeta - gamma) + gamma, 0, 1) at inference, which is exactly 0 for a
closed gate. P(z_c != 0) = sigmoid(log_alpha_c - beta * log(-gamma / zeta)).
"""
from __future__ import annotations

import math

import numpy as np

from edgesparse._tf import keras, tf
from edgesparse.graph.layers import GATE, TrainingOnly, register_layer

BETA, GAMMA, ZETA = 2.0 / 3.0, -0.1, 1.1


class HardConcreteGate(TrainingOnly, keras.layers.Layer):
    """Per-channel stochastic gate on the last axis; training-only (folded away before export)."""

    def __init__(self, init_open: float = 0.9, **kw):
        super().__init__(**kw)
        self.init_open = float(init_open)

    def build(self, input_shape):
        start = math.log(self.init_open / (1 - self.init_open))
        self.log_alpha = self.add_weight(name="log_alpha", shape=(int(input_shape[-1]),),
                                         initializer=keras.initializers.Constant(start), trainable=True)

    def gate(self, training: bool):
        if training:
            u = tf.random.uniform(tf.shape(self.log_alpha), 1e-6, 1 - 1e-6)
            s = tf.sigmoid((tf.math.log(u) - tf.math.log(1 - u) + self.log_alpha) / BETA)
        else:
            s = tf.sigmoid(self.log_alpha)
        return tf.clip_by_value(s * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)

    def call(self, x, training=None):
        return x * self.gate(bool(training))

    def open_probability(self):
        """P(gate != 0) per channel: the differentiable expected-L0 term."""
        return tf.sigmoid(self.log_alpha - BETA * math.log(-GAMMA / ZETA))

    def value(self) -> np.ndarray:
        """The deterministic gate per channel (what inference multiplies by, and what is folded)."""
        return self.gate(False).numpy()

    def get_config(self):
        return {**super().get_config(), "init_open": self.init_open}


# log_alpha where the deterministic gate is exactly 0: sigmoid(a) * (zeta - gamma) + gamma <= 0
CLOSED = math.log(-GAMMA / ZETA)          # about -2.4; below it the gate is shut

register_layer(HardConcreteGate, GATE)
