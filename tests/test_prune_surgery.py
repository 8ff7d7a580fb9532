"""Surgery: the smaller model computes exactly what the original computes with channels masked."""
from __future__ import annotations

import numpy as np
import pytest

from edgesparse._tf import keras
from edgesparse.graph.stats import count_macs
from edgesparse.passes.prune.allocation import Planner, macs_of
from edgesparse.graph.channels import ChannelGraph
from edgesparse.graph.surgery import layer_keeps, planned_params, shrink

import prune_models as zoo

ALL = dict(zoo.ZOO, with_lambda=zoo.with_lambda, shared=zoo.shared)


def masked_original(model, graph, atom_keep):
    """The original with removed channels forced to exactly zero where they are produced.

    Written independently of the surgery: zero the producer's output filters and biases, and the
    per-channel affine terms of BatchNorm (gamma and beta) and depthwise biases the channel passes
    through, so the channel is exactly 0 after them. ReLU/PReLU/LeakyReLU, pooling, padding and
    adds keep zeros zero, so every later layer sees what the pruned model sees.
    """
    m = keras.models.clone_model(model)
    m.set_weights(model.get_weights())
    for producer, atoms in graph.producer_atoms.items():
        drop = ~atom_keep[atoms]
        layer = m.get_layer(producer)
        w = layer.get_weights()
        kind = type(layer).__name__
        if kind == "Conv2DTranspose":
            w[0][..., drop, :] = 0
        elif kind.startswith("Separable"):
            w[1][..., drop] = 0
        else:
            w[0][..., drop] = 0
        if layer.use_bias:
            w[-1][drop] = 0
        layer.set_weights(w)
    for call in graph.calls:
        if call.kind not in ("BatchNormalization", "DepthwiseConv2D"):
            continue
        layer = m.get_layer(call.name)
        w = layer.get_weights()
        width = w[0].shape[-2] if call.kind == "DepthwiseConv2D" else w[0].shape[0]
        drop = np.ones(width, bool)
        drop[graph.kept_positions(call.inputs[0], atom_keep)] = False
        if call.kind == "BatchNormalization":
            w[0][drop], w[1][drop] = 0, 0
        else:
            w[0][..., drop, :] = 0
            if len(w) > 1:
                w[1][drop] = 0
        layer.set_weights(w)
    return m


def random_plan(graph, seed, fraction=0.5):
    rng = np.random.default_rng(seed)
    removed = {g.id: rng.choice(g.size, int(g.size * fraction), replace=False) for g in graph.prunable_groups}
    return graph.atom_keep_from_units(removed)


@pytest.mark.parametrize("name", sorted(ALL))
def test_ratio_zero_gives_identical_outputs(name):
    m = ALL[name]()
    g = ChannelGraph(m)
    new = shrink(m, g, g.full_keep())
    x = zoo.sample_inputs(m)
    np.testing.assert_allclose(new(x).numpy(), m(x).numpy(), rtol=1e-6, atol=1e-6)
    assert new.count_params() == m.count_params()
    assert new is not m and new.layers[1] is not m.layers[1]


@pytest.mark.parametrize("name", sorted(zoo.ZOO))
def test_pruned_equals_masked_original(name):
    m = zoo.ZOO[name]()
    g = ChannelGraph(m)
    keep = random_plan(g, seed=3)
    new = shrink(m, g, keep)
    x = zoo.sample_inputs(m)
    ref = masked_original(m, g, keep)(x).numpy()
    got = new(x).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    # ... and masking really changed something, so the comparison can fail.
    assert np.abs(m(x).numpy() - ref).max() > 1e-3
    # genuinely smaller: fewer parameters and MACs, real shapes
    assert new.count_params() < m.count_params()
    assert count_macs(new) < count_macs(m)


