"""`edgesparse.build(...)`: the library call behind `edgesparse build`.

Order matters here: everything that can be checked cheaply (target, recipe, output folder,
model file, data shapes, the pass plan) is checked before the first pass runs.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from edgesparse.search.backoff import Attempt, can_back_off, primary_artifact, promote, scaled_pipeline, search
from edgesparse.data import Dataset, load_data
from edgesparse.errors import BudgetError, UserError
from edgesparse.evaluate import measure_model
from edgesparse.outdir import check_writable, staged_output
from edgesparse.profile.attach import check_agents, estimates, measure
from edgesparse.pipeline import (DataInfo, Instrument, MetricsInstrument, PassRecord, Pipeline,
                                 Progress, ProgressInstrument, RunContext, SilentProgress)
from edgesparse.recipe import Recipe, recipe_for
from edgesparse.state import Artifact, ModelState
from edgesparse.targets import Target, load_target


DEFAULT_MAX_ACCURACY_DROP = 1.0   # points; issue: users state "at most 1 point lost"


@dataclass
class BuildResult:
    """What a build produced; `report` is exactly what report.json holds."""

    out: Path
    report: dict[str, Any]
    artifacts: list[Artifact] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def default_out(model_path: Path, target: Target) -> Path:
    return Path("out") / f"{model_path.stem}-{target.name}"


def _data_info(data: Dataset, num_classes: int) -> DataInfo:
    return DataInfo(real=data.real, labelled=data.labelled, source=data.source,
                    input_shape=tuple(data.x_calib.shape[1:]), num_classes=num_classes)


def _plan(recipe: Recipe) -> Pipeline:
    """The import pass always runs first (once), whatever the recipe lists."""
    from edgesparse.passes.importer import ImportPass

    passes = list(recipe.passes)
    if not passes or passes[0].name != "import":
        passes.insert(0, ImportPass())
    return Pipeline(passes)


def build(model: str | Path, target: str | Path | Target = "rpi4", data: str | Path | None = None,
          recipe: str | Path | None = None, out: str | Path | None = None,
          progress: Progress | None = None, instruments: Iterable[Instrument] = (),
          options: dict[str, Any] | None = None) -> BuildResult:
    """Compress `model` for `target` and write verified artifacts and a report into `out`.

    model:   a tf_keras or Keras 3 `.keras`, an `.h5`, a SavedModel folder, or an `.onnx` file.
    target:  a built-in target name (rpi4, android-nnapi, coral) or a target YAML path.
    data:    an `.npz` (x_train/y_train[/x_val/y_val] or x/y) or a folder of class folders;
             None means synthetic calibration inputs and no accuracy figures.
    recipe:  a recipe YAML; None means the target's default recipe.
    out:     the output folder (default out/<model>-<target>); written atomically.
    options: build-wide switches: {"control_from_scratch": bool, "profile_agents": [URL, ...],
             "token_file": Path, "profile_local": bool, "input_shape": "3,224,224" (ONNX only)}.
    """
    from edgesparse._tf import keras
    from edgesparse.frontends import load_model
    from edgesparse.graph.functional import clone_with_weights
    from edgesparse.report import build_report, write_reports

    started = time.perf_counter()
    progress = progress or SilentProgress()
    target = target if isinstance(target, Target) else load_target(target)
    recipe_obj = recipe_for(target, recipe)
    model_path = Path(model)
    out_path = Path(out) if out is not None else default_out(model_path, target)
    check_writable(out_path)
    options = dict(options or {})
    agents = list(options.get("profile_agents") or [])
    check_agents(agents, options.get("token_file"))

    keras_model, source = load_model(model_path, input_shape=options.get("input_shape"))
    input_shape = tuple(int(d) for d in keras_model.input_shape[1:])
    num_classes = int(keras_model.output_shape[-1])
    dataset = load_data(data, input_shape, num_classes, seed=recipe_obj.spec.seed)

    recipe_obj, skipped = recipe_obj.for_data(dataset.real, dataset.labelled)
    pipeline = _plan(recipe_obj)
    problems = pipeline.validate(target, _data_info(dataset, num_classes))
    budget = _budget(recipe_obj, dataset)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UserError(f"{recipe_obj.origin}: {problems[0]}{more}")

    name = model_path.stem.replace(" ", "_")
    warnings: list[str] = []
    if not dataset.real:
        warnings.append("no --data given: calibration uses synthetic inputs, so int8 accuracy is unknown "
                        "and no accuracy figures are claimed; pass --data for real ones")
    if budget is None and recipe_obj.spec.max_accuracy_drop is None:
        warnings.append("no labelled validation data: the accuracy budget is not enforced")
    if skipped:
        warnings.append(f"skipped {', '.join(skipped)} from {recipe_obj.origin}: they run only with "
                        "labelled data (nothing could check their accuracy); pass --data with labels")
    if target.deprecation:
        warnings.append(target.deprecation)
    pristine = clone_with_weights(keras_model)   # passes train in place; back-off restarts from this
    first_model = [keras_model]                  # the first attempt uses the model already loaded

    failure: UserError | None = None
    with staged_output(out_path) as workdir:
        def run_attempt(strength: float, sub: Path) -> Attempt:
            sub.mkdir()
            # Every attempt starts from the recipe's seed: training passes (prune fine-tune, distill,
            # qat, dropout) are then repeatable, and back-off attempts differ only in strength.
            keras.utils.set_random_seed(recipe_obj.spec.seed)
            model_now = first_model.pop() if first_model else clone_with_weights(pristine)
            state = ModelState(model=model_now, name=name, source=source)
            for w in warnings:
                state.warn(w)
            ctx = RunContext(target=target, data=dataset, workdir=sub, seed=recipe_obj.spec.seed,
                             progress=progress, options=options)
            ins = [MetricsInstrument(measure_model),
                   ProgressInstrument(progress, len(pipeline.passes)), *instruments]
            pipe, _ = scaled_pipeline(pipeline, strength)
            step = None if strength >= 1.0 else f"back-off strength {strength:.3g}"
            state, records = pipe.run(state, ctx, ins, step=step)
            return _judge(strength, sub, state, records, target, budget)

        best, attempts = search(run_attempt, workdir, recipe_obj.spec.max_backoff_steps,
                                adjustable=budget is not None and can_back_off(pipeline))
        chosen = best or attempts[-1]
        promote(best, workdir)
        if best is None:
            failure = _budget_failure(attempts, budget, can_back_off(pipeline))
            chosen.state.artifacts = []   # nothing over budget ships; the report says what was tried
        if options.get("control_from_scratch") and best is not None:
            from edgesparse.control import train_from_scratch

            chosen.state.record("control", **train_from_scratch(chosen.state, chosen.records, dataset,
                                                                recipe_obj.spec.seed, progress))
        profile = {"estimates": estimates(chosen.state.artifacts, target, chosen.macs),
                   "measured": measure(chosen.state.artifacts, target, chosen.macs, agents,
                                       options.get("token_file"), bool(options.get("profile_local")),
                                       progress)}
        report = build_report(state=chosen.state, records=chosen.records, target=target,
                              recipe=recipe_obj, data=dataset, seconds=time.perf_counter() - started,
                              workdir=workdir, budget=_budget_summary(budget, attempts, best),
                              trajectory=[r for a in attempts for r in a.records],
                              status="ok" if failure is None else f"failed: {failure}",
                              profile=profile)
        write_reports(report, workdir)
    if failure is not None:
        raise failure
    artifacts = [_moved(a, workdir, out_path) for a in chosen.state.artifacts]
    return BuildResult(out=out_path, report=report, artifacts=artifacts, warnings=list(chosen.state.warnings))


def _budget(recipe: Recipe, data: Dataset) -> float | None:
    """The enforced budget in points, or None. An explicit budget needs labelled validation data."""
    explicit = recipe.spec.max_accuracy_drop
    if explicit is not None and not data.labelled:
        raise UserError(f"{recipe.origin}: max_accuracy_drop is set but the data has no labelled "
                        "validation split; pass --data with labels or remove the budget")
    if explicit is not None:
        return explicit
    return DEFAULT_MAX_ACCURACY_DROP if data.labelled else None


def _judge(strength: float, sub: Path, state: ModelState, records: list[PassRecord], target: Target,
           budget: float | None) -> Attempt:
    reference = records[0].metrics.get("accuracy") if records else None
    final = {k: v for r in records for k, v in r.metrics.items()}
    primary = primary_artifact(state, target)
    acc = primary.metrics.get("accuracy") if primary is not None else final.get("accuracy")
    drop = None if acc is None or reference is None else round(reference - acc, 3)
    met = budget is None or (drop is not None and drop <= budget)
    return Attempt(strength=strength, accuracy=acc, drop=drop, met=met, macs=final.get("macs"),
                   params=final.get("params"),
                   bytes=primary.path.stat().st_size if primary is not None else None,
                   artifact=primary.path.name if primary is not None else None,
                   workdir=sub, state=state, records=records)


def _budget_failure(attempts: list[Attempt], budget: float, adjustable: bool) -> BudgetError:
    tried = "; ".join(f"strength {a.strength:.3g}: {a.drop} points lost" for a in attempts)
    fix = ("loosen max_accuracy_drop, add a distill pass, or compress less" if adjustable else
           "no pass in the recipe can be scaled back (prune, sparsify); loosen max_accuracy_drop "
           "or change the recipe")
    return BudgetError(f"accuracy budget of {budget} points not met ({tried}); {fix}. "
                       "The report in --out shows every attempt")


def _budget_summary(budget: float | None, attempts: list[Attempt], best: Attempt | None) -> dict[str, Any]:
    return {"max_accuracy_drop": budget, "enforced": budget is not None,
            "met": best is not None, "chosen_strength": None if best is None else best.strength,
            "attempts": [a.summary() for a in attempts]}


def _moved(artifact: Artifact, workdir: Path, out: Path) -> Artifact:
    """Artifacts were written in the staging folder; point them at their final place."""
    try:
        rel = artifact.path.relative_to(workdir)
    except ValueError:
        return artifact
    artifact.path = out / rel
    return artifact


__all__ = ["build", "BuildResult", "PassRecord"]
