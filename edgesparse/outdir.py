"""Output folders that appear whole or not at all, and never cost the user a file.

Everything is written into a hidden temporary folder beside `--out` and renamed into place at
the end, so a failed or interrupted build (Ctrl-C, or SIGTERM as a CI time-out sends) never leaves
half-written artifacts or a staging folder behind.

Which folders we may replace (docs/security.md): only our own. Every output folder gets a marker
file, MARKER, listing the files edgesparse wrote there. A later build replaces the folder only
when the marker is there and the folder holds nothing else; a folder with any file we did not
write (a file that happens to be called report.json included) is refused, and so is a `--out`
that is a symlink (we would write through it into wherever it points).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from edgesparse.errors import UserError
from edgesparse.files import check_writable as can_write, creating_beside

MARKER = ".edgesparse-output.json"   # {"written_by": "edgesparse", "files": [relative paths]}
EXIT_ON_SIGTERM = 128 + signal.SIGTERM
# Set when SIGTERM arrived. The SystemExit it raises can surface wrapped in another exception
# (raised inside a TensorFlow callback it comes back as TF's own error): the CLI asks this flag so
# the exit code stays 143, not an "internal error" 1.
TERMINATED = threading.Event()


def _listing(folder: Path) -> set[str]:
    """Every entry below `folder` that is not a folder (files, links), as relative POSIX paths."""
    found = set()
    for dirpath, dirnames, filenames in os.walk(folder):     # does not follow symlinked folders
        base = Path(dirpath)
        for name in filenames + [d for d in dirnames if (base / d).is_symlink()]:
            found.add((base / name).relative_to(folder).as_posix())
    return found


def _recorded(folder: Path) -> set[str] | None:
    """The files our marker says we wrote, or None when `folder` is not an edgesparse output."""
    marker = folder / MARKER
    if marker.is_symlink() or not marker.is_file() or marker.stat().st_size > 1 << 20:
        return None
    try:
        data = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("written_by") != "edgesparse" or not isinstance(data.get("files"), list):
        return None
    return {f for f in data["files"] if isinstance(f, str)}


def foreign_files(folder: Path) -> list[str]:
    """Files in an existing folder that edgesparse did not write (all of them without our marker)."""
    recorded = _recorded(folder)
    present = _listing(folder) - {MARKER}
    return sorted(present if recorded is None else present - recorded)


def check_writable(out: Path) -> None:
    """Fail in the first second, not after the build, when `out` cannot be written."""
    out = Path(out)
    if out.is_symlink():
        raise UserError(f"--out {out} is a symlink; give a real folder path (edgesparse does not write "
                        "through links)")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder path")
    if out.is_dir():
        foreign = foreign_files(out)
        if foreign:
            more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
            raise UserError(f"--out {out} holds files edgesparse did not write ({foreign[0][:80]}{more}); "
                            "give an empty or new folder (edgesparse replaces only its own outputs)")
    can_write(out)


def _write_marker(folder: Path) -> None:
    files = sorted(_listing(folder) - {MARKER})
    (folder / MARKER).write_text(json.dumps({"written_by": "edgesparse", "files": files}, indent=1) + "\n")


@contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """SIGTERM raises SystemExit (exit code 143) so `finally` blocks clean up, as Ctrl-C does."""
    if threading.current_thread() is not threading.main_thread():
        yield                                # signal handlers can only be set in the main thread
        return

    def stop(signum, frame):
        TERMINATED.set()
        raise SystemExit(EXIT_ON_SIGTERM)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def staged_output(out: Path) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces `out`, on error or a signal it is removed."""
    out = Path(out)
    check_writable(out)
    with _sigterm_unwinds():
        with creating_beside(out):
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
        try:
            yield tmp
            _write_marker(tmp)
            check_writable(out)              # again: someone may have put a file there meanwhile
            if out.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
                try:
                    os.replace(out, old / "prev")
                    try:
                        os.replace(tmp, out)
                    except BaseException:
                        os.replace(old / "prev", out)        # the previous output stays as it was
                        raise
                finally:
                    shutil.rmtree(old, ignore_errors=True)   # only our files: checked just above
            else:
                os.replace(tmp, out)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
