"""The report.json document. Bump SCHEMA_VERSION when a field changes meaning or goes away."""
from __future__ import annotations

import gzip
import math
import platform
from pathlib import Path
from typing import Any

import numpy as np

from edgesparse import __version__
from edgesparse.files import sha256_file
from edgesparse.state import ImportFacts

SCHEMA_VERSION = "1.0"


def json_safe(value: Any) -> Any:
    """`value` as report.json holds it. JSON has no NaN or Infinity (json.dumps would write a bare
    `NaN` that other parsers reject), so a non-finite number becomes null; numpy scalars and arrays
    become plain numbers and lists."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value



# The toolchain whose versions decide the artifact bytes: distribution -> the short key a
# release manifest uses for it (report.json keys them by distribution name).
TOOLCHAIN = {"tensorflow": "tensorflow", "tf-keras": "tf_keras", "ai-edge-litert": "litert",
             "onnxruntime": "onnxruntime", "tensorflow-model-optimization": "tfmot",
             "onnx": "onnx", "tf2onnx": "tf2onnx", "numpy": "numpy"}


def toolchain_versions() -> dict[str, str | None]:
    """edgesparse, python, then each TOOLCHAIN distribution by name (None: not installed)."""
    import importlib.metadata as md

    out: dict[str, str | None] = {"edgesparse": __version__, "python": platform.python_version()}
    for dist in TOOLCHAIN:
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = None
    return out


def _artifact_entry(a, workdir: Path) -> dict[str, Any]:
    m = a.metrics
    return {
        "path": str(a.path.relative_to(workdir)) if a.path.is_relative_to(workdir) else str(a.path),
        "format": a.format,
        "precision": a.precision,
        "io_dtype": a.io_dtype,
        "note": a.note,
        "bytes": a.path.stat().st_size,
        # zeros and repeated values only shrink once compressed: what a download or OTA update costs
        "gzip_bytes": len(gzip.compress(a.path.read_bytes(), compresslevel=9, mtime=0)),
        "sha256": sha256_file(a.path),
        "accuracy": m.get("accuracy"),
        "top1_agreement": m.get("top1_agreement"),
        "max_abs_diff": m.get("max_abs_diff"),
        "metrics": m,
        "checks": a.checks,
    }


def _record(r) -> dict[str, Any]:
    return {"name": r.name, "seconds": r.seconds, "metrics": r.metrics, "config": r.config,
            **({"step": r.step} if r.step else {})}


def build_report(*, state, records, target, recipe, data, seconds: float, workdir: Path,
                 budget: dict[str, Any] | None = None, trajectory=None, status: str = "ok",
                 profile: dict[str, Any] | None = None) -> dict[str, Any]:
    first = records[0].metrics if records else {}
    imported = state.fact(ImportFacts)
    final_metrics: dict[str, Any] = {}
    for r in records:
        final_metrics.update({k: v for k, v in r.metrics.items() if k in ("params", "macs", "accuracy")})
    return json_safe({
        "schema_version": SCHEMA_VERSION,
        "status": status,
        "model": {
            "name": state.name,
            "source": state.source,
            "input_shape": imported.input_shape if imported else None,
            "output_shape": imported.output_shape if imported else None,
            "params": first.get("params"),
            "macs": first.get("macs"),
            "accuracy": first.get("accuracy"),
            "final": final_metrics,
        },
        "target": {"name": target.name, "title": target.title, "threads": target.threads,
                   "runtimes": list(target.runtimes), "delegate": target.delegate,
                   "deprecation": target.deprecation},
        "recipe": recipe.to_dict(),
        "data": data.summary(),
        "passes": [_record(r) for r in records],
        "budget": budget or {"enforced": False},
        "trajectory": [_record(r) for r in (trajectory if trajectory is not None else records)],
        "facts": state.facts,
        "artifacts": [_artifact_entry(a, workdir) for a in state.artifacts],
        "profile": profile or {"estimates": {}, "measured": {}},
        "warnings": list(state.warnings),
        "seconds": round(seconds, 2),
        "versions": {k: v for k, v in toolchain_versions().items() if v is not None},
    })
