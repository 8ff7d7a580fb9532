"""Running a tune: set-up from files, the coordinator, a worker joining a shared study, the result.

A study remembers how it was set up (model, data and target paths, their hashes, the settings),
so `edgesparse tune worker --storage URL --study NAME` on another machine needs nothing else: it
loads the same files (from the same paths, or from --model/--data given there) and refuses
files whose hashes differ.
"""
from __future__ import annotations

import collections
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from edgesparse.errors import UserError
from edgesparse.files import sha256_file
from edgesparse.search import study as studies
from edgesparse.search import tune as search
from edgesparse.search.space import DEFAULT_FAMILIES, build_space
from edgesparse.search.trials import LOWRANK, PROFILE_PARAMS, Base, full_recipe, proxy_recipe

TUNE_SCHEMA = "edgesparse.tune/1"


def _precisions(target) -> list[str]:
    """What the search may choose: int8 always; fp32 too where the target runs float."""
    if target.name == "coral" or list(getattr(target.constraints, "int8_io", [])) in (["int8"], ["uint8"]):
        return ["int8"]
    return ["int8", "fp32"]


def _default_keep(recipe) -> float | None:
    for p in recipe.passes:
        if p.name == "prune":
            c = p.config
            if c.ratio is not None:
                return round(1 - c.ratio, 4)
            if c.macs is not None:       # MACs of a conv chain scale with keep^2
                return round(float(c.macs) ** 0.5, 4)
    return None


def prepare(model: Path, target_name: str, data: Path | None, *, agents: list[str],
            token_file: Path | None, local: bool, max_accuracy_drop: float | None = None,
            knobs: tuple[str, ...] | list[str] = DEFAULT_FAMILIES, latency_table: bool = False) -> Base:
    """Load and check everything once: the build plans of each fidelity, the space, the reference."""
    import tempfile

    from edgesparse.recipe import recipe_for
    from edgesparse.targets import load_target

    target = load_target(target_name)
    default = recipe_for(target, None)
    if data is None:
        raise UserError("edgesparse tune needs --data with labels: accuracy is one of its objectives")
    # The plans' recipe files live here only while they are planned (every run left one behind).
    scratch = Path(tempfile.mkdtemp(prefix="edgesparse-tune-"))
    try:
        return _prepare(model, target, default, data, scratch, agents=agents, token_file=token_file,
                        local=local, max_accuracy_drop=max_accuracy_drop, knobs=knobs,
                        latency_table=latency_table)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _prepare(model: Path, target, default, data: Path, scratch: Path, *, agents: list[str],
             token_file: Path | None, local: bool, max_accuracy_drop: float | None,
             knobs, latency_table: bool) -> Base:
    import yaml

    from edgesparse.build_api import plan_build
    from edgesparse.train.metrics import accuracy

    first = plan_build(model, target, data, out=scratch / "probe",
                       options={"profile_agents": list(agents), "token_file": token_file})
    if not first.data.labelled or first.data.x_val is None:
        raise UserError(f"{data} has no labels: tune measures accuracy, so it needs x/y labels")
    space = build_space(first.pristine, sha256_file(model), _precisions(target),
                        round_to=int(target.simd_width or 1), families=tuple(knobs))
    if not space.knobs:
        raise UserError(f"{model}: --knobs {','.join(knobs)} gives no knob for this model (no prunable "
                        "group, residual block or factorisable layer; see docs/tune.md)")
    if not space.group_sizes or "keep" not in knobs:
        # Every trial is a prune at the point's widths, then the rest: without keep knobs the
        # plan's prune had no budget, and the error named tune's own temporary recipe file.
        raise UserError(f"--knobs {','.join(knobs)}: tune searches widths first, and this leaves it "
                        "none (no keep knob" + ("" if "keep" in knobs else ": add keep") +
                        "); use --knobs keep," + ",".join(k for k in knobs if k != "keep"))
    if latency_table and not (agents or local):
        raise UserError("--latency-table is measured on a device: give --agent URL (or --local for this "
                        "machine); without one the search uses the roofline estimate")
    if latency_table and space.rank_names:
        raise UserError("--latency-table has no entries for factorised layers; leave rank out of --knobs "
                        "or measure every trial on the device (without --latency-table)")
    reference = round(accuracy(first.pristine, first.data.x_val, first.data.y_val), 3)
    none = space.uniform(1.0)
    recipes = {"proxy": proxy_recipe(default, space),
               "full": full_recipe(default, none, space, max_accuracy_drop, lowrank=False)}
    if space.rank_names:
        recipes["proxy" + LOWRANK] = proxy_recipe(default, space, lowrank=True)
        recipes["full" + LOWRANK] = full_recipe(default, none, space, max_accuracy_drop, lowrank=True)
    plans = {}
    for fidelity, recipe in recipes.items():
        path = scratch / f"{fidelity}.yaml"
        path.write_text(yaml.safe_dump(recipe, sort_keys=False))
        plans[fidelity] = plan_build(model, target, data, recipe=path, out=scratch / fidelity)
    return Base(plans=plans, target=target, default_recipe=default, space=space,
                reference_accuracy=reference, recipes=recipes, agents=list(agents),
                token_file=token_file, local=local)


