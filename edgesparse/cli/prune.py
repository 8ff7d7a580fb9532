"""`edgesparse inspect` and `edgesparse prune`: the prune pass one step at a time.

`prune` runs exactly the pass a recipe runs (removal, reconstruction and, with labelled data, a
short fine-tune) and writes the smaller Keras model. The file is written next to its final name
and moved into place, so an error leaves nothing half-written.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Optional

import typer

from edgesparse.errors import UserError


def register(app: typer.Typer) -> None:
    app.command("inspect")(inspect)
    app.command("prune")(prune)


def _load(model_path: Path, input_shape: Optional[str] = None):
    from edgesparse.frontends import load_model

    model, _ = load_model(model_path, input_shape=input_shape)
    return model


def inspect(model: Path = typer.Argument(..., help="A Keras model file (.keras, .h5) or SavedModel folder.")):
    """Show the model's channel groups: sizes, coupled layers, and what cannot be pruned and why."""
    from edgesparse.console import console, table
    from edgesparse.graph.stats import count_macs, count_params
    from edgesparse.graph.channels import ChannelGraph

    from edgesparse.graph.flatten import flatten_nested

    m, flattened, why_not = flatten_nested(_load(model))
    graph = ChannelGraph(m)
    if flattened:
        console.print(f"nested models flattened into one graph: {', '.join(flattened)}")
    if why_not:
        console.print(f"[yellow]nested models kept as they are:[/] {why_not}")
    rows = []
    for g in graph.groups:
        rows.append([g.id, g.size, ", ".join(g.producers), ", ".join(g.consumers) or "—",
                     ", ".join(g.members) or "—", "yes" if g.prunable else "no: " + "; ".join(g.reasons)])
    console.print(f"{model.name}: {count_params(m):,} parameters, {count_macs(m):,} MACs, "
                  f"{len(graph.prunable_groups)} of {len(graph.groups)} channel groups prunable")
    console.print(table("channel groups (units removed together)",
                        ["group", "channels", "producers", "following layers", "carried through", "prunable"],
                        rows))
    if graph.unprunable_layers:
        console.print(table("layers the analysis does not understand (their groups are not pruned)",
                            ["layer", "why"], [[k, v] for k, v in graph.unprunable_layers.items()]))


def prune(
    model: Path = typer.Argument(..., help="A Keras model file (.keras, .h5) or SavedModel folder."),
    data: Optional[Path] = typer.Option(None, "--data", "-d", help="An .npz or image folder; labels enable the fine-tune."),
    macs: Optional[float] = typer.Option(None, "--macs", help="Fraction of MACs to KEEP (0.5 = at most half the MACs)."),
    params: Optional[float] = typer.Option(None, "--params", help="Fraction of parameters to KEEP."),
    ratio: Optional[float] = typer.Option(None, "--ratio", help="Fraction of channels to REMOVE, in [0, 1)."),
    criterion: str = typer.Option("l1", "--criterion", "-c", help="l1, l2, bn_scale, taylor, activation, apoz, random, thinet."),
    allocation: str = typer.Option("uniform", "--allocation", help="uniform, global or sensitivity."),
    target: Optional[str] = typer.Option(None, "--target", "-t", help="Target whose SIMD width sets the channel rounding."),
    round_to: Optional[int] = typer.Option(None, "--round-to", help="Kept channel counts are multiples of this."),
    min_channels: int = typer.Option(1, "--min-channels"),
    steps: int = typer.Option(1, "--steps", help="Prune in this many steps."),
    finetune_epochs: Optional[int] = typer.Option(None, "--finetune-epochs", help="Default: 3 with labelled data, else 0."),
    no_reconstruct: bool = typer.Option(False, "--no-reconstruct", help="Skip the least-squares refit."),
    sensitivity: bool = typer.Option(False, "--sensitivity", help="Measure per-group sensitivity (table and plot)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output .keras file (default <model>-pruned.keras)."),
    input_shape: Optional[str] = typer.Option(None, "--input-shape", help="ONNX files with dynamic dimensions: the per-sample input shape in the file's layout, e.g. 3,224,224."),
):
    """Remove channels so the model meets a MAC, parameter or channel budget; write the smaller model."""
    from edgesparse.console import RichProgress, console, table
    from edgesparse.data import load_data
    from edgesparse.passes.prune.pass_ import PruneConfig, PrunePass, config_problems
    from edgesparse.pipeline import RunContext
    from edgesparse.state import ModelState

    out = out or model.with_name(model.stem + "-pruned.keras")
    if out.suffix != ".keras":
        raise UserError(f"--out {out} must end in .keras")
    tgt = None
    if target is not None:
        from edgesparse.targets import load_target
        tgt = load_target(target)
    m = _load(model, input_shape)
    dataset = load_data(data, tuple(int(d) for d in m.inputs[0].shape[1:]), int(m.output_shape[-1]))
    epochs = finetune_epochs if finetune_epochs is not None else (3 if dataset.labelled else 0)
    if allocation not in ("uniform", "global", "sensitivity"):
        raise UserError(f"--allocation {allocation!r} is not one of uniform, global, sensitivity")
    try:
        config = PruneConfig(criterion=criterion, ratio=ratio, macs=macs, params=params,
                             allocation=allocation, min_channels=min_channels, round_to=round_to,
                             reconstruct=not no_reconstruct, steps=steps, finetune_epochs=epochs,
                             sensitivity=sensitivity)
    except ValueError as exc:      # pydantic.ValidationError is a ValueError
        raise UserError(f"prune: {str(exc).splitlines()[0]}") from None
    problems = config_problems(config)
    if problems:
        raise UserError(f"prune: {problems[0]}")
    state = ModelState(model=m, name=model.stem, reference=m)
    with tempfile.TemporaryDirectory(prefix="edgesparse-prune-") as work, RichProgress() as progress:
        ctx = RunContext(target=tgt, data=dataset, workdir=Path(work), progress=progress)
        state = PrunePass(config).run(state, ctx)
        facts = state.facts["prune"]
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".keras", dir=out.parent, prefix=f".{out.stem}-")
        os.close(fd)
        try:
            state.model.save(tmp)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)     # mkstemp makes 0600; the model is an ordinary file
            os.replace(tmp, out)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        if "sensitivity" in facts and "plot" in facts["sensitivity"]:
            plot = out.with_name(out.stem + "-sensitivity.png")
            os.replace(Path(work) / facts["sensitivity"]["plot"], plot)
            facts["sensitivity"]["plot"] = str(plot)
    for w in state.warnings:
        console.print(f"[bold yellow]warning:[/] {w}")
    _render(facts, console, table)
    console.print(f"wrote {out}")


