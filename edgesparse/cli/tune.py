"""CLI: `edgesparse tune MODEL ...` (coordinate a search) and `edgesparse tune worker ...` (join
one). `register(app)` is called by cli/__init__.py. docs/tune.md explains both."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgesparse.errors import UserError
from edgesparse.search.space import DEFAULT_FAMILIES, FAMILIES

WORKER = "worker"


def tune_command(
    model: str = typer.Argument(..., help="A model file to search for (or `worker` to join an existing study)."),
    target: str = typer.Option("rpi4", "--target", "-t", help="rpi4, android-nnapi, coral, or a target YAML path."),
    data: Optional[Path] = typer.Option(None, "--data", "-d", help="Labelled .npz or image folder (accuracy is an objective)."),
    agent: Optional[list[str]] = typer.Option(None, "--agent", "-a", help="Agent URL measuring latency on the device (repeat for a fleet)."),
    token_file: Optional[Path] = typer.Option(None, "--token-file", envvar="EDGESPARSE_TOKEN_FILE", help="The agents' bearer token file."),
    local: bool = typer.Option(False, "--local", help="Measure latency on this machine (the build host, not the target) instead of estimating it."),
    storage: Optional[str] = typer.Option(None, "--storage", help="Study storage: a SQLite file (default: OUT.study.db) or postgresql://USER:PASS@HOST:PORT/DB."),
    study: Optional[str] = typer.Option(None, "--study", help="Study name (default: MODEL-TARGET); an existing one is resumed."),
    trials: int = typer.Option(60, "--trials", "-n", help="Proxy trials the study runs in all (across workers)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder for report.md/html/json (default out/tune-MODEL-TARGET)."),
    max_accuracy_drop: Optional[float] = typer.Option(1.0, "--max-accuracy-drop", help="Constraint: points below the imported model's accuracy."),
    max_latency_ms: Optional[float] = typer.Option(None, "--max-latency-ms", help="Constraint: p50 latency."),
    max_bytes: Optional[int] = typer.Option(None, "--max-bytes", help="Constraint: artifact size."),
    pick: Optional[str] = typer.Option(None, "--pick", help="Write the chosen point's recipe: fastest-within-budget, most-accurate or smallest-within-budget."),
    sampler: str = typer.Option("tpe", "--sampler", help="tpe (default), ehvi (expected hypervolume improvement over the rounded widths), descent (TPE with NetAdapt-style rounds), nsga2, gp (needs torch) or random (the control)."),
    seed: int = typer.Option(0, "--seed", help="Sampler seed."),
    refine: bool = typer.Option(True, "--refine/--no-refine", help="Fine-tune and re-measure the Pareto set (the default recipe's recovery)."),
    lease_seconds: float = typer.Option(120.0, "--lease-seconds", help="A trial whose worker stops renewing its lease this long is failed and retried once."),
    model_path: Optional[Path] = typer.Option(None, "--model", help="worker: this machine's path of the study's model file."),
    knobs: str = typer.Option(",".join(DEFAULT_FAMILIES), "--knobs", help=f"Knob families to search, comma-separated: {', '.join(FAMILIES)} (rank is opt-in; docs/tune.md)."),
    latency_table: bool = typer.Option(False, "--latency-table", help="Proxy latency from a per-layer table measured once on the device (--agent or --local), NetAdapt-style; the Pareto set is measured for real."),
):
    """Search per-layer widths and precision for the best accuracy/latency/size trade-offs.

    `edgesparse tune worker --storage URL --study NAME` joins a running study from another machine
    (it loads the study's model and data from the same paths, or from --model/--data).
    """
    from edgesparse.console import RichProgress, console
    from edgesparse.search import session
    from edgesparse.search.tune import TuneSettings

    if not lease_seconds > 0:
        raise UserError("--lease-seconds must be positive")
    from edgesparse.search.tune import SAMPLERS

    if sampler not in SAMPLERS:
        raise UserError(f"--sampler {sampler!r}: choose one of {', '.join(SAMPLERS)}")
    if model == WORKER:
        if not storage or not study:
            raise UserError("tune worker needs --storage URL and --study NAME of a running study")
        with RichProgress():
            summary = session.join(storage, study, model_path, data, agents=agent or [],
                                   token_file=token_file, local=local)
        console.print(f"worker: {summary['completed_here']} trials here; the study has "
                      f"{summary['completed_in_study']} completed ({summary['seconds']} s)")
        return
    path = Path(model)
    if not path.exists():
        raise UserError(f"model {path} does not exist")
    out = out or Path("out") / f"tune-{path.stem}-{Path(target).stem}"
    settings = TuneSettings(trials=trials, seed=seed, sampler=sampler, max_accuracy_drop=max_accuracy_drop,
                            max_latency_ms=max_latency_ms, max_bytes=max_bytes, lease_s=lease_seconds,
                            knobs=tuple(k.strip() for k in knobs.split(",") if k.strip()),
                            latency_table=latency_table)
    with RichProgress() as progress:
        report = session.run(path, target, data, out, storage=storage, study_name=study, settings=settings,
                             agents=agent or [], token_file=token_file, local=local, pick_rule=pick,
                             refine=refine, progress=progress)
    _render(report, out, console)


def _render(r: dict, out: Path, console) -> None:
    from edgesparse.console import table
    from edgesparse.report.markdown import sig
    from edgesparse.report.tune import structure

    # sig: a small model's latency is a few µs, which two decimals of a ms print as 0.00.
    def rows(front):
        return [[x["number"], x["accuracy"], sig(x["latency_ms"]), x["bytes"], x["macs"],
                 (x.get("params") or {}).get("precision", "—"), structure(x)] for x in front]

    headers = ["trial", "accuracy %", "latency ms", "bytes", "MACs", "precision", "blocks removed, ranks"]
    console.print(f"latency: {r['latency_source']}; imported model {r['reference_accuracy']}% (Keras)")
    console.print(table("baselines", headers, rows(r["baselines"])))
    console.print(table("proxy front (no fine-tune)", headers, rows(r["proxy_front"])))
    if r["refined"]:
        console.print(table("fine-tuned front", headers, rows(r["full_front"])))
    if r.get("table_check"):
        console.print(table("latency table vs measured (proxy front)", ["trial", "table µs", "measured µs", "error %"],
                            [[c["number"], round(c["table_ms"] * 1000, 2), round(c["measured_ms"] * 1000, 2),
                              c["error_pct"]] for c in r["table_check"]]))
    if r.get("picked"):
        console.print(f"picked trial {r['picked']['number']} ({r['pick_rule']}): {out}/picked-recipe.yaml")
    if not r["feasible_trials"]:
        closest = "; ".join(f"trial {x['number']}: {x['accuracy']}%, {x['latency_ms']:.3f} ms, {x['bytes']} B"
                            for x in r["closest_if_infeasible"])
        raise UserError(f"{r['unmet']}; closest: {closest}. The report in {out} has every trial")
    console.print(f"wrote {out}/ (report.md, report.html, report.json, pareto.png)")


def register(app: typer.Typer) -> None:
    app.command("tune")(tune_command)
