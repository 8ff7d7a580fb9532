"""verify: every artifact runs in LiteRT / ONNX Runtime on the validation split; metrics and
target checks are recorded; failed constraints warn, broken files raise.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
from sklearn.datasets import load_digits

from edgesparse._tf import keras
from edgesparse.checks import COMPILER_NOT_RUN, edgetpu
from edgesparse.data import Dataset, load_data
from edgesparse.errors import UserError
from edgesparse.passes.export import Export
from edgesparse.passes.quantize import Quantize
from edgesparse.passes.verify import Verify, agreement_warning, output_metrics
from edgesparse.pipeline import Pipeline, RunContext
from edgesparse.state import Artifact, ModelState
from edgesparse.targets import load_target


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny Dense MLP trained a few epochs on sklearn digits, and its data splits."""
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32).reshape(-1, 64)
    idx = np.random.default_rng(1).permutation(len(x))
    path = tmp_path_factory.mktemp("d") / "digits.npz"
    np.savez(path, x_train=x[idx[:1437]], y_train=d.target[idx[:1437]],
             x_val=x[idx[1437:]], y_val=d.target[idx[1437:]])
    data = load_data(path, (64,), 10)
    keras.utils.set_random_seed(0)
    inp = keras.Input((64,))
    h = keras.layers.Dense(48, activation="relu")(inp)
    model = keras.Model(inp, keras.layers.Dense(10, activation="softmax")(h))
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    model.fit(data.x_train, data.y_train, epochs=6, batch_size=32, verbose=0)
    return model, data


def build(model, data, target, tmp_path, quantize: Quantize, verify: Verify | None = None):
    ctx = RunContext(target=load_target(target), data=data, workdir=tmp_path)
    state = Pipeline([quantize, Export(), verify or Verify()]).run(ModelState(model=model, name="mlp"), ctx)
    return state


def test_metrics_for_every_artifact(trained, tmp_path):
    model, data = trained
    state = build(model, data, "rpi4", tmp_path, Quantize(precisions=["int8", "fp32"]))
    keras_acc = float(np.mean(model.predict(data.x_val, verbose=0).argmax(1) == data.y_val) * 100)
    assert len(state.artifacts) == 4
    for a in state.artifacts:
        m = a.metrics
        assert m["n_samples"] == len(data.x_val) == 360
        assert m["bytes"] == a.path.stat().st_size
        assert m["sha256"] == hashlib.sha256(a.path.read_bytes()).hexdigest()
        assert m["keras_accuracy"] == pytest.approx(keras_acc, abs=1e-3)
        assert abs(m["accuracy"] - keras_acc) <= 1.0
        assert m["top1_agreement"] >= 97.0
        assert all(c["passed"] for c in a.checks.values()), a.checks
        if a.precision == "fp32":
            assert m["max_abs_diff"] < 1e-5 and m["top1_agreement"] == 100.0
        else:
            assert 0 < m["max_abs_diff"] < 0.2      # int8 differs, but not wildly
    assert state.facts["verify"]["data"] == "validation"
    assert state.warnings == []


def test_unlabelled_data_claims_no_accuracy(trained, tmp_path):
    model, data = trained
    unlabelled = Dataset(x_train=None, y_train=None, x_val=None, y_val=None, x_calib=data.x_calib[:80],
                         labelled=False, real=True, source="test")
    state = build(model, unlabelled, "rpi4", tmp_path, Quantize(precisions=["int8"]))
    for a in state.artifacts:
        assert a.metrics["accuracy"] is None and a.metrics["keras_accuracy"] is None
        assert a.metrics["n_samples"] == 80
        assert a.metrics["top1_agreement"] > 90
    assert state.facts["verify"]["data"] == "calibration inputs"


def test_coral_build_passes_checks_and_says_the_compiler_did_not_run(trained, tmp_path):
    model, data = trained
    state = build(model, data, "coral", tmp_path, Quantize(io="uint8"))
    (a,) = state.artifacts
    assert a.io_dtype == "uint8"
    failed = [k for k, v in a.checks.items() if v["passed"] is False]
    assert failed == []
    assert a.checks["edgetpu_mapping"]["ops_on_cpu"] == 0
    if edgetpu.compiler_path() is None:
        assert COMPILER_NOT_RUN in state.warnings
    assert abs(a.metrics["accuracy"] - a.metrics["keras_accuracy"]) <= 1.0


def test_android_records_deprecation_and_gpu_variant(trained, tmp_path):
    model, data = trained
    state = build(model, data, "android-nnapi", tmp_path, Quantize(precisions=["int8", "fp16"]))
    notes = {a.precision: a.note for a in state.artifacts}
    assert notes["fp16"] == "GPU-delegate variant (fp16)"
    assert load_target("android-nnapi").deprecation in state.warnings
    assert all(c["passed"] for a in state.artifacts for c in a.checks.values())


