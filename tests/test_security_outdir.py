"""Issue 15, part 2: edgesparse never deletes a file it did not write.

A `--out` folder is replaced only when our marker says we wrote everything in it; a symlink
`--out` is refused; a build stopped by SIGTERM (a CI time-out) leaves no staging folder; a
release tarball replaces only an earlier tarball of the same release.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgesparse.cli import run as cli
from edgesparse.errors import UserError
from edgesparse.outdir import MARKER, staged_output
from edgesparse.release.package import check_replaceable
from edgesparse.release.tarball import write_tarball

ROOT = Path(__file__).resolve().parents[1]
MLP = ROOT / "sample_models" / "digits_mlp.keras"
DATA = ROOT / "sample_models" / "digits.npz"
FAST = "passes:\n  - pass: quantize\n    precisions: [fp32]\n  - pass: export\n  - pass: verify\n"


def _write(out: Path, files: dict[str, str]) -> None:
    with staged_output(out) as stage:
        for name, text in files.items():
            (stage / name).parent.mkdir(parents=True, exist_ok=True)
            (stage / name).write_text(text)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_an_out_where_nothing_can_be_created_is_a_user_error(tmp_path, capsys):
    # As root os.access calls /proc writable, so only creating the staging folder finds out.
    recipe = tmp_path / "fast.yaml"
    recipe.write_text(FAST)
    code = cli(["build", str(MLP), "--data", str(DATA), "--recipe", str(recipe), "--out", "/proc/edgesparse-test"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: cannot write to /proc/edgesparse-test") and "\n" not in err, err


def test_a_folder_holding_a_report_json_of_someone_else_is_not_replaced(tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    (out / "report.json").write_text("{}")
    (out / "thesis.tex").write_text("precious")
    with pytest.raises(UserError, match="did not write"):
        _write(out, {"model.tflite": "new"})
    assert (out / "thesis.tex").read_text() == "precious" and (out / "report.json").read_text() == "{}"


def test_our_output_is_replaced_but_not_a_file_the_user_added_to_it(tmp_path):
    out = tmp_path / "out"
    _write(out, {"report.json": "1", "sub/a.npy": "1"})
    assert (out / MARKER).is_file()
    _write(out, {"report.json": "2"})                  # ours: replaced whole
    assert (out / "report.json").read_text() == "2" and not (out / "sub").exists()
    (out / "notes.md").write_text("mine")
    with pytest.raises(UserError, match="notes.md"):
        _write(out, {"report.json": "3"})
    assert (out / "notes.md").read_text() == "mine" and (out / "report.json").read_text() == "2"


def test_a_forged_marker_does_not_cover_unlisted_files(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / MARKER).write_text('{"written_by": "edgesparse", "files": ["report.json"]}')
    (out / "report.json").write_text("{}")
    (out / "data.csv").write_text("mine")
    with pytest.raises(UserError, match="data.csv"):
        _write(out, {"report.json": "x"})
    assert (out / "data.csv").read_text() == "mine"


def test_a_symlink_out_is_refused_and_its_target_untouched(tmp_path, capsys):
    real = tmp_path / "elsewhere"
    real.mkdir()
    (real / "keep.txt").write_text("keep")
    link = tmp_path / "out"
    link.symlink_to(real, target_is_directory=True)
    assert cli(["build", str(MLP), "--recipe", str(_fast(tmp_path)), "--out", str(link)]) == 2
    assert "symlink" in capsys.readouterr().err
    assert link.is_symlink() and sorted(os.listdir(real)) == ["keep.txt"]


def _fast(tmp_path: Path) -> Path:
    recipe = tmp_path / "fast.yaml"
    recipe.write_text(FAST)
    return recipe


def test_a_real_build_marks_its_output_and_can_build_again_into_it(tmp_path):
    out = tmp_path / "out"
    args = ["build", str(MLP), "--recipe", str(_fast(tmp_path)), "--out", str(out)]
    assert cli(args) == 0
    listed = (out / MARKER).read_text()
    assert "report.json" in listed and ".tflite" in listed
    assert cli(args) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fast.yaml", "out"]


def _stop_a_build(tmp_path, sig) -> tuple[int, str]:
    """Start a real build, send `sig` once it is writing its staging folder; (exit code, stderr)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3")
    # A background job's SIGINT is ignored; a terminal's Ctrl-C is not: restore the default.
    proc = subprocess.Popen([sys.executable, "-m", "edgesparse.cli", "build", str(MLP), "--data", str(DATA),
                             "--out", str(tmp_path / "out")], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 240
        while not list(tmp_path.glob(".out.partial-*")):     # the build is writing its staging folder
            assert proc.poll() is None and time.monotonic() < deadline, "the build ended before it staged"
            time.sleep(0.05)
        # The MLP's passes take 1-2 s after staging; a 1 s wait here once let the build finish
        # first under the suite's load (exit 0). The handler is set before the folder exists.
        time.sleep(0.2)
        proc.send_signal(sig)
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    return code, proc.stderr.read()


def test_sigterm_during_a_build_leaves_nothing_behind(tmp_path):
    code, err = _stop_a_build(tmp_path, signal.SIGTERM)
    assert code == 128 + signal.SIGTERM, err[-3000:]
    assert list(tmp_path.iterdir()) == [], "the staging folder (or a half-written --out) was left"


def test_ctrl_c_during_a_build_says_so_and_leaves_nothing_behind(tmp_path):
    """typer turns Ctrl-C into a returned 130, so the CLI's KeyboardInterrupt branch never ran:
    every command stopped with no line at all."""
    code, err = _stop_a_build(tmp_path, signal.SIGINT)
    assert code == 130 and "interrupted: nothing was written to the output folder" in err, err[-2000:]
    assert list(tmp_path.iterdir()) == []


def test_a_release_replaces_only_its_own_tarball(tmp_path):
    stage = tmp_path / "stage"
    (stage / "m-rpi4-1.0").mkdir(parents=True)
    (stage / "m-rpi4-1.0" / "SHA256SUMS").write_text("")
    dist = tmp_path / "dist"
    ours = write_tarball(stage, "m-rpi4-1.0", dist / "m-rpi4-1.0.tar.gz")
    check_replaceable(ours, "m-rpi4-1.0")                      # an earlier build of this release: fine
    foreign = dist / "m-rpi4-2.0.tar.gz"
    foreign.write_bytes(b"the user's own file")
    with pytest.raises(UserError, match="not a release tarball"):
        check_replaceable(foreign, "m-rpi4-2.0")
    with pytest.raises(UserError):
        check_replaceable(ours, "other-rpi4-1.0")              # ours, but another release's
    link = dist / "m-rpi4-3.0.tar.gz"
    link.symlink_to(ours)
    with pytest.raises(UserError):
        check_replaceable(link, "m-rpi4-3.0")


def test_release_refuses_before_building_when_a_foreign_file_has_the_tarball_name(tmp_path, capsys):
    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / "digits_mlp-rpi4-1.0.tar.gz").write_text("mine")
    code = cli(["release", str(MLP), "--version", "1.0", "--recipe", str(_fast(tmp_path)), "--out", str(dist)])
    assert code == 2 and "not a release tarball" in capsys.readouterr().err
    assert (dist / "digits_mlp-rpi4-1.0.tar.gz").read_text() == "mine"