def _render(facts: dict, console, table) -> None:
    rows = [["MACs", facts["macs_before"], facts["macs_after"], f"{facts['macs_kept']:.1%}"],
            ["parameters", facts["params_before"], facts["params_after"], f"{facts['params_kept']:.1%}"]]
    if facts.get("accuracy_before") is not None:
        rows.append(["validation accuracy %", round(100 * facts["accuracy_before"], 2),
                     round(100 * facts["accuracy_after"], 2), ""])
    console.print(table(f"prune ({facts['criterion']}, {facts['budget']}, {facts['allocation']})",
                        ["", "before", "after", "kept"], rows))
    console.print(table("channels per layer", ["layer", "before", "after"],
                        [[k, v[0], v[1]] for k, v in facts["channels"].items() if v[0] != v[1]]))
    step_rows = []
    for s in facts["steps"]:
        step_rows.append([s["step"], s["removed_channels"], s["macs"], _pct(s.get("accuracy_pruned")),
                          _pct(s.get("accuracy_reconstructed")), _pct(s.get("accuracy_finetuned"))])
    console.print(table("steps (validation accuracy % after the cut, the refit, the fine-tune)",
                        ["step", "removed", "MACs", "cut", "refit", "tuned"], step_rows))
    refit = [[s["step"], r["layer"], r.get("error_before"), r.get("error_after"),
              "yes" if r["refit"] else r.get("why", "no: the slice was better")]
             for s in facts["reconstruction"] for r in s["layers"]]
    if refit:
        console.print(table("reconstruction: relative output error vs the unpruned layer (held-out samples)",
                            ["step", "layer", "before refit", "after refit", "refit"], refit))
    if "sensitivity" in facts:
        sens = facts["sensitivity"]
        keys = [k for k in sens["table"][0] if k not in ("group", "channels")] if sens["table"] else []
        console.print(table(f"sensitivity: {sens['metric']} % with one group pruned "
                            f"(unpruned {_pct(sens['baseline'])})",
                            ["group", "channels"] + [f"{float(k):.0%} removed" for k in keys],
                            [[r["group"], r["channels"]] + [_pct(r.get(k)) for k in keys]
                             for r in sens["table"]]))


def _pct(v):
    return None if v is None else round(100 * v, 2)
