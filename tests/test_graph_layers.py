"""graph/layers.py: one rule per layer kind, and custom layers taught through register_layer."""
from __future__ import annotations

import numpy as np
import pytest

from edgesparse._tf import keras, tf
from edgesparse.errors import UserError
from edgesparse.graph.channels import ChannelGraph
from edgesparse.graph.layers import (IN, LayerRule, Role, TrainingOnly, in_width, out_width,
                                     register_layer, rule_named, rule_of, training_only_layers)
from edgesparse.graph.stats import count_macs, layer_macs, macs_by_layer, uncounted_layers, uncounted_warning
from edgesparse.graph.surgery import layer_keeps, planned_params, shrink
from edgesparse.passes.prune.allocation import macs_of

import prune_models as zoo

L = keras.layers


class ScaledDense(L.Dense):
    """A Dense whose output is multiplied by a constant: still `x @ W + b` up to a scale."""

    def __init__(self, units, factor=2.0, **kwargs):
        super().__init__(units, **kwargs)
        self.factor = factor

    def call(self, inputs):
        return super().call(inputs) * self.factor

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


class ChannelScale(L.Layer):
    """y = x * s with one learned s per channel: a channel-wise layer Keras does not ship."""

    def build(self, shape):
        self.s = self.add_weight(name="s", shape=(shape[-1],), initializer="ones")

    def call(self, x):
        return x * self.s


class Gate(TrainingOnly, L.Layer):
    """A training-only pass-through (stands in for an L0 gate)."""

    def call(self, x):
        return x


def _custom_model():
    i = L.Input((12,))
    x = ScaledDense(16, name="scaled", activation="relu")(i)
    x = ChannelScale(name="cscale")(x)
    x = L.Dense(8, name="mid", activation="relu")(x)
    o = L.Dense(3, name="head")(x)
    m = keras.Model(i, o)
    rng = np.random.default_rng(0)
    m.get_layer("cscale").set_weights([rng.uniform(0.5, 1.5, 16).astype("float32")])
    return m


@pytest.fixture
def registered():
    register_layer(ScaledDense, rule_named("Dense"))
    register_layer(ChannelScale, LayerRule(Role.CHANNELWISE, axes=lambda layer: [{0: IN}]))
    yield
    from edgesparse.graph import layers
    layers._BY_CLASS.pop(ScaledDense, None)
    layers._BY_CLASS.pop(ChannelScale, None)


def test_unregistered_custom_layers_fail_closed_and_count_no_macs():
    m = _custom_model()
    g = ChannelGraph(m)
    assert "scaled" in g.unprunable_layers and "cscale" in g.unprunable_layers
    assert "not understood" in g.unprunable_layers["cscale"]
    # A subclass of Dense does not inherit Dense's rule: its call may compute something else.
    assert rule_of(m.get_layer("scaled")).role is None
    assert count_macs(m) == 16 * 8 + 8 * 3
    # ... and the total says it is a lower bound, naming what it left out.
    assert uncounted_layers(m) == {"scaled": "ScaledDense has weights and no MAC formula",
                                   "cscale": "ChannelScale has weights and no MAC formula"}
    assert "lower bound" in uncounted_warning(m) and "scaled (ScaledDense" in uncounted_warning(m)


def test_registered_custom_layers_are_pruned_through_and_counted(registered):
    m = _custom_model()
    g = ChannelGraph(m)
    group = next(gr for gr in g.groups if "scaled" in gr.producers)
    assert group.prunable and group.members == ["cscale"] and group.consumers == ["mid"]
    assert count_macs(m) == 12 * 16 + 16 * 8 + 8 * 3
    assert (in_width(m.get_layer("cscale")), out_width(m.get_layer("scaled"))) == (16, 16)

    keep = g.full_keep()
    drop = g.producer_atoms["scaled"][[1, 4, 5, 9]]
    keep[drop] = False
    keeps = layer_keeps(g, keep)
    small = shrink(m, g, keep)
    assert small.get_layer("scaled").units == 12 and small.get_layer("cscale").s.shape == (12,)
    assert small.count_params() == planned_params(m, keeps)
    assert count_macs(small) == macs_of(g, keeps) == 12 * 12 + 12 * 8 + 8 * 3

    # The small model computes what the original computes with those channels zeroed.
    masked = keras.models.clone_model(m)
    masked.set_weights(m.get_weights())
    k, b = masked.get_layer("scaled").get_weights()
    k[:, [1, 4, 5, 9]], b[[1, 4, 5, 9]] = 0, 0
    masked.get_layer("scaled").set_weights([k, b])
    x = np.random.default_rng(1).normal(size=(16, 12)).astype("float32")
    np.testing.assert_allclose(small(x).numpy(), masked(x).numpy(), rtol=1e-5, atol=1e-5)


