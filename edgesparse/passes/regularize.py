"""The `regularize` pass: train with a sparsity penalty, so the `prune` (or `sparsify`) pass after
it cuts what training already drove to zero.

Recipe examples:

    - regularize: {method: group_lasso, width: 0.25, epochs: 20}      # then prune: {ratio: 0.75, criterion: group_norm}
    - regularize: {method: slimming, macs: 0.5}                      # then prune: {macs: 0.5, criterion: bn_scale}
    - regularize: {method: l1, sparsity: 0.9}                        # then sparsify: {sparsity: 0.9}
    - regularize: {method: gates, macs: 0.3, epochs: 20}             # cuts by itself; prune not needed
    - regularize:
        epochs: 30
        stages: [{until: 0.3, method: l1, strength: 1.0e-4},
                 {until: 1.0, method: group_lasso, macs: 0.5, schedule: cubic}]

Methods (the penalties live in `train/regularizers.py`, the loop is `train/trainer.py`):
- `group_lasso`: block soft-thresholding of every channel unit (all the weight slices it owns
  across its dependency group), after each optimizer step;
- `slimming`: the same on BatchNorm scales only (network slimming), for BN-bearing groups;
- `l1`: elementwise soft-thresholding of the Dense/Conv kernels (for `sparsify`);
- `gates`: L0 hard-concrete gates (train/gates.py) with an expected-MAC penalty, trained at their
  own learning rate, then folded into the producers and the closed channels cut here (last stage).

The target (`width`: fraction of each group's channels kept; `macs`: fraction of MACs kept, as a
uniform width the way prune's uniform allocation meets it; `sparsity`: fraction of kernel zeros)
is followed by a controller, not a hand-tuned lambda: each group's strength rises while more
units are alive than the schedule allows and falls once they are not (recorded per epoch). The
end is measured, not assumed: the facts say whether the target was reached, and a miss warns.
"""
from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgesparse.errors import UserError
from edgesparse.pipeline import Pass, PassConfig, PlanContext, RunContext, Stage, register_pass
from edgesparse.state import ModelState

Method = Literal["group_lasso", "slimming", "l1", "gates"]
STRUCTURED = ("group_lasso", "slimming")
CUTTER = {"group_lasso": ("prune",), "slimming": ("prune",), "l1": ("sparsify", "prune")}   # gates cut themselves
GATE_TRAVEL = 4.6         # log_alpha from a 90%-open gate (the start) to a shut one
GATE_TOLERANCE = 0.05     # the gates end within +-5% of the requested MACs (relative)
BN_SAMPLES = 4096         # training inputs the BatchNorm statistics are re-estimated on


