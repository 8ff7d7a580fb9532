"""The committed sample models and data are what the issue asks for, and still reproducible."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from edgesparse._tf import keras
from edgesparse.graph.stats import count_macs

SAMPLES = Path(__file__).resolve().parents[1] / "sample_models"


def _make_samples_module():
    spec = importlib.util.spec_from_file_location("make_samples", SAMPLES / "make_samples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def data():
    return dict(np.load(SAMPLES / "digits.npz"))


def _accuracy(model, x, y) -> float:
    x = x.reshape(len(x), *model.inputs[0].shape[1:])     # the MLP reads the images flattened
    return float(np.mean(np.argmax(model.predict(x, verbose=0), axis=1) == y))


def test_digits_npz_layout(data):
    assert sorted(data) == ["x_train", "x_val", "y_train", "y_val"]
    for split in ("train", "val"):
        x, y = data[f"x_{split}"], data[f"y_{split}"]
        assert x.dtype == np.float32 and x.shape[1:] == (8, 8, 1) and 0.0 <= x.min() and x.max() <= 1.0
        assert y.dtype == np.int64 and y.shape == (len(x),) and set(np.unique(y)) == set(range(10))
    assert len(data["x_train"]) + len(data["x_val"]) == 1797            # all of scikit-learn's digits
    assert abs(len(data["x_val"]) / 1797 - 0.2) < 0.01
    # Stratified: every class has ~20% of its images in validation.
    for c in range(10):
        n_val, n_train = np.sum(data["y_val"] == c), np.sum(data["y_train"] == c)
        assert abs(n_val / (n_val + n_train) - 0.2) < 0.02


def test_digits_npz_is_what_the_script_makes(data):
    made = _make_samples_module().make_data()
    for key, value in data.items():
        np.testing.assert_array_equal(made[key], value)


def test_cnn_is_conv_batchnorm_and_accurate(data):
    model = keras.models.load_model(SAMPLES / "digits_cnn.keras", compile=False)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds.count("Conv2D") >= 2 and kinds.count("BatchNormalization") == kinds.count("Conv2D")
    assert tuple(model.inputs[0].shape) == (None, 8, 8, 1) and tuple(model.outputs[0].shape) == (None, 10)
    assert model.layers[-1].activation.__name__ == "softmax"
    assert 300_000 <= count_macs(model) <= 1_000_000          # room for structured pruning
    assert _accuracy(model, data["x_val"], data["y_val"]) >= 0.96


def test_mlp_is_dense_64_256_256_10_and_accurate(data):
    model = keras.models.load_model(SAMPLES / "digits_mlp.keras", compile=False)
    dense = [layer for layer in model.layers if type(layer).__name__ == "Dense"]
    assert [layer.units for layer in dense] == [256, 256, 10]
    assert all(type(layer).__name__ in ("InputLayer", "Dense") for layer in model.layers)
    assert [layer.activation.__name__ for layer in dense] == ["relu", "relu", "softmax"]
    assert tuple(model.inputs[0].shape) == (None, 64)
    assert _accuracy(model, data["x_val"], data["y_val"]) >= 0.96
