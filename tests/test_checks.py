"""Target constraint checks read from real exported files, and the edgetpu_compiler log parser
on real captured compiler output. Each check must fail on an artifact that breaks it.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from edgesparse._tf import keras
from edgesparse.checks import COMPILER_NOT_RUN, check_onnx, check_tflite, edgetpu, nnapi
from edgesparse.checks.edgetpu import parse_compiler_output, too_many_dims
from edgesparse.checks.edgetpu import effective_dims
from edgesparse.runtime.tflite_file import read_tflite
from edgesparse.convert.onnx import to_onnx
from edgesparse.convert.tflite import to_tflite
from edgesparse.errors import UserError
from edgesparse.targets import load_target

CORAL, NNAPI, RPI4 = (load_target(n) for n in ("coral", "android-nnapi", "rpi4"))
X_IMG = np.random.default_rng(0).random((40, 8, 8, 1), dtype=np.float32)
X_VEC = np.random.default_rng(0).random((40, 64), dtype=np.float32)

# ----------------------------------------------------------------------------- captured compiler output
# Console output of edgetpu_compiler 15.0 (with -s), verbatim from google-coral/edgetpu#322
# (the thread quotes the operator table only up to its first row, and so do we).
COMPILER_STDOUT_322 = """\
Edge TPU Compiler version 15.0.340273435

Model compiled successfully in 42 ms.

Input model: /tmp/mnist_tflite_models/mnist_model_quant_16x8.tflite
Input size: 81.91KiB
Output model: ./mnist_model_quant_16x8_edgetpu.tflite
Output size: 188.78KiB
On-chip memory used for caching model parameters: 3.00KiB
On-chip memory remaining for caching model parameters: 7.86MiB
Off-chip memory used for streaming uncached model parameters: 126.81KiB
Number of Edge TPU subgraphs: 1
Total number of operations: 5
Operation log: ./mnist_model_quant_16x8_edgetpu.log

Model successfully compiled but not all operations are supported by the Edge TPU. A percentage of the model will instead run on the CPU, which is slower. If possible, consider updating your model to use only operations supported by the Edge TPU. For details, visit g.co/coral/model-reqs.
Number of operations that will run on Edge TPU: 3
Number of operations that will run on CPU: 2

Operator                       Count      Status

DEPTHWISE_CONV_2D              1          Mapped to Edge TPU
"""

# The end of the console output in google-coral/edgetpu#342, verbatim: one op mapped, then
# everything after the first unsupported op is "More than one subgraph is not supported".
COMPILER_STDOUT_342 = """\
Number of operations that will run on Edge TPU: 2
Number of operations that will run on CPU: 153

Operator                       Count      Status


TRANSPOSE                      70         Operation not supported
FULLY_CONNECTED                1          More than one subgraph is not supported
PAD                            1          Mapped to Edge TPU
PAD                            17         More than one subgraph is not supported
ADD                            10         More than one subgraph is not supported
MEAN                           2          More than one subgraph is not supported
CONV_2D                        35         More than one subgraph is not supported
QUANTIZE                       1          Mapped to Edge TPU
QUANTIZE                       1          Operation is otherwise supported, but not mapped due to some unspecified limitation
DEPTHWISE_CONV_2D              17         More than one subgraph is not supported
"""

# A `<model>_edgetpu.log` file, verbatim from system-software-lab/nrf20 convert/quantize/README.md.
COMPILER_LOG_FILE = """\
Edge TPU Compiler version 15.0.340273435
Input: mnist4.tflite
Output: mnist4_edgetpu.tflite

Operator                       Count      Status

RESHAPE                        1          Mapped to Edge TPU
CONV_2D                        2          Mapped to Edge TPU
SOFTMAX                        1          Mapped to Edge TPU
QUANTIZE                       1          Operation is otherwise supported, but not mapped due to some unspecified limitation
DEQUANTIZE                     1          Operation is working on an unsupported data type
MAX_POOL_2D                    2          Mapped to Edge TPU
FULLY_CONNECTED                2          Mapped to Edge TPU
"""

# Compiler 16.0 refusing an operator version from a newer TensorFlow, google-coral/edgetpu#845.
COMPILER_PARSE_ERROR_845 = """\
Edge TPU Compiler version 16.0.384591198
ERROR: Didn't find op for builtin opcode 'TRANSPOSE_CONV' version '4'. An older version of this builtin might be supported. Are you using an old TFLite binary with a newer model?