class StageConfig(BaseModel):
    """One stage: a method and its target over a fraction of the run (`until` ends it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    until: float = Field(1.0, description="fraction of the epochs at which this stage ends; the last is 1.0")
    method: Method = "group_lasso"
    width: float | None = Field(None, description="fraction of each channel group KEPT (structured methods)")
    macs: float | None = Field(None, description="fraction of MACs KEPT (structured methods)")
    sparsity: float | None = Field(None, description="fraction of kernel weights driven to zero (l1)")
    schedule: Literal["constant", "polynomial", "cubic"] = Field(
        "cubic", description="how the target is approached: at once, 1-(1-t)^power, or cubic (Zhu & Gupta)")
    power: float = Field(2.0, gt=0, description="the exponent of the polynomial schedule")
    ramp_end: float = Field(0.6, gt=0, le=1, description="fraction of the stage by which the target is reached")
    strength: float | None = Field(None, gt=0, description="a fixed penalty strength instead of the controller")

    @model_validator(mode="after")
    def _target(self):
        given = [k for k in ("width", "macs", "sparsity") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"give one target per stage, not {' and '.join(given)}")
        if self.method == "l1" and (self.width is not None or self.macs is not None):
            raise ValueError("l1 is unstructured: give it sparsity (fraction of zeros), not width or macs")
        if self.method in STRUCTURED and self.sparsity is not None:
            raise ValueError(f"{self.method} removes channels: give it width or macs, not sparsity")
        for k in ("width", "macs"):
            v = getattr(self, k)
            if v is not None and not (0 < v < 1 and math.isfinite(v)):
                raise ValueError(f"{k} {v} is outside (0, 1); it is the fraction KEPT, e.g. 0.5")
        if self.sparsity is not None and not (0 < self.sparsity < 1):
            raise ValueError(f"sparsity {self.sparsity} is outside (0, 1); it is the fraction of zeros")
        if self.method == "gates" and (self.macs is None or self.strength is not None):
            raise ValueError("gates take a MAC target (macs: the fraction kept, e.g. 0.3) and find where to "
                             "cut; they have no width, sparsity or fixed strength")
        if not given and self.strength is None:
            raise ValueError(f"{self.method} needs a target (width, macs or sparsity) or a fixed strength")
        return self

    @property
    def target(self) -> tuple[str, float] | None:
        for k in ("width", "macs", "sparsity"):
            if getattr(self, k) is not None:
                return k, float(getattr(self, k))
        return None


class RegularizeConfig(PassConfig):
    method: Method = Field("group_lasso", description="group_lasso, slimming or l1 (one stage)")
    width: float | None = Field(None, description="fraction of each channel group KEPT")
    macs: float | None = Field(None, description="fraction of MACs KEPT (a uniform width that meets it)")
    sparsity: float | None = Field(None, description="l1: fraction of kernel weights driven to zero")
    schedule: Literal["constant", "polynomial", "cubic"] = "cubic"
    power: float = Field(2.0, gt=0)
    ramp_end: float = Field(0.6, gt=0, le=1)
    strength: float | None = Field(None, gt=0)
    stages: list[StageConfig] | None = Field(None, description="several stages instead of the one above")
    epochs: int = Field(20, ge=1, le=1000)
    learning_rate: float = Field(1e-3, gt=0)
    gate_learning_rate: float | None = Field(None, gt=0, description="gates: their own Adam's rate "
                                             "(default 10x learning_rate, at which a gate closes, raised so a gate can shut "
                                             "within the ramp on short runs)")
    control: bool = Field(False, description="also train the final architecture from scratch for the same "
                                             "epochs (the control, in the facts)")
    batch_size: int = Field(64, ge=1)
    min_channels: int = Field(1, ge=1, description="no group is driven below this many channels")
    round_to: int | None = Field(None, ge=1, description="kept widths are multiples of this; default: "
                                                         "the target's SIMD width (as prune rounds)")
    max_drop: float = Field(20.0, gt=0, description="validation accuracy points below the start that "
                                                    "count as a collapse (training stops with the trajectory)")

    @model_validator(mode="after")
    def _stages(self):
        if self.stages is None:
            self.stage_list()           # the one-stage form is checked as a stage (its ValueError)
            return self
        ends = [s.until for s in self.stages]
        if not ends:
            raise ValueError("stages is empty; give at least one {until: 1.0, method: ...}")
        if any(b <= a for a, b in zip(ends, ends[1:])) or ends[0] <= 0:
            raise ValueError(f"stage fractions must increase: got until {ends}")
        if abs(ends[-1] - 1.0) > 1e-9:
            raise ValueError(f"the last stage must end at until: 1.0 (the end of training), not {ends[-1]}")
        if any(s.method == "gates" for s in self.stages[:-1]):
            raise ValueError("gates must be the last stage: they cut the model when they finish")
        return self

    def stage_list(self) -> list[StageConfig]:
        if self.stages is not None:
            return list(self.stages)
        return [StageConfig(until=1.0, method=self.method, width=self.width, macs=self.macs,
                            sparsity=self.sparsity, schedule=self.schedule, power=self.power,
                            ramp_end=self.ramp_end, strength=self.strength)]


def _epochs_per_stage(stages: list[StageConfig], epochs: int) -> list[int]:
    bounds = [0] + [int(round(s.until * epochs)) for s in stages]
    return [b - a for a, b in zip(bounds, bounds[1:])]


@register_pass
class RegularizePass(Pass):
    """Train with group lasso / network slimming / L1 so a later prune or sparsify cuts zeros."""

    name = "regularize"
    Config = RegularizeConfig
    changes_model = True
    stage = Stage.TRANSFORM
    summary = "sparsity learned in training: group lasso, network slimming or L1, with a width/MAC controller"

    def check(self, plan: PlanContext) -> list[str]:
        c: RegularizeConfig = self.config
        problems = []
        stages = c.stage_list()
        if not plan.data.real:
            problems.append("regularize trains the model: pass --data with real inputs "
                            "(labels, or none and it learns from the imported model)")
        later = [p.name for p in plan.later()]
        last = stages[-1].method
        if last != "gates" and not any(name in CUTTER[last] for name in later):
            cut = "prune" if last in STRUCTURED else "sparsify"
            problems.append(f"{last} only drives weights to zero; add a {cut} pass after regularize to remove "
                            f"them (e.g. {cut}: {{criterion: group_norm, ...}})" if cut == "prune" else
                            f"{last} only drives weights to zero; add a sparsify pass after regularize to keep "
                            "them sparse (sparsify: {sparsity: ...})")
        short = [i + 1 for i, n in enumerate(_epochs_per_stage(stages, c.epochs)) if n < 1]
        if short:
            problems.append(f"with epochs: {c.epochs}, stage {short[0]} gets no epoch; raise epochs or "
                            "widen the stage")
        return problems

    def run(self, state: ModelState, ctx: RunContext) -> ModelState:
        c: RegularizeConfig = self.config
        stages = c.stage_list()
        if any(n < 1 for n in _epochs_per_stage(stages, c.epochs)):
            raise UserError(f"regularize: with epochs: {c.epochs} a stage gets no epoch; raise epochs")
        round_to = c.round_to or int(getattr(ctx.target, "simd_width", 1) or 1)
        if stages[-1].method == "gates":
            _check_gates_reach(state.model, stages[-1].macs, c.min_channels)
        facts, warnings = run_stages(state, ctx, c, stages, _epochs_per_stage(stages, c.epochs), round_to)
        for w in warnings:
            state.warn(w)
        state.record(self.name, **facts)
        return state


# ----------------------------------------------------------------------------- the run


def _kept(size: int, removed: int, min_channels: int, round_to: int) -> int:
    """Units a group keeps when `removed` are asked for: prune's own rule (allocation.Planner),
    so prune's uniform allocation at the same budget cuts exactly the zeroed units."""
    keep = max(size - int(removed), min(min_channels, size))
    return min(size, int(math.ceil(keep / round_to) * round_to))


