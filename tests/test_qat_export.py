"""QAT -> quantize -> export [tflite, onnx] -> verify (REVIEW.md F2, the bug typed state fixes).

Before the fix, `quantize` replaced the dict in which `qat` had recorded the QAT flag, so export
never saw it: the ONNX int8 artifact of a QAT model got onnxruntime's QDQ stacked on the QDQ
tf2onnx makes from the fake-quant ops, and fp32/fp16 variants were built from the fake-quantised
model instead of being skipped. Real build, real converters, artifacts run in their own runtimes.
"""
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import edgesparse

ROOT = Path(__file__).resolve().parent.parent
MLP = ROOT / "sample_models" / "digits_mlp.keras"
DATA = ROOT / "sample_models" / "digits.npz"
RECIPE = ("passes:\n  - pass: qat\n    epochs: 2\n"
          "  - pass: quantize\n    precisions: [int8, fp32, fp16]\n"
          "  - pass: export\n    formats: [tflite, onnx]\n  - pass: verify\n")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("qat")
    recipe = tmp / "qat.yaml"
    recipe.write_text(RECIPE)
    result = edgesparse.build(MLP, target="rpi4", data=DATA, recipe=recipe, out=tmp / "out")
    return result.out, json.loads((result.out / "report.json").read_text())


def _validation():
    d = np.load(DATA)
    return d["x_val"].astype(np.float32).reshape(len(d["x_val"]), -1), d["y_val"]


def _artifact(report, fmt):
    (found,) = [a for a in report["artifacts"] if a["format"] == fmt and a["precision"] == "int8"]
    return found


def _onnx_accuracy(path: Path, x, y) -> float:
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name, shape = s.get_inputs()[0].name, s.get_inputs()[0].shape
    out = np.concatenate([s.run(None, {name: x[i:i + 1].reshape([1, *shape[1:]])})[0] for i in range(len(x))])
    return float(np.mean(out.argmax(1) == y) * 100)


def _litert_accuracy(path: Path, x, y) -> float:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    assert inp["dtype"] == np.float32     # rpi4: int8 inside, float I/O
    preds = []
    for i in range(len(x)):
        it.set_tensor(inp["index"], x[i:i + 1].reshape(inp["shape"]))
        it.invoke()
        preds.append(int(it.get_tensor(out["index"]).argmax()))
    return float(np.mean(np.array(preds) == y) * 100)


def test_onnx_int8_of_a_qat_model_has_one_qdq_pair_per_quantized_tensor(built):
    import onnx

    out, report = built
    graph = onnx.load(str(out / _artifact(report, "onnx")["path"])).graph
    producer = {o: n for n in graph.node for o in n.output}
    initializers = {i.name for i in graph.initializer}
    quantize = [n for n in graph.node if n.op_type == "QuantizeLinear"]
    dequantize = [n for n in graph.node if n.op_type == "DequantizeLinear"]
    assert quantize and dequantize, "tf2onnx turns the fake-quant ops into QDQ pairs"
    # No tensor is quantized twice, and nothing re-quantizes an already dequantized tensor.
    assert max(Counter(n.input[0] for n in quantize).values()) == 1
    stacked = [n.name for n in quantize if n.input[0] in producer
               and producer[n.input[0]].op_type == "DequantizeLinear"]
    assert stacked == [], f"QDQ stacked on QDQ: {stacked[:5]}"
    # Every DequantizeLinear reads a QuantizeLinear's output or a constant int8 tensor: one pair each.
    for n in dequantize:
        src = n.input[0]
        assert src in initializers or (src in producer and producer[src].op_type in ("QuantizeLinear", "Constant")), n.name
    assert Counter(n.input[0] for n in dequantize).most_common(1)[0][1] == 1


def test_both_artifacts_are_within_one_point_of_the_qat_keras_model(built):
    out, report = built
    keras_qat = report["facts"]["verify"]["keras_accuracy"]     # the QAT model, in Keras
    assert keras_qat is not None and keras_qat > 85, "the QAT model must have learned something"
    x, y = _validation()
    assert len(y) >= 300
    got = {"onnx": _onnx_accuracy(out / _artifact(report, "onnx")["path"], x, y),
           "tflite": _litert_accuracy(out / _artifact(report, "tflite")["path"], x, y)}
    for fmt, acc in got.items():
        assert abs(acc - keras_qat) <= 1.0, f"{fmt}: {acc:.2f}% vs QAT Keras {keras_qat:.2f}%"
    assert all("quantization-aware training" in _artifact(report, f)["note"] for f in ("tflite", "onnx"))


def test_float_variants_of_a_qat_model_are_skipped_with_a_reason(built):
    out, report = built
    skipped = {(s["format"], s["precision"]): s["reason"] for s in report["facts"]["export"]["skipped"]}
    assert set(skipped) == {(f, p) for f in ("tflite", "onnx") for p in ("fp32", "fp16")}
    assert all("quantization-aware" in r for r in skipped.values())
    assert [a["precision"] for a in report["artifacts"]] == ["int8", "int8"]
    assert not list(out.glob("*-fp32.*")) and not list(out.glob("*-fp16.*"))
