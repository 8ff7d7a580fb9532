"""`edgesparse.build(...)`: the library call behind `edgesparse build`, in two halves.

`plan_build(...) -> BuildPlan` does everything that can fail in the first second: the target,
the recipe, the output folder, the agents, the model, the data, the pass plan and the warnings.
`run_plan(plan, strength, overrides) -> Attempt` runs the pipeline once into a folder and judges
the result against the accuracy budget. `build` plans, lets a search strategy call `run_plan`
(today the accuracy back-off, `edgesparse/search/backoff.py`), then trains the control,
profiles and writes the report.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Mapping

from pydantic import ValidationError

from edgesparse.data import Dataset, label_classes, load_data
from edgesparse.errors import UserError
from edgesparse.train.metrics import keras_metrics
from edgesparse.outdir import check_writable, staged_output
from edgesparse.pipeline import (ARTIFACTS, DataInfo, Instrument, Pass, PassRecord, Pipeline, Progress,
                                 ProgressInstrument, RecordsInstrument, RunContext, SilentProgress)
from edgesparse.profile.attach import check_agents, estimates, measure
from edgesparse.recipe import Recipe, recipe_for
from edgesparse.search.backoff import (Attempt, back_off, budget_failure, budget_summary, can_back_off,
                                       primary_artifact, promote, scaled_pipeline)
from edgesparse.state import Artifact, ModelState
from edgesparse.targets import Target, load_target

DEFAULT_MAX_ACCURACY_DROP = 1.0   # points; issue: users state "at most 1 point lost"

Overrides = Mapping[str, Mapping[str, Any]]   # pass name -> config fields, e.g. {"prune": {"per_group": {...}}}


@dataclass
class BuildResult:
    """What a build produced; `report` is exactly what report.json holds."""

    out: Path
    report: dict[str, Any]
    artifacts: list[Artifact] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class BuildOptions:
    """Build-wide switches that are not part of the recipe."""

    control_from_scratch: bool = False      # also train the compressed architecture from scratch
    profile_agents: tuple[str, ...] = ()    # agent URLs that measure the artifacts
    token_file: Path | None = None          # the agents' bearer token
    profile_local: bool = False             # also measure the artifacts on this machine
    unsafe_load: bool = False               # --unsafe-load: model files may run their code (docs/security.md)
    input_shape: str | tuple[int, ...] | None = None   # ONNX files with dynamic dims: per-sample shape

    @classmethod
    def of(cls, options: "BuildOptions | Mapping[str, Any] | None") -> "BuildOptions":
        """Options as given: a BuildOptions, None, or the dict form older callers pass."""
        if options is None or isinstance(options, cls):
            return options or cls()
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise UserError(f"unknown build option {unknown[0]!r}; known options: {', '.join(known)}")
        token = options.get("token_file")
        return cls(control_from_scratch=bool(options.get("control_from_scratch")),
                   profile_agents=tuple(options.get("profile_agents") or ()),
                   token_file=None if token is None else Path(token),
                   profile_local=bool(options.get("profile_local")),
                   unsafe_load=bool(options.get("unsafe_load")),
                   input_shape=options.get("input_shape"))


@dataclass
class BuildPlan:
    """A build checked and ready to run, as many times as a search likes."""

    target: Target
    recipe: Recipe
    pipeline: Pipeline
    data: Dataset
    name: str                       # artifact file stem
    source: dict[str, Any]          # how the model was loaded
    out: Path
    options: BuildOptions
    budget: float | None            # enforced accuracy budget in points, or None
    warnings: list[str]
    progress: Progress
    instruments: list[Instrument]
    started: float                  # perf_counter at planning: the report's build time
    model: Any                      # the loaded model; the first run uses it as it is
    pristine: Any                   # a copy taken before any pass trained in place
    baseline: dict[str, Any] | None = None   # the import record's metrics, once a run measured them

    def fresh_model(self):
        """The model a run starts from: the loaded one first, then copies of the pristine one."""
        from edgesparse.graph.functional import clone_with_weights

        model, self.model = self.model, None
        return model if model is not None else clone_with_weights(self.pristine)


def default_out(model_path: Path, target: Target) -> Path:
    return Path("out") / f"{model_path.stem}-{target.name}"


def _data_info(data: Dataset, num_classes: int) -> DataInfo:
    return DataInfo(real=data.real, labelled=data.labelled, source=data.source,
                    input_shape=tuple(data.x_calib.shape[1:]), num_classes=num_classes)


def pipeline_for(recipe: Recipe) -> Pipeline:
    """The recipe's passes; the import pass always runs first (once), whatever the recipe lists."""
    from edgesparse.passes.importer import ImportPass

    passes = list(recipe.passes)
    if not passes or passes[0].name != "import":
        passes.insert(0, ImportPass())
    return Pipeline(passes)


