"""Small file helpers shared by the host and the device agent (standard library only)."""
from __future__ import annotations

import hashlib
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from edgesparse.errors import UserError

# A name that becomes part of a file or folder name (a release version, a target's name): no
# separators, no leading dot, bounded. "../../x" as a target name climbed out of out/.
NAME_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
NAME_PART_RULE = "letters, digits and . _ + - (at most 64, starting with a letter or digit)"


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks (artifacts can be hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_writable(path: str | Path, flag: str = "--out") -> None:
    """Fail in the first second, not after the work, when nothing can be created at `path`.

    The nearest existing folder at or above it (the folder itself, or the one a new file or
    folder would go into) must be writable and searchable.
    """
    path = Path(path)
    probe = path if path.is_dir() else path.parent
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"cannot write to {path}: {probe} is not writable; choose another {flag}")


@contextmanager
def creating_beside(path: str | Path, flag: str = "--out") -> Iterator[None]:
    """Creating the temporary file or folder beside an output: an OSError there is the user's
    --out (e.g. under /proc, which os.access calls writable for root, so check_writable passes)."""
    try:
        yield
    except OSError as exc:
        raise UserError(f"cannot write to {path}: nothing can be created in {Path(path).parent} "
                        f"({exc.strerror or exc}); choose another {flag}") from None


def check_new_file(path: str | Path, flag: str = "--out") -> None:
    """Fail in the first second when a single-file output (`prune --out m.keras`) cannot be created.

    An existing path is always refused: edgesparse never overwrites a file it did not write
    (docs/security.md), and unlike an output folder (outdir.py's marker) a model file carries no
    mark saying who wrote it, so the user moves it away or picks another name.
    """
    path = Path(path)
    if os.path.lexists(path):
        what = "a folder" if path.is_dir() else "a symlink" if path.is_symlink() else "a file"
        raise UserError(f"{flag} {path} already exists ({what}); edgesparse does not overwrite it: "
                        f"move it away or choose another {flag}")
    check_writable(path, flag)


def write_new_file(path: str | Path, write: Callable[[str], object], flag: str = "--out") -> None:
    """Create `path` whole or not at all: `write(tmp)` fills a temporary file beside it, which is then
    linked into place. A failure leaves nothing behind, and a file that appeared at `path` meanwhile
    is refused rather than replaced (os.link, unlike os.replace, never replaces)."""
    path = Path(path)
    check_new_file(path, flag)
    with creating_beside(path, flag):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=path.suffix, dir=path.parent, prefix=f".{path.stem}-")
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)     # mkstemp makes 0600; the output is an ordinary file
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise UserError(f"{flag} {path} appeared while edgesparse was working; it was left as it is: "
                            f"move it away or choose another {flag}") from None
        except OSError:                   # a filesystem without hard links (FAT, some network mounts)
            check_new_file(path, flag)
            os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
