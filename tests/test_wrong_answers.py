"""Issue 15, parts 5 and 6: input that used to give a wrong answer or an internal error gets one
clear line, exit 2, and nothing half-written."""
from __future__ import annotations

import io
import json
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest

from edgesparse.cli import run as cli
from edgesparse.data import load_data
from edgesparse.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
MLP = ROOT / "sample_models" / "digits_mlp.keras"


def _one_line_error(capsys, code: int, expect: str) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err, err
    assert expect in err, err
    return err


# ----------------------------------------------------------------------------- release tarballs

def _tarball(path: Path, entries: list[tuple[str, bytes | None]]) -> Path:
    """A .tar.gz with the entries in this order; None makes a folder entry."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("entries", [
    [("rel", None), ("rel/a", b"file"), ("rel/a/b", b"inside a file")],     # a file, then a child of it
    [("rel", None), ("rel/a/b", b"x"), ("rel/a", b"a file over a folder")],  # a folder, then a file
    [("rel", None), ("rel/a", b"file"), ("rel/a", None)],                   # the same name, both kinds
    [("rel", None), ("rel/./a", b"file"), ("rel/a/", None)],                # spelt differently
])
def test_tarball_entry_that_is_file_and_folder_is_refused(tmp_path, capsys, entries):
    tgz = _tarball(tmp_path / "rel.tar.gz", entries)
    _one_line_error(capsys, cli(["verify-release", str(tgz)]), "rel/a is both a file and a folder")


# ----------------------------------------------------------------------------- data

def _npz(tmp_path: Path, **arrays) -> Path:
    f = tmp_path / "d.npz"
    np.savez(f, **arrays)
    return f


def _digits(n: int | None = None, classes: int = 10):
    d = np.load(ROOT / "sample_models" / "digits.npz")
    x, y = d["x_train"], d["y_train"]
    keep = y < classes
    x, y = x[keep], y[keep]
    return (x, y) if n is None else (x[:n], y[:n])


@pytest.mark.parametrize("bad,expect", [(np.nan, "1 NaN or infinite values (the first in sample 7)"),
                                        (np.inf, "1 NaN or infinite values (the first in sample 7)"),
                                        (1e300, "1 NaN or infinite values (the first in sample 7)")])
def test_non_finite_inputs_are_refused(tmp_path, bad, expect):
    x, y = _digits(200)
    x = x.astype(np.float64)
    x[7, 3, 3, 0] = bad
    with pytest.raises(UserError, match=r"d.npz: x holds " + re.escape(expect)):
        load_data(_npz(tmp_path, x=x, y=y), (8, 8, 1), 10)
    with pytest.raises(UserError, match="x_unlabelled holds"):
        load_data(_npz(tmp_path, x=_digits(200)[0], y=y, x_unlabelled=x), (8, 8, 1), 10)
    with pytest.raises(UserError, match="x_val holds"):
        load_data(_npz(tmp_path, x_train=_digits(200)[0], y_train=y, x_val=x, y_val=y), (8, 8, 1), 10)


def test_single_class_is_refused_before_any_work(tmp_path, capsys):
    x, y = _digits()
    one = y == 3
    data = _npz(tmp_path, x=x[one], y=y[one])
    out = tmp_path / "out"
    code = cli(["build", str(MLP), "--data", str(data), "--out", str(out)])
    _one_line_error(capsys, code, "y has a single class (every label is 3)")
    assert not out.exists()
    with pytest.raises(UserError, match="single class"):
        load_data(_npz(tmp_path, x_train=x[one], y_train=y[one], x_val=x[one][:5], y_val=y[one][:5]),
                  (8, 8, 1), 10)


@pytest.mark.parametrize("n,expect", [(1, "x has at most 1 sample(s) of any class"),
                                      (20, "x has at most 2 sample(s) of any class")])
def test_too_few_samples_for_a_validation_split(tmp_path, capsys, n, expect):
    x, y = _digits()
    pick = np.concatenate([np.flatnonzero(y == c)[: max(1, n // 10)] for c in range(10)])[:n]
    data = _npz(tmp_path, x=x[pick], y=y[pick])
    out = tmp_path / "out"
    err = _one_line_error(capsys, cli(["build", str(MLP), "--data", str(data), "--out", str(out)]), expect)
    assert "give at least 3 samples of some class, or x_val/y_val" in err
    assert not out.exists()


def test_too_few_unlabelled_samples(tmp_path):
    x, _ = _digits(2)
    with pytest.raises(UserError, match=r"x has 2 samples: too few .*give at least 3 samples, or x_val"):
        load_data(_npz(tmp_path, x=x), (8, 8, 1), 10)
    assert len(load_data(_npz(tmp_path, x=_digits(3)[0]), (8, 8, 1), 10).x_val) == 1


def test_labels_for_a_one_output_model_are_refused(tmp_path):
    x, y = _digits(100)
    with pytest.raises(UserError, match="the model has one output .* give x without y"):
        load_data(_npz(tmp_path, x=x, y=np.zeros(len(x), dtype=int)), (8, 8, 1), 1)


# ----------------------------------------------------------------------------- weights

@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_weights_are_refused_at_import(tmp_path, capsys, bad):
    from edgesparse._tf import keras

    model = keras.models.load_model(MLP, compile=False)
    layer = model.layers[2]
    weights = layer.get_weights()
    weights[0][5, 7] = bad
    layer.set_weights(weights)
    broken = tmp_path / "nan.keras"
    model.save(broken)
    out = tmp_path / "out"
    code = cli(["build", str(broken), "--data", str(ROOT / "sample_models" / "digits.npz"), "--out", str(out)])
    _one_line_error(capsys, code, f"weight {layer.weights[0].name} holds 1 NaN or infinite values")
    assert not out.exists()


# ----------------------------------------------------------------------------- report.json

def _strict_json(text: str):
    def refuse(name):
        raise AssertionError(f"report.json holds a bare {name}, which is not JSON")
    return json.loads(text, parse_constant=refuse)


def test_report_json_never_holds_a_bare_nan(tmp_path):
    from edgesparse.report.write import write_reports

    report = {"model": {"name": "m", "accuracy": float("nan"), "final": {"macs": np.float32("inf")}},
              "target": {"name": "rpi4", "title": "t", "threads": 1}, "warnings": [],
              "recipe": {"name": "r", "origin": "o"}, "data": {"source": "d"}, "passes": [],
              "artifacts": [], "versions": {},
              "facts": {"verify": {"diffs": np.array([1.5, -np.inf]), "n": np.int64(3)}}}
    write_reports(report, tmp_path)
    on_disk = _strict_json((tmp_path / "report.json").read_text())
    assert on_disk["model"]["accuracy"] is None and on_disk["model"]["final"]["macs"] is None
    assert on_disk["facts"]["verify"] == {"diffs": [1.5, None], "n": 3}
    assert "—" in (tmp_path / "report.md").read_text()


# ----------------------------------------------------------------------------- regression models

def test_regression_model_reports_output_difference_not_agreement(tmp_path, capsys):
    from edgesparse._tf import keras

    keras.utils.set_random_seed(0)
    x, _ = _digits(300)
    x = x.reshape(len(x), 64)
    target = x.mean(axis=1, keepdims=True)                      # a smooth function of the input
    inp = keras.Input((64,))
    model = keras.Model(inp, keras.layers.Dense(1)(keras.layers.Dense(16, activation="relu")(inp)))
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    model.fit(x, target, epochs=5, verbose=0)
    model.save(tmp_path / "reg.keras")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("passes:\n  - pass: quantize\n    precisions: [fp32]\n  - pass: export\n"
                      "    formats: [tflite]\n  - pass: verify\n")
    out = tmp_path / "out"
    code = cli(["build", str(tmp_path / "reg.keras"), "--data", str(_npz(tmp_path, x=x)),
                "--recipe", str(recipe), "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    (artifact,) = report["artifacts"]
    assert artifact["top1_agreement"] is None and artifact["accuracy"] is None
    assert 0 <= artifact["max_abs_diff"] < 1e-3
    assert "regression" in artifact["metrics"]["agreement"]
    assert any("one linear output (regression)" in w for w in report["warnings"])
    assert "100.00" not in (out / "report.md").read_text().split("## Artifacts")[1].split("##")[0]


# ----------------------------------------------------------------------------- prune records in reports

def test_pruning_section_renders_layers_that_were_not_refit():
    """DS-CNN: a SeparableConv1D loses input channels but reconstruction refits only Dense/Conv1D/
    Conv2D, so its record has a reason and no errors. report.md ended in KeyError: 'error_before'."""
    import prune_models as zoo
    from edgesparse.data import synthetic
    from edgesparse.passes.prune.pass_ import PrunePass
    from edgesparse.pipeline import RunContext
    from edgesparse.report.html import _prune
    from edgesparse.report.markdown import _pruning
    from edgesparse.state import ModelState
    from edgesparse.targets import load_target

    model = zoo.ds_cnn()
    ctx = RunContext(target=load_target("rpi4"), data=synthetic((20, 10)), workdir=None)
    state = PrunePass(macs=0.3).run(ModelState(model=model, name="ds_cnn"), ctx)
    facts = state.facts["prune"]
    layers = [layer for step in facts["reconstruction"] for layer in step["layers"]]
    skipped = [layer for layer in layers if "why" in layer]
    assert skipped and all("error_before" not in layer for layer in skipped), "the case this test is for"
    md = "\n".join(_pruning({"facts": {"prune": facts}}))
    page = _prune(facts, draw=False)
    for layer in skipped:
        assert f"| {layer['layer']} | — | — | not refit: SeparableConv1D is not refit" in md
        assert layer["layer"] in page and "not refit: SeparableConv1D is not refit" in page
