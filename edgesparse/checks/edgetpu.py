"""Edge TPU compatibility, checked on our side, and the real compiler when it is installed.

Rules and sources:
- Model requirements and the supported-operations table: coral.ai/docs/edgetpu/models-intro/
  ("Supported operations": operation, minimum Edge TPU runtime version, known limitations). The
  same table is mirrored for the ARTPEC-7 Edge TPU at developer.axis.com/computer-vision/
  on-device/system-on-chip/artpec-7/supported-ops/. "Tensors are either 1-, 2-, or
  3-dimensional. If a tensor has more than 3 dimensions, then only the 3 innermost dimensions
  may have a size greater than 1." Parameters, I/O and activations are 8-bit integers.
- The compiler maps one contiguous run of supported operations: "as soon as an unsupported
  operation occurs, that operation and everything after it executes on the CPU" (models-intro,
  "Compiling"), logged as "More than one subgraph is not supported" (google-coral/edgetpu#461).
- Operator versions: edgetpu_compiler 16.0 (July 2021, shipped beside tflite_runtime 2.5.0.post1,
  google-coral/libedgetpu#31) embeds a TFLite parser of that era and rejects newer versions
  ("Didn't find op for builtin opcode 'CONV_2D' version '6'", google-coral/edgetpu#631;
  TRANSPOSE_CONV version 4, #845). MAX_VERSION below is the highest version of each operator
  whose minimum runtime in TensorFlow's tensorflow/lite/tools/versioning/runtime_version.cc
  is 2.5.0 or older.
- About 8 MiB of on-chip SRAM caches parameters; the rest streams from the host on every
  inference (compiler output: "On-chip memory used for caching model parameters").
"""
from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from edgesparse.runtime.tflite_file import OpInfo, TFLiteModel

INT8 = ("int8", "uint8")
ASSUMED_RUNTIME = 14     # the Edge TPU runtime that compiler 16.0 targets by default


@dataclass(frozen=True)
class EdgeTpuOp:
    max_version: int         # highest TFLite op version the 16.0 compiler parses (see module doc)
    min_runtime: int         # Edge TPU runtime that maps it (10 = "All" in Coral's table)
    limitation: str = ""     # Coral's "known limitations" column, abridged


EDGETPU_OPS: dict[str, EdgeTpuOp] = {
    "ADD": EdgeTpuOp(3, 10),
    "AVERAGE_POOL_2D": EdgeTpuOp(3, 10, "no fused activation function"),
    "CONCATENATION": EdgeTpuOp(3, 10, "no fused activation function; a constant input must be "
                                      "all zeros and the only other input"),
    "CONV_2D": EdgeTpuOp(5, 10, "same dilation in x and y"),
    "DEPTHWISE_CONV_2D": EdgeTpuOp(6, 10, "same dilation in x and y"),
    "EXPAND_DIMS": EdgeTpuOp(1, 13),
    "FULLY_CONNECTED": EdgeTpuOp(9, 10, "default weights format; output tensor is one-dimensional"),
    "L2_NORMALIZATION": EdgeTpuOp(2, 10),
    "LOGISTIC": EdgeTpuOp(3, 10),
    "UNIDIRECTIONAL_SEQUENCE_LSTM": EdgeTpuOp(3, 14, "unidirectional LSTM only"),
    "MAXIMUM": EdgeTpuOp(4, 10),
    "MAX_POOL_2D": EdgeTpuOp(3, 10, "no fused activation function"),
    "MEAN": EdgeTpuOp(3, 13, "no reduction in the batch dimension; a z-reduction needs z a multiple of 4"),
    "MINIMUM": EdgeTpuOp(4, 10),
    "MUL": EdgeTpuOp(4, 10),
    "PACK": EdgeTpuOp(3, 13, "no packing in the batch dimension"),
    "PAD": EdgeTpuOp(3, 13, "no padding in the batch dimension"),
    "PRELU": EdgeTpuOp(1, 13, "alpha must be 1-dimensional"),
    "QUANTIZE": EdgeTpuOp(2, 13),
    "REDUCE_MAX": EdgeTpuOp(3, 14, "cannot operate on the batch dimension"),
    "REDUCE_MIN": EdgeTpuOp(3, 14, "cannot operate on the batch dimension"),
    "RELU": EdgeTpuOp(3, 10),
    "RELU6": EdgeTpuOp(3, 10),
    "RELU_N1_TO_1": EdgeTpuOp(1, 10),
    "RESHAPE": EdgeTpuOp(1, 10, "some reshapes of large tensors are not mapped"),
    "RESIZE_BILINEAR": EdgeTpuOp(4, 10, "3-dimensional input/output"),
    "RESIZE_NEAREST_NEIGHBOR": EdgeTpuOp(4, 10, "3-dimensional input/output"),
    "RSQRT": EdgeTpuOp(2, 14),
    "SLICE": EdgeTpuOp(5, 10),
    "SOFTMAX": EdgeTpuOp(3, 10, "1-D input with at most 16,000 elements"),
    "SPACE_TO_DEPTH": EdgeTpuOp(2, 10),
    "SPLIT": EdgeTpuOp(4, 10, "no splitting in the batch dimension"),
    "SQUEEZE": EdgeTpuOp(2, 10),
    "STRIDED_SLICE": EdgeTpuOp(5, 10),
    "SUB": EdgeTpuOp(5, 10),
    "SUM": EdgeTpuOp(2, 13, "cannot operate on the batch dimension"),
    "SQUARED_DIFFERENCE": EdgeTpuOp(2, 14),
    "TANH": EdgeTpuOp(3, 10),
    "TRANSPOSE": EdgeTpuOp(5, 14),
    "TRANSPOSE_CONV": EdgeTpuOp(3, 13),
}

