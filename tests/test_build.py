"""End to end: `edgesparse build` on the sample models, through the real converters and runtimes.

These are the issue's "done when" checks: every artifact loads and runs in LiteRT or ONNX
Runtime, int8 artifacts are within 1 point of the Keras model, report.json has its fields, and
bad input gets one line, exit code 2 and nothing in --out.
"""
import json
from pathlib import Path

import numpy as np
import pytest

from edgesparse.cli import run as cli

ROOT = Path(__file__).resolve().parent.parent
CNN = ROOT / "sample_models" / "digits_cnn.keras"
MLP = ROOT / "sample_models" / "digits_mlp.keras"
DATA = ROOT / "sample_models" / "digits.npz"
KERAS3_CNN = ROOT / "tests" / "data" / "digits_cnn_keras3.keras"

# Recipes without pruning keep these builds quick; the default recipes are built elsewhere.
PLAIN = {
    "rpi4": "passes:\n  - pass: quantize\n    precisions: [int8, fp32]\n  - pass: export\n  - pass: verify\n",
    "android-nnapi": "passes:\n  - pass: quantize\n    precisions: [int8, fp16]\n  - pass: export\n  - pass: verify\n",
    "coral": "passes:\n  - pass: quantize\n    precisions: [int8]\n    io: int8\n  - pass: export\n  - pass: verify\n",
}
REPORT_FIELDS = {"schema_version", "model", "target", "passes", "artifacts", "warnings"}
ARTIFACT_FIELDS = {"path", "format", "precision", "bytes", "sha256", "accuracy", "top1_agreement", "max_abs_diff"}


def _recipe(tmp_path, target):
    f = tmp_path / f"{target}.yaml"
    f.write_text(PLAIN[target])
    return f


