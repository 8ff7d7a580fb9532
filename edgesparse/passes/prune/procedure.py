"""The pruning procedure: K steps of score -> allocate -> cut -> reconstruct -> fine-tune.

One step removes a share of the budget from the current model; scores are recomputed on the
model the previous step left (after its reconstruction and fine-tune), so channels are chosen
on the network as it is now. MAC and parameter targets are interpolated linearly in what is
kept (step k of K keeps 1 - (1 - target) * k / K of the original); a channel ratio likewise.
With `allocation: sensitivity`, the per-group channel counts are decided once on the original
model and reached in K equal shares.

Reconstruction refits against the model at the start of the step (the unpruned model when
K = 1). The fine-tune, when labels and epochs are given, runs after reconstruction.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgesparse.errors import UserError
from edgesparse.passes.prune import sensitivity as sens
from edgesparse.passes.prune.allocation import Budget, Planner, macs_of, per_group_widths
from edgesparse.graph.flatten import flatten_nested
from edgesparse.graph.channels import ChannelGraph
from edgesparse.passes.prune.criteria import ScoreInputs, get_criterion
from edgesparse.passes.prune.reconstruct import refit_layers
from edgesparse.graph.surgery import layer_keeps, planned_params, shrink
from edgesparse.passes.prune.training import finetune
from edgesparse.train.metrics import accuracy, agreement, predict


@dataclass
class Settings:
    budget: Budget
    criterion: str = "l1"
    allocation: str = "uniform"          # uniform | global | sensitivity
    min_channels: int = 1
    round_to: int = 1
    reconstruct: bool = True
    steps: int = 1
    finetune_epochs: int = 0
    finetune_lr: float = 3e-4
    batch_size: int = 64
    sensitivity: bool = False
    sensitivity_ratios: tuple = sens.DEFAULT_RATIOS
    seed: int = 0
    max_rows: int = 20000
    per_group: dict | None = None        # producer name -> keep fraction, pinned (allocation.py)


@dataclass
class Data:
    x_calib: np.ndarray
    x_train: np.ndarray | None = None
    y_train: np.ndarray | None = None
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None

    @property
    def labelled(self) -> bool:
        return self.y_train is not None and self.x_train is not None


@dataclass
class Result:
    model: object
    facts: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class _Silent:
    def task(self, *a, **k):
        return self

    def advance(self, n=1):
        pass

    def update(self, **k):
        pass

    def close(self):
        pass


def _size(model, graph: ChannelGraph) -> tuple[int, int]:
    full = layer_keeps(graph, graph.full_keep())
    return macs_of(graph, full), planned_params(model, full)


def _evaluator(data: Data, reference):
    """Accuracy (%) on validation data with labels; otherwise agreement (%) with the reference."""
    if data.x_val is not None and data.y_val is not None:
        return (lambda m: accuracy(m, data.x_val, data.y_val)), "validation accuracy"
    ref = predict(reference, data.x_calib)
    return (lambda m: agreement(m, ref, data.x_calib)), "top-1 agreement with the unpruned model"


def no_prunable_group(graph: ChannelGraph) -> str:
    why = "; ".join(f"{g.producers[0]}: {g.reasons[0]}" for g in graph.groups if g.reasons)[:400]
    return f"the model has no prunable channel group ({why or 'no Conv/Dense layer'})"


def no_prunable_group_error(graph: ChannelGraph) -> UserError:
    return UserError(f"{no_prunable_group(graph)}; run `edgesparse inspect MODEL` to see why, remove the "
                     "prune pass from the recipe, or use sparsify instead")


def least_kept(model, kind: str, min_channels: int, round_to: int) -> tuple[float | None, str]:
    """(the least fraction of MACs or parameters pruning can keep, "") with every group at
    min_channels rounded up to round_to, as the uniform and global allocations reach it;
    (None, why) when the model has no prunable channel group."""
    try:
        graph = ChannelGraph(flatten_nested(model)[0])
    except UserError as exc:            # a subclassed model: no graph to prune
        return None, str(exc)
    if not graph.prunable_groups:
        return None, no_prunable_group(graph)
    scores = {g.id: np.zeros(g.size) for g in graph.prunable_groups}     # which units: irrelevant
    return Planner(graph, scores, min_channels, round_to).least_kept(kind), ""


def prune(model, settings: Settings, data: Data, progress=None, workdir: Path | None = None) -> Result:
    progress = progress or _Silent()
    model, flattened, why_not = flatten_nested(model)
    graph0 = ChannelGraph(model)
    if not graph0.prunable_groups:
        raise no_prunable_group_error(graph0)
    widths = per_group_widths(graph0, settings.per_group)     # bad names fail before any scoring
    criterion = get_criterion(settings.criterion)
    if criterion.needs_labels and not data.labelled:
        raise UserError(f"criterion {settings.criterion} needs labelled data; pass --data with labels "
                        "or pick another criterion (l1, activation, thinet)")
    result = Result(model)
    macs0, params0 = _size(model, graph0)
    evaluate, metric_name = _evaluator(data, model)
    facts = result.facts
    if flattened:
        facts["flattened_nested_models"] = flattened
    if why_not:
        result.notes.append(f"nested models were kept as they are ({why_not}); their channels are not pruned")
    facts.update(criterion=settings.criterion, budget=settings.budget.describe(),
                 allocation=settings.allocation, round_to=settings.round_to,
                 min_channels=settings.min_channels, groups=[g.describe() for g in graph0.groups],
                 unprunable_layers=dict(graph0.unprunable_layers), macs_before=macs0,
                 params_before=params0, metric=metric_name, steps=[], reconstruction=[])
    scores0 = _scores(model, graph0, criterion, settings, data, result.notes)
    planner0 = Planner(graph0, scores0, settings.min_channels, settings.round_to, widths)
    final_plan = _allocate(planner0, settings.budget, settings.allocation, None)  # raises if unreachable
    curves = None
    if settings.sensitivity or settings.allocation == "sensitivity":
        task = progress.task("prune: sensitivity", total=len(planner0.groups) * len(settings.sensitivity_ratios))
        analysis = sens.analyse(planner0, evaluate, settings.sensitivity_ratios, task)
        task.close()
        curves = analysis["curves"]
        facts["sensitivity"] = {"metric": metric_name, "baseline": analysis["baseline"],
                                "table": analysis["rows"]}
        if workdir is not None:
            png = sens.plot(analysis, settings.sensitivity_ratios, Path(workdir) / "prune_sensitivity.png",
                            metric_name)
            facts["sensitivity"]["plot"] = png.name      # relative to the work (output) folder
        if settings.allocation == "sensitivity":
            final_plan = planner0.from_sensitivity(settings.budget, curves)
    final_counts = {_key(graph0.groups[gid]): (graph0.groups[gid].size, len(r)) for gid, r in final_plan.items()}

    current, base_acc = model, (evaluate(model) if data.y_val is not None else None)
    facts["accuracy_before"] = None if base_acc is None else round(base_acc, 3)
    for step in range(1, settings.steps + 1):
        task = progress.task(f"prune: step {step}/{settings.steps}", total=3)
        graph = graph0 if step == 1 else ChannelGraph(current)
        scores = scores0 if step == 1 else _scores(current, graph, criterion, settings, data, result.notes)
        planner = planner0 if step == 1 else Planner(graph, scores, settings.min_channels, settings.round_to, widths)
        if settings.steps == 1:
            plan = final_plan
        elif settings.allocation == "sensitivity":
            plan = _share_of_counts(planner, final_counts, step / settings.steps)
        else:
            plan = _allocate(planner, _step_budget(settings.budget, step, settings.steps, planner,
                                                   macs0, params0, graph0), settings.allocation, None)
        atom_keep = graph.atom_keep_from_units(plan)
        keeps = layer_keeps(graph, atom_keep)
        pruned = shrink(current, graph, atom_keep)
        task.advance(1)
        record = {"step": step, "removed_channels": int(sum(len(v) for v in plan.values()))}
        if base_acc is not None:
            record["accuracy_pruned"] = round(evaluate(pruned), 3)
        if settings.reconstruct:
            errors = refit_layers(current, pruned, keeps, data.x_calib, seed=settings.seed,
                                  max_rows=settings.max_rows)
            facts["reconstruction"].append({"step": step, "layers": errors})
            if base_acc is not None:
                record["accuracy_reconstructed"] = round(evaluate(pruned), 3)
        task.advance(1)
        if data.labelled and settings.finetune_epochs > 0:
            losses = finetune(pruned, data.x_train, data.y_train, settings.finetune_epochs,
                              settings.finetune_lr, settings.batch_size, settings.seed + step)
            record["finetune_loss"] = [round(v, 4) for v in losses]
            if base_acc is not None:
                record["accuracy_finetuned"] = round(evaluate(pruned), 3)
        task.advance(1)
        task.close()
        g_after = ChannelGraph(pruned)
        record["macs"], record["params"] = _size(pruned, g_after)
        facts["steps"].append(record)
        current = pruned

    final_graph = ChannelGraph(current)
    macs1, params1 = _size(current, final_graph)
    facts.update(macs_after=macs1, params_after=params1,
                 macs_kept=round(macs1 / max(macs0, 1), 4), params_kept=round(params1 / max(params0, 1), 4),
                 macs_reduction=round(macs0 / max(macs1, 1), 3),
                 channels={p: [int(len(graph0.producer_atoms[p])),
                               int(len(final_graph.producer_atoms.get(p, [])))] for p in graph0.producer_atoms},
                 accuracy_after=(round(evaluate(current), 3) if base_acc is not None else None))
    result.model = current
    return result


def _key(group) -> tuple:
    return tuple(sorted(group.producers))


def _scores(model, graph, criterion, settings: Settings, data: Data, notes: list) -> dict:
    x, y = data.x_calib, None
    if criterion.needs_labels:
        n = min(len(data.x_train), max(len(data.x_calib), 256))
        x, y = data.x_train[:n], data.y_train[:n]
    inputs = ScoreInputs(model, graph, x, y, seed=settings.seed, max_rows=settings.max_rows)
    scores = {g.id: np.asarray(criterion.scores(g, inputs), dtype=np.float64) for g in graph.prunable_groups}
    notes.extend(n for n in inputs.notes if n not in notes)
    return scores


def _allocate(planner: Planner, budget: Budget, allocation: str, curves):
    if allocation == "global":
        return planner.global_(budget)
    return planner.uniform(budget)      # sensitivity allocation replaces this once curves exist


def _step_budget(budget: Budget, step: int, steps: int, planner: Planner, macs0, params0, graph0) -> Budget:
    """The share of the final budget that step `step` must reach, relative to the current model."""
    t = step / steps
    if budget.kind == "ratio":
        prev = budget.value * (step - 1) / steps
        now = budget.value * t
        return Budget("ratio", 1 - (1 - now) / (1 - prev))
    full0 = macs0 if budget.kind == "macs" else params0
    current = planner.macs_full if budget.kind == "macs" else planner.params_full
    want = (1 - (1 - budget.value) * t) * full0
    return Budget(budget.kind, min(1.0, want / max(current, 1)))


def _share_of_counts(planner: Planner, final_counts: dict, share: float):
    counts = {}
    for gid, g in planner.groups.items():
        size0, removed0 = final_counts.get(_key(g), (g.size, 0))
        already = size0 - g.size
        counts[gid] = max(0, int(round(removed0 * share)) - already)
    return planner.removal(counts)
