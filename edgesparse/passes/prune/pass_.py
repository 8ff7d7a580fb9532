"""The `prune` pass: structured channel pruning that makes the network genuinely smaller.

Recipe example:

    - prune: {macs: 0.5, criterion: thinet, allocation: uniform, finetune_epochs: 3}

`macs: 0.5` means the pruned model keeps at most 50% of the MACs (a 2x reduction); `params`
likewise keeps a fraction of the parameters; `ratio` is the fraction of channels REMOVED.
Exactly one of the three. See docs/pruning.md.
"""
from __future__ import annotations

import math
from typing import Literal

from pydantic import Field

from edgesparse.errors import UserError
from edgesparse.pipeline import Pass, PassConfig, PlanContext, RunContext, Stage, register_pass
from edgesparse.state import ModelState


class PruneConfig(PassConfig):
    criterion: str = Field("l1", description="l1, l2, bn_scale, group_norm, movement, taylor, activation, apoz, random, thinet")
    ratio: float | None = Field(None, description="fraction of channels to REMOVE, in [0, 1)")
    macs: float | None = Field(None, description="fraction of MACs to KEEP, in (0, 1]: 0.5 = half the MACs")
    params: float | None = Field(None, description="fraction of parameters to KEEP, in (0, 1]")
    allocation: Literal["uniform", "global", "sensitivity"] = "uniform"
    min_channels: int = Field(1, description="no layer keeps fewer channels than this")
    round_to: int | None = Field(None, description="kept channel counts are multiples of this; "
                                                  "default: the target's SIMD width")
    reconstruct: bool = Field(True, description="least-squares refit of the following layers")
    steps: int = Field(1, le=100, description="prune in this many steps (fine-tuning between them)")
    finetune_epochs: int = Field(0, le=1000, description="epochs of fine-tuning after each step (needs labels)")
    finetune_lr: float = Field(3e-4, description="Adam learning rate of the fine-tune")
    batch_size: int = 64
    sensitivity: bool = Field(False, description="measure accuracy vs ratio per group (table + plot)")
    sensitivity_ratios: list[float] = [0.25, 0.5, 0.75, 0.9]
    calibration_samples: int = Field(512, description="calibration inputs for data-aware steps")
    seed: int = 0
    blocks: int | list[str] = Field(0, description="first remove residual blocks whole (an Add with an identity "
                                                   "path): a count (the branches that add least go first) or "
                                                   "the blocks' Add layer names (a search's choice)")
    per_group: dict[str, float] | None = Field(
        None, description="keep fraction per channel group, keyed by a producer layer name "
                          "(e.g. {conv1: 0.5}); pins that group's width, the budget goes to the others")


def config_problems(c: PruneConfig) -> list[str]:
    """Everything wrong with a prune config that can be seen without the model."""
    from edgesparse.passes.prune.criteria import CRITERIA

    problems = []
    given = [k for k in ("ratio", "macs", "params") if getattr(c, k) is not None]
    if len(given) > 1 or (not given and not c.per_group):
        problems.append("give exactly one budget: ratio (channels removed), macs or params (fraction kept), "
                        f"or per_group widths alone; got {', '.join(given) or 'none'}")
    if c.ratio is not None and not (0 <= c.ratio < 1 and math.isfinite(c.ratio)):
        problems.append(f"ratio {c.ratio} is outside [0, 1); it is the fraction of channels removed, e.g. 0.5")
    for k in ("macs", "params"):
        v = getattr(c, k)
        if v is not None and not (0 < v <= 1 and math.isfinite(v)):
            problems.append(f"{k} {v} is outside (0, 1]; it is the fraction KEPT, e.g. 0.5 for half")
    if c.criterion not in CRITERIA:
        problems.append(f"unknown criterion {c.criterion!r}; choose one of {', '.join(sorted(CRITERIA))}")
    if c.min_channels < 1:
        problems.append("min_channels must be at least 1")
    if c.round_to is not None and c.round_to < 1:
        problems.append("round_to must be at least 1")
    if isinstance(c.blocks, int) and c.blocks < 0:
        problems.append(f"blocks {c.blocks} is negative; give a count of residual blocks to remove, or their Add names")
    if c.steps < 1 or c.finetune_epochs < 0 or c.calibration_samples < 1:
        problems.append("steps and calibration_samples must be >= 1 and finetune_epochs >= 0")
    if not (c.finetune_lr > 0 and math.isfinite(c.finetune_lr)):
        problems.append("finetune_lr must be a positive number")
    if any(not (0 < r < 1) for r in c.sensitivity_ratios) or not c.sensitivity_ratios:
        problems.append("sensitivity_ratios must be fractions in (0, 1)")
    bad = [k for k, v in (c.per_group or {}).items() if not (0 < v <= 1 and math.isfinite(v))]
    if bad:
        problems.append(f"per_group keep fraction of {bad[0]} is {c.per_group[bad[0]]}; give a fraction "
                        "in (0, 1], e.g. 0.5 to keep half of its channels")
    return problems


