"""Bounded reading of the zip files inside model files (a `.keras` file is a zip).

A model file is untrusted input (docs/security.md): a 1 MB zip can declare a member that inflates
to gigabytes. Sizes are checked from the zip directory before anything is inflated, and reads
stop at the declared size (zipfile does not read past it), so memory stays bounded whatever the
file claims. The weights file is never read whole: h5py reads it lazily through the zip.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

from edgesparse.errors import UserError

MAX_JSON_BYTES = 64 << 20        # metadata.json / config.json: a large model's config is a few MB
MAX_MEMBER_BYTES = 8 << 30       # any one member (the weights); edge models are far smaller


def check_members(zf: zipfile.ZipFile, path: Path | str) -> None:
    """Refuse before inflating when any member declares more than edgesparse will read."""
    for info in zf.infolist():
        limit = MAX_JSON_BYTES if info.filename.endswith(".json") else MAX_MEMBER_BYTES
        if info.file_size > limit:
            raise UserError(f"cannot import {path}: its member {info.filename[:80]!r} declares "
                            f"{info.file_size:,} bytes unpacked (more than {limit:,}); the file is damaged or "
                            "hostile, not a model edgesparse can take")


def read_json(zf: zipfile.ZipFile, name: str, path: Path | str) -> Any:
    """One JSON member, read only after check_members and never beyond MAX_JSON_BYTES."""
    info = zf.getinfo(name)
    if info.file_size > MAX_JSON_BYTES:
        check_members(zf, path)
    with zf.open(info) as f:
        return json.loads(f.read(MAX_JSON_BYTES + 1))
