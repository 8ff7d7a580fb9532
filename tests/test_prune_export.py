"""Every pruned zoo model (2x fewer MACs) converts to TFLite and ONNX and runs in LiteRT and
onnxruntime with the Keras model's outputs: surgery leaves nothing a converter chokes on."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import tf2onnx

from edgesparse._tf import tf
from edgesparse.data import synthetic
from edgesparse.graph.stats import count_macs
from edgesparse.pipeline import RunContext
from edgesparse.passes.prune.pass_ import PrunePass
from edgesparse.state import ModelState

import litert_run
import prune_models as zoo


def to_tflite(model) -> bytes:
    spec = tf.TensorSpec((1,) + tuple(model.inputs[0].shape[1:]), tf.float32)
    fn = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    return tf.lite.TFLiteConverter.from_concrete_functions([fn], model).convert()


def run_tflite(blob: bytes, x: np.ndarray) -> np.ndarray:
    return litert_run.run_tflite(blob, x, threads=1)


def run_onnx(model, x: np.ndarray, tmp_path) -> np.ndarray:
    spec = (tf.TensorSpec((1,) + tuple(model.inputs[0].shape[1:]), tf.float32, name="input"),)
    path = tmp_path / "m.onnx"
    tf2onnx.convert.from_keras(model, input_signature=spec, opset=17, output_path=str(path))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.stack([sess.run(None, {"input": s[None]})[0][0] for s in x])


@pytest.mark.parametrize("name", sorted(zoo.ZOO))
def test_pruned_model_exports_and_runs(name, tmp_path):
    model = zoo.ZOO[name]()
    data = synthetic(tuple(model.inputs[0].shape[1:]), n=64)
    ctx = RunContext(target=None, data=data, workdir=tmp_path)
    state = PrunePass(macs=0.5, criterion="l1").run(ModelState(model=model, name=name), ctx)
    pruned = state.model
    assert count_macs(pruned) * 2 <= count_macs(model)
    x = zoo.sample_inputs(model, 8, seed=1)
    want = pruned(x, training=False).numpy()
    np.testing.assert_allclose(run_tflite(to_tflite(pruned), x), want, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(run_onnx(pruned, x, tmp_path), want, rtol=1e-3, atol=1e-4)
