"""export: write one artifact per (format, precision) into the output folder.

Precisions come from the quantize pass (fp32 only when there is none). Files are named
`<model>-<precision>.tflite|.onnx`. TFLite: TFLiteConverter on a traced function with the batch
fixed (trap 6). ONNX: tf2onnx with an explicit input signature (trap 7); int8 through
onnxruntime's static QDQ quantization on the same calibration samples as TFLite. ONNX has no
fp16 or dynamic-range variant here: those are skipped with a recorded note, not an error.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Literal

from pydantic import Field

from edgesparse.checks.tflite_ops import read_tflite
from edgesparse.pipeline import ARTIFACTS, Pass, PassConfig, PlanContext, RunContext, register_pass
from edgesparse.state import Artifact, ModelState

Format = Literal["tflite", "onnx"]
EXTENSIONS = {"tflite": "tflite", "onnx": "onnx"}
ONNX_PRECISIONS = ("fp32", "int8")


class ExportConfig(PassConfig):
    formats: list[Format] | None = Field(None, description="artifact formats (default: the target's)")
    opset: int = Field(17, ge=13, le=18, description="ONNX opset (tf2onnx 1.17 writes 13..18)")


def _planned_precisions(plan: PlanContext) -> list[str]:
    for p in reversed(plan.earlier()):
        if p.name == "quantize":
            return list(p.config.precisions)
    return ["fp32"]


def note_for(fmt: str, precision: str, target, quant: dict) -> str:
    """Why this variant exists, in the words of the target profile where it has some."""
    if fmt == "tflite" and precision == "fp16" and target.delegate == "nnapi":
        return "GPU-delegate variant (fp16)"
    for v in target.variants_on_request:
        if v.format == fmt and v.precision == precision and v.note:
            return v.note
    calib = quant.get("calibration", {})
    if precision == "int8" and quant.get("qat"):
        return "int8 from quantization-aware training (ranges learned in training)"
    if precision == "int8":
        io = quant.get("io", "float32") if fmt == "tflite" else "float32"
        kind = "full-integer int8" if fmt == "tflite" else "static int8 QDQ"
        return (f"{kind}, {io} I/O, calibrated on {calib.get('samples', '?')} "
                f"{calib.get('source', '?')} samples")
    return {"fp32": "float baseline", "fp16": "fp16 weights (half the size of fp32)",
            "dynamic": "dynamic-range: int8 weights, float activations, no calibration"}[precision]


@register_pass
class Export(Pass):
    name = "export"
    Config = ExportConfig
    produces = frozenset({ARTIFACTS})
    stage = 3
    summary = "convert to TFLite (LiteRT) and ONNX files with a fixed batch, one per precision"

    def _formats(self, target) -> list[str]:
        return list(dict.fromkeys(self.config.formats or target.formats))

    def check(self, plan: PlanContext) -> list[str]:
        target = plan.target
        problems = [f"target {target.name} runs {' and '.join(target.formats)} only; "
                    f"remove {fmt} from the export formats"
                    for fmt in self._formats(target) if fmt not in target.formats]
        return problems

    def run(self, state: ModelState, ctx: RunContext) -> ModelState:
        from edgesparse.convert.onnx import quantize_onnx, to_onnx
        from edgesparse.convert.tflite import to_tflite
        from edgesparse.errors import UserError
        from edgesparse.graph.layers import training_only_layers

        leftovers = training_only_layers(state.model)
        if leftovers:      # tfmot's strip_pruning lesson: gates and masks never reach an artifact
            raise UserError(f"cannot export: the model still has training-only layers ({', '.join(leftovers)}); "
                            "the pass that inserted them must remove them (graph.surgery.remove)")
        target = ctx.target
        quant = state.quantization or {"precisions": ["fp32"], "io": "float32",
                                       "calibration": {"samples": 0, "source": "none"}}
        precisions = list(quant["precisions"])
        io = quant.get("io", "float32")
        samples = int(quant.get("calibration", {}).get("samples") or 0) or None
        batch = target.constraints.batch
        jobs, skipped = [], []
        qat = bool(quant.get("qat"))
        for fmt in self._formats(target):
            for precision in precisions:
                if qat and precision != "int8":
                    skipped.append({"format": fmt, "precision": precision,
                                    "reason": "the model was trained quantization-aware: it exports as int8 only"})
                elif fmt == "onnx" and precision not in ONNX_PRECISIONS:
                    skipped.append({"format": fmt, "precision": precision,
                                    "reason": f"no ONNX {precision} variant: ONNX artifacts are fp32 and int8 (QDQ)"})
                else:
                    jobs.append((fmt, precision))
        if samples is None and "int8" in precisions:
            samples = len(ctx.data.x_calib)

        task = ctx.progress.task("export", total=len(jobs))
        ctx.workdir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="export-") as tmp:
            onnx_fp32: Path | None = None
            for fmt, precision in jobs:
                task.update(description=f"export {fmt} {precision}")
                path = ctx.workdir / f"{state.name}-{precision}.{EXTENSIONS[fmt]}"
                if fmt == "tflite":
                    data = to_tflite(state.model, precision, batch=batch, io=io,
                                     x_calib=ctx.data.x_calib, calibration_samples=samples or 1)
                    path.write_bytes(data)
                    tensors = read_tflite(path)
                    io_dtype = tensors.input_tensors()[0].dtype
                else:
                    if onnx_fp32 is None:
                        onnx_fp32 = to_onnx(state.model, (path if precision == "fp32" else Path(tmp) / "fp32.onnx"),
                                            opset=self.config.opset, batch=batch)
                    if precision == "fp32" and onnx_fp32 != path:
                        path.write_bytes(onnx_fp32.read_bytes())
                    elif precision == "int8" and qat:
                        # tf2onnx turns the QAT fake-quant nodes into QuantizeLinear/DequantizeLinear
                        # pairs with the learned ranges: re-quantizing would stack a second set.
                        path.write_bytes(onnx_fp32.read_bytes())
                    elif precision == "int8":
                        quantize_onnx(onnx_fp32, path, ctx.data.x_calib, calibration_samples=samples or 1,
                                      batch=batch or 1)
                    io_dtype = "float32"
                state.artifacts.append(Artifact(path=path, format=fmt, precision=precision, io_dtype=io_dtype,
                                                note=note_for(fmt, precision, target, quant)))
                task.advance(1)
        task.close()
        state.record(self.name, artifacts=[a.name for a in state.artifacts], skipped=skipped,
                     batch=batch, opset=self.config.opset if "onnx" in self._formats(target) else None)
        return state