# Status strings the compiler writes in its "Operator / Count / Status" table.
MAPPED = "Mapped to Edge TPU"
NOT_SUPPORTED = "Operation not supported"
VERSION_NOT_SUPPORTED = "Operation version not supported"
UNSUPPORTED_DTYPE = "Operation is working on an unsupported data type"
MORE_THAN_ONE_SUBGRAPH = "More than one subgraph is not supported"
UNSPECIFIED = "Operation is otherwise supported, but not mapped due to some unspecified limitation"


def effective_dims(shape: tuple[int, ...]) -> int:
    """Rank once leading size-1 dimensions are dropped: (1, 8, 8, 16) -> 3, (1, 10) -> 1."""
    dims = list(shape)
    while dims and dims[0] == 1:
        dims.pop(0)
    return len(dims)


def too_many_dims(shape: tuple[int, ...], max_dims: int = 3) -> bool:
    """Coral's rule: beyond 3 dimensions, only the 3 innermost may be larger than 1."""
    return len(shape) > max_dims and any(d != 1 for d in shape[:-max_dims])


def _limitation_broken(model: TFLiteModel, op: OpInfo) -> str | None:
    opts = op.options
    if op.name in ("AVERAGE_POOL_2D", "MAX_POOL_2D", "CONCATENATION") and \
            opts.get("fused_activation", "NONE") != "NONE":
        return f"known limitation: no fused activation function (has {opts['fused_activation']})"
    if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D") and \
            opts.get("dilation_w", 1) != opts.get("dilation_h", 1):
        return "known limitation: dilation must be the same in x and y"
    if op.name == "FULLY_CONNECTED":
        if opts.get("weights_format", 0) != 0:
            return "known limitation: only the default weights format"
        if effective_dims(model.tensor(op.outputs[0]).shape) > 1:
            return "known limitation: the output tensor must be one-dimensional"
    if op.name == "SOFTMAX":
        shape = model.tensor(op.inputs[0]).shape
        n = 1
        for d in shape:
            n *= d
        if effective_dims(shape) > 1 or n > 16000:
            return f"known limitation: 1-D input of at most 16,000 elements (input {list(shape)})"
    if op.name in ("MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN") and len(op.inputs) > 1:
        axes = model.constant_values.get(op.inputs[1])
        rank = len(model.tensor(op.inputs[0]).shape)
        if axes is not None and any(int(a) % max(rank, 1) == 0 for a in axes):
            return "known limitation: cannot reduce over the batch dimension"
    if op.name == "PAD" and len(op.inputs) > 1:
        pads = model.constant_values.get(op.inputs[1])
        if pads is not None and len(pads) >= 2 and (pads[0] or pads[1]):
            return "known limitation: no padding in the batch dimension"
    return None