def test_failed_constraint_is_recorded_and_warned_not_raised(trained, tmp_path):
    model, data = trained
    keras.utils.set_random_seed(0)
    inp = keras.Input((64,))
    h = keras.layers.LeakyReLU(0.2)(keras.layers.Dense(16)(inp))
    leaky = keras.Model(inp, keras.layers.Dense(10)(h))
    state = build(leaky, data, "coral", tmp_path, Quantize())
    (a,) = state.artifacts
    assert a.checks["operators"]["passed"] is False
    assert "LEAKY_RELU" in a.checks["operators"]["reason"]
    assert any(w.startswith("mlp-int8.tflite: operators check failed") and "LEAKY_RELU" in w
               for w in state.warnings)
    assert state.facts["verify"]["failed_checks"]["mlp-int8.tflite"] == ["operators", "edgetpu_mapping"]


def test_an_artifact_that_does_not_load_is_a_user_error(trained, tmp_path):
    model, data = trained
    broken = tmp_path / "mlp-int8.tflite"
    broken.write_bytes(b"TFL3 but not really a model")
    state = ModelState(model=model, name="mlp", artifacts=[Artifact(broken, "tflite", "int8")])
    ctx = RunContext(target=load_target("rpi4"), data=data, workdir=tmp_path)
    with pytest.raises(UserError, match="does not run in LiteRT"):
        Verify().run(state, ctx)


def test_output_metrics_arithmetic():
    ref = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], np.float32)
    out = np.array([[0.7, 0.3], [0.1, 0.9], [0.3, 0.7]], np.float32)
    m = output_metrics(out, ref, np.array([0, 1, 0]))
    assert m["top1_agreement"] == pytest.approx(66.667, abs=1e-3)
    assert m["accuracy"] == pytest.approx(66.667, abs=1e-3)
    assert m["max_abs_diff"] == pytest.approx(0.3, abs=1e-6)
    assert output_metrics(out, ref, None)["accuracy"] is None


def test_agreement_of_single_output_heads():
    ref = np.array([[0.9], [0.2], [0.6], [0.4]], np.float32)
    out = np.array([[0.7], [0.3], [0.45], [0.1]], np.float32)
    sigmoid = output_metrics(out, ref, None, head="sigmoid")
    assert sigmoid["top1_agreement"] == pytest.approx(75.0) and sigmoid["agreement"].startswith("decision")
    regression = output_metrics(out, ref, None, head="logits")
    # argmax over one value always agrees: a regression model must not report "100% agreement"
    assert regression["top1_agreement"] is None and "regression" in regression["agreement"]
    assert regression["max_abs_diff"] == pytest.approx(0.3, abs=1e-6)
    assert output_metrics(out, ref, np.zeros(4, int))["accuracy"] is None


def test_near_tie_decisions_are_explained_not_passed_silently(trained, tmp_path):
    """An untrained-looking model (near-uniform softmax) loses its decisions to int8 rounding:
    agreement collapses while the outputs barely move, and the warning says which it is."""
    _, data = trained
    keras.utils.set_random_seed(0)
    inp = keras.Input((64,))
    tiny = keras.initializers.RandomNormal(stddev=1e-4)
    flat = keras.Model(inp, keras.layers.Dense(10, activation="softmax", kernel_initializer=tiny)(inp))
    state = build(flat, data, "rpi4", tmp_path, Quantize(precisions=["int8"]))
    for a in state.artifacts:
        assert a.metrics["top1_agreement"] < 90 and a.metrics["max_abs_diff"] < 0.01, a.metrics
        assert any(w.startswith(f"{a.name}: ") and "near ties" in w for w in state.warnings), state.warnings


def test_changed_decisions_with_clear_margins_are_blamed_on_the_conversion():
    reference = np.tile(np.array([[0.9, 0.05, 0.05]]), (10, 1))
    changed = np.tile(np.array([[0.1, 0.85, 0.05]]), (10, 1))
    metrics = output_metrics(changed, reference, None)
    warning = agreement_warning("m-int8.tflite", metrics, reference)
    assert warning.startswith("m-int8.tflite: only 0.00% decision agreement") and "conversion" in warning
    assert agreement_warning("m-fp32.tflite", output_metrics(reference, reference, None), reference) is None


def test_a_margin_within_twice_the_output_difference_is_a_near_tie():
    """The top output can fall by max|diff| while the second rises by it: a margin of 1.5x the
    difference is a tie that int8 may flip (an untrained ResNet-50: margin 0.0022 = its diff,
    and the warning blamed the conversion)."""
    reference = np.tile(np.array([[0.3415, 0.3385, 0.32]]), (10, 1))     # margin 0.003
    flipped = np.tile(np.array([[0.3395, 0.3405, 0.32]]), (10, 1))       # each moved by 0.002
    warning = agreement_warning("m-int8.tflite", output_metrics(flipped, reference, None), reference)
    assert "near ties" in warning and "conversion" not in warning
