"""`edgesparse verify-release TARBALL`: is this the release that was built, and does it still work?

1. Every file matches SHA256SUMS; nothing is missing and nothing was added.
2. Each artifact matches the sha256 and size manifest.json records for it.
3. Each artifact loads in its runtime and reports the I/O the manifest describes.
4. Each artifact's test_data input gives the expected output: exactly for integer outputs
   (int8 artifacts), within 1e-5 for float outputs.

Every problem found is one line; a file whose hash is wrong is not loaded at all (a damaged
flatbuffer can crash the runtime instead of raising). SHA256SUMS proves integrity, not origin:
someone who changes a file can rewrite SHA256SUMS too, so publish the tarball's own sha256 (or
sign it) through another channel.
"""
from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from edgesparse.release.manifest import open_released, sha256_file
from edgesparse.release.package import SUMS
from edgesparse.release.tarball import extract_tarball
from edgesparse.runtime.artifact import RUNTIME_NAMES

FLOAT_TOLERANCE = 1e-5
_SUM_LINE = re.compile(r"^([0-9a-fA-F]{64}) [ *](.+)$")


@dataclass
class ArtifactResult:
    file: str
    runtime: str = "—"
    bytes: int | None = None
    hashes: str = "—"          # ok | changed | missing
    loads: str = "—"           # yes | no | not run
    outputs: str = "not run"   # exact | max diff <x> | differs
    ok: bool = False


