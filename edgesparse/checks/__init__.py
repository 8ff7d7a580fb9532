"""Target constraint checks on exported artifacts, read from the files themselves.

`check_artifact(path, fmt, precision, target)` returns `{check name: {"passed": bool | None,
"reason": str, ...details}}`. `passed` is None when a check could not run (and says why).
Nothing here raises for a failed constraint: the verify pass records it and the report shows it.

- the flatbuffer itself is read by edgesparse.runtime.tflite_file (operators, versions, tensors).
- nnapi:         LiteRT's NNAPI delegate operator table.
- edgetpu:    Coral's Edge TPU operator table, dimension rule, prefix mapping, the compiler.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from edgesparse.checks import edgetpu, nnapi
from edgesparse.runtime.tflite_file import TFLiteModel, read_tflite

COMPILER_NOT_RUN = "edgetpu_compiler not on PATH: not run; our own compatibility check used"


def _check(passed: bool | None, reason: str = "", **details: Any) -> dict[str, Any]:
    return {"passed": passed, "reason": reason, **details}


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


def _io_check(dtypes: list[str], precision: str, target) -> dict[str, Any]:
    allowed = list(target.constraints.int8_io) if precision == "int8" else ["float32"]
    if precision != "int8" and target.constraints.operator_set == "edgetpu":
        return _check(False, f"{target.name} runs full-integer int8 models only; "
                             f"a {precision} artifact cannot use the Edge TPU", io=dtypes)
    bad = sorted({d for d in dtypes if d not in allowed})
    if bad:
        return _check(False, f"I/O dtype {', '.join(bad)} not allowed for {precision} on {target.name} "
                             f"(allowed: {', '.join(allowed)})", io=dtypes, allowed=allowed)
    return _check(True, io=dtypes, allowed=allowed)


def _batch_check(shapes: list[tuple], target) -> dict[str, Any]:
    want = target.constraints.batch
    if want is None:
        return _check(True, "the target fixes no batch size")
    got = [s[0] if s else None for s in shapes]
    if any(b != want for b in got):
        return _check(False, f"input batch dimension is {got}, the target needs {want}", batch=got)
    return _check(True, batch=want)


def _size_check(nbytes: int, target) -> dict[str, Any]:
    limit = target.constraints.max_model_bytes
    if limit is None:
        return _check(True, bytes=nbytes)
    if nbytes > limit:
        return _check(False, f"{_mib(nbytes)} exceeds the target's {_mib(limit)}", bytes=nbytes, limit=limit)
    return _check(True, bytes=nbytes, limit=limit)


def check_tflite(path: Path, precision: str, target, run_compiler: bool = True) -> dict[str, Any]:
    model = read_tflite(path)
    c = target.constraints
    checks: dict[str, Any] = {}

    dynamic = [{"tensor": t.name, "shape_signature": list(t.shape_signature)}
               for t in model.tensors if t.dynamic]
    io_dynamic = [t.name for t in (*model.input_tensors(), *model.output_tensors()) if t.dynamic]
    if c.static_shapes and dynamic:
        checks["static_shapes"] = _check(False, f"{len(dynamic)} tensors have dynamic dimensions "
                                                "(-1 in shape_signature); the target needs static shapes",
                                         dynamic=dynamic[:20])
    elif io_dynamic:
        checks["static_shapes"] = _check(False, f"inputs/outputs with dynamic dimensions: {io_dynamic}")
    else:
        checks["static_shapes"] = _check(True)

    signatures = [t.shape_signature or t.shape for t in model.input_tensors()]
    checks["batch"] = _batch_check(signatures, target)
    checks["io_dtype"] = _io_check([t.dtype for t in (*model.input_tensors(), *model.output_tensors())],
                                   precision, target)
    checks["operators"] = _operator_check(model, target)
    checks["model_bytes"] = _size_check(path.stat().st_size, target)
    if c.operator_set == "edgetpu":
        checks.update(_edgetpu_checks(model, path, target, run_compiler))
    return checks


def _operator_check(model: TFLiteModel, target) -> dict[str, Any]:
    kind = target.constraints.operator_set
    versions = [{"op": op, "version": v, "count": n} for (op, v), n in sorted(model.op_versions().items())]
    if kind == "nnapi":
        bad = nnapi.unsupported_ops(model)
        where = f"the NNAPI delegate (API level {nnapi.ASSUMED_SDK})"
    elif kind == "edgetpu":
        bad = edgetpu.unsupported_ops(model)
        where = "the Edge TPU"
    else:
        # LiteRT builtins run anywhere LiteRT runs; custom/Flex ops need extra runtime pieces.
        bad = [{"index": op.index, "op": op.name, "version": op.version,
                "reason": "custom or TensorFlow (Flex) op: needs a runtime with it linked in"}
               for op in model.ops if op.name.startswith("CUSTOM")]
        where = "the LiteRT builtin op set"
    if bad:
        names = sorted({f"{b['op']} v{b['version']}" for b in bad})
        return _check(False, f"{len(bad)} op{'s' if len(bad) != 1 else ''} not supported by {where}: "
                             f"{', '.join(names)}",
                      unsupported=bad, ops=versions)
    return _check(True, ops=versions)


def _edgetpu_checks(model: TFLiteModel, path: Path, target, run_compiler: bool) -> dict[str, Any]:
    c = target.constraints
    checks: dict[str, Any] = {}
    max_dims = c.max_effective_dims or 3
    wide = [{"tensor": t.name, "shape": list(t.shape)} for t in model.tensors
            if not t.constant and edgetpu.too_many_dims(t.shape, max_dims)]
    checks["effective_dims"] = (
        _check(False, f"{len(wide)} tensors use more than the {max_dims} innermost dimensions",
               tensors=wide[:20]) if wide else _check(True, max_dims=max_dims))

    mapped = edgetpu.mapping(model)
    if mapped["first_unsupported"] is None:
        checks["edgetpu_mapping"] = _check(True, f"all {mapped['ops_on_tpu']} ops map to the Edge TPU", **mapped)
    else:
        first = mapped["first_unsupported"]
        checks["edgetpu_mapping"] = _check(
            False, f"{mapped['ops_on_tpu']} ops map to the Edge TPU, {mapped['ops_on_cpu']} run on the CPU "
                   f"from op {first['index']} ({first['op']} v{first['version']}: {first['status']}) on",
            **mapped)

    if c.parameter_cache_bytes:
        used = mapped["parameter_bytes_on_tpu"]
        fits = used <= c.parameter_cache_bytes
        checks["parameter_cache"] = _check(
            fits, "" if fits else f"{_mib(used)} of parameters exceed the {_mib(c.parameter_cache_bytes)} "
                                  "on-chip cache: the rest streams from the host on every inference",
            parameter_bytes=used, cache_bytes=c.parameter_cache_bytes)

    if not run_compiler or edgetpu.compiler_path() is None:
        checks["edgetpu_compiler"] = _check(None, COMPILER_NOT_RUN)
    else:
        with tempfile.TemporaryDirectory(prefix="edgetpu-") as tmp:
            result = edgetpu.run_compiler(path, Path(tmp))
        ok = bool(result.get("compiled")) and result.get("all_ops_mapped") is not False
        reason = "" if ok else (result.get("error") or
                                f"{result.get('ops_on_cpu')} ops will run on the CPU (compiler log)")
        checks["edgetpu_compiler"] = _check(ok, reason, **result)
    return checks


def check_onnx(path: Path, precision: str, target) -> dict[str, Any]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    inits = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]

    def dims(v) -> tuple:
        return tuple(d.dim_value if d.HasField("dim_value") else -1
                     for d in v.type.tensor_type.shape.dim)

    def dtype(v) -> str:
        return onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name

    shapes = [dims(v) for v in (*inputs, *graph.output)]
    dynamic = [v.name for v, s in zip((*inputs, *graph.output), shapes) if any(d < 0 for d in s)]
    checks: dict[str, Any] = {
        "static_shapes": (_check(False, f"inputs/outputs with symbolic dimensions: {dynamic}")
                          if dynamic else _check(True)),
        "batch": _batch_check([dims(v) for v in inputs], target),
        "io_dtype": _io_check([dtype(v) for v in (*inputs, *graph.output)], precision, target),
    }
    domains = sorted({n.domain or "ai.onnx" for n in graph.node})
    opset = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    checks["operators"] = _check(True, "ONNX Runtime's CPU provider runs the standard ONNX operators",
                                 domains=domains, opset=opset)
    checks["model_bytes"] = _size_check(path.stat().st_size, target)
    return checks


def check_artifact(path: Path, fmt: str, precision: str, target, run_compiler: bool = True) -> dict[str, Any]:
    """All target constraint checks for one artifact."""
    if fmt == "tflite":
        return check_tflite(Path(path), precision, target, run_compiler)
    if fmt == "onnx":
        return check_onnx(Path(path), precision, target)
    return {"format": _check(False, f"unknown artifact format {fmt!r}")}


__all__ = ["check_artifact", "check_tflite", "check_onnx", "COMPILER_NOT_RUN"]