def needs_labels(c: PruneConfig) -> bool:
    from edgesparse.passes.prune.criteria import CRITERIA

    crit = CRITERIA.get(c.criterion)
    return bool(crit and crit.needs_labels) or c.finetune_epochs > 0


@register_pass
class PrunePass(Pass):
    """Remove whole channels (dependency-aware), refit the following layers, optionally fine-tune."""

    name = "prune"
    Config = PruneConfig
    changes_model = True
    stage = Stage.TRANSFORM
    summary = "structured channel pruning: a genuinely smaller dense model (MACs/params/ratio budget)"

    def check(self, plan: PlanContext) -> list[str]:
        problems = config_problems(self.config)
        if needs_labels(self.config) and not plan.data.labelled:
            why = "finetune_epochs > 0" if self.config.finetune_epochs > 0 else f"criterion {self.config.criterion}"
            problems.append(f"{why} needs labelled data; pass --data with labels, or use another "
                            "criterion / finetune_epochs: 0")
        return problems

    def for_model(self, model, target) -> "tuple[PrunePass | None, str | None]":
        """A default recipe's prune on this model: left out when no channel group can be pruned,
        and a MAC or parameter budget below the least the model can keep capped at that floor."""
        from edgesparse.passes.prune.allocation import reachable
        from edgesparse.passes.prune.procedure import least_kept

        c = self.config
        kind = next((k for k in ("macs", "params") if getattr(c, k) is not None), None)
        floor, why = least_kept(model, kind or "macs", c.min_channels, _round_to(c, target))
        if floor is None:
            return None, (f"{why}; to compress it, give a --recipe with a sparsify pass "
                          "(`edgesparse inspect MODEL` shows why)")
        if kind is None or getattr(c, kind) >= floor - 1e-9:
            return self, None
        least = reachable(floor)
        if floor > 1.0 - DEFAULT_MIN_SAVING:
            # The probe's Conv1D-LSTM: capped at 99.6% of its MACs, then a fine-tune and 15 epochs of
            # distillation for nothing a device would notice.
            return None, (f"pruning can remove at most {100 * (1 - floor):.1f}% of its {kind} (every channel "
                          f"group at min_channels={c.min_channels}, round_to={_round_to(c, target)}), too little "
                          f"for the fine-tune and distillation it needs; to prune anyway, give a --recipe whose "
                          f"prune pass has {kind}: {least:g}")
        return PrunePass(c.model_copy(update={kind: least})), (
            f"{kind}: {getattr(c, kind):g} capped at {least:g}, the least this model can keep "
            f"(every channel group at min_channels={c.min_channels}, round_to={_round_to(c, target)}); "
            f"to ask for it explicitly, give a --recipe whose prune pass has {kind}: {least:g}")

    def scaled(self, strength: float) -> "PrunePass | None":
        """A gentler prune for the accuracy-budget back-off: `strength` of the configured
        reduction (ratio x strength; for macs/params and per-group keep fractions,
        1 - (1 - kept) x strength)."""
        c = self.config
        if not 0 < strength < 1:
            return None
        if c.per_group:
            gentler = {k: 1 - (1 - v) * strength for k, v in c.per_group.items()}
            c = c.model_copy(update={"per_group": gentler})
            if c.ratio is None and c.macs is None and c.params is None:
                return PrunePass(c)
        if c.ratio is not None:
            return PrunePass(c.model_copy(update={"ratio": c.ratio * strength}))
        kind = "macs" if c.macs is not None else "params"
        kept = getattr(c, kind)
        if kept is None:
            return None
        return PrunePass(c.model_copy(update={kind: 1 - (1 - kept) * strength}))

    def run(self, state: ModelState, ctx: RunContext) -> ModelState:
        from edgesparse.passes.prune.allocation import Budget
        from edgesparse.passes.prune.procedure import Data, Settings, prune

        c = self.config
        problems = config_problems(c)
        if problems:
            raise UserError(f"prune: {problems[0]}")
        data = ctx.data
        if not data.real:
            state.warn("prune: calibration inputs are synthetic; data-aware criteria and the "
                       "reconstruction fit noise. Pass --data for a faithful result.")
        labelled = data.labelled
        if needs_labels(c) and not labelled:
            raise UserError("prune: this configuration needs labelled data (taylor/movement criterion or fine-tuning); "
                            "pass --data with labels")
        # per_group alone pins the groups it names and leaves the others whole (ratio 0).
        kind = next((k for k in ("ratio", "macs", "params") if getattr(c, k) is not None), "ratio")
        round_to = _round_to(c, ctx.target)
        settings = Settings(
            budget=Budget(kind, float(getattr(c, kind) or 0.0)), criterion=c.criterion, allocation=c.allocation,
            min_channels=c.min_channels, round_to=round_to, reconstruct=c.reconstruct, steps=c.steps,
            finetune_epochs=c.finetune_epochs, finetune_lr=c.finetune_lr, batch_size=c.batch_size,
            sensitivity=c.sensitivity, sensitivity_ratios=tuple(c.sensitivity_ratios), seed=c.seed + ctx.seed,
            per_group=c.per_group)
        d = Data(x_calib=data.x_calib[: c.calibration_samples],
                 x_train=data.x_train if labelled else None, y_train=data.y_train if labelled else None,
                 x_val=data.x_val if labelled else None, y_val=data.y_val if labelled else None)
        if c.blocks:
            state.model = _drop_blocks(state, c.blocks, data.x_calib[: c.calibration_samples])
        result = prune(state.model, settings, d, ctx.progress, ctx.workdir)
        state.model = result.model
        state.record(self.name, **result.facts, notes=result.notes)
        return state


