"""export: write one artifact per (format, precision) into the output folder.

Precisions come from the quantize pass's plan (`state.quant_plan`; export needs one). Files are named
`<model>-<precision>.tflite|.onnx`. TFLite: TFLiteConverter on a traced function with the batch
fixed (trap 6). ONNX: tf2onnx with an explicit input signature (trap 7); int8 through
onnxruntime's static QDQ quantization on the same calibration samples as TFLite. ONNX has no
fp16 or dynamic-range variant here: those are skipped with a recorded note, not an error.

A quantization-aware-trained model (`QuantPlan.qat`) exports as int8 only: its fake-quant ops
carry the learned ranges. LiteRT's converter reads them; tf2onnx turns them into
QuantizeLinear/DequantizeLinear pairs, so its ONNX output is already the int8 artifact (running
quantize_static on it would stack a second set of QDQ nodes on the learned ones).
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Literal

from pydantic import Field

from edgesparse.runtime.tflite_file import read_tflite
from edgesparse.errors import UserError
from edgesparse.pipeline import ARTIFACTS, QUANT_PLAN, Pass, PassConfig, PlanContext, RunContext, Stage, register_pass
from edgesparse.state import Artifact, ExportFacts, ModelState, QuantPlan, Skipped

Format = Literal["tflite", "onnx"]
EXTENSIONS = {"tflite": "tflite", "onnx": "onnx"}
ONNX_PRECISIONS = ("fp32", "int8")


class ExportConfig(PassConfig):
    formats: list[Format] | None = Field(None, description="artifact formats (default: the target's)")
    opset: int = Field(17, ge=13, le=18, description="ONNX opset (tf2onnx 1.17 writes 13..18)")


def note_for(fmt: str, precision: str, target, quant: QuantPlan) -> str:
    """Why this variant exists, in the words of the target profile where it has some."""
    if fmt == "tflite" and precision == "fp16" and target.delegate == "nnapi":
        return "GPU-delegate variant (fp16)"
    for v in target.variants_on_request:
        if v.format == fmt and v.precision == precision and v.note:
            return v.note
    if precision == "int8":
        if quant.qat:
            note = "int8 from quantization-aware training (ranges learned in training)"
        else:
            io = quant.io if fmt == "tflite" else "float32"
            kind = "full-integer int8" if fmt == "tflite" else "static int8 QDQ"
            note = (f"{kind}, {io} I/O, calibrated on {quant.calibration.samples} "
                    f"{quant.calibration.source} samples")
        if fmt == "onnx":
            # A plain InferenceSession on x86 without VNNI saturates u8s8 products and measures
            # less than we verified (runtime/artifact.py, _open_onnx): say how we ran it.
            note += ("; verified with onnxruntime's session.x64quantprecision=1, which x86 CPUs "
                     "without VNNI need to reproduce the figure")
        return note
    return {"fp32": "float baseline", "fp16": "fp16 weights (half the size of fp32)",
            "dynamic": "dynamic-range: int8 weights, float activations, no calibration"}[precision]


@register_pass
class Export(Pass):
    name = "export"
    Config = ExportConfig
    needs = frozenset({QUANT_PLAN})
    produces = frozenset({ARTIFACTS})
    stage = Stage.EXPORT
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
        quant = state.quant_plan
        if quant is None:     # Pipeline.validate refuses this plan; a direct call gets the same words
            raise UserError("export needs a quantization plan; run a quantize pass before it "
                            "(precisions: [fp32] for float artifacts only)")
        io, qat = quant.io, quant.qat
        samples = max(1, quant.calibration.samples)
        batch = target.constraints.batch
        jobs, skipped = [], []
        for fmt in self._formats(target):
            for precision in quant.precisions:
                if qat and precision != "int8":
                    skipped.append(Skipped(fmt, precision, "the model was trained quantization-aware: "
                                                           "it exports as int8 only"))
                elif fmt == "onnx" and precision not in ONNX_PRECISIONS:
                    skipped.append(Skipped(fmt, precision, f"no ONNX {precision} variant: "
                                                           "ONNX artifacts are fp32 and int8 (QDQ)"))
                else:
                    jobs.append((fmt, precision))

        task = ctx.progress.task("export", total=len(jobs))
        ctx.workdir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="export-") as tmp:
            onnx_fp32: Path | None = None
            for fmt, precision in jobs:
                task.update(description=f"export {fmt} {precision}")
                path = ctx.workdir / f"{state.name}-{precision}.{EXTENSIONS[fmt]}"
                if fmt == "tflite":
                    data = to_tflite(state.model, precision, batch=batch, io=io, sparse=state.sparse_storage,
                                     x_calib=ctx.data.x_calib, calibration_samples=samples)
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
                        quantize_onnx(onnx_fp32, path, ctx.data.x_calib, calibration_samples=samples,
                                      batch=batch or 1)
                    io_dtype = "float32"
                state.artifacts.append(Artifact(path=path, format=fmt, precision=precision, io_dtype=io_dtype,
                                                note=note_for(fmt, precision, target, quant)))
                task.advance(1)
        task.close()
        state.record(ExportFacts(artifacts=[a.name for a in state.artifacts], skipped=skipped, batch=batch,
                                 opset=self.config.opset if "onnx" in self._formats(target) else None))
        return state
