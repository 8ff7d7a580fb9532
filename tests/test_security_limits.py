"""Issue 15, part 4: no input exhausts memory or time.

Peak memory is measured as resource.getrusage(RUSAGE_CHILDREN).ru_maxrss of a fresh wrapper
process that runs one `edgesparse` command, so each figure belongs to one run. The bounds have
generous slack; the figures themselves are in the lead's report.
"""
from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from edgesparse.data import load_data
from edgesparse.errors import UserError
from edgesparse.passes.prune.pass_ import PruneConfig

ROOT = Path(__file__).resolve().parents[1]
MLP = ROOT / "sample_models" / "digits_mlp.keras"
FAST = "passes:\n  - pass: quantize\n    precisions: [fp32]\n  - pass: export\n  - pass: verify\n"
BOMB_BYTES = 300 << 20        # well past every limit; the old readers held it in memory (twice)
SLACK = 100 << 20

_PEAK = r"""
import resource, subprocess, sys
done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
print(done.stderr[-600:], file=sys.stderr)
"""


def peak(args: list[str], timeout: int = 300) -> tuple[int, int, str]:
    """(exit code, peak RSS bytes, stderr tail) of `edgesparse ARGS` in a fresh process."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, "-c", _PEAK, sys.executable, "-m", "edgesparse.cli", *args],
                          env=env, capture_output=True, text=True, timeout=timeout)
    code, rss = done.stdout.split()
    return int(code), int(rss), done.stderr


def _zeros(n: int, chunk: int = 1 << 20):
    while n > 0:
        yield b"0" * min(chunk, n)
        n -= chunk


def zip_bomb_keras(path: Path, unpacked: int = BOMB_BYTES) -> Path:
    """A .keras zip of about a megabyte whose metadata.json inflates to `unpacked` bytes."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("metadata.json", "w", force_zip64=True) as f:
            f.write(b'{"keras_version": "3.5.0", "pad": "')
            for block in _zeros(unpacked):
                f.write(block)
            f.write(b'"}')
        zf.writestr("config.json", "{}")
    return path


def test_zip_bomb_keras_is_refused_before_inflating(tmp_path):
    from edgesparse.frontends.keras import load_model

    bomb = zip_bomb_keras(tmp_path / "bomb.keras")
    assert bomb.stat().st_size < 2 << 20
    with pytest.raises(UserError, match="declares"):
        load_model(bomb)


def test_build_on_a_zip_bomb_uses_no_more_memory_than_a_normal_build(tmp_path):
    bomb = zip_bomb_keras(tmp_path / "bomb.keras")
    recipe = tmp_path / "fast.yaml"
    recipe.write_text(FAST)
    code, bomb_rss, err = peak(["build", str(bomb), "--recipe", str(recipe), "--out", str(tmp_path / "b")])
    assert code == 2 and "declares" in err
    code, normal_rss, err = peak(["build", str(MLP), "--recipe", str(recipe), "--out", str(tmp_path / "n")])
    assert code == 0, err
    assert bomb_rss < normal_rss + SLACK, (bomb_rss, normal_rss)


class _Zeros(io.RawIOBase):
    def __init__(self, n: int):
        self.left = n

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        n = min(len(buf), self.left)
        buf[:n] = b"\0" * n
        self.left -= n
        return n


def gzip_bomb_release(path: Path, unpacked: int) -> Path:
    """A release-shaped tarball whose one extra file is `unpacked` zero bytes (a few hundred KB packed)."""
    with gzip.GzipFile(path, "wb", compresslevel=6, mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        tar.addfile(_dir("rel"))
        sums = tarfile.TarInfo("rel/SHA256SUMS")
        sums.size = 0
        tar.addfile(sums, io.BytesIO(b""))
        big = tarfile.TarInfo("rel/big.bin")
        big.size = unpacked
        tar.addfile(big, io.BufferedReader(_Zeros(unpacked)))
    return path


def _dir(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, 0o755
    return info


def test_verify_release_on_a_gzip_bomb_copies_in_chunks(tmp_path):
    bomb = gzip_bomb_release(tmp_path / "bomb.tar.gz", BOMB_BYTES)
    small = gzip_bomb_release(tmp_path / "small.tar.gz", 1 << 10)
    assert bomb.stat().st_size < 2 << 20
    code, bomb_rss, err = peak(["verify-release", str(bomb)])
    assert code == 2 and "not listed in SHA256SUMS" in err
    code, normal_rss, _ = peak(["verify-release", str(small)])
    assert code == 2
    assert bomb_rss < normal_rss + SLACK, (bomb_rss, normal_rss)


def test_verify_release_refuses_a_member_over_the_limit_from_its_header(tmp_path, monkeypatch):
    from edgesparse.release import tarball
    from edgesparse.release.verify import verify_release

    monkeypatch.setattr(tarball, "MAX_MEMBER_BYTES", 1 << 20)      # a small limit, a real archive
    bomb = gzip_bomb_release(tmp_path / "bomb.tar.gz", 2 << 20)
    with pytest.raises(UserError, match="more than a release file may be"):
        verify_release(bomb)


# ----------------------------------------------------------------------------- data files


def test_npz_members_edgesparse_does_not_use_are_never_inflated(tmp_path):
    good = tmp_path / "good.npz"
    rng = np.random.default_rng(0)
    np.savez(good, x=rng.random((40, 4), dtype=np.float32), y=np.arange(40) % 2)
    damaged = tmp_path / "with_junk.npz"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(damaged, "w") as dst:
        for item in src.infolist():
            dst.writestr(item, src.read(item))
        dst.writestr("junk.npy", b"not an array at all")       # reading it would fail
    data = load_data(damaged, (4,), 2)
    assert data.labelled and len(data.x_train) + len(data.x_val) == 40


def test_npz_array_declaring_an_absurd_shape_is_refused_before_allocation(tmp_path):
    path = tmp_path / "lying.npz"
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                  "shape": (10 ** 9, 64)})
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("x.npy", b"\x93NUMPY\x01\x00" + header.getvalue()[8:] + b"\0" * 256)
    with pytest.raises(UserError, match="declares shape"):
        load_data(path, (64,), 10)


