"""`edgesparse grow MODEL --data D [--start-width 0.25] [--target-accuracy 97] [--max-macs 1.0]
[--prune-to-params 2000] --out M.keras`

Runs the very same `grow` pass a recipe runs (`- pass: grow`), on its own, and writes the grown
model through a temporary file renamed into place (a failure leaves nothing half-written).
TensorFlow is imported inside the command only.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Optional

import typer

from edgesparse.cli import UNSAFE_LOAD_HELP
from edgesparse.cli._options import command, config_parameter, config_values, parameter
from edgesparse.errors import UserError, describe_validation_error
from edgesparse.files import check_new_file, write_new_file
from edgesparse.passes.grow import GrowConfig


def _config(settings: dict) -> GrowConfig:
    from pydantic import ValidationError

    try:
        return GrowConfig(**{k: v for k, v in config_values(GrowConfig, settings).items() if v is not None})
    except ValidationError as exc:
        raise UserError(f"grow: {describe_validation_error(exc, as_option=True)}") from None


def grow(model: Path, data: Optional[Path], out: Optional[Path], json_out: bool, unsafe_load: bool, **settings):
    """Start from a small version of MODEL and grow it while training until it is good enough."""
    cfg = _config(settings)
    out = out if out is not None else Path(f"{model.stem}-grown.keras")
    if out.suffix not in (".keras", ".h5"):
        raise UserError(f"--out {out} must be a file ending in .keras or .h5")
    check_new_file(out)
    state = run_grow(model, data, cfg, unsafe_load)
    from edgesparse.console import console

    render(state, console)
    write_new_file(out, state.model.save)
    console.print(f"wrote {out}")
    if json_out:
        sys.stdout.write(json.dumps(state.facts.get("grow", {}), indent=2, default=str) + "\n")


GROW_OPTIONS = [
    parameter("model", Path, typer.Argument(..., help="The architecture to grow into (.keras / .h5; its accuracy "
                                                      "sets the default target)")),
    parameter("data", Optional[Path], typer.Option(None, "--data", "-d", help="A labelled .npz or image folder.")),
    *(config_parameter(GrowConfig, f) for f in (
        "start_width", "start_density", "target_accuracy", "accuracy_budget", "max_macs", "max_params",
        "grow_step", "connection_step", "patience", "grow_patience", "keep_moments", "max_epochs", "prune_to_params",
        "prune_epochs", "prune_regrow", "learning_rate", "batch_size", "seed")),
    parameter("out", Optional[Path], typer.Option(None, "--out", "-o", help="Output model (default <model>-grown.keras here).")),
    parameter("json_out", bool, typer.Option(False, "--json", help="Print the pass's facts as JSON to stdout.")),
    parameter("unsafe_load", bool, typer.Option(False, "--unsafe-load", help=UNSAFE_LOAD_HELP)),
]


def register(app: typer.Typer) -> None:
    app.command("grow")(command(grow, GROW_OPTIONS))


def run_grow(model_path: Path, data_path: Optional[Path], cfg: GrowConfig, unsafe_load: bool = False):
    """Load, check the plan (before any work), run the pass; returns the ModelState."""
    from edgesparse.console import RichProgress
    from edgesparse.data import label_classes, load_data
    from edgesparse.frontends import load_model
    from edgesparse.passes.grow import GrowPass
    from edgesparse.pipeline import DataInfo, PlanContext, RunContext
    from edgesparse.state import ModelState

    if not model_path.exists():
        raise UserError(f"model {model_path} does not exist")
    keras_model, source = load_model(model_path, unsafe=unsafe_load)
    input_shape = tuple(int(d) for d in keras_model.input_shape[1:])
    num_classes = int(keras_model.output_shape[-1])
    dataset = load_data(data_path, input_shape, label_classes(keras_model), seed=cfg.seed or 0)
    the_pass = GrowPass(cfg)
    info = DataInfo(real=dataset.real, labelled=dataset.labelled, source=dataset.source,
                    input_shape=input_shape, num_classes=num_classes)
    problems = the_pass.check(PlanContext(target=None, data=info, passes=[the_pass], index=0))
    if problems:
        raise UserError(problems[0])
    state = ModelState(model=keras_model, name=model_path.stem, reference=keras_model, source=source)
    with tempfile.TemporaryDirectory() as work, RichProgress() as progress:
        ctx = RunContext(target=None, data=dataset, workdir=Path(work), seed=cfg.seed or 0, progress=progress)
        return the_pass.run(state, ctx)


def render(state, console) -> None:
    from edgesparse.console import table

    f = state.facts["grow"]
    for w in state.warnings:
        console.print(f"[bold yellow]warning:[/] {w}")
    layers = list(f["given"]["widths"])
    console.print(table(f"grow: target {f['target_accuracy']:.2f}% ({f['target_source']}), "
                        f"{'reached' if f['reached'] else 'MISSED'}, stopped by {f['stopped_by']}",
                        ["step", "event", "epochs", "val acc %", "MACs", "params", "connections",
                         "MAC-epochs", *layers],
                        [[r["step"], r["event"], r["epochs"], round(r["accuracy"], 2), r["macs"], r["params"],
                          r["connections"], f"{r['mac_epochs']:.3g}", *(r["widths"][k] for k in layers)]
                         for r in f["trajectory"]]))
    console.print(f"given architecture: {f['given']['macs']} MACs, widths "
                  + ", ".join(f"{k} {v}" for k, v in f["given"]["widths"].items())
                  + f"; training cost {f['mac_epochs']:.3g} MAC-epochs "
                    f"({f['mac_epochs_per_given_epoch']:g} epochs of the given architecture)"
                  + (f"; {f['active_mac_epochs']:.3g} counting only the active connections" if f.get("start_density")
                     else ""))
