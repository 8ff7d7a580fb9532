"""Issue 15, parts 5 and 6: input that used to give a wrong answer or an internal error gets one
clear line, exit 2, and nothing half-written."""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from edgesparse.cli import run as cli

ROOT = Path(__file__).resolve().parent.parent
MLP = ROOT / "sample_models" / "digits_mlp.keras"


def _one_line_error(capsys, code: int, expect: str) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err, err
    assert expect in err, err
    return err


# ----------------------------------------------------------------------------- release tarballs

def _tarball(path: Path, entries: list[tuple[str, bytes | None]]) -> Path:
    """A .tar.gz with the entries in this order; None makes a folder entry."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("entries", [
    [("rel", None), ("rel/a", b"file"), ("rel/a/b", b"inside a file")],     # a file, then a child of it
    [("rel", None), ("rel/a/b", b"x"), ("rel/a", b"a file over a folder")],  # a folder, then a file
    [("rel", None), ("rel/a", b"file"), ("rel/a", None)],                   # the same name, both kinds
    [("rel", None), ("rel/./a", b"file"), ("rel/a/", None)],                # spelt differently
])
def test_tarball_entry_that_is_file_and_folder_is_refused(tmp_path, capsys, entries):
    tgz = _tarball(tmp_path / "rel.tar.gz", entries)
    _one_line_error(capsys, cli(["verify-release", str(tgz)]), "rel/a is both a file and a folder")