def _widths(model, graph, gids: list[int], target: tuple[str, float] | None, c: RegularizeConfig,
            round_to: int) -> dict[int, int]:
    """{group id: units kept at the end of a structured stage}."""
    from edgesparse.graph.stats import count_macs
    from edgesparse.graph.surgery import shrink

    groups = {gid: graph.groups[gid] for gid in gids}

    def at(r: float) -> dict[int, int]:
        return {gid: _kept(g.size, round(r * g.size), c.min_channels, round_to) for gid, g in groups.items()}

    if target is None:
        return {gid: g.size for gid, g in groups.items()}
    kind, value = target
    if kind == "width":
        return at(1.0 - value)

    def macs(widths: dict[int, int]) -> float:
        removed = {gid: np.arange(w, groups[gid].size) for gid, w in widths.items()}
        return count_macs(shrink(model, graph, graph.atom_keep_from_units(removed)))

    full = count_macs(model)
    if macs(at(1.0)) > value * full:
        raise UserError(f"regularize: macs {value} cannot be reached: with every prunable group at "
                        f"min_channels={c.min_channels} (round_to={round_to}) the model keeps "
                        f"{macs(at(1.0)) / full:.1%} of its MACs; ask for less or lower min_channels/round_to")
    lo, hi = 0.0, 1.0
    for _ in range(14):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if macs(at(mid)) <= value * full else (mid, hi)
    return at(hi)


