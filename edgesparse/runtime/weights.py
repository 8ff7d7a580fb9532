"""Sparsity read from the artifact itself: exact zeros in the weight tensors stored in the file.

A release describes what the file *is*, not what the build intended. No TensorFlow import.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgesparse.runtime.artifact import artifact_format, open_artifact
from edgesparse.runtime.tflite_file import read_tflite


def _zero_mask(values: np.ndarray, zero_points: np.ndarray | None, axis: int) -> np.ndarray:
    """A quantized weight is zero when it equals its zero point (per tensor or per channel)."""
    if zero_points is None or zero_points.size == 0:
        return values == 0
    if zero_points.size == 1:
        return values == zero_points.reshape(())
    shape = [1] * values.ndim
    shape[axis] = zero_points.size
    return values == zero_points.reshape(shape)


def _summary(zeros: int, total: int, tensors: int, method: str) -> dict[str, Any]:
    return {"fraction": round(zeros / total, 6) if total else None, "zeros": zeros, "weights": total,
            "tensors": tensors, "method": method}


def tflite_sparsity(path: Path) -> dict[str, Any]:
    """Constant tensors of rank >= 2 (kernels; biases and shape constants are rank 1), read through
    the LiteRT interpreter; the flatbuffer tells which tensors are constants."""
    model = read_tflite(path)
    it = open_artifact(path, threads=1, io="raw").handle
    details = {d["index"]: d for d in it.get_tensor_details()}
    zeros = total = tensors = 0
    for t in model.tensors:
        if not t.constant or len(t.shape) < 2 or t.index not in details:
            continue
        try:
            values = it.get_tensor(t.index)
        except ValueError:   # a constant the interpreter does not expose (e.g. owned by a delegate)
            continue
        q = details[t.index].get("quantization_parameters") or {}
        zp = np.asarray(q.get("zero_points", []))
        zeros += int(_zero_mask(values, zp, int(q.get("quantized_dimension", 0))).sum())
        total += int(values.size)
        tensors += 1
    return _summary(zeros, total, tensors, "constant tensors of rank >= 2 read through the LiteRT "
                                           "interpreter; a quantized value is zero when it equals its zero point")


def onnx_sparsity(path: Path) -> dict[str, Any]:
    """Initializers of rank >= 2; a QDQ weight is zero when it equals the zero point its
    DequantizeLinear node gives it."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    zero_of: dict[str, tuple[np.ndarray, int]] = {}
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and len(node.input) >= 3 and node.input[2] in inits:
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            zero_of[node.input[0]] = (numpy_helper.to_array(inits[node.input[2]]), axis)
    zeros = total = tensors = 0
    for name, init in inits.items():
        if len(init.dims) < 2:
            continue
        values = numpy_helper.to_array(init)
        zp, axis = zero_of.get(name, (None, 0))
        zeros += int(_zero_mask(values, zp, axis).sum())
        total += int(values.size)
        tensors += 1
    return _summary(zeros, total, tensors, "ONNX initializers of rank >= 2; a quantized value is zero "
                                           "when it equals its DequantizeLinear zero point")


def weight_sparsity(path: str | Path, fmt: str | None = None) -> dict[str, Any]:
    path = Path(path)
    fmt = fmt or artifact_format(path)
    return tflite_sparsity(path) if fmt == "tflite" else onnx_sparsity(path)
