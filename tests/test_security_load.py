"""Issue 15, part 1: loading a model file runs none of its code unless the user says --unsafe-load.

Each model holds a Lambda whose Python writes a marker file when it runs. tf_keras runs it when
it rebuilds the layer graph on load, so the marker existing afterwards means the file ran code.
Every command that loads a model is tried, on the real loaders (tf_keras here, Keras 3 in a
subprocess to write Keras 3 files).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgesparse._tf import keras
from edgesparse.cli import run as cli
from edgesparse.errors import UserError
from edgesparse.frontends.keras import load_model, unsafe_loading

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "sample_models" / "digits.npz"
FAST = "passes:\n  - pass: quantize\n    precisions: [fp32]\n  - pass: export\n  - pass: verify\n"


def _lambda_model(marker: Path):
    code = f"lambda x: (open({str(marker)!r}, 'a').close(), x)[1]"
    inp = keras.Input((64,))
    x = keras.layers.Lambda(eval(code), name="writes_a_file")(inp)
    return keras.Model(inp, keras.layers.Dense(10, activation="softmax")(x))


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """(folder, marker): lam.h5, lam_savedmodel/ and lam.keras, each with the marker-writing Lambda."""
    root = tmp_path_factory.mktemp("hostile")
    marker = root / "CODE_RAN"
    model = _lambda_model(marker)
    model.save(root / "lam.h5")
    model.save(root / "lam_savedmodel", save_format="tf")
    model.save(root / "lam.keras")
    if marker.exists():
        marker.unlink()          # saving traced the Lambda; only loading counts
    return root, marker


@pytest.fixture(autouse=True)
def no_marker(hostile):
    _, marker = hostile
    if marker.exists():
        marker.unlink()
    yield


@pytest.mark.parametrize("name", ["lam.h5", "lam.keras"])
def test_a_file_with_code_is_refused_naming_the_flag(hostile, name):
    root, marker = hostile
    with pytest.raises(UserError) as err:
        load_model(root / name)
    assert "--unsafe-load" in str(err.value) and "\n" not in str(err.value)
    assert not marker.exists()


def test_a_savedmodel_loads_without_running_its_lambda(hostile):
    root, marker = hostile
    model, _ = load_model(root / "lam_savedmodel")
    model.predict(np.zeros((2, 64), np.float32), verbose=0)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["lam.h5", "lam_savedmodel", "lam.keras"])
def test_unsafe_load_is_what_runs_the_code(hostile, name):
    root, marker = hostile
    load_model(root / name, unsafe=True)
    assert marker.exists()


def test_the_build_scope_reaches_loads_without_a_flag(hostile):
    root, marker = hostile
    with unsafe_loading(True):
        load_model(root / "lam.h5")
    assert marker.exists()
    marker.unlink()
    with pytest.raises(UserError):
        load_model(root / "lam.h5")                   # the scope ended
    assert not marker.exists()


@pytest.mark.parametrize("name", ["lam.h5", "lam_savedmodel"])
@pytest.mark.parametrize("command", [
    lambda m, tmp: ["build", str(m), "--recipe", str(tmp / "fast.yaml"), "--out", str(tmp / "out")],
    lambda m, tmp: ["inspect", str(m)],
    lambda m, tmp: ["prune", str(m), "--ratio", "0.5", "--out", str(tmp / "p.keras")],
    lambda m, tmp: ["sparsify", str(m), "--sparsity", "0.5", "--no-sizes", "--out", str(tmp / "s.keras")],
], ids=["build", "inspect", "prune", "sparsify"])
def test_no_command_runs_code_from_the_model(hostile, tmp_path, capsys, command, name):
    root, marker = hostile
    (tmp_path / "fast.yaml").write_text(FAST)
    code = cli(command(root / name, tmp_path))
    assert not marker.exists()
    if name.endswith(".h5"):
        assert code == 2 and "--unsafe-load" in capsys.readouterr().err


def test_inspect_with_unsafe_load_runs_it(hostile, capsys):
    root, marker = hostile
    assert cli(["inspect", str(root / "lam.h5"), "--unsafe-load"]) == 0
    assert marker.exists()


def test_distill_teacher_is_loaded_safely_and_the_flag_reaches_it(hostile, tmp_path, capsys):
    root, marker = hostile
    student = tmp_path / "student.keras"
    keras.Sequential([keras.Input((64,)), keras.layers.Dense(10, activation="softmax")]).save(student)
    # A later-stage pass before distill makes the plan fail right after the teacher is checked.
    recipe = tmp_path / "distill.yaml"
    recipe.write_text(f"passes:\n  - pass: quantize\n  - pass: distill\n    teacher: {root / 'lam.h5'}\n")
    args = ["build", str(student), "--data", str(DATA), "--recipe", str(recipe), "--out", str(tmp_path / "o")]
    assert cli(args) == 2
    assert "--unsafe-load" in capsys.readouterr().err and not marker.exists()
    assert cli(args + ["--unsafe-load"]) == 2            # still the stage-order problem, but the teacher loaded
    assert marker.exists()


def test_a_recipe_cannot_turn_unsafe_loading_on(hostile, tmp_path, capsys):
    root, _ = hostile
    student = tmp_path / "student.keras"
    keras.Sequential([keras.Input((64,)), keras.layers.Dense(10, activation="softmax")]).save(student)
    for text in ("unsafe_load: true\npasses:\n  - pass: quantize\n",
                 f"passes:\n  - pass: distill\n    teacher: {root / 'lam.h5'}\n    unsafe_load: true\n"):
        recipe = tmp_path / "r.yaml"
        recipe.write_text(text)
        assert cli(["build", str(student), "--recipe", str(recipe), "--out", str(tmp_path / "o")]) == 2
        assert "unknown key 'unsafe_load'" in capsys.readouterr().err


def test_release_does_not_run_code_from_the_model(hostile, tmp_path, capsys):
    root, marker = hostile
    (tmp_path / "fast.yaml").write_text(FAST)
    code = cli(["release", str(root / "lam.h5"), "--version", "1.0.0", "--recipe", str(tmp_path / "fast.yaml"),
                "--out", str(tmp_path / "dist")])
    assert code == 2 and "--unsafe-load" in capsys.readouterr().err
    assert not marker.exists() and not list((tmp_path / "dist").glob("*.tar.gz"))


# ----------------------------------------------------------------------------- Keras 3 files

_MAKE_KERAS3 = r"""
import sys
from pathlib import Path
import keras
from keras import layers
out, marker = Path(sys.argv[1]), sys.argv[2]
src = f"lambda x: (open({marker!r}, 'a').close(), x)[1]"
Path(out / "fn.py").write_text(f"f = {src}\n")
sys.path.insert(0, str(out))
from fn import f                       # Keras 3 serializes a lambda from its source file
inp = keras.Input((64,))
keras.Model(inp, layers.Dense(10)(layers.Lambda(f)(inp))).save(out / "k3_lambda.keras")
keras.Model(inp, layers.Dense(10)(layers.Lambda(f)(inp))).save(out / "k3_lambda.h5")
keras.Model(inp, layers.Dense(10, activation=f)(inp)).save(out / "k3_activation.keras")
"""


@pytest.fixture(scope="module")
def keras3_hostile(tmp_path_factory):
    root = tmp_path_factory.mktemp("keras3_hostile")
    marker = root / "CODE_RAN"
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env.update(TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="", KERAS_BACKEND="tensorflow")
    done = subprocess.run([sys.executable, "-c", _MAKE_KERAS3, str(root), str(marker)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    if marker.exists():
        marker.unlink()
    return root, marker


@pytest.mark.parametrize("name", ["k3_lambda.keras", "k3_lambda.h5", "k3_activation.keras"])
def test_keras3_translator_never_builds_code(keras3_hostile, name):
    root, marker = keras3_hostile
    with pytest.raises(UserError) as err:
        load_model(root / name, unsafe=True)          # even with the opt-in: it has no tf_keras twin
    assert "\n" not in str(err.value) and len(str(err.value)) < 600
    assert not marker.exists()