def run_stages(state: ModelState, ctx: RunContext, c: RegularizeConfig, stages: list[StageConfig],
               epochs: list[int], round_to: int) -> tuple[dict, list[str]]:
    from edgesparse.graph.channels import ChannelGraph
    from edgesparse.graph.flatten import flatten_nested
    from edgesparse.graph.stats import count_macs
    from edgesparse.graph.surgery import shrink
    from edgesparse.train import regularizers as reg
    from edgesparse.train.losses import CrossEntropy, Distillation
    from edgesparse.train.metrics import accuracy, agreement, predict
    from edgesparse.train.trainer import train

    data, notes, warnings = ctx.data, [], []
    model, _, _ = flatten_nested(state.model)
    graph = ChannelGraph(model)
    if data.labelled:
        x, y, loss = data.x_train, data.y_train, CrossEntropy()
        metric_name = "validation accuracy"
        measure = (lambda m: accuracy(m, data.x_val, data.y_val))
    else:
        if state.reference is None:
            raise UserError("regularize without labels learns from the imported model, and there is none; "
                            "run it after import or pass labelled --data")
        x, y = (data.x_train if data.x_train is not None else data.x_calib), None
        loss = Distillation.hinton(state.reference, alpha=0.0, temperature=4.0)
        ref = predict(state.reference, data.x_calib)
        metric_name = "top-1 agreement with the imported model"
        measure = (lambda m: agreement(m, ref, data.x_calib))
    judge = measure

    def measure(m):
        # the moving BN statistics first: the penalty moves the activations faster than they follow
        reg.recalibrate_batchnorm(m, x[:BN_SAMPLES])
        return judge(m)
    steps_per_epoch = max(1, math.ceil(len(x) / c.batch_size))
    macs0 = count_macs(model)
    start_metric = measure(model)
    trajectory: list[dict] = []
    result: dict = {}

    for i, (stage, n_epochs) in enumerate(zip(stages, epochs)):
        schedule = reg.Schedule(stage.schedule, 0.0, stage.ramp_end, stage.power)
        total = n_epochs * steps_per_epoch
        if stage.method == "gates":
            model, result, notes_g = _train_gates(model, (x, y), loss, stage, schedule, total, n_epochs, c,
                                                  ctx, i, measure, macs0, start_metric, trajectory, metric_name)
            notes += notes_g
            continue
        if stage.method in STRUCTURED:
            which = "all" if stage.method == "group_lasso" else "bn"
            gids = [g.id for g in graph.prunable_groups]
            covered = reg.UnitSlices(graph, gids, which)
            if covered.uncovered:
                notes.append(f"{stage.method}: {len(covered.uncovered)} channel group(s) carry no BatchNorm "
                             "and are not penalised")
            gids = [g for g in gids if g not in covered.uncovered]
            if not gids:
                raise UserError(f"regularize: {stage.method} has no channel group to penalise"
                                + (" (no BatchNorm in a prunable group; use group_lasso)" if which == "bn" else
                                   "; run `edgesparse inspect MODEL` to see why"))
            keep = _widths(model, graph, gids, stage.target, c, round_to)
            hook = reg.GroupLasso(graph, keep, schedule=schedule, total_steps=total, lr=c.learning_rate,
                                  slices=which, strength=stage.strength)
        else:
            hook = reg.WeightL1(model, stage.sparsity, schedule=schedule, total_steps=total,
                                lr=c.learning_rate, strength=stage.strength)
        recorder = _Recorder(i + 1, stage, hook, model, graph, macs0, measure, start_metric, c.max_drop,
                             trajectory, shrink, count_macs)
        train(model, (x, y), loss=loss, epochs=n_epochs, lr=c.learning_rate, batch_size=c.batch_size,
              seed=ctx.seed + i, post_step=[hook], callbacks=[recorder], progress=ctx.progress,
              label=f"regularize: {stage.method}")
        _collapsed(recorder, trajectory, metric_name, start_metric, c.max_drop, stage.method)
        result = _reached(stage, hook, graph, model, macs0, shrink, count_macs)
        final_architecture = (lambda m=model, h=hook: shrink(m, graph, h.atom_keep())) \
            if stage.method in STRUCTURED else (lambda m=model: m)

    final = stages[-1]
    if final.method == "gates":
        final_architecture = (lambda m=model: m)
        if not result["reached"]:
            warnings.append(f"regularize: the gates ended at {result['got']:.1%} of the MACs where the target "
                            f"was {final.macs:g} (+-{GATE_TOLERANCE:.0%}); raise epochs or gate_learning_rate")
    elif final.target is not None and not result["reached"]:
        warnings.append(f"regularize: {final.method} ended at {result['got']:.1%} where the target was "
                        f"{final.target[0]} {final.target[1]:g}; the cut that follows removes weights that "
                        "are not zero. Raise epochs, or lower the target")
    state.model = model
    if c.control:
        result["control"] = _from_scratch(final_architecture(), model, data, sum(epochs), ctx)
    facts = {"epochs_run": int(sum(epochs)), "metric": metric_name, "start": round(start_metric, 3), "end": round(measure(model), 3),
             "stages": [{"method": s.method, "until": s.until, "epochs": n,
                         "target": None if s.target is None else {s.target[0]: s.target[1]},
                         "schedule": s.schedule} for s, n in zip(stages, epochs)],
             "trajectory": trajectory, **result, "notes": notes}
    return facts, warnings


def _collapsed(recorder, trajectory, metric_name, start_metric, max_drop, method) -> None:
    if recorder.collapsed:
        rows = "; ".join(f"epoch {r['epoch']}: strength {r['strength']:.3g}, kept {r['kept']:.0%}, "
                         f"{r['metric']:.1f}%" for r in trajectory)
        raise UserError(f"regularize: {metric_name} collapsed from {start_metric:.1f}% to "
                        f"{trajectory[-1]['metric']:.1f}% (more than max_drop={max_drop} points) under "
                        f"{method}; ask for a gentler target or more epochs. Trajectory: {rows}")