def identity(base: Base, settings: search.TuneSettings, data: Path | None) -> dict[str, Any]:
    # The model is named on its own (the space's fingerprint hashes it too): a study reused with
    # another model was refused as differing in "space" only, a knob nobody had changed.
    return {"model": base.space.model_sha256, "space": base.space.fingerprint(), "target": base.target.name,
            "data": sha256_file(data) if data is not None and Path(data).is_file() else str(data),
            "constraints": settings.constraints(), "objectives": list(studies.OBJECTIVES),
            "sampler": settings.sampler}


def setup_attrs(model: Path, target: str, data: Path | None, settings: search.TuneSettings) -> dict[str, Any]:
    return {"model": str(Path(model).resolve()), "target": target,
            "data": None if data is None else str(Path(data).resolve()), "settings": asdict(settings)}


def open_for(base: Base, settings: search.TuneSettings, storage: str, name: str,
             data: Path | None, setup: dict[str, Any] | None = None, worker: str | None = None):
    study = studies.open_study(storage, name, identity(base, settings, data),
                               sampler=search.make_sampler(settings, worker, base.space))
    if setup is not None and "setup" not in study.user_attrs:
        study.set_user_attr("setup", setup)
    return study


TABLE_ATTR = "latency_table"


def ensure_table(base: Base, study, settings: search.TuneSettings, progress=None,
                 wait_s: float = 0.0) -> None:
    """With --latency-table: the study's table, measured once on the device (by the coordinator;
    a worker waits up to `wait_s` for it), read by every proxy trial."""
    from edgesparse.profile.layer_table import LatencyTable, measure_table
    from edgesparse.search.trials import device_latency, run_trial

    if not settings.latency_table:
        return
    deadline = time.monotonic() + wait_s
    while TABLE_ATTR not in study.user_attrs and time.monotonic() < deadline:
        time.sleep(2.0)             # user_attrs reads the storage each time
    if TABLE_ATTR in study.user_attrs:
        base.table = LatencyTable.from_dict(study.user_attrs[TABLE_ATTR])
        return
    if wait_s:
        raise UserError(f"study {study.study_name!r} has no latency table after {wait_s:.0f} s; the "
                        "coordinator measures it before the first trial: start workers after that")
    full = {}
    for precision in base.space.precisions or [base.space.default_precision]:
        point = base.space.uniform(1.0, precision)
        full[precision] = (base.space.layer_widths(point),
                           run_trial(base, point, "proxy", measured=True).latency_ms)
    model = base.plans["proxy"].pristine
    _, device = device_latency(base, None)
    base.table = measure_table(model, base.space.table_pairs(), list(full), full,
                               measure=lambda path: device_latency(base, path)[0], device=device,
                               params=dict(PROFILE_PARAMS), progress=progress)
    study.set_user_attr(TABLE_ATTR, base.table.to_dict())


