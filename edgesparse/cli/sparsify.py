"""`edgesparse sparsify MODEL --data D --sparsity 0.95 [--pattern 2:4] --out sparse.keras`

Runs the very same `sparsify` pass a recipe runs, on its own, and writes the sparse Keras model
(through a temporary file renamed into place, so a failure leaves nothing half-written).
This module is imported when the CLI starts: TensorFlow is imported inside the command only.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Optional

import typer

from edgesparse.cli import UNSAFE_LOAD_HELP
from edgesparse.cli._options import ConfigOption, command, config_parameter, config_values, parameter
from edgesparse.errors import UserError, describe_validation_error
from edgesparse.files import check_new_file, write_new_file
from edgesparse.passes.sparsify.pass_ import SparsifyConfig

MODEL_SUFFIXES = (".keras", ".h5")


def _config(settings: dict):
    from pydantic import ValidationError

    try:
        return SparsifyConfig(**{k: v for k, v in config_values(SparsifyConfig, settings).items() if v is not None})
    except ValidationError as exc:
        raise UserError(describe_validation_error(exc, as_option=True)) from None


def _check_out(out: Path) -> None:
    if out.suffix not in MODEL_SUFFIXES:
        raise UserError(f"--out {out} must end in .keras or .h5")
    check_new_file(out)


def load_model(path: Path, unsafe: bool = False):
    """The importer (it translates Keras 3 files, and runs no code from the file unless `unsafe`)."""
    if not path.exists():
        raise UserError(f"model {path} does not exist")
    from edgesparse.frontends import load_model as import_model

    return import_model(path, unsafe=unsafe)


def sparsify(model: Path, data: Optional[Path], out: Optional[Path], json_out: bool, unsafe_load: bool,
             **settings):
    """Zero out weights for size (post-training refit by default) and write the sparse model."""
    cfg = _config(settings)
    out = out if out is not None else Path(f"{model.stem}-sparse.keras")
    _check_out(out)
    state = run_sparsify(model, data, cfg, unsafe_load)
    from edgesparse.console import console

    render(state, console)
    write_new_file(out, state.model.save)
    console.print(f"wrote {out}")
    if json_out:
        sys.stdout.write(json.dumps(state.facts.get("sparsify", {}), indent=2, default=str) + "\n")


SPARSIFY_OPTIONS = [
    parameter("model", Path, typer.Argument(..., help="A .keras / .h5 model (Keras 3 files are translated on import).")),
    parameter("data", Optional[Path], typer.Option(None, "--data", "-d", help="An .npz or image folder; the training split is the calibration set.")),
    *(config_parameter(SparsifyConfig, f) for f in (
        ConfigOption("sparsity", short="-s"), ConfigOption("pattern", short="-p"),
        ConfigOption("method", short="-m"), "criterion", "allocation", "epochs",
        "update_every", "drop_fraction", "end_fraction", "init", "learning_rate",
        "calibration_samples", "sizes", "seed")),
    parameter("out", Optional[Path], typer.Option(None, "--out", "-o", help="Output model (default <model>-sparse.keras here).")),
    parameter("json_out", bool, typer.Option(False, "--json", help="Print the pass's facts as JSON to stdout.")),
    parameter("unsafe_load", bool, typer.Option(False, "--unsafe-load", help=UNSAFE_LOAD_HELP)),
]


def register(app: typer.Typer) -> None:
    app.command("sparsify")(command(sparsify, SPARSIFY_OPTIONS))


def run_sparsify(model_path: Path, data_path: Optional[Path], cfg, unsafe_load: bool = False):
    """Load, check the plan (before any work), run the pass; returns the ModelState."""
    from edgesparse.console import RichProgress
    from edgesparse.data import label_classes, load_data
    from edgesparse.passes.sparsify.pass_ import SparsifyPass
    from edgesparse.pipeline import DataInfo, PlanContext, RunContext
    from edgesparse.state import ModelState

    keras_model, source = load_model(model_path, unsafe_load)
    input_shape = tuple(int(d) for d in keras_model.input_shape[1:])
    num_classes = int(keras_model.output_shape[-1])
    dataset = load_data(data_path, input_shape, label_classes(keras_model), seed=cfg.seed or 0)
    the_pass = SparsifyPass(cfg)
    info = DataInfo(real=dataset.real, labelled=dataset.labelled, source=dataset.source,
                    input_shape=input_shape, num_classes=num_classes)
    problems = the_pass.check(PlanContext(target=None, data=info, passes=[the_pass], index=0))
    if problems:
        raise UserError(problems[0])
    state = ModelState(model=keras_model, name=model_path.stem, reference=keras_model,
                       source=source)
    with tempfile.TemporaryDirectory() as work, RichProgress() as progress:
        ctx = RunContext(target=None, data=dataset, workdir=Path(work), seed=cfg.seed or 0,
                         progress=progress)
        return the_pass.run(state, ctx)


def render(state, console) -> None:
    from edgesparse.console import table

    f = state.facts.get("sparsify", {})
    for w in state.warnings:
        console.print(f"[bold yellow]warning:[/] {w}")
    notes = any(r.get("skipped") for r in f["layers"])
    errors = any("reconstruction_error" in r for r in f["layers"])
    # Errors: squared error of the layer's pre-activations against the dense network's,
    # relative to their variance, on the calibration inputs (refit route only).
    headers = ["layer", "kind", "kernel", "weights", "zeros %"]
    headers += ["err mask", "err refit"] if errors else []
    headers += ["kept dense because"] if notes else []
    rows = []
    for r in f["layers"]:
        row = [r["layer"], r["kind"], "x".join(map(str, r["shape"])), r["weights"],
               round(100 * r["sparsity"], 2)]
        if errors:
            row += [_g(r.get("reconstruction_error_mask_only")), _g(r.get("reconstruction_error"))]
        rows.append(row + [r.get("skipped") or ""] if notes else row)
    console.print(table(f"sparsify ({f['method']}, {f['pattern']})", headers, rows))
    summary = [["zeros over sparsified kernels %", round(100 * f["sparsity"], 2)],
               ["zeros over all kernels %", round(100 * f["sparsity_all_kernels"], 2)],
               ["non-zero kernel weights", f["nonzero_kernel_weights"]]]
    if "accuracy_before" in f:
        summary += [["validation accuracy before %", f["accuracy_before"]],
                    ["validation accuracy after %", f["accuracy_after"]]]
    console.print(table("summary", ["", "value"], summary))
    sizes = f.get("sizes")
    if sizes:
        keys = [k for k in sizes["dense"] if k.endswith("_bytes")]
        console.print(table("sizes (bytes)", ["form", "dense", "sparse"],
                            [[k.removesuffix("_bytes"), sizes["dense"][k], sizes["sparse"].get(k)]
                             for k in keys]))
        if sizes.get("note"):
            console.print(f"[yellow]note:[/] {sizes['note']}")
    console.print(f"[dim]{f['latency']}[/]")


def _g(v) -> str | None:
    """Errors span decades (0.0003 .. 2): three significant digits, not two decimals."""
    return None if v is None else f"{v:.3g}"
