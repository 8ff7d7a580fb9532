"""quantize: decide the precisions and I/O of the artifacts, and the calibration they use.

Post-training quantization happens inside the converters (export), so this pass does not touch
the model (quantization-aware training is a later pass). It fixes the plan that export follows
(`state.quant_plan`, a `QuantPlan`), and it is where the plan is checked against the target before
any work (Edge TPU: int8/uint8 I/O only). A model trained quantization-aware by an earlier qat
pass (`state.qat_trained`) keeps that in the plan: export then builds int8 from the learned ranges.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from edgesparse.pipeline import QUANT_PLAN, Pass, PassConfig, PlanContext, RunContext, Stage, register_pass
from edgesparse.state import Calibration, ModelState, QuantizeFacts, QuantPlan

Precision = Literal["int8", "fp32", "fp16", "dynamic"]
IoDtype = Literal["float32", "int8", "uint8"]

SYNTHETIC_WARNING = ("int8 calibrated on synthetic inputs: accuracy of int8 artifacts is not "
                     "meaningful; pass --data")


class QuantizeConfig(PassConfig):
    precisions: list[Precision] = Field(default_factory=lambda: ["int8"],
                                        description="artifacts to build, one per precision")
    io: IoDtype | None = Field(None, description="I/O dtype of int8 artifacts "
                                                 "(default: the first the target allows)")
    calibration_samples: int = Field(200, ge=1, description="calibration samples for int8 ranges")

    @field_validator("precisions")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("give at least one precision")
        return list(dict.fromkeys(v))   # keep order, drop repeats


def resolve_io(config: QuantizeConfig, target) -> str:
    return config.io or target.constraints.int8_io[0]


@register_pass
class Quantize(Pass):
    name = "quantize"
    Config = QuantizeConfig
    produces = frozenset({QUANT_PLAN})
    changes_model = False
    stage = Stage.QUANTIZE
    summary = "choose artifact precisions (int8 full-integer, fp16, dynamic-range, fp32) and int8 I/O"

    def check(self, plan: PlanContext) -> list[str]:
        problems = []
        target = plan.target
        allowed = list(target.constraints.int8_io)
        io = resolve_io(self.config, target)
        if "int8" in self.config.precisions and io not in allowed:
            problems.append(f"target {target.name} takes int8 artifacts with {' or '.join(allowed)} "
                            f"I/O, not {io}; set io: {allowed[0]}")
        if target.constraints.operator_set == "edgetpu":
            other = [p for p in self.config.precisions if p != "int8"]
            if other:
                problems.append(f"target {target.name} runs full-integer int8 models only; "
                                f"remove {', '.join(other)} from precisions")
        return problems

    def for_model(self, model, target):
        """A default recipe's int8 gives way to dynamic-range int8 (int8 weights, float
        activations) where the converter cannot make full-integer int8 of the model; the Edge TPU
        runs full-integer only, so there the export's own error stands."""
        from edgesparse.convert.tflite import int8_crashing_layers

        if "int8" not in self.config.precisions or target.constraints.operator_set == "edgetpu":
            return self, None
        crashing = int8_crashing_layers(model)
        if not crashing:
            return self, None
        precisions = list(dict.fromkeys("dynamic" if p == "int8" else p for p in self.config.precisions))
        milder = Quantize(self.config.model_copy(update={"precisions": precisions}))
        return milder, (f"builds dynamic-range int8 instead of full-integer int8: TensorFlow's "
                        f"converter crashes on full-integer {', '.join(crashing[:3])}; a recipe with "
                        "precisions [int8] is refused for this model")

    def run(self, state: ModelState, ctx: RunContext) -> ModelState:
        cfg: QuantizeConfig = self.config
        data = ctx.data
        available = 0 if data.x_calib is None else len(data.x_calib)
        samples = min(cfg.calibration_samples, available)
        source = "real" if data.real else "synthetic"
        io = resolve_io(cfg, ctx.target)
        qat = state.qat_trained or (state.quant_plan is not None and state.quant_plan.qat)
        state.quant_plan = QuantPlan(precisions=tuple(cfg.precisions), io=io,
                                     calibration=Calibration(samples, source), qat=qat)
        if "int8" in cfg.precisions and not data.real:
            state.warn(SYNTHETIC_WARNING)
        # Synthetic inputs are as many as we made (SYNTHETIC_WARNING says what they mean); only the
        # user's data can be "all the data has".
        if "int8" in cfg.precisions and data.real and samples < cfg.calibration_samples:
            state.warn(f"int8 calibration uses {samples} samples, fewer than the "
                       f"{cfg.calibration_samples} asked for: that is all the data has")
        state.record(QuantizeFacts(precisions=list(cfg.precisions), io=io, calibration_samples=samples,
                                   calibration_source=source, qat=qat))
        return state