# ----------------------------------------------------------------------------- recipes and configs

_ALIAS_BOMB = """passes:
  - pass: quantize
    when: [&a [x, x, x, x, x, x, x, x, x], &b [*a, *a, *a, *a, *a, *a, *a, *a, *a],
           &c [*b, *b, *b, *b, *b, *b, *b, *b, *b], &d [*c, *c, *c, *c, *c, *c, *c, *c, *c],
           &e [*d, *d, *d, *d, *d, *d, *d, *d, *d], &f [*e, *e, *e, *e, *e, *e, *e, *e, *e],
           &g [*f, *f, *f, *f, *f, *f, *f, *f, *f], &h [*g, *g, *g, *g, *g, *g, *g, *g, *g],
           &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]]
"""


@pytest.mark.parametrize("where", ["when", "pass"])
def test_a_yaml_alias_bomb_in_a_recipe_fails_in_a_second(tmp_path, where):
    recipe = tmp_path / "bomb.yaml"
    text = _ALIAS_BOMB if where == "when" else _ALIAS_BOMB.replace("  - pass: quantize\n    when:", "  - pass:")
    recipe.write_text(text)
    assert len(text) < 800
    script = "import sys\nfrom edgesparse.recipe import load_recipe\nload_recipe(sys.argv[1])\n"
    done = subprocess.run([sys.executable, "-c", script, str(recipe)], env=dict(os.environ, PYTHONPATH=str(ROOT)),
                          capture_output=True, text=True, timeout=60)
    last = done.stderr.strip().splitlines()[-1]
    assert "UserError" in last and "a list" in last and len(last) < 400


def test_prune_training_lengths_are_bounded():
    for field, value in (("finetune_epochs", 10 ** 9), ("steps", 10 ** 6)):
        with pytest.raises(ValidationError):
            PruneConfig(ratio=0.5, **{field: value})
    PruneConfig(ratio=0.5, finetune_epochs=1000, steps=100)   # the largest allowed still validate


# A model that declares a huge input: every check, calibration and synthetic data set draws whole
# samples, so a (5000, 5000) input died of a MemoryError (8 check samples: 800 MB, 128 synthetic
# ones: 12.8 GB) instead of saying what is wrong.
def _huge_input_onnx(path: Path, dims) -> Path:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["x"], ["y"])], "huge",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 1, 1])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_a_model_declaring_a_huge_input_is_refused_in_one_line(tmp_path, capsys):
    from edgesparse._tf import keras
    from edgesparse.cli import run
    from edgesparse.frontends.keras3 import check_inputs

    inp = keras.Input((5000, 5000))
    model = keras.Model(inp, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling1D()(inp)))
    model.save(tmp_path / "huge.keras")
    with pytest.raises(UserError, match="25,000,000 values per sample"):
        check_inputs(model)
    onnx_path = _huge_input_onnx(tmp_path / "huge.onnx", [1, 1, 5000, 5000])
    dynamic = _huge_input_onnx(tmp_path / "dynamic.onnx", [1, 1, "h", "w"])
    for args in (["inspect", str(tmp_path / "huge.keras")], ["inspect", str(onnx_path)],
                 ["build", str(dynamic), "--input-shape", "1,5000,5000", "--out", str(tmp_path / "o")]):
        assert run(args) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "25,000,000 values per sample" in err, err
    assert not (tmp_path / "o").exists()
    with pytest.raises(UserError, match="values per sample"):
        from edgesparse.data import synthetic
        synthetic((5000, 5000))


def test_a_zero_size_input_dimension_is_not_called_dynamic(tmp_path, capsys):
    from edgesparse.cli import run

    assert run(["inspect", str(_huge_input_onnx(tmp_path / "zero.onnx", [1, 1, 0, 8]))]) == 2
    err = capsys.readouterr().err
    assert "size 0" in err and "dynamic" not in err
