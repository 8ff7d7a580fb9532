"""The registered prune pass, its plan checks, and the `edgesparse prune` / `inspect` commands."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgesparse._tf import keras
from edgesparse.cli import run as cli
from edgesparse.data import load_data, synthetic
from edgesparse.errors import UserError
from edgesparse.graph.stats import count_macs
from edgesparse.passes import load_builtin_passes
from edgesparse.pipeline import PASSES, DataInfo, Pipeline, RunContext
from edgesparse.passes.prune.pass_ import PrunePass
from edgesparse.state import ModelState
from edgesparse.targets import load_target

import prune_models as zoo

SAMPLES = Path(__file__).resolve().parents[1] / "sample_models"
CNN, DIGITS = SAMPLES / "digits_cnn.keras", SAMPLES / "digits.npz"


def problems(data_labelled=True, **config):
    pipe = Pipeline([PrunePass(**config)])
    return pipe.validate(load_target("rpi4"), DataInfo(real=True, labelled=data_labelled))


def test_registered_as_prune():
    load_builtin_passes()
    assert PASSES["prune"] is PrunePass
    assert PrunePass.changes_model and PrunePass.stage == 1


@pytest.mark.parametrize("config, fragment", [
    ({"ratio": 1.0}, "outside [0, 1)"),
    ({"ratio": -0.1}, "outside [0, 1)"),
    ({"macs": 0.0}, "outside (0, 1]"),
    ({"params": 1.5}, "outside (0, 1]"),
    ({"macs": 0.5, "ratio": 0.2}, "exactly one budget"),
    ({}, "exactly one budget"),
    ({"macs": 0.5, "criterion": "l7"}, "unknown criterion"),
    ({"macs": 0.5, "min_channels": 0}, "min_channels"),
])
def test_check_reports_bad_configs(config, fragment):
    found = problems(**config)
    assert any(fragment in p for p in found), found


def test_labels_needed_only_for_taylor_or_finetune():
    assert problems(data_labelled=False, macs=0.5) == []
    assert any("labelled" in p for p in problems(data_labelled=False, macs=0.5, criterion="taylor"))
    assert any("labelled" in p for p in problems(data_labelled=False, macs=0.5, finetune_epochs=2))
    assert problems(data_labelled=True, macs=0.5, criterion="taylor", finetune_epochs=2) == []


def run_pass(model, data, target="rpi4", workdir=None, **config):
    ctx = RunContext(target=load_target(target), data=data, workdir=workdir)
    state = ModelState(model=model, name="m", reference=model)
    return PrunePass(**config).run(state, ctx)


def test_digits_cnn_half_the_macs_within_one_point(tmp_path):
    """Done-when: --macs 0.5 gives >= 2x fewer MACs, at most 1 point of accuracy lost."""
    model = keras.models.load_model(CNN)
    data = load_data(DIGITS, tuple(model.inputs[0].shape[1:]), 10)
    state = run_pass(model, data, workdir=tmp_path, macs=0.5, finetune_epochs=3, sensitivity=True)
    f = state.facts["prune"]
    assert count_macs(state.model) * 2 <= count_macs(model)
    assert f["macs_after"] == count_macs(state.model) and f["macs_before"] == count_macs(model)
    assert 90 <= f["accuracy_before"] <= 100                     # percent, as every accuracy
    assert f["accuracy_after"] >= f["accuracy_before"] - 1
    # rpi4's SIMD width (4) rounds every pruned layer
    for layer, (before, after) in f["channels"].items():
        assert after == before or after % 4 == 0, (layer, after)
    assert f["reconstruction"][0]["layers"] and f["steps"][0]["accuracy_finetuned"] is not None
    assert {r["group"].split(":")[1] for r in f["sensitivity"]["table"]} == {"conv1", "conv2", "fc1"}
    assert (tmp_path / f["sensitivity"]["plot"]).is_file()
    assert not any(g["prunable"] for g in f["groups"] if g["producers"] == ["probs"])


def test_iterative_steps_reach_the_budget_on_unlabelled_data():
    model = zoo.residual()
    data = synthetic(tuple(model.inputs[0].shape[1:]), n=64)
    state = run_pass(model, data, target="coral", macs=0.4, steps=3, criterion="thinet",
                     allocation="global")
    f = state.facts["prune"]
    assert len(f["steps"]) == 3
    assert f["steps"][0]["macs"] > f["steps"][1]["macs"] > f["steps"][2]["macs"]
    assert count_macs(state.model) <= 0.4 * count_macs(model)
    assert any("synthetic" in w for w in state.warnings)
    x = zoo.sample_inputs(model)
    assert state.model(x).shape == model(x).shape


def test_sensitivity_allocation_runs_and_meets_params_target(tmp_path):
    model = zoo.conv1d()
    data = synthetic(tuple(model.inputs[0].shape[1:]), n=64)
    state = run_pass(model, data, workdir=tmp_path, params=0.5, allocation="sensitivity", round_to=1)
    assert state.model.count_params() <= 0.5 * model.count_params()
    assert state.facts["prune"]["sensitivity"]["metric"].startswith("top-1 agreement")


def test_bad_inputs_are_user_errors():
    data = synthetic((8, 8, 4), n=16)
    with pytest.raises(UserError, match="no prunable channel group"):
        run_pass(zoo.shared(), data, ratio=0.5)
    model = zoo.conv_bn()
    data = synthetic(tuple(model.inputs[0].shape[1:]), n=16)
    with pytest.raises(UserError, match="cannot reach"):
        run_pass(model, data, macs=0.5, min_channels=64)
    with pytest.raises(UserError, match="outside"):
        run_pass(model, data, ratio=1.0)


# ----------------------------------------------------------------------------- CLI


def test_cli_prune_writes_a_smaller_model(tmp_path, capsys):
    out = tmp_path / "small.keras"
    code = cli(["prune", str(CNN), "--data", str(DIGITS), "--macs", "0.5", "--criterion", "thinet",
                "--finetune-epochs", "1", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    small = keras.models.load_model(out)
    assert count_macs(small) * 2 <= count_macs(keras.models.load_model(CNN))
    assert "channels per layer" in err and "conv2" in err
    assert [p.name for p in tmp_path.iterdir()] == ["small.keras"]        # no temp files left
    written = out.read_bytes()
    assert cli(["prune", str(CNN), "--macs", "0.5", "--out", str(out)]) == 2   # never over a file
    assert "already exists" in capsys.readouterr().err and out.read_bytes() == written


def test_cli_prune_bad_ratio_writes_nothing(tmp_path, capsys):
    out = tmp_path / "small.keras"
    code = cli(["prune", str(CNN), "--ratio", "1.5", "--out", str(out)])
    assert code == 2
    assert "outside [0, 1)" in capsys.readouterr().err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_cli_inspect_names_unprunable_layers(tmp_path, capsys):
    L = keras.layers
    i = L.Input((8, 8, 1))
    x = L.Conv2D(6, 3, strides=2, padding="same", name="before_reshape")(i)
    x = L.Reshape((96,), name="flat_by_reshape")(x)
    x = L.Dense(8, name="hidden")(x)
    path = tmp_path / "m.keras"
    keras.Model(i, L.Dense(3, name="head")(x)).save(path)
    assert cli(["inspect", str(path)]) == 0
    err = capsys.readouterr().err
    assert "flat_by_reshape" in err and "Reshape that changes the channel axis" in err
    assert "1 of 3 channel groups prunable" in err


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_cli_prunes_around_a_recurrent_layer(cell, tmp_path, capsys):
    model = zoo.recurrent(cell)
    path, data, out = tmp_path / "m.keras", tmp_path / "d.npz", tmp_path / "small.keras"
    model.save(path)
    rng = np.random.default_rng(0)
    np.savez(data, x=rng.normal(size=(48, 6, 5)).astype("float32"), y=np.arange(48) % 3)
    assert cli(["inspect", str(path)]) == 0
    err = capsys.readouterr().err
    assert "1 of 3 channel groups prunable" in err and f"{cell} is not understood by the channel" in err
    assert cli(["prune", str(path), "--data", str(data), "--ratio", "0.5", "--out", str(out)]) == 0
    small = keras.models.load_model(out)
    assert small.get_layer("hidden").units == 8
    assert small.get_layer("rnn").get_config()["units"] == 6 and small.get_layer("conv").filters == 8
    x = rng.normal(size=(4, 6, 5)).astype("float32")
    np.testing.assert_allclose(small(x).numpy().sum(axis=1), 1.0, rtol=1e-5)


def test_recipe_prune_then_quantize_export_verify(tmp_path):
    """The pruned model goes through quantize/export/verify unchanged (the lead's build)."""
    import edgesparse

    recipe = tmp_path / "r.yaml"
    recipe.write_text("passes:\n  - pass: prune\n    macs: 0.5\n    criterion: thinet\n"
                      "  - pass: quantize\n    precisions: [fp32, int8]\n  - pass: export\n"
                      "  - pass: verify\n")
    result = edgesparse.build(CNN, target="rpi4", data=DIGITS, recipe=recipe, out=tmp_path / "out")
    r = result.report
    prune_record = next(p for p in r["passes"] if p["name"] == "prune")
    assert prune_record["metrics"]["macs"] * 2 <= r["model"]["macs"]
    assert {(a["format"], a["precision"]) for a in r["artifacts"]} >= {("tflite", "fp32"), ("tflite", "int8")}
    for a in r["artifacts"]:
        assert (tmp_path / "out" / a["path"]).is_file()
        assert a["top1_agreement"] >= (99.0 if a["precision"] == "fp32" else 90.0), a


def test_scaled_is_a_gentler_prune():
    assert PrunePass(macs=0.4).scaled(0.5).config.macs == pytest.approx(0.7)
    assert PrunePass(params=0.5).scaled(0.25).config.params == pytest.approx(0.875)
    assert PrunePass(ratio=0.6, criterion="thinet").scaled(0.5).config.ratio == pytest.approx(0.3)
    assert PrunePass(ratio=0.6, criterion="thinet").scaled(0.5).config.criterion == "thinet"
    assert PrunePass(macs=0.4).scaled(1.0) is None


def test_nested_backbone_is_flattened_and_pruned():
    L = keras.layers
    inner_in = L.Input((8, 8, 8))
    y = L.Conv2D(16, 3, padding="same", activation="relu", name="inner_conv")(inner_in)
    backbone = keras.Model(inner_in, L.Conv2D(8, 1, name="inner_out")(y), name="backbone")
    i = L.Input((8, 8, 3))
    x = backbone(L.Conv2D(8, 3, padding="same", name="stem")(i))
    model = keras.Model(i, L.Dense(3)(L.GlobalAveragePooling2D()(x)))
    data = synthetic((8, 8, 3), n=32)
    state = run_pass(model, data, macs=0.5, round_to=1)
    assert state.facts["prune"]["flattened_nested_models"] == ["backbone"]
    assert state.facts["prune"]["channels"]["inner_conv"][1] < 16
    assert not any(isinstance(l, keras.Model) for l in state.model.layers)
    assert count_macs(state.model) * 2 <= count_macs(model)