@dataclass
class VerifyResult:
    tarball: Path
    sha256: str
    release: str = ""
    files: int = 0
    artifacts: list[ArtifactResult] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class _Checker:
    def __init__(self, root: Path, result: VerifyResult):
        self.root, self.result = root, result
        self.present = {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}
        self.actual = {name: sha256_file(p) for name, p in self.present.items()}
        self.listed: dict[str, str] = {}
        self.changed: set[str] = set()     # files that differ from a recorded hash, or are missing

    def problem(self, line: str) -> None:
        self.result.problems.append(line)

    def sums(self) -> None:
        if SUMS not in self.present:
            self.problem(f"{SUMS} is missing: nothing records which files were released")
            return
        for n, line in enumerate(self.present[SUMS].read_text(errors="replace").splitlines(), 1):
            m = _SUM_LINE.match(line)
            if not m:
                self.problem(f"{SUMS} line {n} is not '<sha256>  <file>': {line[:60]!r}")
                continue
            self.listed[m.group(2)] = m.group(1).lower()
        for name, expected in self.listed.items():
            if name not in self.present:
                self.changed.add(name)
                self.problem(f"{name}: listed in {SUMS} but missing from the tarball")
            elif self.actual[name] != expected:
                self.changed.add(name)
                self.problem(f"{name}: sha256 {self.actual[name][:16]}… differs from {SUMS} "
                             f"({expected[:16]}…): the file was changed after release")
        for name in self.present:
            if name != SUMS and name not in self.listed:
                self.changed.add(name)
                self.problem(f"{name}: not listed in {SUMS}: the file was added after release")

    def manifest(self) -> dict[str, Any] | None:
        path = self.present.get("manifest.json")
        if path is None:
            if "manifest.json" not in self.changed:
                self.problem("manifest.json is missing: the artifacts cannot be checked")
            return None
        try:
            data = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            self.problem(f"manifest.json is not valid JSON ({_first_line(exc)})")
            return None
        if not isinstance(data, dict) or not isinstance(data.get("artifacts"), list) or not data["artifacts"]:
            self.problem("manifest.json lists no artifacts")
            return None
        return data

    def artifact(self, i: int, entry: Any) -> ArtifactResult | None:
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
            self.problem(f"manifest.json: artifact entry {i} has no file name")
            return None
        name = entry["file"]
        row = ArtifactResult(file=name)
        fmt = entry.get("format") or PurePosixPath(name).suffix.lstrip(".")
        row.runtime = RUNTIME_NAMES.get(fmt, f"unknown format {fmt!r}")
        if name not in self.present:
            row.hashes = "missing"
            if name not in self.changed:
                self.problem(f"{name}: listed in manifest.json but missing from the tarball")
            return row
        row.bytes = self.present[name].stat().st_size
        recorded_sum = self.listed.get(name)
        if entry.get("sha256") != self.actual[name] and (name not in self.changed or entry.get("sha256") != recorded_sum):
            self.problem(f"{name}: sha256 {self.actual[name][:16]}… differs from manifest.json "
                         f"({str(entry.get('sha256'))[:16]}…)")
            self.changed.add(name)
        if entry.get("bytes") != row.bytes and name not in self.changed:
            self.problem(f"{name}: {row.bytes} bytes, manifest.json says {entry.get('bytes')}")
            self.changed.add(name)
        row.hashes = "changed" if name in self.changed else "ok"
        if fmt not in RUNTIME_NAMES or name in self.changed:
            if fmt not in RUNTIME_NAMES:
                self.problem(f"{name}: unknown format {fmt!r} in manifest.json; expected tflite or onnx")
            return row
        self._run(entry, row, fmt)
        return row

    def _run(self, entry: dict[str, Any], row: ArtifactResult, fmt: str) -> None:
        name = row.file
        try:
            model = open_released(self.present[name], fmt)
        except Exception as exc:  # noqa: BLE001 - any load failure is the finding
            row.loads = "no"
            self.problem(f"{name} does not load in {row.runtime}: {_first_line(exc)}")
            return
        row.loads = "yes"
        for kind, specs in (("inputs", model.inputs), ("outputs", model.outputs)):
            have = [s.to_dict() for s in specs]
            if entry.get(kind) != have:
                self.problem(f"{name}: {row.runtime} reports {kind} {json.dumps(have)}, manifest.json says "
                             f"{json.dumps(entry.get(kind))}")
        td = entry.get("test_data") or {}
        files = list(td.get("inputs") or []) + list(td.get("outputs") or [])
        if not td.get("inputs") or not td.get("outputs"):
            self.problem(f"{name}: manifest.json names no test_data input and output")
            return
        if any(f not in self.present or f in self.changed for f in files):
            missing = [f for f in files if f not in self.present and f not in self.changed]
            for f in missing:
                self.problem(f"{f}: named in manifest.json but missing from the tarball")
            return
        try:
            xs = [np.load(self.present[f], allow_pickle=False) for f in td["inputs"]]
            expected = [np.load(self.present[f], allow_pickle=False) for f in td["outputs"]]
            got = model.run(xs)
        except Exception as exc:  # noqa: BLE001
            self.problem(f"{name}: running test_data failed in {row.runtime}: {_first_line(exc)}")
            row.outputs = "failed"
            return
        row.outputs = self._compare(name, got, expected)
        row.ok = row.outputs.startswith(("exact", "max diff"))

    def _compare(self, name: str, got: list[np.ndarray], expected: list[np.ndarray]) -> str:
        if len(got) != len(expected):
            self.problem(f"{name}: gives {len(got)} outputs, test_data has {len(expected)}")
            return "differs"
        worst = 0.0
        for i, (g, e) in enumerate(zip(got, expected)):
            if g.dtype != e.dtype or g.shape != e.shape:
                self.problem(f"{name}: output {i} is {g.dtype}{list(g.shape)}, test_data expects "
                             f"{e.dtype}{list(e.shape)}")
                return "differs"
            if e.dtype.kind in "iub":
                if not np.array_equal(g, e):
                    steps = int(np.max(np.abs(g.astype(np.int64) - e.astype(np.int64))))
                    self.problem(f"{name}: output {i} differs from test_data (integer outputs must match "
                                 f"exactly; off by up to {steps})")
                    return "differs"
            else:
                diff = float(np.nanmax(np.abs(g.astype(np.float64) - e.astype(np.float64)))) if g.size else 0.0
                if not np.allclose(g, e, rtol=0.0, atol=FLOAT_TOLERANCE, equal_nan=True):
                    self.problem(f"{name}: output {i} differs from test_data (max abs diff {diff:.3g} > "
                                 f"{FLOAT_TOLERANCE:g})")
                    return "differs"
                worst = max(worst, diff)
        return "exact" if worst == 0.0 else f"max diff {worst:.2g}"

    def unlisted_artifacts(self, manifest: dict[str, Any]) -> None:
        described = {e.get("file") for e in manifest["artifacts"] if isinstance(e, dict)}
        for name in self.present:
            if "/" not in name and PurePosixPath(name).suffix in (".tflite", ".onnx") and name not in described:
                self.problem(f"{name}: an artifact that manifest.json does not describe")


def verify_release(tarball: str | Path) -> VerifyResult:
    """Check a release tarball; `result.problems` holds one line per problem (empty: it passed)."""
    tarball = Path(tarball)
    with tempfile.TemporaryDirectory(prefix="edgesparse-verify-") as tmp:
        top = extract_tarball(tarball, Path(tmp), sums_name=SUMS)
        result = VerifyResult(tarball=tarball, sha256=sha256_file(tarball), release=top)
        checker = _Checker(Path(tmp) / top, result)
        result.files = len(checker.present)
        checker.sums()
        manifest = checker.manifest()
        if manifest is not None:
            if manifest.get("release") not in (None, top):
                checker.problem(f"manifest.json is for release {manifest.get('release')!r}, the tarball's "
                                f"folder is {top!r}")
            for i, entry in enumerate(manifest["artifacts"]):
                row = checker.artifact(i, entry)
                if row is not None:
                    result.artifacts.append(row)
            checker.unlisted_artifacts(manifest)
    return result
