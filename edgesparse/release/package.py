"""`edgesparse release`: build, then pack `<out>/<name>-<target>-<version>.tar.gz`.

    <name>-<target>-<version>/
      <artifacts>.tflite / .onnx
      manifest.json  MODEL_CARD.md  report.json  report.md  report.html
      test_data/<artifact>/input_0.npy, output_0.npy
      SHA256SUMS                        (sha256sum format, every other file)

The build runs in a fresh, deterministic process (isolated.py); the packing here needs only the
runtimes (LiteRT, ONNX Runtime), not TensorFlow.
"""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgesparse.errors import UserError
from edgesparse.files import NAME_PART, NAME_PART_RULE, check_writable
from edgesparse.release import manifest as mf
from edgesparse.release.isolated import build_in_fresh_process
from edgesparse.release.modelcard import render_model_card
from edgesparse.release.tarball import is_release_tarball, write_tarball

SUMS = "SHA256SUMS"


@dataclass
class ReleaseResult:
    path: Path                   # the tarball
    sha256: str                  # of the tarball
    manifest: dict[str, Any]


def check_version(version: str) -> str:
    if not NAME_PART.fullmatch(version or ""):
        raise UserError(f"--version {version!r} cannot be part of a file name; use {NAME_PART_RULE}, "
                        "e.g. 1.0.0")
    return version


def check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder for the tarball (default dist/)")
    check_writable(out)


def check_replaceable(dest: Path, release_name: str) -> None:
    """The tarball may replace only an earlier tarball of the same release (docs/security.md)."""
    if dest.is_symlink() or (dest.exists() and not is_release_tarball(dest, release_name)):
        raise UserError(f"{dest} exists and is not a release tarball edgesparse wrote; move it away or "
                        "choose another --out (edgesparse replaces only its own files)")


def write_sums(root: Path) -> None:
    """SHA256SUMS in `sha256sum` format: `<hex>  <path>`, paths relative to the top folder, sorted."""
    files = sorted((p for p in root.rglob("*") if p.is_file() and p.name != SUMS),
                   key=lambda p: p.relative_to(root).parts)
    lines = [f"{mf.sha256_file(p)}  {p.relative_to(root).as_posix()}\n" for p in files]
    (root / SUMS).write_text("".join(lines))


def _write_reports(report: dict[str, Any], stage: Path) -> None:
    from edgesparse.report import write_reports

    write_reports(report, stage)
    md = stage / "report.md"
    # report.md prints the build time; the release copy has none (timings differ on every run).
    md.write_text(md.read_text().replace(" Built in None s.", " Build time left out of the release."))


def assemble(stage: Path, built: Path, report: dict[str, Any], *, release_name: str, version: str,
             model: Path, data: Path | None, recipe: Path | None) -> dict[str, Any]:
    """Fill `stage` (the top folder) from the build output `built`; returns the manifest."""
    stage.mkdir(parents=True)
    packed_report = mf.portable_report(report, [p for p in (model, data, recipe) if p is not None])
    seed = int((report.get("recipe") or {}).get("seed") or 0)
    reported = report.get("artifacts") or []
    if not reported:
        raise UserError("the build produced no artifact to release; check the recipe's export pass")
    names = [Path(a["path"]).name for a in reported]
    if len(set(names)) != len(names):
        raise UserError(f"two artifacts share a file name ({', '.join(names)}); a release keeps one folder")

    input_shape = tuple(int(d) for d in (report.get("model") or {}).get("input_shape") or ())
    sample = description = None
    entries = []
    for a, name in zip(reported, names):
        src = built / a["path"]
        if mf.sha256_file(src) != a.get("sha256"):
            raise RuntimeError(f"{name} changed after the build verified it (sha256 differs from report.json)")
        dst = stage / name
        shutil.copyfile(src, dst)
        model_rt = mf.open_released(dst, a["format"])
        if sample is None:
            shape = input_shape or model_rt.inputs[0].fixed_shape[1:]
            sample, description = mf.reference_sample(data, shape, seed)
        test_data = {"sample": description, **mf.write_test_data(stage, name, model_rt, sample)}
        entries.append(mf.artifact_entry(dst, a, model_rt, report, test_data))

    _write_reports(packed_report, stage)
    manifest = mf.build_manifest(release=release_name, version=version, report=packed_report,
                                 artifacts=entries, model_file=model, data=data)
    (stage / "manifest.json").write_text(mf.dumps(manifest))
    (stage / "MODEL_CARD.md").write_text(render_model_card(manifest, packed_report))
    write_sums(stage)
    return manifest


def release(model: str | Path, target: str = "rpi4", version: str = "0.0.0", data: str | Path | None = None,
            recipe: str | Path | None = None, out: str | Path = "dist", progress: bool = False,
            debug: bool = False, unsafe_load: bool = False) -> ReleaseResult:
    """Build `model` for `target` deterministically and pack a reproducible release tarball.

    unsafe_load: let the model files run the Python code they hold (--unsafe-load)."""
    from edgesparse.targets import load_target

    # The cheap checks run here, before a TensorFlow process is started; the build does the rest.
    check_version(version)
    out = Path(out)
    check_out(out)
    target_name = load_target(target).name
    model, data = Path(model), None if data is None else Path(data)
    guess = f"{model.stem.replace(' ', '_')}-{target_name}-{version}"     # the build names it so
    check_replaceable(out / f"{guess}.tar.gz", guess)
    recipe = None if recipe is None else Path(recipe)
    for what, path in (("model", model), ("data", data), ("recipe", recipe)):
        if path is not None and not path.exists():
            raise UserError(f"{what} {path} does not exist; give an existing file")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgesparse-release-") as tmp:
        built = Path(tmp) / "build"
        report = build_in_fresh_process(model, target, data, recipe, built, progress=progress, debug=debug,
                                        unsafe_load=unsafe_load)
        name = (report.get("model") or {}).get("name") or model.stem
        release_name = f"{name}-{report['target']['name']}-{version}"
        root = Path(tmp) / "stage"
        manifest = assemble(root / release_name, built, report, release_name=release_name, version=version,
                            model=model, data=data, recipe=recipe)
        check_replaceable(out / f"{release_name}.tar.gz", release_name)
        path = write_tarball(root, release_name, out / f"{release_name}.tar.gz")
    return ReleaseResult(path=path, sha256=mf.sha256_file(path), manifest=manifest)