def op_status(model: TFLiteModel, op: OpInfo, runtime: int = ASSUMED_RUNTIME) -> str:
    """The status the compiler would give this op on its own (ignoring graph position)."""
    if op.name == "DEQUANTIZE":
        return UNSUPPORTED_DTYPE   # int8 -> float output; the compiler logs it this way
    rule = EDGETPU_OPS.get(op.name)
    if rule is None or rule.min_runtime > runtime:
        return NOT_SUPPORTED
    if op.version > rule.max_version:
        return VERSION_NOT_SUPPORTED
    for t in (*op.inputs, *op.outputs):
        if t < 0:
            continue
        tensor = model.tensor(t)
        # int32 constants are biases and shape/axis operands; every activation must be 8-bit.
        if tensor.dtype not in INT8 and not (tensor.constant and tensor.dtype in ("int32", "int64")):
            if op.name == "QUANTIZE" and t in op.inputs and tensor.dtype == "float32":
                return UNSPECIFIED   # the float->int8 input quantizer stays on the CPU
            return UNSUPPORTED_DTYPE
    broken = _limitation_broken(model, op)
    if broken:
        return broken
    for t in (*op.inputs, *op.outputs):
        # The rule is about activations; 4-D conv filters (OHWI) are parameters and fine.
        if t >= 0 and not model.tensor(t).constant and too_many_dims(model.tensor(t).shape):
            return "Tensor has unsupported rank (up to 3 innermost dimensions mapped)"
    return MAPPED


def mapping(model: TFLiteModel, runtime: int = ASSUMED_RUNTIME) -> dict:
    """Which ops the compiler would put on the TPU: one contiguous run, the rest on the CPU.

    Ops are visited in execution order (the order of the flatbuffer's operator list). A leading
    float->int8 QUANTIZE stays on the CPU without ending the run (the compiler does the same).
    """
    statuses = [op_status(model, op, runtime) for op in model.ops]
    start = 0
    while start < len(statuses) and statuses[start] == UNSPECIFIED and model.ops[start].name == "QUANTIZE":
        start += 1
    end = start
    while end < len(statuses) and statuses[end] == MAPPED:
        end += 1
    final = list(statuses)
    for i in range(end, len(final)):
        if final[i] == MAPPED:
            final[i] = MORE_THAN_ONE_SUBGRAPH
    on_tpu = list(range(start, end))
    on_cpu = [i for i in range(len(final)) if i not in on_tpu]
    first_unsupported = None
    if end < len(final):
        op = model.ops[end]
        first_unsupported = {"index": end, "op": op.name, "version": op.version, "status": final[end]}
    return {
        "ops_on_tpu": len(on_tpu),
        "ops_on_cpu": len(on_cpu),
        "first_unsupported": first_unsupported,
        "cpu_ops": [{"index": i, "op": model.ops[i].name, "version": model.ops[i].version,
                     "status": final[i]} for i in on_cpu],
        "operators": summarize(model, final),
        "parameter_bytes_on_tpu": model.parameter_bytes(on_tpu),
    }


def summarize(model: TFLiteModel, statuses: list[str]) -> list[dict]:
    """Rows like the compiler's table: operator, count, status."""
    rows: dict[tuple[str, str], int] = {}
    for op, status in zip(model.ops, statuses):
        rows[(op.name, status)] = rows.get((op.name, status), 0) + 1
    return [{"op": op, "count": n, "status": s} for (op, s), n in rows.items()]


def unsupported_ops(model: TFLiteModel, runtime: int = ASSUMED_RUNTIME) -> list[dict]:
    """Ops that cannot map to the Edge TPU whatever their position, with version and reason."""
    found = []
    for op in model.ops:
        status = op_status(model, op, runtime)
        if status not in (MAPPED, UNSPECIFIED):
            found.append({"index": op.index, "op": op.name, "version": op.version, "reason": status})
    return found


# ----------------------------------------------------------------------------- the real compiler

_SIZE = re.compile(r"([\d.]+)\s*([KMG]i)?B")
_UNITS = {None: 1, "Ki": 1024, "Mi": 1024 ** 2, "Gi": 1024 ** 3}


