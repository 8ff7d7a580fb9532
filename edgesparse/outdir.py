"""Output folders that appear whole or not at all.

Everything is written into a hidden temporary folder beside `--out` and renamed into place at
the end, so a failed or interrupted build never leaves half-written artifacts. A previous
edgesparse output at the same path is replaced; any other non-empty folder is refused.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from edgesparse import files
from edgesparse.errors import UserError

MARKER = "report.json"   # what makes a folder "an edgesparse output" we may replace


def check_writable(out: Path) -> None:
    """Fail in the first second, not after the build, when `out` cannot be written."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder path")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).exists():
        raise UserError(f"--out {out} is a non-empty folder that edgesparse did not write; "
                        "give an empty or new folder")
    files.check_writable(out)


@contextmanager
def staged_output(out: Path) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces `out`, on error it is removed."""
    out = Path(out)
    check_writable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / "prev")
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
