"""Data of the wrong scale (finite, but x * 1e30) is the user's problem, said in one line with exit
code 2: not an internal LinAlgError from the least-squares refit, nor a model of NaN weights
written with exit code 0 after its fine-tune diverged."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgesparse.cli import run as cli
from edgesparse.errors import UserError
from edgesparse.graph.lstsq import NormalEquations

SAMPLES = Path(__file__).resolve().parents[1] / "sample_models"
CNN, DIGITS = SAMPLES / "digits_cnn.keras", SAMPLES / "digits.npz"


def test_a_diverged_fine_tune_is_refused_and_nothing_is_written(tmp_path, capsys):
    with np.load(DIGITS) as d:
        np.savez(tmp_path / "huge.npz", **{k: d[k] * np.float32(1e30) if k.startswith("x") else d[k]
                                           for k in d.files})
    out = tmp_path / "pruned.keras"
    code = cli(["prune", str(CNN), "--data", str(tmp_path / "huge.npz"), "--macs", "0.5",
                "--finetune-epochs", "1", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: training turned the model's weights into NaN"), err
    assert "the data's scale is likely wrong" in err[-1] and "Traceback" not in "\n".join(err)
    assert not out.exists()


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_least_squares_on_non_finite_activations_is_a_user_error(bad):
    x = np.ones((8, 3))
    x[2, 1] = bad
    with pytest.raises(UserError, match="activations on the data are NaN or infinite.*data's scale"):
        NormalEquations(x, np.ones((8, 2)), center=True)
    with pytest.raises(UserError, match="NaN or infinite"):
        NormalEquations(np.ones((8, 3)), np.where(x[:, :2] == 1, 1.0, bad), augment=True)