def coordinate(base: Base, settings: search.TuneSettings, storage: str, name: str, model: Path,
               data: Path | None, progress=None) -> Any:
    """Create or resume the study, [measure its latency table,] enqueue the baselines, and work
    until the budget is spent."""
    study = open_for(base, settings, storage, name, data, setup_attrs(model, base.target.name, data, settings))
    study.set_user_attr("budget", settings.trials)
    ensure_table(base, study, settings, progress)
    search.enqueue_baselines(study, search.baseline_points(base.space, _default_keep(base.default_recipe)))
    task = progress.task("tune: proxy trials", total=settings.trials) if progress else None
    if task:
        task.advance(search.finished(study))

    def tick(number, row):
        if task:
            task.update(description=f"tune: trial {number}: {row['accuracy']}% "
                                    f"{row['latency_ms']:.3f} ms {row['bytes']} B")
            task.advance(1)

    search.work(study, base, settings, settings.trials, on_trial=tick)
    if task:
        task.close()
    return study


def join(storage: str, name: str, model: Path | None, data: Path | None, *, agents: list[str],
         token_file: Path | None, local: bool, progress=None) -> dict[str, Any]:
    """`edgesparse tune worker`: work on an existing study until its budget is spent."""
    optuna = studies.import_optuna()
    storage = studies.storage_url(storage, Path("."), existing=True)
    rdb = studies.open_storage(storage)
    try:
        summaries = {s.study_name: s for s in optuna.get_all_study_summaries(rdb)}
    except Exception as exc:
        raise UserError(f"cannot read studies from {studies.redact(storage)}: {str(exc).splitlines()[0][:200]}") from None
    if name not in summaries:
        known = ", ".join(sorted(summaries)[:5]) or "none"
        raise UserError(f"no study {name!r} in {studies.redact(storage)} (studies there: {known}); "
                        "start it with `edgesparse tune MODEL --storage URL --study NAME` first")
    attrs = summaries[name].user_attrs
    setup = attrs.get("setup")
    if not setup:
        raise UserError(f"study {name!r} was not started by edgesparse tune (it has no set-up record)")
    settings = search.TuneSettings(**setup["settings"])
    model = Path(model or setup["model"])
    data = Path(data or setup["data"]) if (data or setup["data"]) else None
    for label, path in (("model", model), ("data", data)):
        if path is not None and not path.exists():
            raise UserError(f"the study's {label} {path} is not on this machine; give --{label} PATH "
                            "with the same file")
    base = prepare(model, setup["target"], data, agents=agents, token_file=token_file, local=local,
                   max_accuracy_drop=settings.max_accuracy_drop, knobs=settings.knobs,
                   latency_table=settings.latency_table)
    study = open_for(base, settings, storage, name, data,    # refuses files with other hashes
                     worker=search.worker_name())
    ensure_table(base, study, settings, wait_s=1800.0)
    budget = int(attrs.get("budget", settings.trials))
    started = time.monotonic()
    done = search.work(study, base, settings, budget)
    return {"study": name, "completed_here": done, "seconds": round(time.monotonic() - started, 1),
            "completed_in_study": search.finished(study)}


def latency_sources(rows: list[dict[str, Any]]) -> str | None:
    """Where the trials' latency came from, for the report's label: one source as is; several
    (a fleet of agents, or a study that changed device) each with its trial count, because the
    label of the first trial alone would misname the others."""
    counts = collections.Counter(r.get("latency_source") for r in rows if r.get("latency_source"))
    if not counts:
        return None
    if len(counts) == 1:
        return next(iter(counts))
    return "; ".join(f"{src} ({n} trial{'' if n == 1 else 's'})" for src, n in counts.most_common())