def plan_build(model: str | Path, target: str | Path | Target = "rpi4", data: str | Path | None = None,
               recipe: str | Path | None = None, out: str | Path | None = None,
               progress: Progress | None = None, instruments: Iterable[Instrument] = (),
               options: BuildOptions | Mapping[str, Any] | None = None) -> BuildPlan:
    """Check everything that can be checked before work; raise UserError on the first problem.
    Parameters as for `build`. Nothing is written. Every model loaded here (the model, a distill
    teacher checked by its pass) follows the options' unsafe_load (--unsafe-load); a recipe
    cannot turn it on (docs/security.md)."""
    from edgesparse.frontends.keras import unsafe_loading

    with unsafe_loading(BuildOptions.of(options).unsafe_load):
        return _plan_build(model, target, data, recipe, out, progress, instruments, options)


def _plan_build(model, target, data, recipe, out, progress, instruments, options) -> BuildPlan:
    from edgesparse.frontends import load_model
    from edgesparse.graph.functional import clone_with_weights

    started = time.perf_counter()
    target = target if isinstance(target, Target) else load_target(target)
    recipe_obj = recipe_for(target, recipe)
    model_path = Path(model)
    out_path = Path(out) if out is not None else default_out(model_path, target)
    check_writable(out_path)
    opts = BuildOptions.of(options)
    check_agents(list(opts.profile_agents), opts.token_file)

    keras_model, source = load_model(model_path, input_shape=opts.input_shape)
    input_shape = tuple(int(d) for d in keras_model.input_shape[1:])
    num_classes = int(keras_model.output_shape[-1])
    dataset = load_data(data, input_shape, label_classes(keras_model), seed=recipe_obj.spec.seed)

    recipe_obj, skipped = recipe_obj.for_data(dataset.real, dataset.labelled)
    fitted: list[str] = []
    if recipe is None:      # the target's default recipe gives way to the model; a user's means what it says
        recipe_obj, fitted = recipe_obj.for_model(keras_model, target)
    pipeline = pipeline_for(recipe_obj)
    problems = pipeline.validate(target, _data_info(dataset, num_classes))
    if ARTIFACTS not in pipeline.produces:    # it "built" report files only and exited 0
        problems.append("no pass exports an artifact, so the build would write only a report; "
                        "end the recipe with '- pass: quantize', '- pass: export' and '- pass: verify'")
    budget = _budget(recipe_obj, dataset)
    if problems:
        # Every problem, on the one line: fixing them one run at a time is a slow way to learn them.
        raise UserError(f"{recipe_obj.origin}: " + "; also ".join(problems))

    warnings: list[str] = []
    if not dataset.real:
        warnings.append("no --data given: calibration uses synthetic inputs, so int8 accuracy is unknown "
                        "and no accuracy figures are claimed; pass --data for real ones")
    if budget is None and recipe_obj.spec.max_accuracy_drop is None:
        warnings.append("no labelled validation data: the accuracy budget is not enforced")
    if skipped:
        they = "they run" if len(skipped) > 1 else "it runs"
        warnings.append(f"skipped {', '.join(skipped)} from {recipe_obj.origin}: {they} only with "
                        "labelled data (nothing could check their accuracy); pass --data with labels")
    warnings.extend(fitted)
    if budget and dataset.y_val is not None and 100.0 / len(dataset.y_val) > budget:
        warnings.append(f"the validation split has {len(dataset.y_val)} samples: one sample is "
                        f"{100.0 / len(dataset.y_val):.3g} points, more than the {budget:g}-point accuracy "
                        "budget, so any changed decision breaks it; give more validation samples (x_val/y_val)")
    if target.deprecation:
        warnings.append(target.deprecation)
    return BuildPlan(target=target, recipe=recipe_obj, pipeline=pipeline, data=dataset,
                     name=model_path.stem.replace(" ", "_"), source=source, out=out_path, options=opts,
                     budget=budget, warnings=warnings, progress=progress or SilentProgress(),
                     instruments=list(instruments), started=started, model=keras_model,
                     pristine=clone_with_weights(keras_model))   # passes train in place