DEFAULT_MIN_SAVING = 0.05   # a default recipe's prune that cannot save this fraction is left out


def _round_to(c: PruneConfig, target) -> int:
    """Kept channel counts are multiples of this: the config's, else the target's SIMD width
    (`edgesparse prune` may have no target)."""
    return c.round_to or int(getattr(target, "simd_width", 1) or 1)


def _drop_blocks(state: ModelState, n: int | list[str], x):
    """Depth removal before the channel cut: the `n` residual blocks whose branch adds least, or
    the blocks whose Add layers `n` names."""
    from edgesparse.graph.depth import branch_ratios, drop_blocks, residual_blocks
    from edgesparse.graph.stats import count_macs

    blocks = residual_blocks(state.model)
    ratios = branch_ratios(state.model, blocks, x)
    if isinstance(n, list):
        known = {b.add for b in blocks}
        unknown = [a for a in n if a not in known]
        if unknown:
            raise UserError(f"prune: blocks names {unknown[0]!r}, which is not the Add of a removable residual "
                            f"block; the model's are: {', '.join(sorted(known)) or 'none'}")
        chosen = [b for b in blocks if b.add in set(n)]
    elif len(blocks) < n:
        raise UserError(f"prune: blocks: {n} asks for more residual blocks than the model has "
                        f"({len(blocks)} with an identity path); lower blocks")
    else:
        chosen = sorted(blocks, key=lambda b: ratios[b.add])[:n]
    model = drop_blocks(state.model, chosen)
    state.record("prune", depth={"removed": [b.describe() | {"branch_ratio": round(ratios[b.add], 4)}
                                             for b in chosen],
                                 "candidates": len(blocks), "macs_before": count_macs(state.model),
                                 "macs_after": count_macs(model)})
    return model