def test_mac_formulas_count_a_plan_like_the_model_it_builds():
    for make in zoo.ZOO.values():
        m = make()
        g = ChannelGraph(m)
        full = layer_keeps(g, g.full_keep())
        assert macs_of(g, full) == count_macs(m) > 0
    conv = L.Conv2D(8, 3, padding="same")
    keras.Sequential([L.Input((6, 6, 4)), conv])
    assert layer_macs(conv) == 6 * 6 * 9 * 4 * 8
    assert layer_macs(conv, n_in=2, n_out=3) == 6 * 6 * 9 * 2 * 3


def test_recurrent_layers_count_every_gate_at_every_timestep():
    i = L.Input((7, 5), name="x")
    x = L.LSTM(6, return_sequences=True, name="lstm")(i)
    x = L.GRU(4, return_sequences=True, name="gru")(x)
    x = L.SimpleRNN(3, return_sequences=True, name="rnn")(x)
    x = L.Bidirectional(L.LSTM(2), name="bi")(x)
    m = keras.Model(i, L.Dense(3, name="head")(x))
    # T * gates * units * (input + units): LSTM 4 gates, GRU 3, SimpleRNN 1; both directions.
    assert macs_by_layer(m) == {"x": 0, "lstm": 7 * 4 * 6 * (5 + 6), "gru": 7 * 3 * 4 * (6 + 4),
                                "rnn": 7 * 1 * 3 * (4 + 3), "bi": 2 * 7 * 4 * 2 * (3 + 2),
                                "head": 4 * 3}
    assert uncounted_layers(m) == {} and uncounted_warning(m) is None


def test_attention_layers_count_the_projections_scores_and_weighted_sums():
    q_in, v_in = L.Input((6, 8)), L.Input((4, 10))
    dot = L.Attention(name="dot")([L.Dense(10, name="q")(q_in), v_in])
    additive = L.AdditiveAttention(name="additive")([L.Dense(10, name="q2")(q_in), v_in])
    mha = L.MultiHeadAttention(num_heads=3, key_dim=4, value_dim=2, name="mha")
    heads = mha(q_in, v_in)
    m = keras.Model([q_in, v_in], [dot, additive, heads])
    macs = macs_by_layer(m)
    # a score per (query, key) pair over the features, then the score-weighted sum of the values
    assert macs["dot"] == macs["additive"] == 6 * 4 * (10 + 10)
    # Q (8 -> 3x4) at 6 positions, K (10 -> 3x4) and V (10 -> 3x2) at 4, output (3x2 -> 8) at 6;
    # per head 6 x 4 scores of length 4 and weighted sums of length 2
    assert macs["mha"] == 6 * 8 * 12 + 4 * 10 * 12 + 4 * 10 * 6 + 6 * 6 * 8 + 3 * 6 * 4 * (4 + 2)
    assert uncounted_layers(m) == {}


def test_unknown_sequence_length_makes_the_total_a_lower_bound():
    i = L.Input((None, 5))
    m = keras.Model(i, L.Dense(3, name="head")(L.LSTM(6, name="lstm")(i)))
    assert count_macs(m) == 6 * 3
    assert uncounted_layers(m) == {"lstm": "its shapes have unknown dimensions"}
    assert uncounted_warning(m).startswith("MACs are a lower bound: they leave out lstm (its shapes")


def test_training_only_layers_are_found_and_export_refuses_them(tmp_path):
    from edgesparse.data import synthetic
    from edgesparse.passes.export import Export
    from edgesparse.pipeline import RunContext
    from edgesparse.state import ModelState
    from edgesparse.targets import load_target

    i = L.Input((6,))
    x = L.Dense(4, name="d")(i)
    x = Gate(name="gate")(x)
    m = keras.Model(i, L.Dense(2)(x))
    assert training_only_layers(m) == ["gate"]
    assert ChannelGraph(m).groups[0].members == ["gate"]       # it passes channels through
    ctx = RunContext(target=load_target("rpi4"), data=synthetic((6,), n=16), workdir=tmp_path)
    with pytest.raises(UserError, match="training-only layers \\(gate\\)"):
        Export().run(ModelState(model=m, name="m"), ctx)
    assert not any(tmp_path.iterdir())                        # nothing half-written
