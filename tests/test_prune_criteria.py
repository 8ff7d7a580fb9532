"""Importance criteria, budgets and least-squares reconstruction."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgesparse._tf import keras
from edgesparse.errors import UserError
from edgesparse.graph import linear as patches
from edgesparse.passes.prune.allocation import Budget, Planner, macs_of
from edgesparse.graph.channels import ChannelGraph
from edgesparse.passes.prune.criteria import CRITERIA, ScoreInputs, _greedy_order_scores, get_criterion
from edgesparse.passes.prune.reconstruct import refit_layers
from edgesparse.graph.surgery import layer_keeps, shrink

import prune_models as zoo

L = keras.layers
SAMPLES = Path(__file__).resolve().parents[1] / "sample_models"


def inputs_for(m, n=64, seed=0):
    g = ChannelGraph(m)
    x = zoo.sample_inputs(m, n, seed)
    y = np.random.default_rng(seed).integers(0, m.output_shape[-1], n)
    return g, ScoreInputs(m, g, x, y, seed=seed)


@pytest.mark.parametrize("name", sorted(zoo.ZOO))
def test_every_criterion_scores_every_unit(name):
    m = zoo.ZOO[name]()
    g, inp = inputs_for(m)
    for crit in sorted(CRITERIA):
        for group in g.prunable_groups:
            s = get_criterion(crit).scores(group, inp)
            assert s.shape == (group.size,), (crit, group.id)
            assert np.all(np.isfinite(s)), crit
            again = get_criterion(crit).scores(group, inp)
            np.testing.assert_allclose(s, again, err_msg=crit)      # deterministic


def test_random_is_seeded():
    m = zoo.mlp()
    g, inp = inputs_for(m, seed=0)
    group = g.prunable_groups[0]
    a = get_criterion("random").scores(group, inp)
    inp.seed = 1
    assert not np.allclose(a, get_criterion("random").scores(group, inp))


@pytest.mark.parametrize("crit", ["l1", "l2", "activation", "apoz", "taylor", "thinet"])
def test_a_dead_unit_scores_lowest(crit):
    m = zoo.mlp()
    first = m.layers[1]
    w, b = first.get_weights()
    w[:, 7], b[7] = 0, 0                                # unit 7 outputs exactly 0 (PReLU(0) = 0)
    first.set_weights([w, b])
    nxt = m.layers[3]
    w2, b2 = nxt.get_weights()
    w2[7] *= 0.01                                       # and is barely used by the next layer
    nxt.set_weights([w2, b2])
    g, inp = inputs_for(m)
    group = next(x for x in g.groups if first.name in x.producers)
    assert int(np.argmin(get_criterion(crit).scores(group, inp))) == 7


def test_bn_scale_reads_gamma():
    m = zoo.conv_bn()
    bn = next(l for l in m.layers if isinstance(l, L.BatchNormalization))
    gamma, beta, mean, var = bn.get_weights()
    gamma[5] = 0.0
    bn.set_weights([gamma, beta, mean, var])
    g, inp = inputs_for(m)
    group = next(x for x in g.groups if bn.name in x.members)
    assert int(np.argmin(get_criterion("bn_scale").scores(group, inp))) == 5


def test_greedy_takes_units_that_cancel():
    # Unit 0 is cheapest alone; unit 1 cancels it (negative correlation), so removing 0 then 1
    # changes the next layer's output less than removing 0 then 2, though 2 is smaller than 1.
    gram = np.array([[0.5, -0.5, 0.0], [-0.5, 0.6, 0.0], [0.0, 0.0, 0.55]])
    order = np.argsort(_greedy_order_scores(gram))
    assert list(order) == [0, 1, 2]


def test_unknown_criterion_is_a_user_error():
    with pytest.raises(UserError, match="unknown pruning criterion"):
        get_criterion("l7")


# ----------------------------------------------------------------------------- budgets


def planner_for(m, crit="l1", **kw):
    g, inp = inputs_for(m)
    scores = {grp.id: get_criterion(crit).scores(grp, inp) for grp in g.prunable_groups}
    return Planner(g, scores, **kw)


@pytest.mark.parametrize("name", sorted(zoo.ZOO))
@pytest.mark.parametrize("allocation", ["uniform", "global_"])
def test_mac_target_is_met_with_rounding(name, allocation):
    m = zoo.ZOO[name]()
    p = planner_for(m, min_channels=1, round_to=4)
    plan = getattr(p, allocation)(Budget("macs", 0.5))
    assert macs_of(p.graph, p.keeps(plan)) <= 0.5 * p.macs_full
    for gid, removed in plan.items():
        kept = p.groups[gid].size - len(removed)
        assert kept % 4 == 0 or kept == p.groups[gid].size


def test_min_channels_and_unreachable_target():
    m = zoo.conv_bn()
    p = planner_for(m, min_channels=12, round_to=1)
    plan = p.uniform(Budget("ratio", 0.9))
    for gid, removed in plan.items():
        assert p.groups[gid].size - len(removed) >= 12
    with pytest.raises(UserError, match="cannot reach"):
        p.uniform(Budget("macs", 0.05))


def test_params_budget_and_global_ratio():
    m = zoo.residual()
    p = planner_for(m)
    plan = p.global_(Budget("params", 0.4))
    assert p.kept_fraction("params", plan) <= 0.4
    plan = p.global_(Budget("ratio", 0.5))
    total = sum(g.size for g in p.groups.values())
    assert abs(sum(len(v) for v in plan.values()) - total / 2) <= len(p.groups)


def test_sensitivity_allocation_prunes_the_insensitive_group_more():
    m = zoo.mlp()
    p = planner_for(m)
    a, b = sorted(p.groups)
    ratios = np.array([0.0, 0.25, 0.5, 0.75, 0.9])
    curves = {a: (ratios, np.array([0, 0.0, 0.01, 0.02, 0.03])),     # barely cares
              b: (ratios, np.array([0, 0.2, 0.4, 0.6, 0.8]))}        # very sensitive
    plan = p.from_sensitivity(Budget("macs", 0.6), curves)
    assert len(plan[a]) / p.groups[a].size > len(plan[b]) / p.groups[b].size
    assert p.kept_fraction("macs", plan) <= 0.6


# ----------------------------------------------------------------------------- reconstruction


@pytest.mark.parametrize("layer", [
    L.Conv2D(5, 3, padding="same"), L.Conv2D(5, 3, strides=2, padding="valid"),
    L.Conv2D(5, 3, dilation_rate=2, padding="same"), L.Conv1D(5, 3, padding="causal"),
    L.Conv1D(5, 2, strides=2, padding="same"), L.Dense(5)])
def test_layers_unfold_to_a_matrix_product(layer):
    shape = (9, 9, 3) if isinstance(layer, L.Conv2D) else (12, 3)
    i = L.Input(shape)
    m = keras.Model(i, layer(i))
    x = np.random.default_rng(0).normal(size=(4,) + shape).astype("float32")
    w, b = layer.get_weights()
    pred = patches.input_rows(layer, x) @ patches.kernel_2d(w) + b
    np.testing.assert_allclose(pred, m(x).numpy().reshape(-1, 5), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["conv_bn", "residual", "conv1d", "mlp"])
def test_refit_brings_layers_closer_to_the_unpruned_model(name):
    m = zoo.ZOO[name]()
    g = ChannelGraph(m)
    x = zoo.sample_inputs(m, 256)
    rng = np.random.default_rng(0)
    keep = g.atom_keep_from_units({grp.id: rng.choice(grp.size, grp.size // 2, replace=False)
                                   for grp in g.prunable_groups})
    pruned = shrink(m, g, keep)
    ref = m(x).numpy()
    before = np.linalg.norm(pruned(x).numpy() - ref)
    records = refit_layers(m, pruned, layer_keeps(g, keep), x)
    records = [r for r in records if "error_before" in r]
    assert records and all(r["error_after"] <= r["error_before"] for r in records)
    assert any(r["refit"] and r["error_after"] < 0.9 * r["error_before"] for r in records)
    assert np.linalg.norm(pruned(x).numpy() - ref) < before


def test_reconstruction_recovers_the_digits_mlp_without_training():
    """DESIGN.md's experiment: 75% of the hidden units of the digits MLP removed."""
    from edgesparse.data import load_data
    from edgesparse.passes.prune.procedure import Data, Settings, prune

    m = keras.models.load_model(SAMPLES / "digits_mlp.keras")
    d = load_data(SAMPLES / "digits.npz", tuple(m.inputs[0].shape[1:]), 10)
    res = prune(m, Settings(Budget("ratio", 0.75), criterion="l1"),
                Data(d.x_calib[:1024], d.x_train, d.y_train, d.x_val, d.y_val))
    step = res.facts["steps"][0]
    base = res.facts["accuracy_before"]
    assert res.facts["channels"]["fc1"] == [256, 64]
    assert step["accuracy_pruned"] < base - 10             # one-shot removal hurts (points)...
    assert step["accuracy_reconstructed"] >= base - 3      # ...the least-squares refit recovers it
