"""graph/surgery.py beyond shrink: grow, replace, insert and remove keep what the model computes."""
from __future__ import annotations

import numpy as np
import pytest

from edgesparse._tf import keras
from edgesparse.errors import UserError
from edgesparse.graph.channels import ChannelGraph
from edgesparse.graph.layers import in_rows, out_columns
from edgesparse.graph.surgery import grow, insert, remove, replace, shrink

import prune_models as zoo

L = keras.layers


def _group_of(graph, producer):
    return next(g for g in graph.groups if producer in g.producers)


@pytest.mark.parametrize("name", sorted(zoo.ZOO))
def test_grow_keeps_outputs_and_the_new_channels_join_the_group(name):
    m = zoo.ZOO[name]()
    x = zoo.sample_inputs(m, 16)
    want = m.predict(x, verbose=0)
    g = ChannelGraph(m)
    for group in g.prunable_groups:
        p = group.producers[0]
        wide = grow(m, p, 3)
        np.testing.assert_allclose(wide.predict(x, verbose=0), want, rtol=1e-5, atol=1e-5)
        wg = ChannelGraph(wide)
        grown = _group_of(wg, p)
        assert grown.size == group.size + 3 and sorted(grown.producers) == sorted(group.producers)
        old = {q: len(g.producer_atoms[q]) for q in group.producers}
        for q in grown.producers:               # every tied producer grew, with live new columns
            assert out_columns(wide.get_layer(q))[:, -3:].any()
        for c in grown.consumers:               # and every reader ignores them (zero rows)
            pmap = wg.maps[wg.call_of(c).inputs[0]]
            new = [i for i, a in enumerate(pmap) if a >= 0 and wg.atom_producer[a] in old
                   and wg.atom_channel[a] >= old[wg.atom_producer[a]]]
            rows = in_rows(wide.get_layer(c))
            assert new and not rows[new].any() and rows.any()
    assert m.predict(x, verbose=0).tolist() == want.tolist()     # the input model is untouched


# Flatten (conv_bn), a residual Add, Concatenate, a Multiply (squeeze_excite), depthwise (ds_cnn):
# the zoo's ways of carrying channels, without the two MobileNets' minutes.
@pytest.mark.parametrize("name", ["conv_bn", "residual", "concat", "squeeze_excite", "ds_cnn", "mlp"])
def test_grow_by_splitting_keeps_outputs_and_copies_the_source_channels(name):
    m = zoo.ZOO[name]()
    x = zoo.sample_inputs(m, 16)
    want = m.predict(x, verbose=0)
    g = ChannelGraph(m)
    for group in g.prunable_groups:
        p = group.producers[0]
        n = group.size + 2                      # more new channels than old: some sources split 3 ways
        sources = np.arange(n) % group.size
        wide = grow(m, p, n, split=sources, seed=1)
        np.testing.assert_allclose(wide.predict(x, verbose=0), want, rtol=1e-4, atol=1e-4)
        grown = _group_of(ChannelGraph(wide), p)
        assert grown.size == group.size + n
        for q in grown.producers:               # every tied producer's new columns copy their source
            cols = out_columns(wide.get_layer(q))
            np.testing.assert_array_equal(cols[:, group.size:], cols[:, sources])
        for c in grown.consumers:               # mixing readers see the copies, by unequal shares
            rows = in_rows(wide.get_layer(c))
            if type(wide.get_layer(c)) in (L.Dense, L.Conv2D) and rows.shape[0] == group.size + n:
                assert rows[group.size:].any()
                assert not np.allclose(rows[group.size:], rows[sources])
    with pytest.raises(UserError, match="one source channel"):
        grow(m, g.prunable_groups[0].producers[0], 2, split=np.array([0, 10_000]))


def test_grown_channels_can_be_pruned_away_again():
    m = zoo.residual()
    x = zoo.sample_inputs(m, 16)
    tied = max(ChannelGraph(m).prunable_groups, key=lambda g: len(g.producers))   # the residual Add
    p = tied.producers[0]
    assert len(tied.producers) == 3
    wide = grow(m, p, 4)
    g = ChannelGraph(wide)
    group = _group_of(g, p)
    keep = g.full_keep()
    for u in group.units[-4:]:
        keep[u] = False
    back = shrink(wide, g, keep)
    assert back.count_params() == m.count_params()
    np.testing.assert_allclose(back.predict(x, verbose=0), m.predict(x, verbose=0), rtol=1e-5, atol=1e-5)


def test_grow_refuses_what_it_cannot_do():
    m = zoo.mlp()
    head = m.layers[-1].name
    with pytest.raises(UserError, match="fixed"):
        grow(m, head, 2)                       # feeds the model output
    with pytest.raises(UserError, match="not a Conv/Dense"):
        grow(m, "p_re_lu_nope", 2)
    with pytest.raises(UserError, match="at least 1"):
        grow(m, m.layers[1].name, 0)


def test_replace_a_dense_by_its_full_rank_factorisation_keeps_outputs():
    m = zoo.mlp()
    x = zoo.sample_inputs(m, 16)
    dense = m.layers[1]
    k, b = dense.get_weights()
    u, s, vt = np.linalg.svd(k, full_matrices=False)
    low = L.Dense(len(s), use_bias=False, name="low")
    low.build((None, k.shape[0]))
    low.set_weights([u * s])
    high = L.Dense(k.shape[1], name="high")
    high.build((None, len(s)))
    high.set_weights([vt, b])
    new = replace(m, dense.name, [low, high])
    names = [layer.name for layer in new.layers]
    assert dense.name not in names and names.index("low") + 1 == names.index("high")
    np.testing.assert_allclose(new.predict(x, verbose=0), m.predict(x, verbose=0), rtol=1e-4, atol=1e-5)
    # The bottleneck is a producer of its own: a later prune can take rank channels.
    assert _group_of(ChannelGraph(new), "low").prunable


def test_insert_then_remove_round_trips():
    m = zoo.conv_bn()
    x = zoo.sample_inputs(m, 8)
    bn = next(layer.name for layer in m.layers if isinstance(layer, L.BatchNormalization))
    with_gate = insert(m, after=bn, layer=L.Activation("linear", name="gate"))
    names = [layer.name for layer in with_gate.layers]
    assert names[names.index(bn) + 1] == "gate"
    np.testing.assert_allclose(with_gate.predict(x, verbose=0), m.predict(x, verbose=0), atol=1e-6)
    back = remove(with_gate, "gate")
    assert [layer.name for layer in back.layers] == [layer.name for layer in m.layers]
    assert all(len(layer._inbound_nodes) == 1 for layer in back.layers)
    np.testing.assert_array_equal(back.predict(x, verbose=0), m.predict(x, verbose=0))
    with pytest.raises(UserError, match="changes the shape"):
        remove(m, next(layer.name for layer in m.layers if isinstance(layer, L.Flatten)))
    with pytest.raises(UserError, match="new and distinct"):
        insert(m, after=bn, layer=L.ReLU(name=bn))
