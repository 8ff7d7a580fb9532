"""The PyTorch frontend: models written in PyTorch (tests/data/make_torch_models.py) come in as
tf_keras models of built-in layers that match ONNX Runtime, prune like the same architecture
written in Keras, and build for a target.

The ONNX files exported by that script are committed, so most of this file runs without torch
(CI has none). The tests that need torch itself (a `.pt2` import, `from_module`) skip without it.
"""
from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edgesparse._tf import keras
from edgesparse.cli import run as cli
from edgesparse.errors import UserError
from edgesparse.frontends import load_model
from edgesparse.graph.channels import ChannelGraph

DATA = Path(__file__).resolve().parent / "data"
CNN, MLP, CNN_PT2 = DATA / "torch_cnn.onnx", DATA / "torch_mlp.onnx", DATA / "torch_cnn.pt2"
OPAQUE = {"Lambda", "TFOpLambda", "SlicingOpLambda", "TensorFlowOpLayer"}


def _onnx_outputs(path: Path, x_onnx: np.ndarray) -> np.ndarray:
    """ONNX Runtime on the file itself, sample by sample (independent of the frontend)."""
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    return np.concatenate([s.run(None, {name: x_onnx[i:i + 1]})[0] for i in range(len(x_onnx))])


def _channels_first(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(x, -1, 1)) if x.ndim >= 3 else x


def _max_diff(model, onnx_path: Path, samples: int = 6, seed: int = 42) -> float:
    """Max abs difference to ONNX Runtime on inputs other than the import check's (negative too)."""
    x = np.random.default_rng(seed).standard_normal((samples, *model.input_shape[1:])).astype(np.float32)
    return float(np.max(np.abs(model.predict(x, verbose=0) - _onnx_outputs(onnx_path, _channels_first(x)))))


def _kinds(model) -> list[str]:
    return [type(layer).__name__ for layer in model.layers]


# ----------------------------------------------------------------------------- the committed exports


@pytest.mark.parametrize("path, layout", [(CNN, "NHWC (channels-last)"), (MLP, "as in the file")])
def test_exported_torch_models_match_onnx_runtime(path, layout):
    model, info = load_model(path)
    assert info["format"] == "onnx" and info["check"]["passed"]
    assert info["check"]["max_abs_diff"] <= 1e-4 and info["input_layout"] == layout
    assert _max_diff(model, path) <= 1e-4
    assert not OPAQUE & set(_kinds(model))


def test_cnn_keeps_its_blocks_as_layers():
    """BatchNorm stays a layer (bn_scale reads it), the residual is an Add, the depthwise conv a
    DepthwiseConv2D, the squeeze-excite gate a Multiply, the head a Dense."""
    kinds = _kinds(load_model(CNN)[0])
    assert kinds.count("BatchNormalization") == 6 and kinds.count("Conv2D") == 7
    for kind in ("Add", "DepthwiseConv2D", "Multiply", "Dense", "GlobalAveragePooling2D"):
        assert kind in kinds, kind
    assert load_model(CNN)[0].input_shape == (None, 16, 16, 1)


def _native_cnn(classes: int = 10):
    """make_torch_models.TinyCNN written in tf_keras."""
    L = keras.layers
    inp = keras.Input((16, 16, 1))
    x = L.ReLU()(L.BatchNormalization()(L.Conv2D(8, 3, padding="same", use_bias=False)(inp)))
    y = L.ReLU()(L.BatchNormalization()(L.Conv2D(8, 3, padding="same", use_bias=False)(x)))
    y = L.BatchNormalization()(L.Conv2D(8, 3, padding="same", use_bias=False)(y))
    x = L.MaxPooling2D(2)(L.ReLU()(L.Add()([x, y])))
    x = L.ReLU(6.0)(L.BatchNormalization()(L.Conv2D(16, 1, use_bias=False)(x)))
    x = L.BatchNormalization()(L.DepthwiseConv2D(3, strides=2, padding="same", use_bias=False)(x))
    x = L.Activation("hard_sigmoid")(x)
    s = L.GlobalAveragePooling2D(keepdims=True)(x)
    s = L.Conv2D(16, 1, activation="sigmoid")(L.Conv2D(4, 1, activation="relu")(s))
    x = L.Multiply()([x, s])
    x = L.ReLU()(L.BatchNormalization()(L.Conv2D(24, 1, use_bias=False)(x)))
    x = L.Flatten()(L.GlobalAveragePooling2D(keepdims=True)(x))
    return keras.Model(inp, L.Dense(classes)(x))


