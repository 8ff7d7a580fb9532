"""Reproducible .tar.gz: the same files give the same bytes, whoever packs them and when.

What would otherwise leak into the archive and change its hash:
- entry order (filesystem order)         -> entries sorted by path;
- owner, group and their names           -> 0/0, names empty;
- modification times                     -> one fixed time: SOURCE_DATE_EPOCH when set
                                            (reproducible-builds.org convention), else 1980-01-01;
- permission bits (umask)                -> 0644 files, 0755 folders;
- the gzip header's timestamp and name   -> mtime 0, no file name.
Only regular files and folders are packed; symlinks are refused (they would pack differently
depending on where they point).

Reading is the mirror image, and defensive, because verify-release opens tarballs that came from
elsewhere: one top folder, no absolute paths, no `..`, no links or devices.
"""
from __future__ import annotations

import gzip
import os
import tarfile
import tempfile
import zlib
from pathlib import Path, PurePosixPath

from edgesparse.errors import UserError
from edgesparse.files import creating_beside

DEFAULT_EPOCH = 315532800          # 1980-01-01T00:00:00Z: the earliest time every archive format takes
MAX_UNPACKED_BYTES = 4 << 30       # verify-release refuses archives that unpack to more than this
MAX_MEMBER_BYTES = 2 << 30         # ... or hold one file larger than this (edge artifacts are MBs)
MAX_SUMS_BYTES = 1 << 20           # SHA256SUMS: one line per file
MAX_JSON_BYTES = 64 << 20          # manifest.json, report.json: parsed whole, so bounded tighter
CHUNK = 1 << 20                    # files are copied out in blocks, never read whole


def release_epoch() -> int:
    """The mtime of every entry: SOURCE_DATE_EPOCH when set, else DEFAULT_EPOCH."""
    raw = os.environ.get("SOURCE_DATE_EPOCH")
    if raw is None or raw == "":
        return DEFAULT_EPOCH
    try:
        value = int(raw)
    except ValueError:
        raise UserError(f"SOURCE_DATE_EPOCH={raw!r} is not a whole number of seconds; unset it or "
                        "give e.g. $(git log -1 --format=%ct)") from None
    if value < 0:
        raise UserError(f"SOURCE_DATE_EPOCH={value} is negative; give seconds since 1970")
    return value


def _entries(root: Path, top: str) -> list[tuple[str, Path]]:
    """(archive name, file) for the top folder and everything under it, sorted by path."""
    base = root / top
    found = [(top, base)]
    for dirpath, dirnames, filenames in os.walk(base):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            if p.is_symlink():
                raise UserError(f"{p} is a symlink; a release holds regular files only")
            found.append((PurePosixPath(top, p.relative_to(base).as_posix()).as_posix(), p))
    return sorted(found, key=lambda e: PurePosixPath(e[0]).parts)


def write_tarball(root: Path, top: str, dest: Path, mtime: int | None = None) -> Path:
    """Pack `root/top` as `dest` (a .tar.gz): written to a temporary file beside it, then renamed."""
    mtime = release_epoch() if mtime is None else mtime
    with creating_beside(dest):
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as raw:
            # filename="" keeps the temporary file's name out of the gzip header; mtime=0 its clock.
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as gz:
                with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
                    for arcname, path in _entries(root, top):
                        info = tarfile.TarInfo(arcname)
                        info.mtime = mtime
                        info.uid = info.gid = 0
                        info.uname = info.gname = ""
                        if path.is_dir():
                            info.type, info.mode = tarfile.DIRTYPE, 0o755
                            tar.addfile(info)
                        else:
                            info.mode, info.size = 0o644, path.stat().st_size
                            with open(path, "rb") as f:
                                tar.addfile(info, f)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()
    return dest


def _safe_name(name: str) -> PurePosixPath:
    p = PurePosixPath(name)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise UserError(f"the tarball holds an unsafe path {name!r}; refusing to unpack it")
    return p


def _file_and_folder(members: list[tarfile.TarInfo]) -> str | None:
    """A path that is a file in one entry and a folder in another (or the parent of an entry).

    Unpacking such an archive would end in FileExistsError or NotADirectoryError half-way."""
    files, folders = set(), set()
    for m in members:
        parts = _safe_name(m.name).parts
        (folders if m.isdir() else files).add(parts)
        folders.update(parts[:i] for i in range(1, len(parts)))
    clash = sorted(files & folders)
    return PurePosixPath(*clash[0]).as_posix() if clash else None


def is_release_tarball(path: Path, top: str) -> bool:
    """Whether `path` is a tarball write_tarball made for `top` (its first entry is that folder).
    Reads one header, so it is cheap on any file."""
    if path.is_symlink() or not path.is_file():
        return False
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            first = tar.next()
    except (tarfile.TarError, OSError, EOFError, zlib.error):
        return False
    return first is not None and first.isdir() and first.name == top


def extract_tarball(path: Path, dest: Path, sums_name: str = "SHA256SUMS") -> str:
    """Unpack a release into `dest`; returns the name of its single top folder.

    Bounded (docs/security.md): member and total sizes are checked from the headers first, files
    are copied in blocks, and `sums_name` is unpacked before anything else."""
    if not path.is_file():
        raise UserError(f"{path} does not exist; give the .tar.gz that `edgesparse release` wrote")
    try:
        tar = tarfile.open(path, mode="r:gz")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise UserError(f"{path} is not a gzip-compressed tar file ({exc}); give a release .tar.gz") from None
    with tar:
        try:
            members = tar.getmembers()
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            raise UserError(f"{path} is damaged: {exc}; download or build it again") from None
        tops = {_safe_name(m.name).parts[0] for m in members}
        if len(tops) != 1:
            raise UserError(f"{path} has {len(tops)} top-level entries ({', '.join(sorted(tops)[:3])}); "
                            "a release has exactly one top folder")
        clash = _file_and_folder(members)
        if clash is not None:
            raise UserError(f"{path}: {clash} is both a file and a folder in the tarball; a release "
                            "holds each path once; build it again with `edgesparse release`")
        # Sizes come from the tar headers, checked before anything is written.
        if sum(m.size for m in members if m.isfile()) > MAX_UNPACKED_BYTES:
            raise UserError(f"{path} unpacks to more than {MAX_UNPACKED_BYTES >> 30} GiB; refusing")
        for m in members:
            if not (m.isdir() or m.isfile()):
                raise UserError(f"{path}: {m.name[:80]} is a link or special file; a release holds "
                                "regular files only")
            base = PurePosixPath(m.name).name
            limit = (MAX_SUMS_BYTES if base == sums_name else MAX_JSON_BYTES if base.endswith(".json")
                     else MAX_MEMBER_BYTES)
            if m.isfile() and m.size > limit:
                raise UserError(f"{path}: {m.name[:80]} is {m.size:,} bytes, more than a release file may be "
                                f"({limit:,}); refusing to unpack it")
        # SHA256SUMS first: the checks that follow read it before any other file is trusted.
        members.sort(key=lambda m: PurePosixPath(m.name).name != sums_name)
        for m in members:
            target = dest.joinpath(*_safe_name(m.name).parts)
            if m.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            src = tar.extractfile(m)
            with open(target, "wb") as out:
                if src is not None:
                    _copy(src, out, m.size)
    return tops.pop()


def _copy(src, out, size: int) -> None:
    """Copy at most `size` bytes (the header's word) in CHUNK blocks."""
    left = size
    while left > 0:
        block = src.read(min(CHUNK, left))
        if not block:
            break
        out.write(block)
        left -= len(block)