def _check_gates_reach(model, target: float, min_channels: int) -> None:
    """Refuse, before training, a MAC target the gates cannot reach without emptying a layer."""
    from edgesparse.graph.flatten import flatten_nested
    from edgesparse.train.gates import Gates

    gates = Gates(flatten_nested(model)[0])
    if not gates.gates:
        why = "; ".join(f"{p}: {r}" for p, r in gates.skipped.items()) or "no prunable channel group"
        raise UserError(f"regularize: gates found no channel group to gate ({why}); use group_lasso")
    least = gates.least_macs(min_channels)
    if least > target * (1 + GATE_TOLERANCE):
        fixed = f" ({len(gates.skipped)} group(s) keep their width: {', '.join(gates.skipped)})" \
            if gates.skipped else ""
        raise UserError(f"regularize: gates cannot reach macs {target:g} without emptying a layer: with every "
                        f"gated layer at min_channels={min_channels} the model keeps {least:.1%} of its MACs"
                        f"{fixed}; ask for macs >= {math.ceil(least * 1000) / 1000:g}")


def _train_gates(model, xy, loss, stage, schedule, total, n_epochs, c, ctx, i, measure, macs0, start_metric,
                 trajectory, metric_name):
    """The gates stage: gate, train with the expected-MAC penalty, fold, cut. Returns the cut model."""
    from edgesparse.graph.stats import count_macs
    from edgesparse.train.gates import Gates, MacController
    from edgesparse.train.regularizers import recalibrate_batchnorm
    from edgesparse.train.trainer import train

    gates = Gates(model)
    hook = MacController(gates, stage.macs, schedule, total, c.min_channels)
    recorder = _Recorder(i + 1, stage, hook, gates.model, gates.graph, macs0, measure, start_metric, c.max_drop,
                         trajectory, None, None)
    train(gates.model, xy, loss=loss, epochs=n_epochs, lr=c.learning_rate, batch_size=c.batch_size,
          seed=ctx.seed + i, regularizers=[hook.penalty], post_step=[hook], callbacks=[hook.callback(), recorder],
          own_rates=[(gates.variables, c.gate_learning_rate or _gate_rate(c.learning_rate, stage, total))],
          progress=ctx.progress, label="regularize: gates")
    _collapsed(recorder, trajectory, metric_name, start_metric, c.max_drop, "gates")
    trained = float(gates.macs(gates.is_open().numpy())) / gates.full_macs
    closed = gates.close_to(stage.macs, c.min_channels) if trained > stage.macs * (1 + GATE_TOLERANCE) else 0
    opened = gates.open_fraction()
    widths = {p: [int(g.log_alpha.shape[0]), int(round(opened[p] * g.log_alpha.shape[0]))]
              for p, g in gates.gates.items()}
    cut = gates.finish()
    recalibrate_batchnorm(cut, xy[0][:BN_SAMPLES])     # the gates closed at the end moved what follows
    macs = count_macs(cut) / max(macs0, 1)
    notes = [f"gates: {p} keeps its width ({why})" for p, why in gates.skipped.items()]
    if closed:
        notes.append(f"gates: the gates ended at {trained:.1%} of the MACs; the {closed} weakest open gates "
                     f"were closed to meet macs {stage.macs:g}")
    return cut, {"reached": bool(abs(macs - stage.macs) <= GATE_TOLERANCE * stage.macs), "got": macs,
                 "macs_kept": round(macs, 4), "macs_gates": round(trained, 4), "closed_at_end": closed,
                 "widths": widths, "gate_open": {p: round(v, 4) for p, v in opened.items()}}, notes


def _gate_rate(lr: float, stage: StageConfig, total_steps: int) -> float:
    """10x the weights' rate (at theirs no gate closes), and enough for a gate to travel from open to
    shut (log_alpha 2.2 -> -2.4; Adam moves it by about its rate per step) twice within the ramp."""
    ramp = max(1.0, (stage.ramp_end if stage.schedule != "constant" else 0.5) * total_steps)
    return max(10.0 * lr, 2 * GATE_TRAVEL / ramp)