def _bytes(text: str) -> int | None:
    m = _SIZE.search(text)
    return int(round(float(m.group(1)) * _UNITS[m.group(2)])) if m else None


def parse_compiler_output(text: str) -> dict:
    """Parse edgetpu_compiler's console output and/or its `<model>_edgetpu.log` file.

    Fields that the text does not contain are None (the .log file has only the table).
    """
    out: dict = {"compiler_version": None, "compiled": None, "all_ops_mapped": None,
                 "ops_on_tpu": None, "ops_on_cpu": None, "total_ops": None,
                 "edgetpu_subgraphs": None, "on_chip_parameter_bytes": None,
                 "on_chip_remaining_bytes": None, "off_chip_parameter_bytes": None,
                 "operators": [], "error": None}
    fields = {
        "On-chip memory used for caching model parameters": "on_chip_parameter_bytes",
        "On-chip memory remaining for caching model parameters": "on_chip_remaining_bytes",
        "Off-chip memory used for streaming uncached model parameters": "off_chip_parameter_bytes",
    }
    counts = {
        "Number of operations that will run on Edge TPU": "ops_on_tpu",
        "Number of operations that will run on CPU": "ops_on_cpu",
        "Total number of operations": "total_ops",
        "Number of Edge TPU subgraphs": "edgetpu_subgraphs",
    }
    in_table = False
    errors = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("Edge TPU Compiler version"):
            out["compiler_version"] = line.rsplit(" ", 1)[-1]
            in_table = False
            continue
        if re.match(r"Operator\s+Count\s+Status$", line):
            in_table = True
            continue
        key, sep, value = line.partition(":")
        if sep and key in fields:
            out[fields[key]] = _bytes(value)
            continue
        if sep and key in counts:
            out[counts[key]] = int(value.strip())
            continue
        if line.startswith("Model compiled successfully"):
            out["compiled"] = True
            continue
        if line.startswith("Model successfully compiled but not all operations are supported"):
            out["compiled"], out["all_ops_mapped"] = True, False
            continue
        if line.startswith("ERROR:") or line.startswith("Invalid model") or \
                line.startswith("Model could not be parsed") or "compiler error" in line.lower():
            errors.append(line)
            out["compiled"] = False
            continue
        if in_table:
            row = re.match(r"(\S+)\s+(\d+)\s+(.+)$", line)
            if row:
                out["operators"].append({"op": row.group(1), "count": int(row.group(2)),
                                         "status": row.group(3).strip()})
    if errors:
        out["error"] = " ".join(errors)
    if out["operators"]:
        mapped = sum(r["count"] for r in out["operators"] if r["status"] == MAPPED)
        total = sum(r["count"] for r in out["operators"])
        if out["ops_on_tpu"] is None:
            out["ops_on_tpu"], out["ops_on_cpu"] = mapped, total - mapped
        if out["all_ops_mapped"] is None:
            out["all_ops_mapped"] = mapped == total
    elif out["compiled"] and out["all_ops_mapped"] is None:
        # "Model compiled successfully" without the "not all operations" sentence: all mapped.
        out["all_ops_mapped"] = out["ops_on_cpu"] in (None, 0)
    return out


def compiler_path() -> str | None:
    return shutil.which("edgetpu_compiler")


def run_compiler(tflite: Path, out_dir: Path, timeout_s: int = 180) -> dict | None:
    """Run edgetpu_compiler (None when it is not on PATH) and parse what it says."""
    exe = compiler_path()
    if exe is None:
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        proc = subprocess.run([exe, "-s", "-o", str(out_dir), str(tflite)], capture_output=True,
                              text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return {"compiled": False, "error": f"edgetpu_compiler timed out after {timeout_s} s"}
    text = proc.stdout + "\n" + proc.stderr
    log = out_dir / f"{tflite.stem}_edgetpu.log"
    result = parse_compiler_output(text)
    if not result["operators"] and log.is_file():
        result["operators"] = parse_compiler_output(log.read_text())["operators"]
    if proc.returncode != 0 and not result["error"]:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        result["compiled"] = False
        result["error"] = lines[-1] if lines else f"exit code {proc.returncode}"
    result["returncode"] = proc.returncode
    return result