@pytest.mark.parametrize("name", sorted(zoo.ZOO))
def test_plan_counts_match_the_built_model(name):
    m = zoo.ZOO[name]()
    g = ChannelGraph(m)
    keep = random_plan(g, seed=5, fraction=0.4)
    keeps = layer_keeps(g, keep)
    new = shrink(m, g, keep)
    assert planned_params(m, keeps) == new.count_params()
    assert macs_of(g, keeps) == count_macs(new)


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_a_recurrent_layer_fixes_its_groups_and_the_dense_after_it_is_pruned(cell):
    # An LSTM kernel is (in, 4 * units), a GRU's (in, 3 * units): no weight axis is a channel
    # width, and sizing even the unpruned plan used to stop on "would need slicing".
    m = zoo.recurrent(cell)
    g = ChannelGraph(m)
    assert [grp.producers for grp in g.prunable_groups] == [["hidden"]]
    conv = next(grp for grp in g.groups if grp.producers == ["conv"])
    assert conv.reasons == [f"flows into rnn ({cell} is not understood by the channel analysis)"]
    assert planned_params(m, layer_keeps(g, g.full_keep())) == m.count_params()
    keep = random_plan(g, seed=3)
    keeps = layer_keeps(g, keep)
    new = shrink(m, g, keep)
    assert new.get_layer("hidden").units == 8
    assert planned_params(m, keeps) == new.count_params() < m.count_params()
    assert macs_of(g, keeps) == count_macs(new) < count_macs(m)
    x = zoo.sample_inputs(m)
    np.testing.assert_allclose(new(x).numpy(), masked_original(m, g, keep)(x).numpy(), rtol=1e-4, atol=1e-5)


def test_producer_shapes_follow_the_plan():
    m = zoo.conv_bn()
    g = ChannelGraph(m)
    keep = random_plan(g, seed=1)
    new = shrink(m, g, keep)
    for producer, atoms in g.producer_atoms.items():
        layer = new.get_layer(producer)
        assert layer.output_shape[-1] == int(keep[atoms].sum())
    flat = next(l for l in new.layers if isinstance(l, keras.layers.Flatten))
    conv2 = [l for l in new.layers if isinstance(l, keras.layers.Conv2D)][1]
    assert flat.output_shape[-1] == 16 * conv2.filters


def test_every_producer_keeps_a_channel_when_units_span_producers():
    L = keras.layers
    i = L.Input((6, 6, 3))
    a = L.Conv2D(4, 1, name="a")(i)
    b = L.Conv2D(4, 1, name="b")(i)
    c = L.Conv2D(8, 1, name="c")(i)
    x = L.Add()([L.Concatenate()([a, b]), c])
    m = keras.Model(i, L.Dense(2)(L.GlobalAveragePooling2D()(x)))
    g = ChannelGraph(m)
    group = g.prunable_groups[0]
    # Scores that would take all of a's channels (units 0..3) first.
    scores = {group.id: np.array([0, 1, 2, 3, 10, 11, 12, 13], dtype=float)}
    planner = Planner(g, scores, min_channels=1, round_to=1)
    plan = planner.removal({group.id: 4})
    keep = g.atom_keep_from_units(plan)
    assert keep[g.producer_atoms["a"]].sum() >= 1
    new = shrink(m, g, keep)
    x = zoo.sample_inputs(m)
    np.testing.assert_allclose(new(x).numpy(), masked_original(m, g, keep)(x).numpy(), rtol=1e-4, atol=1e-5)


def test_mobilenet_v2_from_keras_applications():
    """A real architecture (inverted residuals, ReLU6, ZeroPadding, depthwise convs), untrained."""
    m = zoo._randomise_bn(keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35,
                                                         weights=None, classes=10))
    g = ChannelGraph(m)
    assert len(g.prunable_groups) == len(g.groups) - 1          # all but the classifier
    keep = random_plan(g, seed=2)
    new = shrink(m, g, keep)
    x = zoo.sample_inputs(m, 4)
    np.testing.assert_allclose(new(x).numpy(), masked_original(m, g, keep)(x).numpy(), rtol=1e-3, atol=1e-5)
    assert count_macs(new) < 0.5 * count_macs(m)
