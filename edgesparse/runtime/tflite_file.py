"""Read what a `.tflite` file really contains: operators with their versions, tensors with their
shapes, signatures, dtypes and quantization, and which tensors are constant parameters.

We read the flatbuffer directly (the schema module ships inside ai_edge_litert) instead of asking
an Interpreter, because the Interpreter does not expose operator *versions*, builtin options
(fused activations, dilations) or `shape_signature` of intermediate tensors, and every delegate
check (NNAPI, Edge TPU) depends on them. No TensorFlow import: this also runs on a device.
This is the one flatbuffer reader: the checks, the export pass and weight sparsity all use it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from edgesparse.errors import UserError


@lru_cache(maxsize=1)
def _schema():
    from ai_edge_litert import schema_py_generated as schema

    return schema


def _enum_names(enum_cls) -> dict[int, str]:
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_") and isinstance(v, int)}


@dataclass
class TensorInfo:
    index: int
    name: str
    dtype: str                       # "float32", "int8", "uint8", "int32", "float16", ...
    shape: tuple[int, ...]
    shape_signature: tuple[int, ...] | None   # -1 marks a dynamic dimension
    constant: bool                   # backed by a buffer with data: a parameter, not an activation
    nbytes: int                      # bytes of its buffer (parameters only)
    scale: tuple[float, ...] = ()
    zero_point: tuple[int, ...] = ()
    sparsity: "SparseStorage | None" = None   # stored in TFLite's sparse format (CSR, maybe blocked)

    @property
    def dynamic(self) -> bool:
        return self.shape_signature is not None and any(d < 0 for d in self.shape_signature)


@dataclass(frozen=True)
class SparseStorage:
    """How a constant tensor is stored sparse (the flatbuffer's SparsityParameters).

    block_map names the tensor dimensions that are blocked and block_sizes their block lengths:
    a Dense weight [out, in] stored in 1x4 blocks has block_map (1,), block_sizes (4,): four
    consecutive *input* channels of one output unit, the Keras kernel's (in, out) rows.
    """

    block_map: tuple[int, ...]
    block_sizes: tuple[int, ...]

    @property
    def blocked(self) -> bool:
        return bool(self.block_map)

    def describe(self) -> str:
        if not self.blocked:
            return "csr"
        return "csr, " + "x".join(str(b) for b in self.block_sizes) + f" blocks on dim {self.block_map}"


def _sparse_storage(t, rank: int) -> SparseStorage | None:
    sp = t.Sparsity()
    if sp is None:
        return None
    block_map = tuple(int(v) for v in sp.BlockMapAsNumpy()) if sp.BlockMapLength() else ()
    # The traversal order lists the tensor's dims first, then one entry per blocked dim; the
    # dense size of those trailing dim metadata entries is the block length.
    sizes = tuple(int(sp.DimMetadata(rank + i).DenseSize()) for i in range(len(block_map)))
    return SparseStorage(block_map, sizes)


@dataclass
class OpInfo:
    index: int                       # position in the subgraph: the execution order
    name: str                        # builtin name, e.g. "CONV_2D" (custom ops: "CUSTOM:<code>")
    version: int
    inputs: tuple[int, ...]          # tensor indices; -1 is an omitted optional input
    outputs: tuple[int, ...]
    options: dict[str, Any] = field(default_factory=dict)   # the builtin options we check


@dataclass
class TFLiteModel:
    path: str
    ops: list[OpInfo]
    tensors: list[TensorInfo]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    subgraphs: int
    constant_values: dict[int, np.ndarray]   # small integer constants (axes, paddings, shapes)

    def tensor(self, i: int) -> TensorInfo:
        return self.tensors[i]

    def input_tensors(self) -> list[TensorInfo]:
        return [self.tensors[i] for i in self.inputs]

    def output_tensors(self) -> list[TensorInfo]:
        return [self.tensors[i] for i in self.outputs]

    def op_versions(self) -> dict[tuple[str, int], int]:
        """(operator, version) -> how many times it occurs."""
        counts: dict[tuple[str, int], int] = {}
        for op in self.ops:
            counts[(op.name, op.version)] = counts.get((op.name, op.version), 0) + 1
        return counts

    def parameter_bytes(self, op_indices: list[int] | None = None) -> int:
        """Bytes of the constant tensors (weights, biases) read by these ops (default: all), each once."""
        chosen = self.ops if op_indices is None else [self.ops[i] for i in op_indices]
        seen: set[int] = set()
        for op in chosen:
            for t in op.inputs:
                if t >= 0 and self.tensors[t].constant:
                    seen.add(t)
        return int(sum(self.tensors[t].nbytes for t in seen))


# Builtin options we look at, by options-table name -> fields to read.
_OPTION_FIELDS = {
    "Conv2DOptions": ("FusedActivationFunction", "DilationWFactor", "DilationHFactor",
                      "StrideW", "StrideH"),
    "DepthwiseConv2DOptions": ("FusedActivationFunction", "DilationWFactor", "DilationHFactor",
                               "DepthMultiplier"),
    "Pool2DOptions": ("FusedActivationFunction", "FilterWidth", "FilterHeight"),
    "ConcatenationOptions": ("FusedActivationFunction", "Axis"),
    "FullyConnectedOptions": ("FusedActivationFunction", "WeightsFormat", "KeepNumDims"),
    "AddOptions": ("FusedActivationFunction",),
    "MulOptions": ("FusedActivationFunction",),
    "SubOptions": ("FusedActivationFunction",),
    "ReducerOptions": ("KeepDims",),
    "SoftmaxOptions": ("Beta",),
}
_SNAKE = {"FusedActivationFunction": "fused_activation", "DilationWFactor": "dilation_w",
          "DilationHFactor": "dilation_h", "StrideW": "stride_w", "StrideH": "stride_h",
          "DepthMultiplier": "depth_multiplier", "FilterWidth": "filter_w",
          "FilterHeight": "filter_h", "Axis": "axis", "WeightsFormat": "weights_format",
          "KeepNumDims": "keep_num_dims", "KeepDims": "keep_dims", "Beta": "beta"}


def _read_options(op) -> dict[str, Any]:
    s = _schema()
    kind = _enum_names(s.BuiltinOptions).get(op.BuiltinOptionsType())
    fields = _OPTION_FIELDS.get(kind or "")
    table = op.BuiltinOptions()
    if not fields or table is None:
        return {}
    opts = getattr(s, kind)()
    opts.Init(table.Bytes, table.Pos)
    out: dict[str, Any] = {}
    acts = _enum_names(s.ActivationFunctionType)
    for f in fields:
        value = getattr(opts, f)()
        out[_SNAKE[f]] = acts.get(value, str(value)) if f == "FusedActivationFunction" else value
    return out


def read_tflite(source: str | Path | bytes) -> TFLiteModel:
    """Parse a .tflite file (or its bytes). Raises UserError when it is not a TFLite flatbuffer."""
    s = _schema()
    path = "<bytes>"
    if isinstance(source, (str, Path)):
        path = str(source)
        try:
            buf = Path(source).read_bytes()
        except OSError as exc:
            raise UserError(f"cannot read {source}: {exc}") from None
    else:
        buf = bytes(source)
    # Bytes 4..8 of a TFLite flatbuffer are the file identifier "TFL3".
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise UserError(f"{path} is not a TFLite flatbuffer (no TFL3 identifier); re-export it")
    model = s.Model.GetRootAs(buf, 0)
    op_names = _enum_names(s.BuiltinOperator)
    type_names = {k: v.lower() for k, v in _enum_names(s.TensorType).items()}
    graph = model.Subgraphs(0)

    def buffer_bytes(index: int) -> int:
        if index <= 0 or index >= model.BuffersLength():
            return 0
        b = model.Buffers(index)
        # Models over 2 GB keep data outside the flatbuffer: Offset/Size describe it.
        return int(b.DataLength() or (b.Size() if b.Offset() > 1 else 0))

    tensors: list[TensorInfo] = []
    constant_values: dict[int, np.ndarray] = {}
    for i in range(graph.TensorsLength()):
        t = graph.Tensors(i)
        shape = tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()
        signature = (tuple(int(d) for d in t.ShapeSignatureAsNumpy())
                     if t.ShapeSignatureLength() else None)
        nbytes = buffer_bytes(t.Buffer())
        q = t.Quantization()
        scale = tuple(float(v) for v in q.ScaleAsNumpy()) if q is not None and q.ScaleLength() else ()
        zero = (tuple(int(v) for v in q.ZeroPointAsNumpy())
                if q is not None and q.ZeroPointLength() else ())
        dtype = type_names.get(t.Type(), str(t.Type()))
        info = TensorInfo(i, (t.Name() or b"").decode(errors="replace"), dtype, shape, signature,
                          constant=nbytes > 0, nbytes=nbytes, scale=scale, zero_point=zero,
                          sparsity=_sparse_storage(t, len(shape)))
        tensors.append(info)
        # Keep small integer constants (axes, paddings, target shapes) for limitation checks.
        if info.constant and dtype in ("int32", "int64") and nbytes <= 256:
            data = model.Buffers(t.Buffer()).DataAsNumpy()
            if not isinstance(data, int):
                constant_values[i] = np.frombuffer(data.tobytes(), dtype=np.dtype(dtype))

    ops: list[OpInfo] = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        # Codes >= 127 live in BuiltinCode; the deprecated int8 field keeps old models readable.
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        name = op_names.get(builtin, f"BUILTIN_{builtin}")
        if name == "CUSTOM":
            name = f"CUSTOM:{(code.CustomCode() or b'').decode(errors='replace')}"
        ops.append(OpInfo(
            index=i, name=name, version=int(code.Version()),
            inputs=tuple(int(v) for v in op.InputsAsNumpy()) if op.InputsLength() else (),
            outputs=tuple(int(v) for v in op.OutputsAsNumpy()) if op.OutputsLength() else (),
            options=_read_options(op)))

    return TFLiteModel(
        path=path, ops=ops, tensors=tensors,
        inputs=tuple(int(v) for v in graph.InputsAsNumpy()),
        outputs=tuple(int(v) for v in graph.OutputsAsNumpy()),
        subgraphs=int(model.SubgraphsLength()), constant_values=constant_values)

