"""manifest.json, test_data/ and the release copy of the report.

The manifest describes each artifact from the file itself (hash, size, the I/O its runtime
reports, the zeros in its weights) and carries the build facts from report.json (MACs, params,
recipe, seed, accuracy measured by verify). It holds no timestamps, durations or absolute paths:
two builds of the same inputs must give the same manifest, byte for byte.
"""
from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from edgesparse.runtime.artifact import Artifact, open_artifact
from edgesparse.runtime.tensors import TensorSpec, to_model_input
from edgesparse.runtime.weights import weight_sparsity
from edgesparse.files import sha256_file
from edgesparse.report.schema import TOOLCHAIN, toolchain_versions

MANIFEST_VERSION = 1
TEST_DATA = "test_data"

TIMING_KEYS = ("seconds",)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def input_digest(path: Path) -> str:
    """sha256 of a file, or of a folder (its relative paths and file hashes, sorted)."""
    if path.is_file():
        return sha256_file(path)
    lines = [f"{p.relative_to(path).as_posix()}\0{sha256_file(p)}\n"
             for p in sorted(path.rglob("*")) if p.is_file()]
    return sha256_bytes("".join(lines).encode())


def versions() -> dict[str, str | None]:
    """The toolchain versions under the manifest's short keys, None for what is not installed."""
    return {TOOLCHAIN.get(k, k): v for k, v in toolchain_versions().items()}


def portable_report(report: dict[str, Any], inputs: list[Path]) -> dict[str, Any]:
    """report.json as packed: timings nulled (they differ on every run) and the paths of the
    model, data and recipe reduced to file names (the packing machine's folders are not part
    of the release; the manifest carries the inputs' hashes instead)."""
    names: dict[str, str] = {}
    for p in inputs:
        for form in {str(p), str(p.resolve()), p.as_posix()}:
            names[form] = p.name

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: (None if k in TIMING_KEYS or k.endswith("_seconds") else walk(v)) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        if isinstance(node, str) and node in names:
            return names[node]
        return node

    return walk(copy.deepcopy(report))


def reference_sample(data: Path | None, input_shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, str]:
    """One float sample for test_data/: validation sample 0, or a seeded synthetic one."""
    from edgesparse.data import load_data, synthetic

    if data is None:
        return synthetic(input_shape, seed).x_calib[0], f"synthetic sample 0 (uniform [0,1), seed {seed})"
    ds = load_data(data, input_shape, None, seed=seed)
    if ds.x_val is not None and len(ds.x_val):
        return ds.x_val[0], f"validation sample 0 of {Path(data).name} (split seed {seed})"
    return ds.x_calib[0], f"calibration sample 0 of {Path(data).name} (seed {seed})"


def _save_npy(path: Path, array: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.lib.format.write_array(f, np.ascontiguousarray(array), allow_pickle=False)
    return path.name


def open_released(path: Path, fmt: str | None = None) -> Artifact:
    """An artifact as a release runs it: raw tensors (an int8 output stays int8, so test data
    compares exactly) on one thread (the outputs must not depend on how work is split)."""
    return open_artifact(path, threads=1, io="raw", fmt=fmt)


def write_test_data(root: Path, artifact: str, model: Artifact, sample: np.ndarray) -> dict[str, list[str]]:
    """Feed `sample` through the artifact in its runtime; save input and outputs as raw tensors."""
    if len(model.inputs) != 1:
        raise ValueError(f"{artifact} has {len(model.inputs)} inputs; releases support single-input models")
    x = to_model_input(sample, model.inputs[0])
    ys = model.run([x])
    rel = Path(TEST_DATA) / artifact
    ins = [(rel / f"input_{0}.npy").as_posix()]
    _save_npy(root / ins[0], x)
    outs = []
    for i, y in enumerate(ys):
        outs.append((rel / f"output_{i}.npy").as_posix())
        _save_npy(root / outs[-1], y)
    return {"inputs": ins, "outputs": outs}


def _io(specs: list[TensorSpec]) -> list[dict[str, Any]]:
    return [s.to_dict() for s in specs]


def artifact_entry(path: Path, reported: dict[str, Any], model: Artifact, report: dict[str, Any],
                   test_data: dict[str, Any]) -> dict[str, Any]:
    m = reported.get("metrics") or {}
    final = (report.get("model") or {}).get("final") or {}
    return {
        "file": path.name,
        "format": reported["format"],
        "runtime": model.runtime,
        "precision": reported["precision"],
        "note": reported.get("note", ""),
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
        "inputs": _io(model.inputs),
        "outputs": _io(model.outputs),
        "sparsity": weight_sparsity(path, reported["format"]),
        "macs": final.get("macs"),
        "params": final.get("params"),
        "verify": {k: m.get(k) for k in ("accuracy", "top1_agreement", "max_abs_diff", "n_samples", "data")},
        "checks": {k: v.get("passed") for k, v in sorted((reported.get("checks") or {}).items())
                   if isinstance(v, dict)},
        "test_data": test_data,
    }


def build_manifest(*, release: str, version: str, report: dict[str, Any], artifacts: list[dict[str, Any]],
                   model_file: Path, data: Path | None) -> dict[str, Any]:
    model = report.get("model") or {}
    recipe = report.get("recipe") or {}
    return {
        "manifest_version": MANIFEST_VERSION,
        "release": release,
        "name": model.get("name"),
        "target": (report.get("target") or {}).get("name"),
        "version": version,
        "seed": recipe.get("seed"),
        "inputs": {
            "model": {"file": model_file.name, "sha256": input_digest(model_file)},
            "data": None if data is None else {"file": data.name, "sha256": input_digest(data)},
        },
        "model": {"params": model.get("params"), "macs": model.get("macs"),
                  "keras_accuracy": model.get("accuracy"), "final": model.get("final")},
        "data": report.get("data"),
        "recipe": recipe,
        "versions": versions(),
        "build": {"deterministic": True,
                  "how": "fresh Python process, seeds from the recipe, TensorFlow op determinism"},
        "artifacts": artifacts,
        "warnings": list(report.get("warnings") or []),
    }


def dumps(obj: Any) -> str:
    """JSON as packed: stable key order (as built), two-space indent, trailing newline."""
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"
