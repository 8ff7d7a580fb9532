"""L0 hard-concrete gates (Louizos et al. 2018): one gate per channel unit, and an expected-MAC penalty.

Written to plug into graph surgery: `graph/surgery.insert` (on branch `graph`, not merged yet)
will put a `HardConcreteGate` after each producer of a group as a training-only layer the channel
graph sees through; until then nothing inserts it. The gate multiplies channel c by
z_c = clip(sigmoid((log u - log(1-u) + log_alpha_c) / beta) * (zeta - gamma) + gamma, 0, 1),
u ~ U(0, 1) in training, and by the deterministic clip(sigmoid(log_alpha) * (zeta - gamma) + gamma)
at inference. P(z_c != 0) = sigmoid(log_alpha_c - beta * log(-gamma / zeta)) is what
`expected_macs` weighs: sum over layers of MACs x E[kept in] x E[kept out], so the recipe says
`macs: 0.3` and the gates find where to cut. Their learning rate is separate (about 10x the
weights'), since at the weights' rate no gate closes: `gate_variables` lists them for that.
"""
from __future__ import annotations

import math

from edgesparse._tf import keras, tf

BETA, GAMMA, ZETA = 2.0 / 3.0, -0.1, 1.1


class HardConcreteGate(keras.layers.Layer):
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

    def get_config(self):
        return {**super().get_config(), "init_open": self.init_open}


def expected_macs(terms) -> "tf.Tensor":
    """terms: (macs, gate_in or None, gate_out or None) per layer; the expected MACs under the gates."""
    total = 0.0
    for macs, gate_in, gate_out in terms:
        fin = 1.0 if gate_in is None else tf.reduce_mean(gate_in.open_probability())
        fout = 1.0 if gate_out is None else tf.reduce_mean(gate_out.open_probability())
        total += float(macs) * fin * fout
    return total


def mac_penalty(terms, full_macs: float, target: float, weight: float = 1.0):
    """A regularizer (model -> scalar): the expected MAC fraction above `target`, squared."""
    def penalty(model):
        frac = expected_macs(terms) / float(full_macs)
        return weight * tf.square(tf.nn.relu(frac - target))
    return penalty


def gate_variables(model) -> list:
    return [layer.log_alpha for layer in model.layers if isinstance(layer, HardConcreteGate)]
