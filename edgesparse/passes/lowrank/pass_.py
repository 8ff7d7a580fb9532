"""The `lowrank` pass: factorise Dense and Conv2D layers into thinner chains (docs/lowrank.md).

Recipe examples:

    - pass: lowrank
      macs: 0.5                  # keep at most half of the MACs
      method: auto               # svd | tucker2 | spatial | auto
      finetune_epochs: 2
    - lowrank: {energy: 0.95}    # or vbmf: true, or ranks: {dense_1: 16}

The new layers are ordinary Dense/Conv2D layers: prune, quantize, export and verify handle them.
"""
from __future__ import annotations

import math
from typing import Literal

from pydantic import Field

from edgesparse.errors import UserError
from edgesparse.pipeline import Pass, PassConfig, PlanContext, RunContext, Stage, register_pass
from edgesparse.state import ModelState


class LowRankConfig(PassConfig):
    method: Literal["auto", "svd", "tucker2", "spatial"] = Field(
        "auto", description="conv form: tucker2, spatial, auto (fewer MACs of the two) or svd "
                            "(Dense and 1x1 convs only); Dense layers always take the SVD")
    macs: float | None = Field(None, description="fraction of MACs to KEEP, in (0, 1]: 0.5 = half the MACs")
    energy: float | None = Field(None, description="kept spectral energy per layer, in (0, 1]")
    vbmf: bool = Field(False, description="ranks from analytic EVBMF (Nakajima et al. 2013)")
    ranks: dict[str, int | list[int]] | None = Field(
        None, description="rank per layer name, e.g. {dense_1: 16} (Tucker-2: [r_in, r_out]); pinned")
    round_to: int | None = Field(None, description="ranks are multiples of this; default: the target's SIMD width")
    refit: bool = Field(True, description="least-squares refit of each last factor on calibration outputs")
    measure: bool = Field(False, description="time a few rank widths per layer in LiteRT on this host (not the "
                                                "device); keep the fastest, and a factorisation only where faster")
    finetune_epochs: int = Field(0, ge=0, le=1000, description="epochs of fine-tuning afterwards (needs labels)")
    finetune_lr: float = Field(3e-4, description="Adam learning rate of the fine-tune")
    batch_size: int = 64
    calibration_samples: int = Field(512, description="calibration inputs for the whitening and the refit")
    seed: int = 0


def config_problems(c: LowRankConfig) -> list[str]:
    """Everything wrong with a lowrank config that can be seen without the model."""
    problems = []
    given = [k for k in ("macs", "energy") if getattr(c, k) is not None] + (["vbmf"] if c.vbmf else [])
    if len(given) > 1:
        problems.append(f"give one rank selection (macs, energy or vbmf: true), not {' and '.join(given)}")
    if not given and not c.ranks:
        problems.append("say how to pick ranks: macs (fraction of MACs kept, e.g. 0.5), energy (e.g. 0.95), "
                        "vbmf: true, or ranks: {layer: r}")
    for k in ("macs", "energy"):
        v = getattr(c, k)
        if v is not None and not (0 < v <= 1 and math.isfinite(v)):
            problems.append(f"{k} {v} is outside (0, 1]; it is the fraction KEPT, e.g. 0.5")
    for name, r in (c.ranks or {}).items():
        rs = [r] if isinstance(r, int) else list(r)
        if not rs or len(rs) > 2 or any(int(v) < 1 for v in rs):
            problems.append(f"ranks of {name} is {r}; give a rank >= 1 (or [r_in, r_out] for Tucker-2)")
    if c.round_to is not None and c.round_to < 1:
        problems.append("round_to must be at least 1")
    if c.calibration_samples < 1:
        problems.append("calibration_samples must be at least 1")
    if not (c.finetune_lr > 0 and math.isfinite(c.finetune_lr)):
        problems.append("finetune_lr must be a positive number")
    return problems


@register_pass
class LowRankPass(Pass):
    """Replace Dense/Conv2D layers by low-rank chains (data-aware SVD, Tucker-2, spatial SVD)."""

    name = "lowrank"
    Config = LowRankConfig
    changes_model = True
    stage = Stage.TRANSFORM
    summary = "low-rank factorisation: whitened SVD (Dense), Tucker-2 / spatial SVD (Conv2D), refit"

    def check(self, plan: PlanContext) -> list[str]:
        problems = config_problems(self.config)
        if self.config.finetune_epochs > 0 and not plan.data.labelled:
            problems.append("finetune_epochs > 0 needs labelled data; pass --data with labels or set "
                            "finetune_epochs: 0")
        if any(p.name == "sparsify" for p in plan.passes[:plan.index]):
            # The factors replace the kernels sparsify zeroed: the shipped file had none of the
            # sparsity (or the 2:4 pattern) the report still claimed.
            problems.append("lowrank after sparsify replaces the kernels sparsify masked, so their zeros "
                            "are lost; put lowrank before sparsify")
        return problems

    def scaled(self, strength: float) -> "LowRankPass | None":
        """Gentler for the accuracy-budget back-off: keep 1 - (1 - kept) x strength."""
        c = self.config
        if not 0 < strength < 1:
            return None
        for kind in ("macs", "energy"):
            kept = getattr(c, kind)
            if kept is not None:
                return LowRankPass(c.model_copy(update={kind: 1 - (1 - kept) * strength}))
        return None

    def run(self, state: ModelState, ctx: RunContext) -> ModelState:
        from edgesparse.passes.lowrank.procedure import Settings, factorise_model

        c = self.config
        problems = config_problems(c)
        if problems:
            raise UserError(f"lowrank: {problems[0]}")
        data = ctx.data
        if not data.real:
            state.warn("lowrank: calibration inputs are synthetic; the whitening and the refit fit noise. "
                       "Pass --data for a faithful result.")
        if c.finetune_epochs > 0 and not data.labelled:
            raise UserError("lowrank: finetune_epochs > 0 needs labelled data; pass --data with labels")
        settings = Settings(
            method=c.method, macs=c.macs, energy=c.energy, vbmf=c.vbmf,
            ranks={k: tuple([v] if isinstance(v, int) else v) for k, v in (c.ranks or {}).items()},
            round_to=c.round_to or int(getattr(ctx.target, "simd_width", 1) or 1),
            refit=c.refit, measure=c.measure, threads=int(getattr(ctx.target, "threads", 1) or 1),
            finetune_epochs=c.finetune_epochs, finetune_lr=c.finetune_lr, batch_size=c.batch_size,
            seed=c.seed + ctx.seed)
        labelled = data.labelled
        result = factorise_model(
            state.model, settings, data.x_calib[: c.calibration_samples],
            train=(data.x_train, data.y_train) if labelled else None,
            validation=(data.x_val, data.y_val) if labelled and data.x_val is not None else None,
            progress=ctx.progress)
        state.model = result.model
        state.record(self.name, **result.facts)
        for note in result.notes:
            state.warn(f"lowrank: {note}")
        return state
