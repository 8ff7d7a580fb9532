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


def test_tables_wrap_their_headers_instead_of_cropping_the_last_column():
    """At 80 columns inspect's widest cell, the "prunable" reason, used to be cut off: the headers'
    full widths were the columns' minimums. A header now wraps between its words."""
    from rich.console import Console

    from edgesparse.console import table

    reason = "no: feeds model output probs (outputs keep their width)"
    t = table("channel groups", ["group", "channels", "producers", "following layers", "carried through",
                                 "prunable"], [[3, 10, "probs", "—", "—", reason]])
    out = Console(width=80, record=True)
    out.print(t)
    text = out.export_text()
    assert all(len(line) <= 80 for line in text.splitlines())
    cells = [line.split("│")[-2] for line in text.splitlines() if line.startswith("│")]
    assert " ".join(w for cell in cells for w in cell.split()) == reason
