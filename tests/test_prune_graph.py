"""Channel-dependency groups: what is tied to what, and what fails closed (and says why)."""
from __future__ import annotations

import numpy as np
import pytest

from edgesparse._tf import keras, tf
from edgesparse.errors import UserError
from edgesparse.graph.channels import ChannelGraph

import prune_models as zoo

L = keras.layers


def by_producer(graph, name):
    return next(g for g in graph.groups if name in g.producers)


def test_conv_bn_chain_groups_and_flatten_head():
    m = zoo.conv_bn()
    g = ChannelGraph(m)
    convs = [l.name for l in m.layers if isinstance(l, L.Conv2D)]
    dense = [l.name for l in m.layers if isinstance(l, L.Dense)]
    first, second = by_producer(g, convs[0]), by_producer(g, convs[1])
    assert first.producers == [convs[0]] and first.consumers == [convs[1]] and first.size == 16
    # The second conv's channels reach the first Dense through BN, ReLU, pooling and Flatten.
    assert second.consumers == [dense[0]]
    kinds = {type(m.get_layer(n)).__name__ for n in second.members}
    assert {"BatchNormalization", "ReLU", "MaxPooling2D", "Flatten"} <= kinds
    # Flatten maps channels-last: position p of the flat vector is channel p % C.
    flat = next(c for c in g.calls if c.kind == "Flatten")
    fmap = g.maps[flat.outputs[0]]
    assert len(fmap) == 4 * 4 * 32
    np.testing.assert_array_equal(fmap[:32], g.producer_atoms[convs[1]])
    np.testing.assert_array_equal(fmap[32:64], g.producer_atoms[convs[1]])
    out = by_producer(g, dense[-1])
    assert not out.prunable and "model output" in out.reasons[0]
    assert [x.prunable for x in g.groups].count(True) == 3


def test_residual_add_ties_stem_and_block_outputs():
    m = zoo.residual()
    g = ChannelGraph(m)
    convs = [l.name for l in m.layers if isinstance(l, L.Conv2D)]
    tied = by_producer(g, convs[0])
    # stem, and the last conv of each block, are added together: one group, 16 units.
    assert sorted(tied.producers) == sorted([convs[0], convs[2], convs[4]])
    assert tied.size == 16
    assert all(len(u) == 3 for u in tied.units)        # each unit holds one channel of each producer
    assert sum(1 for n in tied.members if n.startswith("add")) == 2
    # The inner convs of each block are independent groups.
    assert by_producer(g, convs[1]).producers == [convs[1]]


def test_concatenate_maps_by_offset():
    m = zoo.concat()
    g = ChannelGraph(m)
    by_filters = {l.filters: l.name for l in m.layers if isinstance(l, L.Conv2D)}
    a, b, mid = by_filters[12], by_filters[20], by_filters[16]
    cat = next(c for c in g.calls if c.kind == "Concatenate")
    cmap = g.maps[cat.outputs[0]]
    np.testing.assert_array_equal(cmap[:12], g.producer_atoms[a])
    np.testing.assert_array_equal(cmap[12:], g.producer_atoms[b])
    # Branch a feeds both the middle conv and (through the second concatenation) the Dense head.
    dense = [l.name for l in m.layers if isinstance(l, L.Dense)][0]
    assert sorted(by_producer(g, a).consumers) == sorted([mid, dense])
    assert by_producer(g, a).producers == [a]


def test_depthwise_separable_transpose_prelu():
    m = zoo.mobile()
    g = ChannelGraph(m)
    stem = m.layers[1].name
    group = by_producer(g, stem)
    kinds = {type(m.get_layer(n)).__name__ for n in group.members}
    assert {"DepthwiseConv2D", "PReLU", "BatchNormalization"} <= kinds
    sep = next(l.name for l in m.layers if isinstance(l, L.SeparableConv2D))
    tr = next(l.name for l in m.layers if isinstance(l, L.Conv2DTranspose))
    assert by_producer(g, sep).consumers == [tr] and by_producer(g, tr).prunable


def test_lambda_and_reshape_fail_closed_and_are_named():
    g = ChannelGraph(zoo.with_lambda())
    assert "Lambda" in g.unprunable_layers["double"]
    assert "Reshape" in g.unprunable_layers["reshape"]
    assert not by_producer(g, "before_lambda").prunable
    assert "double" in by_producer(g, "before_lambda").reasons[0]
    assert not by_producer(g, "before_reshape").prunable
    # What the unknown layers do not touch stays prunable.
    assert by_producer(g, "free_conv").prunable and by_producer(g, "free_dense").prunable


def test_shared_layer_is_named_and_not_pruned():
    g = ChannelGraph(zoo.shared())
    assert "shared layer used at 2 call sites" == g.unprunable_layers["shared_conv"]
    assert "shared_conv" not in g.producer_atoms