def run_plan(plan: BuildPlan, strength: float = 1.0, overrides: Overrides | None = None,
             folder: Path | None = None) -> Attempt:
    """Run the plan's pipeline once, with every scalable pass at `strength` and the given pass
    config overrides, into `folder` (a new temporary folder when None), and judge the result."""
    from edgesparse._tf import keras

    folder = Path(tempfile.mkdtemp(prefix="edgesparse-run-")) if folder is None else folder
    folder.mkdir(parents=True, exist_ok=True)
    pipeline, _ = scaled_pipeline(with_overrides(plan.pipeline, overrides), strength)
    # Every run starts from the recipe's seed: training passes (prune fine-tune, distill, qat,
    # dropout) are then repeatable, and back-off attempts differ only in strength.
    keras.utils.set_random_seed(plan.recipe.spec.seed)
    # The pristine copy is the run's reference (the model as imported, which passes never mutate):
    # the import pass then has no copy of its own to make, one clone fewer per run.
    state = ModelState(model=plan.fresh_model(), name=plan.name, source=plan.source, reference=plan.pristine)
    for w in plan.warnings:
        state.warn(w)
    ctx = RunContext(target=plan.target, data=plan.data, workdir=folder, seed=plan.recipe.spec.seed,
                     progress=plan.progress)
    # Every run starts from the same weights, so the imported model's metrics are measured once.
    records = RecordsInstrument(keras_metrics, step=None if strength >= 1.0 else f"back-off strength {strength:.3g}",
                                baseline=plan.baseline)
    from edgesparse.frontends.keras import unsafe_loading

    with unsafe_loading(plan.options.unsafe_load):      # a distill teacher loads during the run
        state = pipeline.run(state, ctx, [ProgressInstrument(plan.progress, len(pipeline.passes)),
                                          *plan.instruments, records])
    if plan.baseline is None and records.records and records.records[0].name == "import":
        plan.baseline = dict(records.records[0].metrics)
    return judge(strength, folder, state, records.records, plan.target, plan.budget)


def with_overrides(pipeline: Pipeline, overrides: Overrides | None) -> Pipeline:
    """A copy of the pipeline whose named passes have these config fields replaced (validated)."""
    if not overrides:
        return pipeline
    names = [p.name for p in pipeline.passes]
    for name in overrides:
        if name not in names:
            raise UserError(f"override for {name!r}, but the plan has no such pass; it has {', '.join(names)}")

    def override(p: Pass) -> Pass:
        if p.name not in overrides:
            return p
        try:
            return type(p)(p.Config(**{**p.config.model_dump(), **overrides[p.name]}))
        except ValidationError as exc:
            err = exc.errors()[0]
            raise UserError(f"override for {p.name}: {'.'.join(map(str, err['loc']))}: {err['msg']}") from None
    return Pipeline([override(p) for p in pipeline.passes])