def result_report(base: Base, settings: search.TuneSettings, study, storage: str, name: str,
                  refined: list[dict[str, Any]], picked: dict[str, Any] | None, pick_rule: str | None,
                  seconds: float, table_check: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    rows = search.trial_rows(study)
    proxy_front = search.pareto(rows)
    full_front = search.pareto(refined)
    baselines = [r for r in rows if r.get("baseline")]
    return {
        "schema": TUNE_SCHEMA,
        "study": name, "storage": studies.redact(storage),
        "model": base.name, "target": base.target.name,
        "reference_accuracy": base.reference_accuracy,
        "latency_source": latency_sources(rows),
        "settings": asdict(settings),
        "space": {"groups": base.space.group_sizes, "precisions": list(base.space.precisions) or
                  [base.space.default_precision], "fingerprint": base.space.fingerprint(),
                  "knobs": [k.describe() for k in base.space.knobs],
                  "blocks": {a: list(ls) for a, ls in base.space.blocks.items()}},
        "latency_table": None if base.table is None else {
            **base.table.to_dict(), "label": base.table.label,
            "liked": {p: base.table.liked_widths(p) for p in base.table.entries}},
        "table_check": table_check or [],
        "trials": rows, "baselines": baselines,
        "proxy_front": proxy_front, "full_front": full_front, "refined": refined,
        "feasible_trials": sum(1 for r in rows if r["feasible"]),
        "closest_if_infeasible": [] if any(r["feasible"] for r in rows) else search.closest_to_feasible(rows),
        "unmet": None if any(r["feasible"] for r in rows) else
        search.unmet_constraints(rows, settings, base.reference_accuracy),
        "picked": picked, "pick_rule": pick_rule, "seconds": round(seconds, 1),
    }


def run(model: Path, target: str, data: Path | None, out: Path, *, storage: str | None,
        study_name: str | None, settings: search.TuneSettings, agents: list[str],
        token_file: Path | None, local: bool, pick_rule: str | None, refine: bool = True,
        progress=None) -> dict[str, Any]:
    """The whole `edgesparse tune`: search, refine the front, pick, write the reports into `out`
    (atomically: a failure leaves nothing there)."""
    import yaml

    from edgesparse.outdir import check_writable, staged_output
    from edgesparse.report.tune import write_tune_reports

    if pick_rule is not None and pick_rule not in search.PICK_RULES:
        raise UserError(f"--pick {pick_rule!r}: choose one of {', '.join(search.PICK_RULES)}")
    settings.check()
    if study_name is not None and not study_name.strip():
        raise UserError("--study is blank; give the study a name, or leave --study out for "
                        f"{Path(model).stem}-{target}")
    check_writable(out)
    started = time.monotonic()
    url = studies.storage_url(storage, out)
    name = study_name or f"{Path(model).stem}-{target}"
    base = prepare(Path(model), target, data, agents=agents, token_file=token_file, local=local,
                   max_accuracy_drop=settings.max_accuracy_drop, knobs=settings.knobs,
                   latency_table=settings.latency_table)
    study = coordinate(base, settings, url, name, Path(model), data, progress)
    with staged_output(out) as workdir:
        rows = search.trial_rows(study)
        front = search.pareto(rows)
        table_check = search.remeasure(base, front) if base.table is not None else []
        refined = []
        if refine and front:
            task = progress.task("tune: fine-tuning the Pareto set", total=len(front)) if progress else None
            refined = search.refine(base, front, settings, workdir / "trials",
                                    on_point=(lambda n, r: task.advance(1)) if task else None)
            if task:
                task.close()
        candidates = refined if refined else front
        picked = search.pick(candidates, pick_rule, base.reference_accuracy,
                             settings.max_accuracy_drop) if pick_rule else None
        if pick_rule and picked is not None:
            recipe = _recipe_of(base, picked, settings.max_accuracy_drop)
            (workdir / "picked-recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
        report = result_report(base, settings, study, url, name, refined, picked, pick_rule,
                               time.monotonic() - started, table_check)
        write_tune_reports(report, workdir)
    if pick_rule and picked is None:
        why = search.unmet_constraints(candidates or rows, settings, base.reference_accuracy)
        raise UserError(f"--pick {pick_rule}: {why}; the report in {out} shows the closest trials "
                        "(no picked-recipe.yaml was written): relax that constraint or add --trials")
    return report


def _recipe_of(base: Base, row: dict[str, Any], max_accuracy_drop: float | None) -> dict[str, Any]:
    return full_recipe(base.default_recipe, row["params"], base.space, max_accuracy_drop)