def _run_in_runtime(path: Path, x: np.ndarray) -> np.ndarray:
    """Independent of edgesparse.runtime: load the file in its real runtime and run it."""
    if path.suffix == ".onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()     # x86 without VNNI saturates int8 unless asked (runtime/artifact.py)
        options.add_session_config_entry("session.x64quantprecision", "1")
        s = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        name = s.get_inputs()[0].name
        return np.concatenate([s.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    assert list(inp["shape"])[0] == 1, "edge artifacts have a fixed batch of 1"
    rows = []
    for i in range(len(x)):
        xi = x[i:i + 1]
        if inp["dtype"] != np.float32:
            scale, zero = inp["quantization"]
            xi = np.clip(np.round(xi / scale + zero), np.iinfo(inp["dtype"]).min,
                         np.iinfo(inp["dtype"]).max).astype(inp["dtype"])
        it.set_tensor(inp["index"], xi)
        it.invoke()
        y = it.get_tensor(out["index"]).astype(np.float32)
        if out["dtype"] != np.float32:
            scale, zero = out["quantization"]
            y = (y - zero) * scale
        rows.append(y)
    return np.concatenate(rows)


def _check_build(out: Path, expect_formats: set[str]):
    report = json.loads((out / "report.json").read_text())
    assert REPORT_FIELDS <= report.keys()
    assert report["model"]["params"] > 0 and report["model"]["macs"] > 0
    keras_acc = report["model"]["accuracy"]
    assert keras_acc > 90
    data = np.load(DATA)
    formats = set()
    for a in report["artifacts"]:
        assert ARTIFACT_FIELDS <= a.keys()
        path = out / a["path"]
        assert path.stat().st_size == a["bytes"]
        formats.add(a["format"])
        # Re-measure accuracy here, in the real runtime, independently of verify.
        x = data["x_val"].reshape((len(data["x_val"]),) + _input_shape(report))
        acc = float(np.mean(_run_in_runtime(path, x).argmax(-1) == data["y_val"]) * 100)
        assert abs(acc - a["accuracy"]) < 0.01, (a["path"], acc, a["accuracy"])
        if a["precision"] == "int8":
            assert acc >= keras_acc - 1.0, f"{a['path']}: int8 {acc:.2f}% vs Keras {keras_acc:.2f}%"
    assert formats == expect_formats
    return report


def _input_shape(report):
    return tuple(report["model"]["input_shape"])


@pytest.mark.slow
@pytest.mark.parametrize("target,formats", [("rpi4", {"tflite", "onnx"}),
                                            ("android-nnapi", {"tflite"}),
                                            ("coral", {"tflite"})])
def test_build_cnn_for_each_target(tmp_path, target, formats):
    out = tmp_path / "out"
    code = cli(["build", str(CNN), "--target", target, "--data", str(DATA), "--out", str(out),
                "--recipe", str(_recipe(tmp_path, target))])
    assert code == 0
    report = _check_build(out, formats)
    if target == "coral":
        assert all(a["io_dtype"] in ("int8", "uint8") for a in report["artifacts"])
    if target == "android-nnapi":
        assert any("deprecated" in w for w in report["warnings"])
        assert any(a["precision"] == "fp16" for a in report["artifacts"])


@pytest.mark.slow
def test_build_mlp_and_keras3_cnn(tmp_path):
    for model in (MLP, KERAS3_CNN):
        out = tmp_path / model.stem
        assert cli(["build", str(model), "--target", "rpi4", "--data", str(DATA), "--out", str(out),
                    "--recipe", str(_recipe(tmp_path, "rpi4"))]) == 0
        _check_build(out, {"tflite", "onnx"})


def test_library_call_returns_the_report(tmp_path):
    import edgesparse

    result = edgesparse.build(MLP, target="rpi4", data=DATA, recipe=_recipe(tmp_path, "rpi4"),
                              out=tmp_path / "lib")
    on_disk = json.loads((tmp_path / "lib" / "report.json").read_text())
    assert json.loads(json.dumps(result.report, default=str)) == on_disk
    assert all(a.path.exists() and a.path.parent == tmp_path / "lib" for a in result.artifacts)


def test_plan_then_run_with_per_layer_overrides(tmp_path):
    """The build split: plan_build checks and writes nothing; run_plan runs one attempt into a
    folder with pass config overrides (what a per-layer search sets) and judges it."""
    from edgesparse.build_api import BuildOptions, plan_build, run_plan
    from edgesparse.errors import UserError

    recipe = tmp_path / "prune.yaml"
    recipe.write_text("passes:\n  - pass: prune\n    macs: 0.6\n  - pass: quantize\n"
                      "  - pass: export\n    formats: [tflite]\n  - pass: verify\n")
    with pytest.raises(UserError, match="unknown build option 'profile'"):
        plan_build(CNN, data=DATA, recipe=recipe, out=tmp_path / "o", options={"profile": True})
    plan = plan_build(CNN, data=DATA, recipe=recipe, out=tmp_path / "o",
                      options={"profile_local": False, "token_file": None})
    assert plan.options == BuildOptions() and plan.budget == 1.0
    assert [p.name for p in plan.pipeline.passes] == ["import", "prune", "quantize", "export", "verify"]
    assert not (tmp_path / "o").exists()
    with pytest.raises(UserError, match="no such pass"):
        run_plan(plan, overrides={"distill": {"epochs": 1}}, folder=tmp_path / "x")
    with pytest.raises(UserError, match="override for prune: per_group"):
        run_plan(plan, overrides={"prune": {"per_group": ["conv1"]}}, folder=tmp_path / "x")

    plain = run_plan(plan, folder=tmp_path / "a")
    pinned = run_plan(plan, overrides={"prune": {"per_group": {"conv1": 0.25}}}, folder=tmp_path / "b")
    assert plain.state.facts["prune"]["channels"]["conv1"] != [32, 8]
    assert pinned.state.facts["prune"]["channels"]["conv1"] == [32, 8]
    for attempt, folder in ((plain, tmp_path / "a"), (pinned, tmp_path / "b")):
        assert attempt.workdir == folder and (folder / attempt.artifact).is_file()
        assert attempt.drop is not None and attempt.met == (attempt.drop <= 1.0)
        assert attempt.macs <= 0.6 * attempt.records[0].metrics["macs"]


def test_a_plan_run_again_reuses_the_pristine_copy_and_the_import_metrics(tmp_path):
    """A search runs one plan many times: the pristine copy is every run's reference (no clone in
    import), the imported model is measured once, and neither changes what a run measures: a
    fine-tuning run leaves the pristine weights as they were, and the second run's import record
    and artifact accuracy are those of the first."""
    from edgesparse.build_api import plan_build, run_plan
    from edgesparse.train.metrics import accuracy

    recipe = tmp_path / "prune.yaml"
    recipe.write_text("passes:\n  - pass: prune\n    ratio: 0.5\n    finetune_epochs: 1\n"
                      "  - pass: quantize\n  - pass: export\n    formats: [tflite]\n  - pass: verify\n")
    plan = plan_build(CNN, data=DATA, recipe=recipe, out=tmp_path / "o")
    before = [w.copy() for w in plan.pristine.get_weights()]
    first = run_plan(plan, folder=tmp_path / "a")
    assert first.state.reference is plan.pristine
    assert plan.baseline == first.records[0].metrics
    assert first.records[0].metrics["accuracy"] == round(accuracy(plan.pristine, plan.data.x_val, plan.data.y_val), 3)
    assert all(np.array_equal(a, b) for a, b in zip(before, plan.pristine.get_weights()))
    second = run_plan(plan, folder=tmp_path / "b")
    assert second.state.reference is plan.pristine and second.state.model is not plan.pristine
    assert second.records[0].metrics == first.records[0].metrics
    assert (second.accuracy, second.macs, second.bytes) == (first.accuracy, first.macs, first.bytes)
    assert second.records[1].metrics["accuracy"] == first.records[1].metrics["accuracy"]


def test_no_data_warns_and_claims_no_accuracy(tmp_path):
    import edgesparse

    result = edgesparse.build(MLP, target="rpi4", recipe=_recipe(tmp_path, "rpi4"), out=tmp_path / "o")
    assert any("synthetic" in w for w in result.report["warnings"])
    assert all(a["accuracy"] is None for a in result.report["artifacts"])
    assert result.report["model"]["accuracy"] is None


# ----------------------------------------------------------------------------- bad input

def _bad(tmp_path, capsys, argv):
    out = tmp_path / "out"
    code = cli(["build", *argv, "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())
    assert not list(tmp_path.glob(".out.partial-*")), "staging folder left behind"
    return err


def test_missing_model(tmp_path, capsys):
    assert "accepts" in _bad(tmp_path, capsys, [str(tmp_path / "none.keras")])


def test_corrupt_model(tmp_path, capsys):
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"\x00garbage" * 100)
    assert "accepts" in _bad(tmp_path, capsys, [str(bad)])


def test_unknown_target(tmp_path, capsys):
    assert "rpi4" in _bad(tmp_path, capsys, [str(MLP), "--target", "jetson"])


def test_bad_recipe(tmp_path, capsys):
    r = tmp_path / "r.yaml"
    r.write_text("passes:\n  - pass: quantize\n    precision: [int8]\n")
    assert "'precision'" in _bad(tmp_path, capsys, [str(MLP), "--recipe", str(r)])


def test_data_that_does_not_fit(tmp_path, capsys):
    d = tmp_path / "d.npz"
    np.savez(d, x=np.zeros((20, 5, 5)), y=np.zeros(20, int))
    assert "takes" in _bad(tmp_path, capsys, [str(MLP), "--data", str(d)])


def test_labels_out_of_range(tmp_path, capsys):
    d = tmp_path / "d.npz"
    np.savez(d, x=np.zeros((20, 64), np.float32), y=np.arange(20))
    assert "labels" in _bad(tmp_path, capsys, [str(MLP), "--data", str(d)])


def test_output_folder_not_writable(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = cli(["build", str(MLP), "--out", str(blocker / "sub")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and len(err.splitlines()) == 1


def test_foreign_nonempty_out_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    code = cli(["build", str(MLP), "--out", str(out)])
    assert code == 2 and "did not write" in capsys.readouterr().err
    assert (out / "thesis.tex").read_text() == "precious"


def test_debug_shows_the_traceback(tmp_path, capsys):
    code = cli(["build", str(tmp_path / "none.keras"), "--debug"])
    assert code == 2 and "Traceback" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the default recipe gives way

def _tiny(tmp_path, kind: str):
    """A model the default recipe's prune (keep 30% of the MACs) cannot meet, saved, with labels."""
    from edgesparse._tf import keras

    L = keras.layers
    keras.utils.set_random_seed(0)
    i = L.Input((6, 6, 1))
    if kind == "unprunable":      # LayerNormalization ties the only hidden group: nothing to prune
        x = L.LayerNormalization()(L.Dense(8, name="hidden")(L.Flatten()(i)))
    elif kind == "recurrent":     # the LSTM's 8,064 MACs cannot shrink: the floor is 99.1%
        x = L.Dense(8, activation="relu", name="hidden")(L.LSTM(16)(L.Reshape((6, 6))(i)))
    else:                         # round_to 4: each group keeps 4 of 8 channels at least
        x = L.Dense(8, activation="relu", name="hidden")(
            L.GlobalAveragePooling2D()(L.Conv2D(8, 3, padding="same", activation="relu", name="conv")(i)))
    model, path, data = keras.Model(i, L.Dense(3, activation="softmax")(x)), tmp_path / f"{kind}.keras", tmp_path / "d.npz"
    model.save(path)
    rng = np.random.default_rng(0)
    np.savez(data, x=rng.normal(size=(60, 6, 6, 1)).astype("float32"), y=np.arange(60) % 3)
    return path, data


def _prune_recipe(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text("passes:\n  - pass: prune\n    macs: 0.3\n  - pass: quantize\n    precisions: [fp32]\n"
                 "  - pass: export\n  - pass: verify\n")
    return f


def _default_build(tmp_path, capsys, kind: str):
    """The tiny model of `kind` built with rpi4's default recipe: (model, data, report.json, out)."""
    model, data = _tiny(tmp_path, kind)
    out = tmp_path / "out"
    assert cli(["build", str(model), "--target", "rpi4", "--data", str(data), "--out", str(out)]) == 0, \
        capsys.readouterr().err
    return model, data, json.loads((out / "report.json").read_text()), out


def _user_recipe_error(tmp_path, capsys, model, data) -> str:
    """A user's recipe means what it says: the same prune is an error, and nothing is in --out."""
    mine = tmp_path / "mine"
    assert cli(["build", str(model), "--data", str(data), "--recipe", str(_prune_recipe(tmp_path)),
                "--out", str(mine)]) == 2
    assert not mine.exists()
    return capsys.readouterr().err


def test_default_recipe_skips_prune_and_distill_on_a_model_with_nothing_to_prune(tmp_path, capsys):
    model, data, report, out = _default_build(tmp_path, capsys, "unprunable")
    assert [p["name"] for p in report["passes"]] == ["import", "quantize", "export", "verify"]
    [skip] = [w for w in report["warnings"] if w.startswith("skipped prune, distill from default recipe of target rpi4")]
    assert "no prunable channel group (hidden: flows into layer_normalization" in skip and "--recipe" in skip
    assert skip in (out / "report.md").read_text()
    assert "remove the prune pass from the recipe" in _user_recipe_error(tmp_path, capsys, model, data)


def test_default_recipe_prunes_to_the_floor_when_its_mac_target_is_below_it(tmp_path, capsys):
    model, data, report, _ = _default_build(tmp_path, capsys, "floor")
    # conv 6x6x9x8 + hidden 8x8 + head 8x3 MACs, and at 4 channels each: 1324 / 2680 = 49.4%
    assert report["model"]["macs"] == 2680
    assert next(p for p in report["passes"] if p["name"] == "prune")["metrics"]["macs"] == 1324
    assert next(p for p in report["recipe"]["passes"] if p["pass"] == "prune")["macs"] == 0.4941
    [cap] = [w for w in report["warnings"] if "capped" in w]
    assert cap.startswith("prune from default recipe of target rpi4: macs: 0.3 capped at 0.4941, the least")
    assert "prune pass has macs: 0.4941" in cap
    err = _user_recipe_error(tmp_path, capsys, model, data)
    assert "still keeps 49.4%" in err and "set `macs` of the prune pass to 0.4941 or more" in err


def test_default_recipe_leaves_out_a_prune_that_could_save_almost_nothing(tmp_path, capsys):
    _, _, report, _ = _default_build(tmp_path, capsys, "recurrent")
    assert [p["name"] for p in report["passes"]] == ["import", "quantize", "export", "verify"]
    [skip] = [w for w in report["warnings"] if w.startswith("skipped prune, distill from default recipe")]
    assert "pruning can remove at most 0.9% of its macs" in skip and "prune pass has macs: 0.9" in skip