def build(model: str | Path, target: str | Path | Target = "rpi4", data: str | Path | None = None,
          recipe: str | Path | None = None, out: str | Path | None = None,
          progress: Progress | None = None, instruments: Iterable[Instrument] = (),
          options: BuildOptions | Mapping[str, Any] | None = None) -> BuildResult:
    """Compress `model` for `target` and write verified artifacts and a report into `out`.

    model:   a tf_keras or Keras 3 `.keras`, an `.h5`, a SavedModel folder, or an `.onnx` file.
    target:  a built-in target name (rpi4, android-nnapi, coral) or a target YAML path.
    data:    an `.npz` (x_train/y_train[/x_val/y_val] or x/y) or a folder of class folders;
             None means synthetic calibration inputs and no accuracy figures.
    recipe:  a recipe YAML; None means the target's default recipe.
    out:     the output folder (default out/<model>-<target>); written atomically.
    options: a BuildOptions (or the same as a dict: {"control_from_scratch": bool,
             "profile_agents": [URL, ...], "token_file": Path, "profile_local": bool}).
    """
    plan = plan_build(model, target, data, recipe, out, progress, instruments, options=options)
    failure = None
    with staged_output(plan.out) as workdir:
        best, attempts = back_off(plan, workdir, run_plan)
        chosen = best or attempts[-1]
        promote(best, workdir)
        if best is None:
            failure = budget_failure(attempts, plan.budget, can_back_off(plan.pipeline),
                                     (chosen.state.facts.get("verify") or {}).get("n_samples"))
            chosen.state.artifacts = []   # nothing over budget ships; the report says what was tried
        report = _finish(plan, chosen, best, attempts, workdir,
                         status="ok" if failure is None else f"failed: {failure}")
    if failure is not None:
        raise failure
    artifacts = [_moved(a, workdir, plan.out) for a in chosen.state.artifacts]
    return BuildResult(out=plan.out, report=report, artifacts=artifacts, warnings=list(chosen.state.warnings))


def _finish(plan: BuildPlan, chosen: Attempt, best: Attempt | None, attempts: list[Attempt],
            workdir: Path, status: str) -> dict[str, Any]:
    """After the search: the control run, estimates and profiles, then report.json / .md / .html."""
    from edgesparse.report import build_report, write_reports

    opts = plan.options
    if opts.control_from_scratch and best is not None:
        from edgesparse.control import train_from_scratch

        chosen.state.record("control", **train_from_scratch(chosen.state, chosen.records, plan.data,
                                                            plan.recipe.spec.seed, plan.progress))
    profile = {"estimates": estimates(chosen.state.artifacts, plan.target, chosen.macs),
               "measured": measure(chosen.state.artifacts, plan.target, chosen.macs, list(opts.profile_agents),
                                   opts.token_file, opts.profile_local, plan.progress)}
    report = build_report(state=chosen.state, records=chosen.records, target=plan.target,
                          recipe=plan.recipe, data=plan.data, seconds=time.perf_counter() - plan.started,
                          workdir=workdir, budget=budget_summary(plan.budget, attempts, best),
                          trajectory=[r for a in attempts for r in a.records], status=status,
                          profile=profile)
    write_reports(report, workdir)
    return report


def _budget(recipe: Recipe, data: Dataset) -> float | None:
    """The enforced budget in points, or None. An explicit budget needs labelled validation data."""
    explicit = recipe.spec.max_accuracy_drop
    if explicit is not None and not data.labelled:
        raise UserError(f"{recipe.origin}: max_accuracy_drop is set but the data has no labelled "
                        "validation split; pass --data with labels or remove the budget")
    if explicit is not None:
        return explicit
    return DEFAULT_MAX_ACCURACY_DROP if data.labelled else None


def judge(strength: float, folder: Path, state: ModelState, records: list[PassRecord], target: Target,
          budget: float | None) -> Attempt:
    """One run's result: the primary artifact's accuracy against the imported model's."""
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
                   workdir=folder, state=state, records=records)


def _moved(artifact: Artifact, workdir: Path, out: Path) -> Artifact:
    """Artifacts were written in the staging folder; point them at their final place."""
    try:
        rel = artifact.path.relative_to(workdir)
    except ValueError:
        return artifact
    artifact.path = out / rel
    return artifact


__all__ = ["build", "plan_build", "run_plan", "BuildPlan", "BuildOptions", "BuildResult", "PassRecord"]
