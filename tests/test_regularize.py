"""Sparsity learned in training (issue 10): the regularize pass on the one training loop, its
penalties (train/regularizers.py), its controller and schedules, and prune cutting the zeros."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgesparse._tf import keras
from edgesparse.data import Dataset, load_data
from edgesparse.errors import UserError
from edgesparse.graph.channels import ChannelGraph
from edgesparse.graph.stats import count_macs
from edgesparse.passes import load_builtin_passes
from edgesparse.passes.prune.pass_ import PrunePass
from edgesparse.passes.regularize import RegularizeConfig, RegularizePass
from edgesparse.pipeline import PASSES, DataInfo, Pipeline, RunContext
from edgesparse.state import ModelState
from edgesparse.targets import load_target
from edgesparse.train.losses import CrossEntropy
from edgesparse.train.metrics import accuracy
from edgesparse.train.regularizers import GroupLasso, Schedule, UnitSlices, unit_norms
from edgesparse.train.trainer import train

import prune_models as zoo

DIGITS = Path(__file__).resolve().parents[1] / "sample_models" / "digits.npz"


def _digits_flat() -> Dataset:
    d = np.load(DIGITS)
    x, xv = d["x_train"].reshape(-1, 64), d["x_val"].reshape(-1, 64)
    return Dataset(x, d["y_train"], xv, d["y_val"], x_calib=x, labelled=True, real=True, source="digits")


def _mlp(width=256, seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((64,))
    h = keras.layers.Dense(width, activation="relu", name="fc1")(inp)
    h = keras.layers.Dense(width, activation="relu", name="fc2")(h)
    return keras.Model(inp, keras.layers.Dense(10, activation="softmax", name="out")(h))


def _run(passes, model, data, target="coral"):
    state = ModelState(model=model, name="m", reference=keras.models.clone_model(model))
    state.reference.set_weights(model.get_weights())
    ctx = RunContext(target=load_target(target), data=data, workdir=None)
    for p in passes:
        state = p.run(state, ctx)
    return state


def _problems(passes, labelled=True):
    return Pipeline(passes).validate(load_target("rpi4"), DataInfo(real=True, labelled=labelled))


def test_registered():
    load_builtin_passes()
    assert PASSES["regularize"] is RegularizePass and RegularizePass.changes_model


def test_acceptance_mlp_group_lasso_reaches_64_per_layer_at_97_percent():
    """Done-when: 64-256-256-10 MLP on digits, group lasso with its controller, 64 neurons per
    hidden layer at >= 97.0% validation accuracy with no fine-tune."""
    data = _digits_flat()
    model = _mlp()
    train(model, (data.x_train, data.y_train), loss=CrossEntropy(), epochs=30, lr=1e-3, seed=0)
    state = _run([RegularizePass(method="group_lasso", width=0.25, epochs=12),
                  PrunePass(ratio=0.75, criterion="group_norm", reconstruct=False)], model, data)
    assert [state.model.get_layer(n).units for n in ("fc1", "fc2")] == [64, 64]
    acc = accuracy(state.model, data.x_val, data.y_val)
    assert acc >= 97.0, acc
    f = state.facts["regularize"]
    assert f["reached"] and f["widths"] == {"fc1": [256, 64], "fc2": [256, 64]}
    # the cut removed only zeros: the pruned model answers exactly as the regularized one did
    assert abs(acc - f["end"]) < 1e-3
    traj = f["trajectory"]
    assert len(traj) == 12 and traj[-1]["kept"] == 0.25 and traj[0]["kept"] > traj[-1]["kept"]
    assert max(r["strength"] for r in traj) > traj[0]["strength"]     # the controller raised it


def test_proximal_step_zeroes_whole_units_across_the_group():
    """A zeroed unit is zero in every slice it owns: producer column, bias, BN, consumer row."""
    model = zoo.conv_bn()
    graph = ChannelGraph(model)
    gids = [g.id for g in graph.prunable_groups]
    gl = GroupLasso(graph, {g: 2 for g in gids}, schedule=Schedule("constant"), total_steps=10, lr=1.0,
                    strength=1e6)                    # a huge fixed strength zeroes every unit at once
    gl(model)
    assert all(not alive.any() for alive in gl.alive_units().values())
    for g in graph.prunable_groups:
        for p in g.producers:
            assert not np.any(model.get_layer(p).get_weights()[0])
    slim = UnitSlices(ChannelGraph(zoo.conv_bn()), gids, "bn")
    assert slim.slices and all("gamma" in s.variable.name for s in slim.slices)


def test_a_unit_zeroed_after_the_ramp_stays_zero():
    """Once the schedule has reached its target the width is final: the optimizer cannot revive a
    zeroed unit when the controller relaxes (it did under slimming on the MobileNetV2-style net:
    the run ended above its MACs and the cut after it removed units that were not zero)."""
    import tensorflow as tf

    model = zoo.conv_bn()
    graph = ChannelGraph(model)
    gids = [g.id for g in graph.prunable_groups]
    gids = [g for g in gids if g not in UnitSlices(graph, gids, "bn").uncovered]
    gl = GroupLasso(graph, {g: 2 for g in gids}, schedule=Schedule("cubic", 0.0, 0.5), total_steps=10, lr=1.0,
                    slices="bn")
    gl.step.assign(5)                                # the ramp (half the run) is over
    gl.strength.assign(tf.fill(gl.strength.shape, 1e6))
    gl(model)                                        # every unit but each group's 2 largest is zeroed
    assert [int(a.sum()) for a in gl.alive_units().values()] == [2] * len(gids)
    # what an optimizer step with momentum does to a zeroed scale, while the strength has faded
    s = gl.units.slices[0]
    j = int(np.flatnonzero(np.isin(s.segments, np.flatnonzero(gl.units.norms() == 0)))[0])
    s.variable.assign(tf.tensor_scatter_nd_update(s.variable, [[j]], [0.5]))
    gl.strength.assign(tf.fill(gl.strength.shape, 1e-9))
    gl(model)
    assert float(s.variable.numpy()[j]) == 0.0       # zeroed again, not left to the cut
    assert [int(a.sum()) for a in gl.alive_units().values()] == [2] * len(gids)


def test_slimming_zeroes_the_shift_with_the_scale_so_the_cut_changes_nothing():
    """A unit whose BN scale is zero still outputs its beta; slimming zeroes beta with the unit, so
    removing it (bn_scale, no refit) leaves the outputs as they were."""
    from edgesparse.graph.surgery import shrink

    model = zoo.conv_bn()                            # random betas, some positive: they pass the ReLU
    graph = ChannelGraph(model)
    gids = [g.id for g in graph.prunable_groups]
    gids = [g for g in gids if g not in UnitSlices(graph, gids, "bn").uncovered]
    gl = GroupLasso(graph, {g: 2 for g in gids}, schedule=Schedule("constant"), total_steps=10, lr=1.0,
                    slices="bn")
    gl.strength.assign(np.full(gl.n, 1e6, np.float32))
    gl(model)
    x = zoo.sample_inputs(model, 32)
    cut = shrink(model, graph, gl.atom_keep())
    assert count_macs(cut) < count_macs(model)
    np.testing.assert_allclose(cut.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)


def test_unit_norms_cover_every_slice():
    model = zoo.mlp()
    graph = ChannelGraph(model)
    g = graph.prunable_groups[0]
    norms = unit_norms(graph, [g.id])[g.id]
    p = g.producers[0]
    w, b = model.get_layer(p).get_weights()[:2]
    alpha = sum(np.ravel(model.get_layer(m).get_weights()[0]) ** 2 for m in g.members if "p_re_lu" in m)
    rows = sum(np.sum(model.get_layer(c).get_weights()[0] ** 2, axis=1) for c in g.consumers)
    np.testing.assert_allclose(norms ** 2, np.sum(w ** 2, axis=0) + b ** 2 + alpha + rows, rtol=1e-4)


def test_schedules():
    import tensorflow as tf
    t = tf.constant([0.0, 0.3, 0.6, 0.9])
    np.testing.assert_allclose(Schedule("constant").progress(t).numpy(), 1.0)
    cubic = Schedule("cubic", 0.0, 0.6).progress(t).numpy()
    np.testing.assert_allclose(cubic, [0.0, 1 - 0.5 ** 3, 1.0, 1.0], atol=1e-6)
    poly = Schedule("polynomial", 0.0, 0.6, power=2).progress(t).numpy()
    np.testing.assert_allclose(poly, [0.0, 0.75, 1.0, 1.0], atol=1e-6)


def test_stages_l1_then_group_lasso_at_a_mac_target():
    """Strategy changes between stages; the final MACs are measured, and prune meets them."""
    data = _digits_flat()
    model = _mlp(64)
    train(model, (data.x_train, data.y_train), loss=CrossEntropy(), epochs=5, lr=2e-3, seed=0)
    macs0 = count_macs(model)
    state = _run([RegularizePass(epochs=6, stages=[{"until": 0.34, "method": "l1", "sparsity": 0.5},
                                                   {"until": 1.0, "method": "group_lasso", "macs": 0.5}]),
                  PrunePass(macs=0.5, criterion="group_norm", reconstruct=False)], model, data)
    f = state.facts["regularize"]
    assert [s["method"] for s in f["stages"]] == ["l1", "group_lasso"] and [s["epochs"] for s in f["stages"]] == [2, 4]
    assert {r["method"] for r in f["trajectory"]} == {"l1", "group_lasso"}
    assert f["reached"] and f["macs_kept"] <= 0.5
    assert count_macs(state.model) <= 0.5 * macs0
    assert abs(accuracy(state.model, data.x_val, data.y_val) - f["end"]) < 1e-3


def test_slimming_zeroes_batchnorm_scales_and_bn_scale_prunes_them():
    model = zoo.conv_bn()
    x = zoo.sample_inputs(model, 256)
    y = np.argmax(model.predict(x, verbose=0), axis=1)
    data = Dataset(x, y, x, y, x_calib=x, labelled=True, real=True, source="self")
    state = _run([RegularizePass(method="slimming", width=0.5, epochs=6),
                  PrunePass(ratio=0.5, criterion="bn_scale", reconstruct=False)], model, data)
    assert state.facts["regularize"]["reached"]
    for name, (before, after) in state.facts["regularize"]["widths"].items():
        assert after <= before // 2 + 1, name


def test_l1_reaches_its_sparsity():
    data = _digits_flat()
    model = _mlp(64)
    state = _run([RegularizePass(method="l1", sparsity=0.8, epochs=3)], model, data)
    f = state.facts["regularize"]
    assert f["reached"] and f["sparsity"] >= 0.795
    kernels = [model.get_layer(n).kernel.numpy() for n in ("fc1", "fc2", "out")]
    assert np.mean(np.concatenate([k.ravel() for k in kernels]) == 0) >= 0.795


# ----------------------------------------------------------------------------- bad input


def test_regularize_without_a_cut_after_it_is_refused():
    found = _problems([RegularizePass(width=0.5)])
    assert any("add a prune pass after regularize" in p for p in found), found
    assert _problems([RegularizePass(width=0.5), PrunePass(ratio=0.5, criterion="group_norm")]) == []
    found = _problems([RegularizePass(method="l1", sparsity=0.5), PrunePass(ratio=0.5)])
    assert found == []
    found = _problems([RegularizePass(method="l1", sparsity=0.5)])
    assert any("sparsify" in p for p in found), found


@pytest.mark.parametrize("config, fragment", [
    ({"stages": [{"until": 0.5, "method": "l1", "sparsity": 0.5}, {"until": 0.4, "width": 0.5}]},
     "must increase"),
    ({"stages": [{"until": 0.5, "method": "l1", "sparsity": 0.5}]}, "must end at until: 1.0"),
    ({"method": "l1", "width": 0.5}, "give it sparsity"),
    ({"method": "group_lasso"}, "needs a target"),
    ({"width": 1.5}, "outside (0, 1)"),
    ({"width": 0.5, "macs": 0.5}, "one target"),
])
def test_bad_configs_fail_before_training(config, fragment):
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        RegularizeConfig(**config)


def test_a_collapse_stops_with_the_trajectory():
    data = _digits_flat()
    model = _mlp(64)
    train(model, (data.x_train, data.y_train), loss=CrossEntropy(), epochs=5, lr=2e-3, seed=0)
    with pytest.raises(UserError, match=r"collapsed .* Trajectory: epoch 1: strength"):
        _run([RegularizePass(method="group_lasso", strength=1e5, epochs=3, max_drop=5)], model, data)


def test_an_unreachable_mac_target_is_refused():
    data = _digits_flat()
    with pytest.raises(UserError, match="cannot be reached"):
        _run([RegularizePass(method="group_lasso", macs=0.05, epochs=1, min_channels=48)], _mlp(64), data)


# ----------------------------------------------------------------------------- movement


def test_movement_scores_units_pulled_to_zero_lowest():
    """Weights that move towards zero score lowest: a penalty pulls fc1 units 0-3 to zero during
    a fine-tune, and their movement scores are the four lowest of the group."""
    import tensorflow as tf
    from edgesparse.train.regularizers import Movement

    data = _digits_flat()
    model = _mlp(32)
    train(model, (data.x_train, data.y_train), loss=CrossEntropy(), epochs=3, lr=2e-3, seed=0)
    hook = Movement(model, 1e-3)
    pull = lambda m: 10.0 * tf.reduce_sum(tf.square(m.get_layer("fc1").kernel[:, :4]))
    train(model, (data.x_train, data.y_train), loss=CrossEntropy(), epochs=2, lr=1e-3, seed=1,
          regularizers=[pull], post_step=[hook])
    scores = hook.unit_scores(ChannelGraph(model))[("fc1",)]
    assert set(np.argsort(scores)[:4]) == {0, 1, 2, 3}


def test_prune_with_movement_needs_labels_and_runs():
    data = _digits_flat()
    model = _mlp(32)
    train(model, (data.x_train, data.y_train), loss=CrossEntropy(), epochs=3, lr=2e-3, seed=0)
    assert any("criterion movement needs labelled" in p
               for p in _problems([PrunePass(ratio=0.5, criterion="movement")], labelled=False))
    state = _run([PrunePass(ratio=0.5, criterion="movement")], model, data)
    assert state.model.get_layer("fc1").units == 16


# ----------------------------------------------------------------------------- depth


def test_residual_blocks_found_scored_and_dropped_whole():
    from edgesparse.graph.depth import branch_ratios, drop_blocks, residual_blocks

    model = zoo.residual()
    blocks = residual_blocks(model)
    assert len(blocks) == 2 and all(len(b.layers) == 3 for b in blocks)     # conv, conv, BN
    x = zoo.sample_inputs(model, 16)
    ratios = branch_ratios(model, blocks, x)
    assert all(r > 0 for r in ratios.values())
    # zero the second block's branch: dropping it must not change the outputs
    bn = model.get_layer(blocks[1].layers[-1])
    gamma, beta, mean, var = bn.get_weights()
    bn.set_weights([gamma * 0, beta * 0, mean, var])
    assert branch_ratios(model, blocks, x)[blocks[1].add] < 1e-6
    smaller = drop_blocks(model, [blocks[1]])
    assert len(smaller.layers) == len(model.layers) - 4                   # the branch and the Add
    np.testing.assert_allclose(smaller(x).numpy(), model(x).numpy(), atol=1e-5)
    assert residual_blocks(zoo.conv_bn()) == []


def test_prune_blocks_removes_the_weakest_block_first():
    model = zoo.residual()
    x = zoo.sample_inputs(model, 64)
    data = Dataset(None, None, None, None, x_calib=x, labelled=False, real=True, source="x")
    state = _run([PrunePass(ratio=0.25, blocks=1)], model, data)
    depth = state.facts["prune"]["depth"]
    assert len(depth["removed"]) == 1 and depth["macs_after"] < depth["macs_before"]
    assert sum(type(l).__name__ == "Add" for l in state.model.layers) == 1
    with pytest.raises(UserError, match="more residual blocks than the model has"):
        _run([PrunePass(ratio=0.25, blocks=3)], zoo.residual(), data)


# ----------------------------------------------------------------------------- CLI


def test_cli_prune_method_group_lasso(tmp_path, capsys):
    from edgesparse.cli import run as cli

    cnn = DIGITS.with_name("digits_cnn.keras")
    out = tmp_path / "small.keras"
    code = cli(["prune", str(cnn), "--data", str(DIGITS), "--macs", "0.5", "--method", "group_lasso",
                "--regularize-epochs", "3", "--out", str(out)])
    text = capsys.readouterr().err
    assert code == 0, text
    assert "regularize: validation accuracy" in text and "group_norm" in text
    small, big = keras.models.load_model(out), keras.models.load_model(cnn)
    assert count_macs(small) <= 0.5 * count_macs(big)
    code = cli(["prune", str(cnn), "--data", str(DIGITS), "--params", "0.5", "--method", "slimming",
                "--out", str(tmp_path / "x.keras")])
    assert code != 0 and "--params is not supported" in " ".join(capsys.readouterr().err.split())
    assert not (tmp_path / "x.keras").exists()


def test_report_sections_render_the_trajectory():
    from edgesparse.report import plots
    from edgesparse.report.html import render_html
    from edgesparse.report.markdown import _regularize

    facts = {"metric": "validation accuracy", "start": 97.5, "end": 97.2, "reached": True,
             "stages": [{"method": "group_lasso", "until": 1.0, "epochs": 2, "target": {"width": 0.25}}],
             "trajectory": [{"epoch": 1, "method": "group_lasso", "strength": 0.1, "kept": 0.6, "macs": 0.4,
                             "metric": 97.0},
                            {"epoch": 2, "method": "group_lasso", "strength": 0.5, "kept": 0.25, "macs": 0.1,
                             "metric": 97.2}],
             "widths": {"fc1": [256, 64]}}
    report = {"model": {"name": "m"}, "target": {"name": "rpi4"}, "facts": {"regularize": facts}, "versions": {}}
    md = "\n".join(_regularize(report))
    assert "## Sparsity learned in training" in md and "| fc1 | 256 | 64 |" in md
    html = render_html(report)
    assert "Sparsity learned in training" in html
    assert plots.regularize_plot(facts["trajectory"]).startswith(b"\x89PNG")



def test_group_lasso_leaves_out_the_columns_a_batchnorm_normalises():
    """A conv column right before a BN is scale-invariant in training: it is not penalised (nor in
    the group norm), only zeroed with its unit, which is still zero in every slice it owns."""
    model = zoo.conv_bn()
    graph = ChannelGraph(model)
    conv = model.layers[1]                                     # the first Conv2D, a BN reads it
    g = next(g for g in graph.prunable_groups if conv.name in g.producers)
    before = unit_norms(graph, [g.id])[g.id]
    conv.kernel.assign(conv.kernel * 7.0)                      # BN undoes this in training
    np.testing.assert_allclose(unit_norms(ChannelGraph(model), [g.id])[g.id], before, rtol=1e-5)
    units = UnitSlices(graph, [g.id])
    assert any(s.variable is conv.kernel for s in units.carried)
    assert not any(s.variable is conv.kernel for s in units.slices)


def test_recalibrate_batchnorm_sets_the_statistics_of_each_input():
    from edgesparse.train.regularizers import recalibrate_batchnorm

    model = zoo.conv_bn()
    x = zoo.sample_inputs(model, 300)
    assert recalibrate_batchnorm(model, x, batch_size=128) == 2
    for bn in [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]:
        a = keras.Model(model.inputs, bn.input).predict(x, verbose=0).reshape(-1, bn.moving_mean.shape[0])
        np.testing.assert_allclose(bn.moving_mean.numpy(), a.mean(0), rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(bn.moving_variance.numpy(), a.var(0), rtol=1e-3, atol=1e-4)