def _single(layer_fn, shape=(8, 8, 4)):
    i = L.Input(shape)
    x = L.Conv2D(8, 3, padding="same", name="producer")(i)
    x = layer_fn(x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(i, L.Dense(2, name="head")(x))


@pytest.mark.parametrize("layer_fn, why", [
    (lambda x: L.DepthwiseConv2D(3, depth_multiplier=2, padding="same")(x), "depth_multiplier=2"),
    (lambda x: L.Conv2D(8, 3, groups=2, padding="same")(x), "grouped convolution"),
    (lambda x: L.Activation("softmax")(x), "softmax mixes channels"),
    (lambda x: tf.nn.relu(x) * 2.0, "TFOpLambda"),
    (lambda x: L.LayerNormalization()(x), "LayerNormalization"),
    (lambda x: L.BatchNormalization(axis=1)(x), "not the channel axis"),
])
def test_unknown_or_channel_changing_layers_fail_closed(layer_fn, why):
    g = ChannelGraph(_single(layer_fn))
    group = by_producer(g, "producer")
    assert not group.prunable
    assert any(why in r for r in group.reasons), group.reasons


def test_nested_model_fails_closed():
    inner_in = L.Input((8, 8, 8))
    inner = keras.Model(inner_in, L.Conv2D(8, 1)(inner_in), name="block")
    i = L.Input((8, 8, 3))
    x = L.Conv2D(8, 3, padding="same", name="producer")(i)
    x = inner(x)
    x = L.GlobalAveragePooling2D()(x)
    g = ChannelGraph(keras.Model(i, L.Dense(2)(x)))
    assert "nested model" in g.unprunable_layers["block"]
    assert not by_producer(g, "producer").prunable


def test_add_with_model_input_fixes_the_group():
    i = L.Input((8, 8, 4))
    x = L.Conv2D(4, 3, padding="same", name="producer")(i)
    x = L.Add()([x, i])
    x = L.Conv2D(6, 1, name="after")(x)
    x = L.GlobalAveragePooling2D()(x)
    g = ChannelGraph(keras.Model(i, L.Dense(2)(x)))
    assert not by_producer(g, "producer").prunable
    assert by_producer(g, "after").prunable


def test_concat_then_add_units_span_producers():
    i = L.Input((8, 8, 3))
    a = L.Conv2D(4, 1, name="a")(i)
    b = L.Conv2D(4, 1, name="b")(i)
    c = L.Conv2D(8, 1, name="c")(i)
    x = L.Add()([L.Concatenate()([a, b]), c])
    x = L.Conv2D(5, 1, name="after")(x)
    g = ChannelGraph(keras.Model(i, L.Dense(2)(L.Flatten()(x))))
    group = by_producer(g, "c")
    assert sorted(group.producers) == ["a", "b", "c"] and group.size == 8
    # unit j holds channel j of c and channel j (or j-4) of a (or b)
    for unit in group.units:
        owners = sorted(g.atom_producer[x] for x in unit)
        assert owners in (["a", "c"], ["b", "c"])


def test_subclassed_model_is_a_user_error():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = L.Dense(3)

        def call(self, x):
            return self.d(x)

    net = Net()
    net(np.zeros((1, 4), np.float32))
    with pytest.raises(UserError, match="functional"):
        ChannelGraph(net)


def test_squeeze_excite_gate_is_tied_to_the_scaled_conv():
    m = zoo.squeeze_excite()
    g = ChannelGraph(m)
    convs = [l for l in m.layers if isinstance(l, L.Conv2D)]
    gate = [l for l in m.layers if isinstance(l, L.Dense)][1]
    first = convs[0] if convs[0].filters == 16 else convs[1]
    assert sorted(by_producer(g, first.name).producers) == sorted([first.name, gate.name])


def test_sequential_models_are_analysed():
    m = keras.Sequential([L.Input((10,)), L.Dense(8, activation="relu"), L.Dropout(0.1), L.Dense(3)])
    g = ChannelGraph(m)
    assert [grp.size for grp in g.prunable_groups] == [8]
    from edgesparse.graph.surgery import shrink
    keep = g.atom_keep_from_units({g.prunable_groups[0].id: np.array([0, 3, 5])})
    small = shrink(m, g, keep)
    assert small.layers[0].units == 5 and small.count_params() == 10 * 5 + 5 + 5 * 3 + 3


def _nested(inner_conv_name="inner_conv"):
    inner_in = L.Input((8, 8, 8))
    y = L.Conv2D(8, 1, name=inner_conv_name)(inner_in)
    y = L.BatchNormalization(name="inner_bn")(y)
    inner = keras.Model(inner_in, L.ReLU(name="inner_relu")(y), name="backbone")
    i = L.Input((8, 8, 3))
    x = L.Conv2D(8, 3, padding="same", name="producer")(i)
    x = inner(x, training=False)
    x = L.Conv2D(6, 1, name="after")(x)
    return keras.Model(i, L.Dense(2, name="head")(L.GlobalAveragePooling2D()(x)))


def test_nested_models_are_flattened_then_pruned():
    from edgesparse.graph.flatten import flatten_nested

    m = _nested()
    flat, names, why = flatten_nested(m)
    assert names == ["backbone"] and why is None
    x = zoo.sample_inputs(m, 4)
    np.testing.assert_allclose(flat(x).numpy(), m(x).numpy(), rtol=1e-6)
    g = ChannelGraph(flat)
    assert by_producer(g, "producer").prunable and by_producer(g, "inner_conv").prunable
    assert "inner_bn" in by_producer(g, "inner_conv").members


def test_nested_model_with_clashing_names_stays_closed():
    from edgesparse.graph.flatten import flatten_nested

    m = _nested(inner_conv_name="producer")
    flat, names, why = flatten_nested(m)
    assert flat is m and names == [] and "producer" in why
    assert not by_producer(ChannelGraph(flat), "producer").prunable