ERROR: Registration failed.

Invalid model: model_full_integer_quant.tflite
Model could not be parsed
"""


def test_parse_console_output_summary():
    r = parse_compiler_output(COMPILER_STDOUT_322)
    assert r["compiler_version"] == "15.0.340273435"
    assert r["compiled"] is True and r["all_ops_mapped"] is False
    assert (r["ops_on_tpu"], r["ops_on_cpu"], r["total_ops"], r["edgetpu_subgraphs"]) == (3, 2, 5, 1)
    assert r["on_chip_parameter_bytes"] == 3 * 1024
    assert r["on_chip_remaining_bytes"] == round(7.86 * 2**20)
    assert r["off_chip_parameter_bytes"] == round(126.81 * 1024)
    assert r["operators"] == [{"op": "DEPTHWISE_CONV_2D", "count": 1, "status": "Mapped to Edge TPU"}]
    assert r["error"] is None


def test_parse_operator_table_with_cpu_fallback():
    r = parse_compiler_output(COMPILER_STDOUT_342)
    assert (r["ops_on_tpu"], r["ops_on_cpu"]) == (2, 153)
    assert len(r["operators"]) == 10
    assert sum(row["count"] for row in r["operators"]) == 155
    assert r["operators"][0] == {"op": "TRANSPOSE", "count": 70, "status": "Operation not supported"}
    assert r["operators"][8]["status"] == edgetpu.UNSPECIFIED
    assert r["all_ops_mapped"] is False


def test_parse_log_file_counts_from_the_table():
    r = parse_compiler_output(COMPILER_LOG_FILE)
    assert r["compiler_version"] == "15.0.340273435"
    assert [row["op"] for row in r["operators"]] == ["RESHAPE", "CONV_2D", "SOFTMAX", "QUANTIZE",
                                                     "DEQUANTIZE", "MAX_POOL_2D", "FULLY_CONNECTED"]
    assert (r["ops_on_tpu"], r["ops_on_cpu"]) == (8, 2)
    assert r["all_ops_mapped"] is False
    assert r["on_chip_parameter_bytes"] is None     # the .log file has only the table


def test_parse_compiler_error():
    r = parse_compiler_output(COMPILER_PARSE_ERROR_845)
    assert r["compiled"] is False
    assert "TRANSPOSE_CONV" in r["error"] and "Model could not be parsed" in r["error"]
    assert r["operators"] == []


def test_run_compiler_plumbing_with_a_stand_in(tmp_path, monkeypatch):
    """edgetpu_compiler is an x86-64 Debian package that is not installable here; a stand-in
    script replays the real captured output so the subprocess + log-file path is exercised."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "edgetpu_compiler"
    table = COMPILER_LOG_FILE.split("Operator", 1)[1]
    script.write_text("#!/bin/sh\n"
                      "while [ $# -gt 1 ]; do case $1 in -o) out=$2; shift;; esac; shift; done\n"
                      f"cat <<'EOF'\n{COMPILER_STDOUT_322.split('Operator')[0]}EOF\n"
                      f"cat > \"$out/m_edgetpu.log\" <<'EOF'\nOperator{table}EOF\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    model = tmp_path / "m.tflite"
    model.write_bytes(b"unused by the stand-in")
    r = edgetpu.run_compiler(model, tmp_path / "out")
    assert r["returncode"] == 0 and r["ops_on_tpu"] == 3 and len(r["operators"]) == 7


# ----------------------------------------------------------------------------- rules


def test_three_innermost_dimensions_rule():
    assert effective_dims((1, 8, 8, 16)) == 3 and effective_dims((1, 10)) == 1
    assert not too_many_dims((1, 8, 8, 16))
    assert not too_many_dims((8, 8, 16))
    assert too_many_dims((2, 8, 8, 16))
    assert too_many_dims((4, 1, 8, 8))
    assert not too_many_dims((1, 1, 1, 5, 5, 5))


# ----------------------------------------------------------------------------- real artifacts


def cnn(batch_norm: bool = True):
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(8, 3, padding="same")(inp)
    if batch_norm:
        h = keras.layers.BatchNormalization()(h)
    h = keras.layers.ReLU()(h)
    h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Flatten()(h)
    return keras.Model(inp, keras.layers.Dense(10, activation="softmax")(h))


def mlp(activation=None):
    keras.utils.set_random_seed(0)
    inp = keras.Input((64,))
    h = keras.layers.Dense(32)(inp)
    h = activation(h) if activation else keras.layers.ReLU()(h)
    return keras.Model(inp, keras.layers.Dense(10, activation="softmax")(h))


@pytest.fixture(scope="module")
def cnn_model():
    return cnn()


def export(tmp_path, model, precision, name, x, **kw):
    path = tmp_path / f"{name}.tflite"
    path.write_bytes(to_tflite(model, precision, x_calib=x, **kw))
    return path


def failed(checks):
    return sorted(k for k, v in checks.items() if v["passed"] is False)


def test_read_tflite_agrees_with_the_interpreter(cnn_model, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    path = export(tmp_path, cnn_model, "int8", "m", X_IMG, io="int8")
    model = read_tflite(path)
    interp = Interpreter(model_path=str(path))
    detail = interp.get_input_details()[0]
    (tin,) = model.input_tensors()
    assert tin.shape == tuple(detail["shape"]) and tin.dtype == np.dtype(detail["dtype"]).name
    assert (tin.scale[0], tin.zero_point[0]) == pytest.approx(detail["quantization"])
    assert [op.name for op in model.ops] == [d["op_name"] for d in interp._get_ops_details()]
    assert model.op_versions()[("CONV_2D", 3)] == 1
    assert model.parameter_bytes() > 8 * 9 + 10 * 128      # at least the conv and dense weights


def test_not_a_tflite_file_is_a_user_error(tmp_path):
    bad = tmp_path / "x.tflite"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(UserError, match="not a TFLite flatbuffer"):
        read_tflite(bad)


def test_coral_int8_passes_our_edgetpu_check(cnn_model, tmp_path):
    checks = check_tflite(export(tmp_path, cnn_model, "int8", "m", X_IMG, io="int8"), "int8", CORAL)
    assert failed(checks) == []
    mapping = checks["edgetpu_mapping"]
    assert mapping["ops_on_cpu"] == 0 and mapping["ops_on_tpu"] == len(read_tflite(tmp_path / "m.tflite").ops)
    assert 0 < checks["parameter_cache"]["parameter_bytes"] < 8 * 2**20
    if edgetpu.compiler_path() is None:
        assert checks["edgetpu_compiler"] == {"passed": None, "reason": COMPILER_NOT_RUN}


def test_dynamic_batch_fails_static_shape_and_batch_checks(cnn_model, tmp_path):
    path = export(tmp_path, cnn_model, "int8", "dyn", X_IMG, io="int8", batch=None)
    assert -1 in read_tflite(path).input_tensors()[0].shape_signature
    for target in (CORAL, NNAPI):
        assert {"static_shapes", "batch"} <= set(failed(check_tflite(path, "int8", target)))
    fixed = export(tmp_path, cnn_model, "int8", "fixed", X_IMG, io="int8")
    assert failed(check_tflite(fixed, "int8", NNAPI)) == []


def test_float_io_and_float_models_fail_on_coral(cnn_model, tmp_path):
    float_io = check_tflite(export(tmp_path, cnn_model, "int8", "fio", X_IMG, io="float32"), "int8", CORAL)
    assert "io_dtype" in failed(float_io)
    assert "allowed: int8, uint8" in float_io["io_dtype"]["reason"]
    assert any(u["op"] == "DEQUANTIZE" for u in float_io["operators"]["unsupported"])
    fp32 = check_tflite(export(tmp_path, cnn_model, "fp32", "f32", X_IMG), "fp32", CORAL)
    assert {"io_dtype", "operators", "edgetpu_mapping"} <= set(failed(fp32))
    assert fp32["edgetpu_mapping"]["ops_on_tpu"] == 0
    assert all(u["reason"] == edgetpu.UNSUPPORTED_DTYPE for u in fp32["operators"]["unsupported"])
    # The same float-I/O int8 file is fine where float I/O is allowed.
    assert failed(check_tflite(tmp_path / "fio.tflite", "int8", RPI4)) == []


def test_batch_of_two_breaks_the_edgetpu_dimension_rule(cnn_model, tmp_path):
    checks = check_tflite(export(tmp_path, cnn_model, "int8", "b2", X_IMG, io="int8", batch=2), "int8", CORAL)
    assert {"batch", "effective_dims", "edgetpu_mapping"} <= set(failed(checks))
    assert checks["effective_dims"]["tensors"][0]["shape"][0] == 2


def test_unsupported_edgetpu_op_is_reported_with_version_and_cpu_fallback(tmp_path):
    model = mlp(keras.layers.LeakyReLU(0.1))
    path = export(tmp_path, model, "int8", "leaky", X_VEC, io="int8")
    checks = check_tflite(path, "int8", CORAL)
    assert {"operators", "edgetpu_mapping"} <= set(failed(checks))
    (bad,) = checks["operators"]["unsupported"]
    assert bad["op"] == "LEAKY_RELU" and bad["version"] >= 1 and bad["reason"] == edgetpu.NOT_SUPPORTED
    mapping = checks["edgetpu_mapping"]
    # One contiguous prefix: the first Dense maps, everything from LEAKY_RELU on runs on the CPU.
    assert mapping["ops_on_tpu"] == 1 and mapping["first_unsupported"]["op"] == "LEAKY_RELU"
    statuses = {(r["op"], r["status"]) for r in mapping["operators"]}
    assert ("FULLY_CONNECTED", edgetpu.MAPPED) in statuses
    assert ("FULLY_CONNECTED", edgetpu.MORE_THAN_ONE_SUBGRAPH) in statuses


def test_parameters_over_the_cache_fail(cnn_model, tmp_path):
    small = CORAL.model_copy(update={"constraints": CORAL.constraints.model_copy(
        update={"parameter_cache_bytes": 1000})})
    checks = check_tflite(export(tmp_path, cnn_model, "int8", "m", X_IMG, io="int8"), "int8", small)
    assert failed(checks) == ["parameter_cache"]
    assert checks["parameter_cache"]["parameter_bytes"] > 1000


def test_nnapi_reports_unsupported_ops_and_accepts_fp16_weights(tmp_path):
    gelu = export(tmp_path, mlp(keras.layers.Activation("gelu")), "int8", "gelu", X_VEC)
    checks = check_tflite(gelu, "int8", NNAPI)
    assert failed(checks) == ["operators"]
    (bad,) = checks["operators"]["unsupported"]
    assert bad["op"] == "GELU" and "GELU v" in checks["operators"]["reason"]
    fp16 = export(tmp_path, mlp(), "fp16", "half", X_VEC)
    assert any(op.name == "DEQUANTIZE" for op in read_tflite(fp16).ops)
    assert failed(check_tflite(fp16, "fp16", NNAPI)) == []


def test_nnapi_version_limit_is_applied():
    op_rule = nnapi.NNAPI_OPS["CONV_2D"]
    assert op_rule.max_version == 5     # LiteRT nnapi_delegate.cc: ExpectMaxOpVersion(version, 5)
    assert edgetpu.EDGETPU_OPS["CONV_2D"].max_version == 5   # v6 needs TF 2.9, refused by compiler 16


def test_onnx_dynamic_batch_fails(tmp_path):
    model = mlp()
    dyn = to_onnx(model, tmp_path / "dyn.onnx", batch=None)
    assert {"static_shapes", "batch"} <= set(failed(check_onnx(dyn, "fp32", RPI4)))
    fixed = to_onnx(model, tmp_path / "fixed.onnx", batch=1)
    assert failed(check_onnx(Path(fixed), "fp32", RPI4)) == []
