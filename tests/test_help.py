"""`--help` of every command exits 0 and prints its usage (issue 15: `build --help` exited 1 because
rich read a `[/...]` in an option's help as a closing markup tag)."""
from __future__ import annotations

import pytest
import typer

from edgesparse.cli import app, run


def _command_paths(group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and group of the typer app, as the words a user types."""
    paths = [prefix]
    for name, sub in sorted(getattr(group, "commands", {}).items()):   # a group has sub-commands
        paths += _command_paths(sub, prefix + (name,))
    return paths


PATHS = _command_paths(typer.main.get_command(app))


def test_the_walk_finds_the_commands():
    names = {p[0] for p in PATHS if p}
    assert {"build", "prune", "sparsify", "targets", "passes", "release", "agent"} <= names
    assert any(len(p) == 2 for p in PATHS), "sub-commands of groups (agent serve, ...) are walked too"


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p) or "edgesparse")
def test_help_exits_0(path, capsys):
    code = run([*path, "--help"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "Usage" in captured.out and "internal error" not in captured.err