def _group_signature(graph: ChannelGraph) -> list:
    kinds = {name: type(layer).__name__ for name, layer in graph.layers.items()}
    return sorted((g.size, tuple(sorted(kinds[p] for p in g.producers)), g.prunable) for g in graph.groups)


def test_channel_graph_finds_the_native_models_groups():
    ours, native = ChannelGraph(load_model(CNN)[0]), ChannelGraph(_native_cnn())
    assert _group_signature(ours) == _group_signature(native)
    assert len(ours.prunable_groups) == len(native.prunable_groups) >= 4
    assert not ours.unprunable_layers


def test_prune_halves_the_macs(tmp_path):
    """`edgesparse prune torch_cnn.onnx --macs 0.5`: a smaller dense Keras model comes out."""
    from edgesparse.graph.stats import count_macs

    out = tmp_path / "small.keras"
    assert cli(["prune", str(CNN), "--macs", "0.5", "--out", str(out)]) == 0
    before, after = count_macs(load_model(CNN)[0]), count_macs(keras.models.load_model(out, compile=False))
    assert after <= 0.55 * before


# ----------------------------------------------------------------------------- the build


def _self_labelled_npz(tmp_path: Path, n_train: int = 160, n_val: int = 64) -> Path:
    """Random channels-last inputs labelled by the original model's own argmax (ONNX Runtime)."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((n_train + n_val, 16, 16, 1)).astype(np.float32)
    y = _onnx_outputs(CNN, _channels_first(x)).argmax(-1)
    path = tmp_path / "data.npz"
    np.savez(path, x_train=x[:n_train], y_train=y[:n_train], x_val=x[n_train:], y_val=y[n_train:])
    return path


def test_build_for_rpi4(tmp_path):
    """`edgesparse build torch_cnn.onnx --target rpi4 --data D`: verified artifacts whose fp32
    outputs agree with ONNX Runtime on the original file."""
    from ai_edge_litert.interpreter import Interpreter

    recipe = tmp_path / "rpi4.yaml"
    recipe.write_text("passes:\n  - pass: quantize\n    precisions: [int8, fp32]\n  - pass: export\n"
                      "  - pass: verify\n")
    data, out = _self_labelled_npz(tmp_path), tmp_path / "out"
    assert cli(["build", str(CNN), "--target", "rpi4", "--data", str(data), "--recipe", str(recipe),
                "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["facts"]["import"]["format"] == "onnx" and report["facts"]["import"]["check"]["passed"]
    x = np.load(data)["x_val"][:16]
    reference = _onnx_outputs(CNN, _channels_first(x))
    fp32 = [a for a in report["artifacts"] if a["format"] == "tflite" and a["precision"] == "fp32"]
    assert fp32 and {a["format"] for a in report["artifacts"]} == {"tflite", "onnx"}
    it = Interpreter(model_path=str(out / fp32[0]["path"]))
    it.allocate_tensors()
    inp, o = it.get_input_details()[0], it.get_output_details()[0]
    got = []
    for i in range(len(x)):
        it.set_tensor(inp["index"], x[i:i + 1])
        it.invoke()
        got.append(it.get_tensor(o["index"]))
    assert np.max(np.abs(np.concatenate(got) - reference)) <= 1e-4


# ----------------------------------------------------------------------------- .pt2 files: no torch needed


def _fake_pt2(path: Path, members: dict[str, bytes]) -> Path:
    """The committed .pt2 with members added or replaced (names relative to the archive's root)."""
    with zipfile.ZipFile(CNN_PT2) as src, zipfile.ZipFile(path, "w") as zf:
        root = next(n for n in src.namelist() if n.endswith("/archive_format"))[: -len("archive_format")]
        for info in src.infolist():
            if info.filename[len(root):] not in members:
                zf.writestr(info.filename, src.read(info))
        for name, data in members.items():
            zf.writestr(root + name, data)
    return path


def _one_line(err) -> str:
    message = str(err.value)
    assert "\n" not in message and message.startswith("cannot import")
    return message


def test_pt2_with_pickled_objects_is_refused_before_torch_sees_it(tmp_path):
    config = {"config": {"lut": {"path_name": "opaque_obj_0", "use_pickle": True}}}
    path = _fake_pt2(tmp_path / "pickled.pt2",
                     {"data/constants/model_constants_config.json": json.dumps(config).encode()})
    with pytest.raises(UserError) as err:
        load_model(path)
    assert "pickled Python object ('lut')" in _one_line(err) and "--unsafe-load" in str(err.value)


def test_pt2_with_compiled_code_is_refused(tmp_path):
    path = _fake_pt2(tmp_path / "aoti.pt2", {"data/aotinductor/model/model.so": b"\x7fELF"})
    with pytest.raises(UserError) as err:
        load_model(path)
    assert "AOTInductor" in _one_line(err)


def test_a_pt2_name_that_is_no_archive_is_one_line(tmp_path):
    path = tmp_path / "model.pt2"
    path.write_bytes(b"not a zip")
    with pytest.raises(UserError) as err:
        load_model(path)
    assert "torch.export.save" in _one_line(err)


def test_pt2_without_torch_says_what_to_install():
    """In a process where torch cannot be imported (as in CI), a .pt2 gets the install line."""
    import subprocess

    code = ("import sys; sys.modules['torch'] = None   # import torch fails, find_spec says None\n"
            "from edgesparse.errors import UserError\nfrom edgesparse.frontends import load_model\n"
            f"try:\n    load_model({str(CNN_PT2)!r})\nexcept UserError as err:\n    print(err)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-500:]
    assert done.stdout.strip().endswith("pip install edgesparse[torch]"), done.stdout


def test_state_dict_stays_refused(tmp_path):
    path = tmp_path / "weights.pth"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("weights/data.pkl", b"\x80\x02}q\x00.")
        zf.writestr("weights/version", b"3\n")
    with pytest.raises(UserError) as err:
        load_model(path)
    assert "state dict" in _one_line(err) and "torch.onnx.export" in str(err.value)


# ----------------------------------------------------------------------------- with torch


def test_pt2_file_imports_and_matches_the_onnx_export():
    pytest.importorskip("torch")
    model, info = load_model(CNN_PT2)
    assert info["format"] == "pytorch" and info["container"] == "pt2" and info["check"]["passed"]
    assert info["check"]["max_abs_diff"] <= 1e-4
    assert _max_diff(model, CNN) <= 1e-4          # the committed export of the same program
    assert _kinds(model) == _kinds(load_model(CNN)[0])


def test_from_module_matches_torch_itself():
    torch = pytest.importorskip("torch")
    sys.path.insert(0, str(DATA))
    try:
        from make_torch_models import build
    finally:
        sys.path.remove(str(DATA))
    from edgesparse.frontends.torch import from_module

    module, example = build("torch_cnn")
    module.train()
    model, info = from_module(module, example)
    assert module.training, "from_module must restore the module's training flag"
    assert info["format"] == "pytorch" and info["container"] == "nn.Module" and info["check"]["passed"]
    x = torch.randn(5, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = module.eval()(x).numpy()
    got = model.predict(np.moveaxis(x.numpy(), 1, -1), verbose=0)
    assert np.max(np.abs(got - want)) <= 1e-4


def test_from_module_reports_an_untraceable_module_in_one_line():
    torch = pytest.importorskip("torch")
    from edgesparse.frontends.torch import from_module

    class DataDependent(torch.nn.Module):
        def forward(self, x):
            return x * 2 if x.sum() > 0 else x        # a branch on data: torch.export cannot trace it

    with pytest.raises(UserError) as err:
        from_module(DataDependent(), torch.randn(1, 4))
    assert "torch.export could not trace" in _one_line(err)


def test_pt2_cannot_run_pickled_code_by_default(tmp_path):
    """torch.export.load falls back to full pickle for the sample inputs when the weights-only
    unpickler refuses them; the child forces weights-only, so the payload never runs."""
    torch = pytest.importorskip("torch")
    import io

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return exec, (f"open({str(marker)!r}, 'w').close()",)

    buffer = io.BytesIO()
    torch.save(Payload(), buffer)
    path = _fake_pt2(tmp_path / "hostile.pt2", {"data/sample_inputs/model.pt": buffer.getvalue()})
    with pytest.raises(UserError) as err:
        load_model(path)
    assert "pickled data that is not plain tensors" in _one_line(err) and "--unsafe-load" in str(err.value)
    assert not marker.exists()
