"""Small file helpers shared by the host and the device agent (standard library only)."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from edgesparse.errors import UserError


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
