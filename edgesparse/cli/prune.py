"""`edgesparse inspect` and `edgesparse prune`: the prune pass one step at a time.

`prune` runs exactly the pass a recipe runs (removal, reconstruction and, with labelled data, a
short fine-tune) and writes the smaller Keras model. The file is written next to its final name
and moved into place, so an error leaves nothing half-written, and never over an existing file
(`files.write_new_file`).
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Optional

import typer
from pydantic import ValidationError

from edgesparse.cli import UNSAFE_LOAD_HELP
from edgesparse.cli._options import ConfigOption, command, config_parameter, config_values, parameter
from edgesparse.errors import UserError, describe_validation_error
from edgesparse.files import check_new_file, write_new_file
from edgesparse.passes.prune.pass_ import PruneConfig

MODEL_HELP = "A Keras model file (.keras, .h5), a SavedModel folder, or an ONNX file."


def register(app: typer.Typer) -> None:
    app.command("inspect")(inspect)
    app.command("prune")(command(prune, PRUNE_OPTIONS))


def _load(model_path: Path, unsafe: bool, input_shape: Optional[str] = None):
    from edgesparse.frontends import load_model

    model, _ = load_model(model_path, input_shape=input_shape, unsafe=unsafe)
    return model


UNSAFE_OPTION = typer.Option(False, "--unsafe-load", help=UNSAFE_LOAD_HELP)


INPUT_SHAPE_HELP = ("ONNX files with dynamic dimensions: the per-sample input shape in the file's "
                    "layout, e.g. 3,224,224.")


def inspect(model: Path = typer.Argument(..., help=MODEL_HELP), unsafe_load: bool = UNSAFE_OPTION,
            input_shape: Optional[str] = typer.Option(None, "--input-shape", help=INPUT_SHAPE_HELP)):
    """Show the model's channel groups: sizes, coupled layers, and what cannot be pruned and why."""
    from edgesparse.console import console, table
    from edgesparse.graph.stats import count_macs, count_params, uncounted_warning
    from edgesparse.graph.channels import ChannelGraph

    from edgesparse.graph.flatten import flatten_nested

    m, flattened, why_not = flatten_nested(_load(model, unsafe_load, input_shape))
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
    lower_bound = uncounted_warning(m)
    if lower_bound:
        console.print(f"[bold yellow]warning:[/] {lower_bound}")
    console.print(table("channel groups (units removed together)",
                        ["group", "channels", "producers", "following layers", "carried through", "prunable"],
                        rows))
    if graph.unprunable_layers:
        console.print(table("layers whose channel groups are not pruned, and why",
                            ["layer", "why"], [[k, v] for k, v in graph.unprunable_layers.items()]))


METHODS = ("oneshot", "group_lasso", "slimming", "movement")
# --method -> the criterion prune ranks by (group_lasso and slimming first train with their penalty)
METHOD_CRITERION = {"group_lasso": "group_norm", "slimming": "bn_scale", "movement": "movement"}


def _regularize_first(method: str, config: PruneConfig, epochs: int):
    """The regularize pass `--method group_lasso|slimming` runs before prune, at prune's budget."""
    from edgesparse.passes.regularize import RegularizePass

    if config.params is not None:
        raise UserError(f"prune: --method {method} drives channels to zero at a --macs or --ratio target; "
                        "--params is not supported with it")
    target = {"macs": config.macs} if config.macs is not None else {"width": 1.0 - config.ratio}
    return RegularizePass(method=method, epochs=epochs, min_channels=config.min_channels,
                          round_to=config.round_to, **target)


def prune(model: Path, data: Optional[Path], target: Optional[str], out: Optional[Path], unsafe_load: bool,
          input_shape: Optional[str], method: str = "oneshot", regularize_epochs: int = 20, **settings):
    """Remove channels so the model meets a MAC, parameter or channel budget; write the smaller model.

    --method oneshot scores, cuts, refits and fine-tunes; group_lasso and slimming first train
    with a sparsity penalty that drives the channels to cut to zero (regularize pass); movement
    ranks channels by how their weights move in a short fine-tune."""
    from edgesparse.console import RichProgress, console, table
    from edgesparse.data import label_classes, load_data
    from edgesparse.passes.prune.pass_ import PrunePass, config_problems
    from edgesparse.graph.stats import uncounted_warning
    from edgesparse.pipeline import RunContext
    from edgesparse.state import ModelState

    out = out or model.with_name(model.stem + "-pruned.keras")
    if out.suffix != ".keras":
        raise UserError(f"--out {out} must end in .keras")
    check_new_file(out)
    plot = out.with_name(out.stem + "-sensitivity.png")
    if settings["sensitivity"] or settings["allocation"] == "sensitivity":
        check_new_file(plot)
    tgt = None
    if target is not None:
        from edgesparse.targets import load_target
        tgt = load_target(target)
    if method not in METHODS:
        raise UserError(f"prune: unknown --method {method!r}; choose one of {', '.join(METHODS)}")
    m = _load(model, unsafe_load, input_shape)
    dataset = load_data(data, tuple(int(d) for d in m.inputs[0].shape[1:]), label_classes(m))
    if settings["finetune_epochs"] is None:
        settings["finetune_epochs"] = 3 if dataset.labelled and method == "oneshot" else 0
    if method != "oneshot":
        settings["criterion"] = METHOD_CRITERION[method]
    try:
        config = PruneConfig(**config_values(PruneConfig, settings))
    except ValidationError as exc:
        raise UserError(f"prune: {describe_validation_error(exc, as_option=True)}") from None
    problems = config_problems(config)
    if problems:
        raise UserError(f"prune: {problems[0]}")
    state = ModelState(model=m, name=model.stem, reference=m)
    lower_bound = uncounted_warning(m)
    if lower_bound:
        state.warn(lower_bound)
    with tempfile.TemporaryDirectory(prefix="edgesparse-prune-") as work, RichProgress() as progress:
        ctx = RunContext(target=tgt, data=dataset, workdir=Path(work), progress=progress)
        if method in ("group_lasso", "slimming"):
            state = _regularize_first(method, config, regularize_epochs).run(state, ctx)
        state = PrunePass(config).run(state, ctx)
        facts = state.facts["prune"]
        write_new_file(out, state.model.save)
        if "sensitivity" in facts and "plot" in facts["sensitivity"]:
            made = Path(work) / facts["sensitivity"]["plot"]
            write_new_file(plot, lambda tmp: shutil.copyfile(made, tmp))   # work may be on another disk
            facts["sensitivity"]["plot"] = str(plot)
    for w in state.warnings:
        console.print(f"[bold yellow]warning:[/] {w}")
    if "regularize" in state.facts:
        _render_regularize(state.facts["regularize"], console, table)
    _render(facts, console, table)
    console.print(f"wrote {out}")


