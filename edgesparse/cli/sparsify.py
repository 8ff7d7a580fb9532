"""`edgesparse sparsify MODEL --data D --sparsity 0.95 [--pattern 2:4] --out sparse.keras`

Runs the very same `sparsify` pass a recipe runs, on its own, and writes the sparse Keras model
(through a temporary file renamed into place, so a failure leaves nothing half-written).
This module is imported when the CLI starts: TensorFlow is imported inside the command only.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Optional

import typer

from edgesparse.errors import UserError

MODEL_SUFFIXES = (".keras", ".h5")


def _config(**params):
    from pydantic import ValidationError

    from edgesparse.passes.sparsify.pass_ import SparsifyConfig

    try:
        return SparsifyConfig(**{k: v for k, v in params.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        msg = first["msg"].removeprefix("Value error, ")
        raise UserError(f"--{where.replace('_', '-')}: {msg}" if where else msg) from None


def _check_out(out: Path) -> None:
    if out.suffix not in MODEL_SUFFIXES:
        raise UserError(f"--out {out} must end in .keras or .h5")
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; give a file path ending in .keras")
    parent = out.parent if str(out.parent) else Path(".")
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"cannot write {out}: {probe} is not writable; choose another --out")


def load_model(path: Path):
    """The importer when it is there (it translates Keras 3 files); plain tf_keras otherwise."""
    if not path.exists():
        raise UserError(f"model {path} does not exist")
    try:
        from edgesparse.frontends import load_model as import_model
    except ImportError:
        import_model = None
    if import_model is not None:
        return import_model(path)
    from edgesparse._tf import keras

    try:
        return keras.models.load_model(path, compile=False), {"path": str(path), "format": "tf_keras"}
    except Exception as exc:
        raise UserError(f"cannot load {path} as a tf_keras model: {exc}") from None


def save_atomically(model, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.stem}.partial-", suffix=out.suffix, dir=out.parent)
    os.close(fd)
    try:
        os.unlink(tmp)          # Keras refuses to overwrite without asking; let it create the file
        model.save(tmp)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def register(app: typer.Typer) -> None:
    @app.command("sparsify")
    def sparsify(
        model: Path = typer.Argument(..., help="A .keras / .h5 model (Keras 3 files are translated on import)."),
        data: Optional[Path] = typer.Option(None, "--data", "-d", help="An .npz or image folder; the training split is the calibration set."),
        sparsity: Optional[float] = typer.Option(None, "--sparsity", "-s", help="Fraction of kernel weights to zero, in [0, 1) (default 0.9)."),
        pattern: str = typer.Option("unstructured", "--pattern", "-p", help="'unstructured' or N:M, e.g. 2:4 (keep 2 of every 4 input channels)."),
        method: str = typer.Option("refit", "--method", "-m", help="refit (post-training, no labels) or magnitude (tfmot, fine-tunes with labels)."),
        criterion: str = typer.Option("obs", "--criterion", help="refit mask: obs, activation or magnitude."),
        allocation: str = typer.Option("erk", "--allocation", help="budget across layers: erk or uniform."),
        epochs: int = typer.Option(4, "--epochs", help="fine-tune epochs for --method magnitude."),
        calibration_samples: int = typer.Option(2048, "--calibration-samples", help="calibration inputs for the refit."),
        sizes: bool = typer.Option(True, "--sizes/--no-sizes", help="convert to TFLite to report raw/gzip/sparse sizes."),
        seed: int = typer.Option(0, "--seed"),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output model (default <model>-sparse.keras here)."),
        json_out: bool = typer.Option(False, "--json", help="Print the pass's facts as JSON to stdout."),
    ):
        """Zero out weights for size (post-training refit by default) and write the sparse model."""
        cfg = _config(sparsity=sparsity, pattern=pattern, method=method, criterion=criterion,
                      allocation=allocation, epochs=epochs, calibration_samples=calibration_samples,
                      sizes=sizes, seed=seed)
        out = out if out is not None else Path(f"{model.stem}-sparse.keras")
        _check_out(out)
        state = run_sparsify(model, data, cfg)
        from edgesparse.console import console

        render(state, console)
        save_atomically(state.model, out)
        console.print(f"wrote {out}")
        if json_out:
            sys.stdout.write(json.dumps(state.facts.get("sparsify", {}), indent=2, default=str) + "\n")


def run_sparsify(model_path: Path, data_path: Optional[Path], cfg):
    """Load, check the plan (before any work), run the pass; returns the ModelState."""
    from edgesparse.console import RichProgress
    from edgesparse.data import load_data
    from edgesparse.passes.sparsify.pass_ import SparsifyPass
    from edgesparse.pipeline import DataInfo, PlanContext, RunContext
    from edgesparse.state import ModelState

    keras_model, source = load_model(model_path)
    input_shape = tuple(int(d) for d in keras_model.input_shape[1:])
    num_classes = int(keras_model.output_shape[-1])
    dataset = load_data(data_path, input_shape, num_classes, seed=cfg.seed or 0)
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
