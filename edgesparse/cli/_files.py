"""File helpers of the CLI commands that write a Keras model (prune, sparsify)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def save_model_atomically(model, out: Path) -> None:
    """Save `model` to a temporary file beside `out`, then rename it into place: an error leaves
    nothing half-written, and an existing `out` stays as it was."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=out.suffix, dir=out.parent, prefix=f".{out.stem}-")
    os.close(fd)
    try:
        model.save(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)     # mkstemp makes 0600; the model is an ordinary file
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