PRUNE_OPTIONS = [
    parameter("model", Path, typer.Argument(..., help=MODEL_HELP)),
    parameter("data", Optional[Path], typer.Option(None, "--data", "-d", help="An .npz or image folder; labels enable the fine-tune.")),
    parameter("method", str, typer.Option("oneshot", "--method", "-m", help="oneshot (score, cut, refit, fine-tune), "
                                          "group_lasso or slimming (train with a sparsity penalty first), movement")),
    parameter("regularize_epochs", int, typer.Option(20, "--regularize-epochs", help="epochs of penalised training "
                                                     "for --method group_lasso/slimming")),
    *(config_parameter(PruneConfig, f) for f in ("macs", "params", "ratio", ConfigOption("criterion", short="-c"), "allocation")),
    parameter("target", Optional[str], typer.Option(None, "--target", "-t", help="Target whose SIMD width sets the channel rounding.")),
    *(config_parameter(PruneConfig, f) for f in (
        "round_to", "min_channels", "steps",
        ConfigOption("finetune_epochs", default=None, help="epochs of fine-tuning after each step; "
                                                         "default: 3 with labelled data, else 0"),
        ConfigOption("reconstruct", negated=True, help="skip the least-squares refit of the following layers"),
        "sensitivity")),
    parameter("out", Optional[Path], typer.Option(None, "--out", "-o", help="Output .keras file (default <model>-pruned.keras).")),
    parameter("unsafe_load", bool, UNSAFE_OPTION),
    parameter("input_shape", Optional[str], typer.Option(None, "--input-shape", help=INPUT_SHAPE_HELP)),
]


def _render(facts: dict, console, table) -> None:
    rows = [["MACs", facts["macs_before"], facts["macs_after"], f"{facts['macs_kept']:.1%}"],
            ["parameters", facts["params_before"], facts["params_after"], f"{facts['params_kept']:.1%}"]]
    if facts.get("accuracy_before") is not None:
        rows.append(["validation accuracy %", round(facts["accuracy_before"], 2),
                     round(facts["accuracy_after"], 2), ""])
    console.print(table(f"prune ({facts['criterion']}, {facts['budget']}, {facts['allocation']})",
                        ["", "before", "after", "kept"], rows))
    console.print(table("channels per layer", ["layer", "before", "after"],
                        [[k, v[0], v[1]] for k, v in facts["channels"].items() if v[0] != v[1]]))
    step_rows = []
    for s in facts["steps"]:
        step_rows.append([s["step"], s["removed_channels"], s["macs"], _2(s.get("accuracy_pruned")),
                          _2(s.get("accuracy_reconstructed")), _2(s.get("accuracy_finetuned"))])
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
                            f"(unpruned {_2(sens['baseline'])})",
                            ["group", "channels"] + [f"{float(k):.0%} removed" for k in keys],
                            [[r["group"], r["channels"]] + [_2(r.get(k)) for k in keys]
                             for r in sens["table"]]))


def _2(v):
    """Accuracies are percentages already; the terminal shows two decimals."""
    return None if v is None else round(v, 2)


def _render_regularize(f: dict, console, table) -> None:
    console.print(table(f"regularize: {f['metric']} {_2(f['start'])} -> {_2(f['end'])}, "
                        f"target {'reached' if f['reached'] else 'MISSED'}",
                        ["epoch", "method", "strength", "kept", "MACs kept", "metric %"],
                        [[r["epoch"], r["method"], f"{r['strength']:.3g}", f"{r['kept']:.1%}",
                          "" if "macs" not in r else f"{r['macs']:.1%}", _2(r["metric"])] for r in f["trajectory"]]))