def _from_scratch(architecture, compressed, data, epochs: int, ctx) -> dict:
    """The control: the final architecture, fresh weights, the same epochs (control.py's recipe)."""
    from edgesparse._tf import keras
    from edgesparse.graph.stats import model_summary
    from edgesparse.train.losses import CrossEntropy
    from edgesparse.train.metrics import accuracy
    from edgesparse.train.trainer import train

    if not data.labelled:
        return {"skipped": "the control needs labelled data"}
    keras.utils.set_random_seed(ctx.seed)
    scratch = keras.models.clone_model(architecture)
    train(scratch, (data.x_train, data.y_train), loss=CrossEntropy(), epochs=epochs, lr=2e-3, schedule="cosine",
          batch_size=64, seed=ctx.seed, shuffle="keras", progress=ctx.progress,
          label="regularize: the control, from scratch")
    return {"epochs": epochs, "architecture": model_summary(scratch),
            "accuracy_from_scratch": round(accuracy(scratch, data.x_val, data.y_val), 3),
            "accuracy_regularized": round(accuracy(compressed, data.x_val, data.y_val), 3)}


def _reached(stage: StageConfig, hook, graph, model, macs0: int, shrink, count_macs) -> dict:
    """What the stage reached, measured on the weights (zeros), against its target."""
    if stage.method not in STRUCTURED:
        zeros = hook.zero_fraction()
        ok = stage.sparsity is None or zeros >= stage.sparsity - 0.005
        return {"reached": bool(ok), "got": zeros, "sparsity": round(zeros, 4)}
    atom_keep = hook.atom_keep()
    macs = count_macs(shrink(model, graph, atom_keep)) / max(macs0, 1)
    alive = hook.alive_units()
    keep = hook.keep_final.numpy()
    width_ok = all(int(a.sum()) <= int(k) for a, k in zip(alive.values(), keep))
    kind, value = stage.target or ("width", 1.0)
    got = macs if kind == "macs" else float(np.mean([a.mean() for a in alive.values()]))
    ok = stage.target is None or (width_ok and (kind != "macs" or macs <= value + 1e-9))
    norms = hook.units.by_group(hook.units.norms())
    return {"reached": bool(ok), "got": got, "macs_kept": round(macs, 4),
            "widths": {p: [int(len(a)), int(atom_keep[a].sum())] for p, a in graph.producer_atoms.items()
                       if any(p in graph.groups[g].producers for g in hook.group_ids)},
            "group_norms": {"+".join(graph.groups[g].producers): [round(float(v), 4) for v in np.sort(n)[::-1]]
                            for g, n in norms.items()}}


def _recorder_class():
    from edgesparse._tf import keras

    class Recorder(keras.callbacks.Callback):
        """Per epoch: strength, what is kept, MACs and the metric; stops training on a collapse."""

        def __init__(self, stage_no, stage, hook, model, graph, macs0, measure, start, max_drop,
                     trajectory, shrink, count_macs):
            super().__init__()
            self.stage_no, self.stage, self.hook, self.net, self.graph = stage_no, stage, hook, model, graph
            self.macs0, self.measure, self.start, self.max_drop = macs0, measure, start, max_drop
            self.trajectory, self.shrink, self.count_macs = trajectory, shrink, count_macs
            self.collapsed = False

        def on_epoch_end(self, epoch, logs=None):
            metric = self.measure(self.net)
            row = {"epoch": len(self.trajectory) + 1, "stage": self.stage_no, "method": self.stage.method,
                   "strength": float(np.mean(self.hook.strength.numpy())) if self.hook.n else 0.0,
                   "metric": round(metric, 3)}
            if hasattr(self.hook, "epoch_row"):
                row.update(self.hook.epoch_row())
            elif self.stage.method in STRUCTURED:
                alive = self.hook.alive_units()
                row["kept"] = float(np.mean([a.mean() for a in alive.values()]))
                row["macs"] = round(self.count_macs(self.shrink(self.net, self.graph, self.hook.atom_keep()))
                                    / max(self.macs0, 1), 4)
                norms = self.hook.units.norms()
                row["median_norm"] = round(float(np.median(norms[norms > 0])) if (norms > 0).any() else 0.0, 5)
            else:
                row["kept"] = 1.0 - self.hook.zero_fraction()
            row["kept"] = round(row["kept"], 4)
            self.trajectory.append(row)
            if metric < self.start - self.max_drop:
                self.collapsed = True
                self.model.stop_training = True

    return Recorder


def _Recorder(*args):
    return _recorder_class()(*args)
