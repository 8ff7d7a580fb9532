"""`edgesparse lowrank`: the lowrank pass one step at a time.

Runs exactly the pass a recipe runs (factorisation, refit and, with labelled data, a short
fine-tune) and writes the factorised Keras model, next to its final name and moved into place,
so an error leaves nothing half-written (and never over an existing file).
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Optional

import typer
from pydantic import ValidationError

from edgesparse.cli import UNSAFE_LOAD_HELP
from edgesparse.cli._options import ConfigOption, command, config_parameter, config_values, parameter
from edgesparse.errors import UserError, describe_validation_error
from edgesparse.files import check_new_file, write_new_file
from edgesparse.passes.lowrank.pass_ import LowRankConfig

MODEL_HELP = "A Keras model file (.keras, .h5) or SavedModel folder."


def register(app: typer.Typer) -> None:
    app.command("lowrank")(command(lowrank, LOWRANK_OPTIONS))


def lowrank(model: Path, data: Optional[Path], target: Optional[str], out: Optional[Path], unsafe_load: bool,
            **settings):
    """Factorise Dense/Conv2D layers into low-rank chains (a MAC target, kept energy or VBMF);
    write the factorised model."""
    from edgesparse.console import RichProgress, console
    from edgesparse.data import label_classes, load_data
    from edgesparse.frontends.keras import load_model
    from edgesparse.passes.lowrank.pass_ import LowRankPass, config_problems
    from edgesparse.pipeline import RunContext
    from edgesparse.state import ModelState

    out = out or model.with_name(model.stem + "-lowrank.keras")
    if out.suffix != ".keras":
        raise UserError(f"--out {out} must end in .keras")
    check_new_file(out)
    epochs = settings.pop("finetune_epochs")          # None: decided by the data below
    try:
        config = LowRankConfig(**config_values(LowRankConfig, settings), finetune_epochs=epochs or 0)
    except ValidationError as exc:
        raise UserError(f"lowrank: {describe_validation_error(exc, as_option=True)}") from None
    problems = config_problems(config)
    if problems:
        raise UserError(f"lowrank: {problems[0]}")
    tgt = None
    if target is not None:
        from edgesparse.targets import load_target
        tgt = load_target(target)
    m, _ = load_model(model, unsafe=unsafe_load)
    dataset = load_data(data, tuple(int(d) for d in m.inputs[0].shape[1:]), label_classes(m))
    if epochs is None and dataset.labelled:
        config = config.model_copy(update={"finetune_epochs": 2 if dataset.labelled else 0})
    state = ModelState(model=m, name=model.stem, reference=m)
    with tempfile.TemporaryDirectory(prefix="edgesparse-lowrank-") as work, RichProgress() as progress:
        ctx = RunContext(target=tgt, data=dataset, workdir=Path(work), progress=progress)
        state = LowRankPass(config).run(state, ctx)
        write_new_file(out, state.model.save)
    for w in state.warnings:
        console.print(f"[bold yellow]warning:[/] {w}")
    render(state.facts["lowrank"], console)
    console.print(f"wrote {out}")


LOWRANK_OPTIONS = [
    parameter("model", Path, typer.Argument(..., help=MODEL_HELP)),
    parameter("data", Optional[Path], typer.Option(None, "--data", "-d", help="An .npz or image folder; labels enable the fine-tune.")),
    *(config_parameter(LowRankConfig, f) for f in ("macs", "energy", "vbmf", ConfigOption("method", short="-m"))),
    parameter("target", Optional[str], typer.Option(None, "--target", "-t", help="Target whose SIMD width sets the rank rounding.")),
    *(config_parameter(LowRankConfig, f) for f in (
        "round_to", "measure",
        ConfigOption("finetune_epochs", default=None, help="epochs of fine-tuning afterwards; "
                                                         "default: 2 with labelled data, else 0"),
        ConfigOption("refit", negated=True, help="skip the least-squares refit of each last factor"),
        "calibration_samples")),
    parameter("out", Optional[Path], typer.Option(None, "--out", "-o", help="Output .keras file (default <model>-lowrank.keras).")),
    parameter("unsafe_load", bool, typer.Option(False, "--unsafe-load", help=UNSAFE_LOAD_HELP)),
]


def render(facts: dict, console) -> None:
    from edgesparse.console import table

    rows = [["MACs", facts["macs_before"], facts["macs_after"], f"{facts['macs_kept']:.1%}"],
            ["parameters", facts["params_before"], facts["params_after"], f"{facts['params_kept']:.1%}"]]
    if facts.get("accuracy_before") is not None:
        rows.append(["validation accuracy %", facts["accuracy_before"], facts["accuracy_after"],
                     f"refit only: {facts['accuracy_refit']}"])
    console.print(table(f"lowrank ({facts['method']}, {facts['selection']}, ranks rounded to {facts['round_to']})",
                        ["", "before", "after", ""], rows))
    console.print(table("ranks per layer (relative output error on held-out samples, before and after the refit)",
                        ["layer", "form", "rank", "limit", "MACs before", "MACs after", "error before",
                         "error after", "kept"],
                        [[r["layer"], r["form"], "x".join(map(str, r["ranks"])), "x".join(map(str, r["limits"])),
                          r["macs_before"], r["macs_after"], r["error_before"], r["error_after"],
                          "yes" if r["kept"] else f"no: {r.get('speedup_host')}x on this host"]
                         for r in facts["layers"]]))
