"""CLI: `edgesparse release` and `edgesparse verify-release`. `register(app)` is called by cli.py.

Nothing heavy at import time; verify-release needs only the runtimes, so it also works on a
device without TensorFlow.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from edgesparse.cli import UNSAFE_LOAD_HELP
from edgesparse.errors import UserError


def release_command(
    model: Path = typer.Argument(..., help="A tf_keras or Keras 3 .keras file, an .h5 file, or a SavedModel folder."),
    target: str = typer.Option("rpi4", "--target", "-t", help="rpi4, android-nnapi, coral, or a target YAML path."),
    version: str = typer.Option(..., "--version", "-v", help="Release version, part of the file name (e.g. 1.0.0)."),
    data: Optional[Path] = typer.Option(None, "--data", "-d", help="An .npz or a folder of class sub-folders (as for build)."),
    recipe: Optional[Path] = typer.Option(None, "--recipe", "-r", help="A recipe YAML replacing the target's default recipe."),
    out: Path = typer.Option(Path("dist"), "--out", "-o", help="Folder for the tarball."),
    unsafe_load: bool = typer.Option(False, "--unsafe-load", help=UNSAFE_LOAD_HELP),
):
    """Build deterministically and pack a reproducible <name>-<target>-<version>.tar.gz."""
    from edgesparse.console import console, table
    from edgesparse.release.package import check_out, check_version, release

    check_version(version)      # before "building": a bad version is refused, not built for
    check_out(out)
    console.print("[bold]release:[/] building in a fresh process with deterministic TensorFlow kernels")
    result = release(model, target=target, version=version, data=data, recipe=recipe, out=out,
                     progress=True, debug="--debug" in sys.argv, unsafe_load=unsafe_load)
    m = result.manifest
    for w in m["warnings"]:
        console.print(f"[bold yellow]warning:[/] {w}")
    console.print(table(f"release {m['release']}", ["artifact", "runtime", "precision", "bytes", "accuracy %",
                                                    "weight zeros %"], [
        [a["file"], a["runtime"], a["precision"], a["bytes"], a["verify"].get("accuracy"),
         None if a["sparsity"]["fraction"] is None else round(a["sparsity"]["fraction"] * 100, 2)]
        for a in m["artifacts"]]))
    console.print(f"wrote {result.path}\nsha256 {result.sha256}  (publish this; check with "
                  f"`edgesparse verify-release {result.path}`)")


def verify_release_command(
    tarball: Path = typer.Argument(..., help="A release .tar.gz written by `edgesparse release`."),
):
    """Check a release: SHA256SUMS, the manifest's hashes, and each artifact on its test data."""
    from edgesparse.console import console, table
    from edgesparse.release.verify import FLOAT_TOLERANCE, verify_release

    result = verify_release(tarball)
    if result.artifacts:
        console.print(table(f"verify-release {result.release}",
                            ["artifact", "runtime", "bytes", "sha256", "loads", "test_data output", "result"], [
            [r.file, r.runtime, r.bytes, r.hashes, r.loads, r.outputs, "ok" if r.ok else "FAIL"]
            for r in result.artifacts]))
    if result.problems:
        for line in result.problems:
            print(f"error: {line}", file=sys.stderr)
        # The CLI prints a UserError as one more "error:" line and exits with code 2.
        raise UserError(f"{tarball} failed verification ({len(result.problems)} problem"
                        f"{'s' if len(result.problems) != 1 else ''}); do not deploy it")
    console.print(f"[bold green]ok:[/] {result.files} files match SHA256SUMS; {len(result.artifacts)} artifacts "
                  f"load and reproduce their test outputs (integers exactly, floats within {FLOAT_TOLERANCE:g})\n"
                  f"tarball sha256 {result.sha256}")


def register(app: typer.Typer) -> None:
    app.command("release")(release_command)
    app.command("verify-release")(verify_release_command)
