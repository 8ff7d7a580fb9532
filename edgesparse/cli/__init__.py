"""The `edgesparse` command. Thin: parse, call the library, render with rich.

Heavy imports (TensorFlow) happen inside the commands that need them, so `edgesparse agent serve`
starts on a device that has no TensorFlow.
"""
from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import Optional

import typer

from edgesparse.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Compress a trained network into a verified TFLite/ONNX artifact for an edge "
                       "target, then measure it on the device.")
_debug = {"on": False}
HOST_MODULES = {"tensorflow", "tf_keras", "tensorflow_model_optimization", "tf2onnx", "onnx"}
# Every command that loads a model offers --unsafe-load with this help (docs/security.md).
UNSAFE_LOAD_HELP = ("Let the model files (and a recipe's distill teacher) run the Python code they hold "
                    "(Lambda layers, lambda functions) while loading. Such code can do anything you can: "
                    "only for files you trust as much as a script. Off by default.")


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors.")):
    _debug["on"] = debug


@app.command()
def build(
    model: Path = typer.Argument(..., help="A tf_keras or Keras 3 .keras file, an .h5 file, a SavedModel folder, or an .onnx file."),
    target: str = typer.Option("rpi4", "--target", "-t", help="rpi4, android-nnapi, coral, or a target YAML path."),
    data: Optional[Path] = typer.Option(None, "--data", "-d", help="An .npz (x_train/y_train, optionally x_val/y_val; or x/y) or a folder of class sub-folders."),
    recipe: Optional[Path] = typer.Option(None, "--recipe", "-r", help="A recipe YAML replacing the target's default recipe."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default out/<model>-<target>)."),
    profile: Optional[list[str]] = typer.Option(None, "--profile", "-p", help="Agent URL to measure the artifacts on (repeat for several devices)."),
    token_file: Optional[Path] = typer.Option(None, "--token-file", envvar="EDGESPARSE_TOKEN_FILE", help="The agents' bearer token file."),
    profile_local: bool = typer.Option(False, "--profile-local", help="Also measure the artifacts on this machine."),
    control_from_scratch: bool = typer.Option(False, "--control-from-scratch", help="Also train the compressed architecture from scratch, for comparison."),
    json_out: bool = typer.Option(False, "--json", help="Print report.json to stdout."),
    unsafe_load: bool = typer.Option(False, "--unsafe-load", help=UNSAFE_LOAD_HELP),
    input_shape: Optional[str] = typer.Option(None, "--input-shape", help="ONNX files with dynamic dimensions: the per-sample input shape in the file's layout, e.g. 3,224,224."),
):
    """Run the pass pipeline and write verified artifacts plus report.md, report.html and report.json."""
    from edgesparse.build_api import build as run_build
    from edgesparse.console import RichProgress, console

    with RichProgress() as progress:
        result = run_build(model, target=target, data=data, recipe=recipe, out=out, progress=progress,
                           options={"profile_agents": profile or [], "token_file": token_file,
                                    "profile_local": profile_local,
                                    "control_from_scratch": control_from_scratch,
                                    "unsafe_load": unsafe_load, "input_shape": input_shape})
    _render_build(result, console)
    if json_out:
        sys.stdout.write(json.dumps(result.report, indent=2, default=str) + "\n")


def _render_build(result, console) -> None:
    from edgesparse.console import table

    r = result.report
    for w in r["warnings"]:
        console.print(f"[bold yellow]warning:[/] {w}")
    m = r["model"]
    final = m.get("final", {})
    console.print(table("model", ["", "params", "MACs", "Keras accuracy %"], [
        ["imported", m.get("params"), m.get("macs"), m.get("accuracy")],
        ["final", final.get("params"), final.get("macs"), final.get("accuracy")]]))
    console.print(table("passes", ["pass", "seconds", "params", "MACs", "accuracy %"], [
        [p["name"], p["seconds"], p["metrics"].get("params"), p["metrics"].get("macs"),
         p["metrics"].get("accuracy")] for p in r["passes"]]))
    console.print(table("artifacts (measured in their runtime)",
                        ["file", "precision", "bytes", "accuracy %", "agreement %", "max abs diff"], [
        [a["path"], a["precision"], a["bytes"], a["accuracy"], a["top1_agreement"], a["max_abs_diff"]]
        for a in r["artifacts"]], no_wrap=["file"]))
    measured = _measured_rows(r)
    if measured:
        console.print(table("latency (measured with --profile / --profile-local)",
                            ["file", "agent", "device", "p50 ms", "p90 ms", "runs"], measured,
                            no_wrap=["file", "agent"]))
    budget = r.get("budget") or {}
    if budget.get("enforced") and len(budget.get("attempts", [])) > 1:
        console.print(table("accuracy budget: back-off attempts",
                            ["strength", "accuracy %", "points lost", "met", "MACs"], [
            [a["strength"], a["accuracy"], a["drop"], "yes" if a["met"] else "no", a["macs"]]
            for a in budget["attempts"]]))
    console.print(f"wrote {result.out}/ (artifacts, report.md, report.html, report.json)")


