"""An artifact's input/output tensors as its runtime reports them, and the one int8 (de)quantisation
of I/O.

int8/uint8/int16 tensors carry an affine scale and zero point. `to_model_input` turns a float
sample into the tensor the model takes (batch 1, its dtype; quantized with round half to even,
then clipped, the same rounding as the converters' quantize op); `to_float_output` turns what the
model gives back into float32. numpy only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

# ONNX Runtime's type strings -> numpy dtype names. A type missing here keeps its ORT string.
ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
              "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(int16)": "int16",
              "tensor(int32)": "int32", "tensor(int64)": "int64", "tensor(bool)": "bool"}
QUANTIZED_DTYPES = ("int8", "uint8", "int16")


@dataclass
class TensorSpec:
    name: str
    shape: tuple[Any, ...]       # ints; ONNX symbolic dimensions stay as their names
    dtype: str                   # numpy dtype name (or ORT's type string when numpy has none)
    scale: float | None = None   # affine quantization; None when the tensor is not quantized
    zero_point: int | None = None

    @property
    def quantized(self) -> bool:
        return self.scale is not None

    @property
    def fixed_shape(self) -> tuple[int, ...]:
        """The shape the artifact runs with: symbolic or dynamic dimensions as 1 (batch 1, trap 6)."""
        return tuple(d if isinstance(d, int) and d > 0 else 1 for d in self.shape)

    def to_dict(self) -> dict[str, Any]:
        quant = None if self.scale is None else {"scale": self.scale, "zero_point": self.zero_point}
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, "quantization": quant}


def quantize(x: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """float -> the tensor's integer dtype with its affine parameters (round half to even, clip)."""
    if not spec.quantized:
        raise ValueError(f"input {spec.name} is {spec.dtype} without quantization parameters")
    info = np.iinfo(np.dtype(spec.dtype))
    q = np.round(x / spec.scale + spec.zero_point)
    return np.clip(q, info.min, info.max).astype(spec.dtype)


def dequantize(q: np.ndarray, spec: TensorSpec) -> np.ndarray:
    return ((q.astype(np.float32) - spec.zero_point) * spec.scale).astype(np.float32)


def to_model_input(sample: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """A float sample (with or without its batch dimension of 1) -> the tensor the model takes."""
    x = np.asarray(sample, dtype=np.float32).reshape(spec.fixed_shape)
    if spec.dtype in QUANTIZED_DTYPES and (spec.quantized or spec.dtype != "int16"):
        return quantize(x, spec)   # an int8/uint8 input without parameters is an error, not a cast
    return x.astype(spec.dtype, copy=False)


def to_float_output(y: np.ndarray, spec: TensorSpec) -> np.ndarray:
    if spec.quantized and spec.dtype in QUANTIZED_DTYPES:
        return dequantize(y, spec)
    return np.asarray(y, dtype=np.float32)