def _measured_rows(r: dict) -> list[list]:
    """One row per artifact and device that measured it: what --profile was asked for, which the
    terminal used to leave to report.md."""
    from edgesparse.report.markdown import sig

    rows = []
    for name, entry in ((r.get("profile") or {}).get("measured") or {}).items():
        for d in entry.get("devices", []):
            if not d.get("ok"):
                rows.append([name, d["agent"], "failed: " + d["error"]["message"], None, None, None])
                continue
            t = d["result"]["timing"]
            rows.append([name, d["agent"], d["result"].get("device", {}).get("cpu_model"),
                         sig(t.get("p50_ms")), sig(t.get("p90_ms")), t.get("n")])
    return rows


@app.command("targets")
def list_targets():
    """List the built-in target profiles."""
    from edgesparse.console import console, table
    from edgesparse.targets import builtin_targets, load_target

    rows = []
    for name in builtin_targets():
        t = load_target(name)
        rows.append([t.name, t.title, ", ".join(t.runtimes), t.threads, ", ".join(t.constraints.int8_io)])
    console.print(table("targets", ["name", "title", "runtimes", "threads", "int8 I/O"], rows))


@app.command("passes")
def list_passes():
    """List the registered passes and their parameters (what a recipe may say)."""
    from edgesparse.console import console, table
    from edgesparse.passes import load_builtin_passes

    rows = []
    for name, cls in sorted(load_builtin_passes().items()):
        params = ", ".join(f"{k}={f.get_default(call_default_factory=True)!r}" if not f.is_required() else k
                           for k, f in cls.Config.model_fields.items())
        rows.append([name, cls.summary or (cls.__doc__ or "").strip().splitlines()[0], params])
    console.print(table("passes", ["name", "what it does", "parameters"], rows))


def _register_subcommands() -> None:
    """Commands owned by other modules; each module imports its heavy parts lazily."""
    import importlib

    for module in ("edgesparse.cli.prune", "edgesparse.cli.sparsify", "edgesparse.cli.lowrank", "edgesparse.cli.grow",
                   "edgesparse.cli.profile", "edgesparse.cli.release", "edgesparse.cli.tune"):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name in ("tensorflow", "tf_keras"):
                continue  # an agent-only install: the host commands are not there
            raise
        mod.register(app)


_register_subcommands()


INTERRUPTED = ("interrupted: nothing was written to the output folder (a tune study keeps the "
               "trials it finished; run the same command again to resume it)")


def run(argv: list[str] | None = None) -> int:
    """Run the command line and return the exit code (tests call this in-process)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    # --debug is accepted anywhere on the line (`edgesparse build ... --debug` is what people type).
    args = [a for a in argv if a != "--debug"]
    debug = len(args) != len(argv)
    try:
        code = app(args=args, prog_name="edgesparse", standalone_mode=False)
        if code == 130:   # typer turns Ctrl-C into a returned 130: the KeyboardInterrupt below never runs
            print(INTERRUPTED, file=sys.stderr)
        return code if isinstance(code, int) else 0   # typer.Exit(n) comes back as n here
    except UserError as exc:
        if debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    except typer.Abort:
        print("aborted", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return 130
    except Exception as exc:
        from typer._click import ClickException  # typer vendors click since 0.20
        from edgesparse.outdir import EXIT_ON_SIGTERM, TERMINATED

        if TERMINATED.is_set():                   # SIGTERM's SystemExit, wrapped on its way out
            print("terminated: nothing was written to the output folder", file=sys.stderr)
            return EXIT_ON_SIGTERM

        if isinstance(exc, ClickException):      # usage errors: click's own two-line message
            exc.show()
            return exc.exit_code
        if debug:
            traceback.print_exc()
        if isinstance(exc, ModuleNotFoundError) and exc.name in HOST_MODULES:   # an agent-only install
            print(f"error: this command needs the host toolchain ({exc.name} is not installed here); "
                  "pip install \"edgesparse[host]\"", file=sys.stderr)
            return 2
        print(f"internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback, "
              "and please report it)", file=sys.stderr)
        return 1


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
