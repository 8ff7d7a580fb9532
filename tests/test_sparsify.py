"""The sparsify pass: patterns and masks, the matrix form of layers, the OBS refit cascade,
the tfmot route, the pass contract, and that the zeros survive a TFLite export."""
from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from edgesparse._tf import keras
from edgesparse.data import Dataset
from edgesparse.graph import linear
from edgesparse.train.metrics import accuracy, predict
from edgesparse.passes.sparsify.masks import (Pattern, keep_counts, layer_densities, nm_mask,
                                              nm_violations, parse_pattern)
from edgesparse.passes.sparsify.pass_ import SparsifyConfig, SparsifyPass
from edgesparse.passes.sparsify.refit import sparse_refit
from edgesparse.passes.sparsify.solver import LayerProblem, fit_layer
from edgesparse.pipeline import DataInfo, Pipeline, RunContext
from edgesparse.state import ModelState

L = keras.layers
UNSTRUCTURED = Pattern()


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    x_tr, x_va, y_tr, y_va = train_test_split(x, d.target, test_size=0.2, random_state=0,
                                              stratify=d.target)
    return Dataset(x_tr, y_tr, x_va, y_va, x_calib=x_tr, labelled=True, real=True,
                   source="sklearn digits", splits={"calibration": "train"})


@pytest.fixture(scope="module")
def mlp(digits):
    """A small trained MLP (64-64-64-10, ReLU, softmax): big enough to have something to lose."""
    keras.utils.set_random_seed(0)
    i = keras.Input((64,))
    x = L.Dense(64, activation="relu")(i)
    x = L.Dense(64, activation="relu")(x)
    model = keras.Model(i, L.Dense(10, activation="softmax")(x))
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    model.fit(digits.x_train, digits.y_train, epochs=30, batch_size=64, verbose=0)
    assert accuracy(model, digits.x_val, digits.y_val) > 93
    return model


def _kernel_zeros(model):
    kernels = [l.kernel.numpy() for l in model.layers if getattr(l, "kernel", None) is not None]
    return sum(int((k == 0).sum()) for k in kernels), sum(k.size for k in kernels)


def _agreement(a, b, x):
    return float(np.mean(predict(a, x).argmax(-1) == predict(b, x).argmax(-1)))


# ----------------------------------------------------------------------------- patterns and masks


def test_patterns_parse_and_bad_ones_say_what_to_do():
    assert parse_pattern("unstructured") == Pattern()
    p = parse_pattern(" 2:4 ")
    assert (p.n, p.m, p.sparsity, p.tfmot_m_by_n) == (2, 4, 0.5, (2, 4))
    assert parse_pattern("1:4").tfmot_m_by_n == (3, 4)     # tfmot counts zeros per block
    for bad in ("3:2", "4:4", "0:4", "2-4", "dense"):
        with pytest.raises(ValueError, match="N:M|0 < N < M"):
            parse_pattern(bad)


def test_nm_mask_keeps_n_per_block_of_input_channels_including_short_blocks():
    rng = np.random.default_rng(0)
    c_in, positions, out = 6, 9, 5          # a 3x3 conv with 6 input channels: blocks 4 + 2
    score = rng.random((positions * c_in, out))
    mask = nm_mask(score, c_in, 2, 4)
    assert nm_violations(np.where(mask, 1.0, 0.0), c_in, 2, 4) == 0
    assert mask.sum() == positions * out * (2 + 2)   # full block keeps 2, the short block too
    # Blocks restart at every kernel position: the best two of channels 0..3 at position 1.
    best = np.argsort(-score[c_in:c_in + 4, 0])[:2] + c_in
    assert set(np.flatnonzero(mask[c_in:c_in + 4, 0]) + c_in) == set(best)
    dense = np.ones((positions * c_in, out))
    assert nm_violations(dense, c_in, 2, 4) > 0


def test_erk_allocation_keeps_the_overall_budget_and_favours_small_layers():
    shapes = [(64, 256), (256, 256), (256, 10)]
    sizes = np.array([64 * 256, 256 * 256, 2560])
    for s in (0.5, 0.9, 0.95, 0.99):
        d = np.array(layer_densities(shapes, s, "erk"))
        assert (d <= 1).all() and (d > 0).all()
        assert abs((d * sizes).sum() - (1 - s) * sizes.sum()) < 1e-6 * sizes.sum()
        assert d[2] > d[0] > d[1]                  # the classifier keeps most, the middle least
        counts = keep_counts(shapes, list(d), s)
        assert sum(counts) == int(np.floor((1 - s) * sizes.sum() + 1e-9))
    # At low sparsity the classifier would exceed density 1: it is kept dense, the rest rescaled.
    d = layer_densities(shapes, 0.5, "erk")
    assert d[2] == 1.0
    assert layer_densities(shapes, 0.9, "uniform") == pytest.approx([0.1] * 3)


# ----------------------------------------------------------------------------- layers as matrices


@pytest.mark.parametrize("make, shape", [
    (lambda: L.Dense(7, activation="relu"), (5, 6)),
    (lambda: L.Dense(7), (4, 3, 6)),                                         # Dense on a sequence
    (lambda: L.Conv2D(5, 3, padding="same", activation="relu"), (6, 6, 3)),
    (lambda: L.Conv2D(5, (3, 2), strides=2, padding="valid"), (7, 6, 3)),
    (lambda: L.Conv2D(4, 3, dilation_rate=2, padding="same", use_bias=False), (8, 8, 2)),
    (lambda: L.Conv1D(5, 3, padding="causal", dilation_rate=2), (10, 3)),
    (lambda: L.Conv1D(5, 4, strides=2, padding="same"), (11, 3)),
])
def test_rows_times_kernel_reproduce_the_layer(make, shape):
    rng = np.random.default_rng(1)
    layer = make()
    x = rng.normal(size=(3,) + shape).astype(np.float32)
    layer(x)  # build
    weights = layer.get_weights()
    if len(weights) == 2:                   # a non-zero bias, so a dropped bias would show
        layer.set_weights([weights[0], rng.normal(size=weights[1].shape).astype(np.float32)])
    assert linear.check_linear_form(layer, x) < 1e-5
    rows = linear.input_rows(layer, x)
    assert rows.shape[1] == linear.kernel_matrix(layer).shape[0]


def test_layers_we_cannot_refit_are_named_with_a_reason():
    assert linear.why_not_linear(L.DepthwiseConv2D(3)) is not None
    assert "grouped" in linear.why_not_linear(L.Conv2D(4, 3, groups=2))
    shared = L.Dense(4)
    i = keras.Input((4,))
    keras.Model(i, shared(shared(i)))
    assert "shared" in linear.why_not_linear(shared)
    assert linear.why_not_linear(L.Dense(4)) is None


# ----------------------------------------------------------------------------- one layer


def test_obs_refit_beats_magnitude_mask_and_plain_refit_on_one_layer():
    rng = np.random.default_rng(0)
    # Correlated inputs of very different scales: where |W| alone picks the wrong weights.
    x = rng.normal(size=(600, 24)) @ rng.normal(size=(24, 24)) * rng.uniform(0.1, 3, 24)
    w = rng.normal(size=(24, 8))
    b = rng.normal(size=8)
    y = x @ w + b
    problem = LayerProblem(x, y, fit_bias=True, ridge=1e-6)
    keep = 48                                               # 75% sparsity
    mask_only = fit_layer(problem, w, b, keep, UNSTRUCTURED, 24, "magnitude", refit=False)
    plain = fit_layer(problem, w, b, keep, UNSTRUCTURED, 24, "magnitude")
    obs = fit_layer(problem, w, b, keep, UNSTRUCTURED, 24, "obs", steps=6)
    for fit in (mask_only, plain, obs):
        assert fit.mask.sum() == keep and ((fit.kernel != 0) <= fit.mask).all()
    assert obs.error < plain.error < mask_only.error
    # The error is measured, not assumed: recompute it from the weights.
    direct = ((x @ obs.kernel + obs.bias - y) ** 2).sum() / ((y - y.mean(0)) ** 2).sum()
    assert obs.error == pytest.approx(direct, rel=1e-6)


def test_full_mask_recovers_a_noiseless_layer_and_a_fixed_bias_stays():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(200, 10))
    w, b = rng.normal(size=(10, 3)), np.array([0.5, -1.0, 2.0])
    fit = fit_layer(LayerProblem(x, x @ w + b, fit_bias=True, ridge=1e-9), w * 0, b * 0,
                    keep=30, pattern=UNSTRUCTURED, c_in=10, criterion="magnitude")
    np.testing.assert_allclose(fit.kernel, w, atol=1e-5)
    np.testing.assert_allclose(fit.bias, b, atol=1e-5)
    nobias = fit_layer(LayerProblem(x, x @ w + b, fit_bias=False, ridge=1e-9), w, b, keep=15,
                       pattern=UNSTRUCTURED, c_in=10, criterion="obs", steps=3)
    np.testing.assert_array_equal(nobias.bias, b)


# ----------------------------------------------------------------------------- the cascade


def test_refit_reaches_the_sparsity_leaves_the_input_model_alone_and_keeps_accuracy(mlp, digits):
    before = [w.copy() for w in mlp.get_weights()]
    result = sparse_refit(mlp, digits.x_train, 0.8, UNSTRUCTURED)
    assert all(np.array_equal(a, b) for a, b in zip(before, mlp.get_weights()))
    zeros, total = _kernel_zeros(result.model)
    assert zeros / total >= 0.8
    assert [r.layer for r in result.layers] == [l.name for l in mlp.layers[1:]]
    for r in result.layers:
        assert r.error < r.error_mask_only      # the refit improved every layer
    dense_acc = accuracy(mlp, digits.x_val, digits.y_val)
    assert accuracy(result.model, digits.x_val, digits.y_val) >= dense_acc - 2.0


def test_our_refit_is_closer_to_the_dense_network_than_the_baselines(mlp, digits):
    x = digits.x_val
    ours = sparse_refit(mlp, digits.x_train, 0.9, UNSTRUCTURED).model
    plain = sparse_refit(mlp, digits.x_train, 0.9, UNSTRUCTURED, criterion="magnitude",
                         allocation="uniform", cascade=False).model
    mask_only = sparse_refit(mlp, digits.x_train, 0.9, UNSTRUCTURED, criterion="magnitude",
                             allocation="uniform", refit=False).model
    for m in (ours, plain, mask_only):
        assert _kernel_zeros(m)[0] / _kernel_zeros(m)[1] >= 0.9
    a_ours, a_plain, a_mask = (_agreement(mlp, m, x) for m in (ours, plain, mask_only))
    assert a_ours > a_plain and a_ours > a_mask, (a_ours, a_plain, a_mask)


def test_nm_refit_holds_the_pattern_on_conv_and_dense_layers(digits):
    keras.utils.set_random_seed(3)
    i = keras.Input((8, 8, 1))
    x = L.Conv2D(8, 3, padding="same", activation="relu")(i)
    x = L.Conv2D(12, 3, padding="same", use_bias=False)(x)
    x = L.BatchNormalization()(x)
    x = L.ReLU()(x)
    x = L.DepthwiseConv2D(3, padding="same")(x)
    x = L.Flatten()(x)
    model = keras.Model(i, L.Dense(10)(x))
    calib = digits.x_train[:200].reshape(-1, 8, 8, 1)
    result = sparse_refit(model, calib, 0.0, parse_pattern("2:4"), max_rows=4000)
    refit = {r.layer: r for r in result.layers if r.skipped is None}
    skipped = {r.layer: r.skipped for r in result.layers if r.skipped}
    assert len(refit) == 3 and list(skipped) == [model.layers[5].name]     # the depthwise conv
    for layer in result.model.layers:
        if layer.name in refit:
            k = linear.kernel_matrix(layer)
            assert nm_violations(k, linear.input_channels(layer), 2, 4) == 0
            if linear.input_channels(layer) % 4 == 0:    # c_in=1: blocks of one keep all
                assert (k == 0).mean() >= 0.5 - 1e-9
                assert refit[layer.name].error < refit[layer.name].error_mask_only
    # The refit keeps the network close to the dense one.
    y, y_hat = predict(model, calib), predict(result.model, calib)
    assert np.linalg.norm(y - y_hat) / np.linalg.norm(y - y.mean(0)) < 0.5


# ----------------------------------------------------------------------------- the tfmot route


def test_magnitude_route_counts_its_zeros_and_does_not_prune_the_original(mlp, digits):
    from edgesparse.passes.sparsify.magnitude import derive_schedule, magnitude_prune

    s = derive_schedule(samples=1437, batch_size=32, epochs=1)
    assert s.end_step < s.total_steps and s.end_step % s.frequency == 0 and s.frequency < 100
    before = [w.copy() for w in mlp.get_weights()]
    result = magnitude_prune(mlp, digits.x_train, digits.y_train, 0.75, UNSTRUCTURED, epochs=1)
    assert all(np.array_equal(a, b) for a, b in zip(before, mlp.get_weights()))
    assert [type(l).__name__ for l in result.model.layers[1:]] == ["Dense"] * 3   # stripped
    for r in result.layers:
        assert r.sparsity == pytest.approx(0.75, abs=0.01), r
    nm = magnitude_prune(mlp, digits.x_train[:256], digits.y_train[:256], 0, parse_pattern("2:4"),
                         epochs=1)
    for layer in nm.model.layers[1:]:
        assert nm_violations(linear.kernel_matrix(layer), linear.input_channels(layer), 2, 4) == 0


# ----------------------------------------------------------------------------- the pass


def test_config_rejects_bad_input():
    for bad in ({"sparsity": 1.0}, {"sparsity": -0.1}, {"pattern": "3:2"},
                {"pattern": "2:4", "sparsity": 0.9}, {"method": "prune"}, {"sparsty": 0.5}):
        with pytest.raises(ValidationError):
            SparsifyConfig(**bad)
    assert SparsifyConfig().target_sparsity() == 0.9
    assert SparsifyConfig(pattern="1:4").target_sparsity() == 0.75
    assert SparsifyConfig(sparsity=0.0).target_sparsity() == 0.0


def test_recipes_reach_the_registered_pass_and_name_bad_keys():
    from edgesparse.errors import UserError
    from edgesparse.recipe import parse_recipe

    recipe = parse_recipe({"passes": [{"pass": "sparsify", "sparsity": 0.8, "pattern": "unstructured"}]}, "r.yaml")
    assert isinstance(recipe.passes[0], SparsifyPass)
    assert recipe.passes[0].config.target_sparsity() == 0.8
    with pytest.raises(UserError, match="3:2"):
        parse_recipe({"passes": [{"pass": "sparsify", "pattern": "3:2"}]}, "r.yaml")
    with pytest.raises(UserError, match="sparsity"):
        parse_recipe({"passes": [{"pass": "sparsify", "sparsity": 1.0}]}, "r.yaml")


def test_back_off_scales_unstructured_sparsity_only():
    gentler = SparsifyPass(sparsity=0.9).scaled(0.5)
    assert gentler.config.target_sparsity() == pytest.approx(0.45)
    assert SparsifyPass().scaled(0.5).config.target_sparsity() == pytest.approx(0.45)   # default 0.9
    assert SparsifyPass(pattern="2:4").scaled(0.5) is None
    assert SparsifyPass(sparsity=0.9).scaled(1.0) is None


def test_plan_checks_name_missing_labels_and_synthetic_data():
    unlabelled = DataInfo(real=True, labelled=False)
    synthetic = DataInfo(real=False, labelled=False)
    problems = Pipeline([SparsifyPass(method="magnitude")]).validate(None, unlabelled)
    assert any("labels" in p for p in problems)
    assert Pipeline([SparsifyPass()]).validate(None, unlabelled) == []
    assert any("real --data" in p for p in Pipeline([SparsifyPass()]).validate(None, synthetic))


def test_pass_records_per_layer_sparsity_errors_accuracy_and_sizes(mlp, digits, tmp_path):
    state = ModelState(model=mlp, name="mlp", reference=mlp)
    ctx = RunContext(target=None, data=digits, workdir=tmp_path)
    state = SparsifyPass(sparsity=0.9, sizes=True).run(state, ctx)
    f = state.facts["sparsify"]
    assert state.model is not mlp
    assert f["sparsity"] >= 0.9 and f["sparsity_all_kernels"] >= 0.9
    assert len(f["layers"]) == 3 and all("reconstruction_error" in r for r in f["layers"])
    assert f["calibration"]["samples"] == len(digits.x_train)
    assert f["accuracy_before"] - f["accuracy_after"] < 3.0
    dense, sparse = f["sizes"]["dense"], f["sizes"]["sparse"]
    assert sparse["tflite_fp32_bytes"] == pytest.approx(dense["tflite_fp32_bytes"], rel=0.01)
    assert sparse["tflite_fp32_gzip_bytes"] < 0.4 * dense["tflite_fp32_gzip_bytes"]
    assert sparse["tflite_fp32_sparse_bytes"] < 0.5 * dense["tflite_fp32_bytes"]
    assert isinstance(sparse["int8_sparse_larger"], bool)
    assert "not measured" in f["latency"]


def test_the_size_conversions_keep_the_converter_chatter_off_the_terminal(mlp, digits, capfd):
    from edgesparse.passes.sparsify.sizes import model_sizes

    model_sizes(mlp, digits.x_train)                     # fp32, int8, sparse: four conversions
    out, err = capfd.readouterr()
    assert "fully_quantize" not in err + out and "inference_type" not in err + out, err


def _sequence_model(attention: bool):
    """Dense -> (MultiHeadAttention ->) LSTM -> Dense on 6 x 5 sequences, and unlabelled data."""
    keras.utils.set_random_seed(0)
    i = keras.Input((6, 5))
    x = L.Dense(8, name="embed")(i)
    if attention:
        x = L.MultiHeadAttention(num_heads=2, key_dim=4, name="mha")(x, x)
    x = L.LSTM(4, name="lstm")(x)
    model = keras.Model(i, L.Dense(3, activation="softmax", name="head")(x))
    x = np.random.default_rng(0).normal(size=(64, 6, 5)).astype(np.float32)
    return model, Dataset(None, None, None, None, x_calib=x, labelled=False, real=True, source="test")


def test_all_kernels_counts_the_kernels_of_layers_kept_dense(tmp_path):
    # The attention's projections are 3-D EinsumDense kernels inside the MultiHeadAttention, the
    # LSTM has a kernel and a recurrent kernel: none is sparsified, all are kernels.
    model, data = _sequence_model(attention=True)
    state = ModelState(model=model, name="seq", reference=model)
    state = SparsifyPass(sparsity=0.9, sizes=False).run(state, RunContext(target=None, data=data, workdir=tmp_path))
    f = state.facts["sparsify"]
    kernels = [w.numpy() for w in state.model.weights if "kernel" in w.name]
    assert f["kernel_weights"] == sum(k.size for k in kernels) == 5 * 8 + 4 * 8 * 8 + 4 * (8 + 4) * 4 + 4 * 3
    assert f["sparsity_all_kernels"] == pytest.approx(sum(int((k == 0).sum()) for k in kernels) / f["kernel_weights"],
                                                      abs=1e-6)
    assert f["sparsity_all_kernels"] < 0.2 < 0.85 < f["sparsity"]
    kept = {r["layer"]: r for r in f["layers"] if r.get("skipped")}
    assert set(kept) == {"mha", "lstm"} and kept["mha"]["weights"] == 4 * 8 * 8
    assert "MultiHeadAttention keeps its weights dense" in kept["mha"]["skipped"]


def test_sizes_of_an_lstm_are_measured_as_export_converts_it(tmp_path, capfd):
    # The LSTM's tensor lists need a static batch: from_keras_model (batch -1) could not convert it.
    model, data = _sequence_model(attention=False)
    state = ModelState(model=model, name="seq", reference=model)
    state = SparsifyPass(sparsity=0.9).run(state, RunContext(target=None, data=data, workdir=tmp_path))
    sizes = state.facts["sparsify"]["sizes"]
    assert all(sizes[m][f"tflite_{p}_bytes"] > 0 for m in ("dense", "sparse") for p in ("fp32", "int8"))
    assert sizes["sparse"]["tflite_fp32_gzip_bytes"] < sizes["dense"]["tflite_fp32_gzip_bytes"]
    assert not [w for w in state.warnings if "sizes" in w]
    assert "fully_quantize" not in capfd.readouterr().err          # the converter's chatter is kept


def test_sizes_a_model_cannot_be_converted_for_are_one_warning(tmp_path, capfd):
    from edgesparse._tf import tf

    i = keras.Input((4,))
    x = L.Dense(8, name="first")(i)
    x = L.Lambda(lambda t: tf.linalg.det(tf.reshape(t, (-1, 2, 2, 2))))(x)   # no TFLite builtin
    model = keras.Model(i, L.Dense(2, name="head")(x))
    x = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    data = Dataset(None, None, None, None, x_calib=x, labelled=False, real=True, source="test")
    state = ModelState(model=model, name="det", reference=model)
    state = SparsifyPass(sparsity=0.5).run(state, RunContext(target=None, data=data, workdir=tmp_path))
    assert "sizes" not in state.facts["sparsify"] and state.facts["sparsify"]["sparsity"] >= 0.5
    [warning] = [w for w in state.warnings if "sizes" in w]
    assert warning.startswith("sparsify: sizes not measured (TFLite conversion (fp32) failed")
    assert "MatrixDeterminant" in warning and "sizes: false" in warning and "\n" not in warning
    assert len(capfd.readouterr().err) < 500                      # no MLIR dump on the terminal


def test_zeros_survive_tflite_fp32_export(mlp, digits):
    from ai_edge_litert.interpreter import Interpreter

    from edgesparse.convert.tflite import to_tflite

    sparse = sparse_refit(mlp, digits.x_train, 0.9, UNSTRUCTURED).model
    interpreter = Interpreter(model_content=to_tflite(sparse, "fp32"))
    interpreter.allocate_tensors()
    # TFLite stores Dense kernels transposed, (out, in); find each kernel among the constants.
    constants = []
    for t in interpreter.get_tensor_details():
        if len(t["shape"]) == 2:
            try:
                constants.append(interpreter.get_tensor(t["index"]))
            except ValueError:       # activations have no data before invoke
                continue
    for layer in sparse.layers[1:]:
        k = layer.kernel.numpy()
        assert (k == 0).mean() > 0.5
        matches = [c for c in constants if c.shape == k.T.shape and np.array_equal(c, k.T)]
        assert matches, f"{layer.name}: no TFLite tensor holds its weights with their zeros"
    runner = interpreter.get_signature_runner()
    name = list(runner.get_input_details())[0]
    out = list(runner(**{name: digits.x_val[:32]}).values())[0]
    np.testing.assert_allclose(out, predict(sparse, digits.x_val[:32]), atol=1e-5)


def test_cli_writes_the_sparse_model_and_refuses_bad_patterns(mlp, digits, tmp_path, monkeypatch, capsys):
    import sys

    from edgesparse import cli

    model_path, data_path = tmp_path / "m.keras", tmp_path / "d.npz"
    mlp.save(model_path)
    np.savez(data_path, x_train=digits.x_train, y_train=digits.y_train, x_val=digits.x_val,
             y_val=digits.y_val)
    out = tmp_path / "sparse.keras"

    def run(*args):
        monkeypatch.setattr(sys, "argv", ["edgesparse", "sparsify", str(model_path), "--data",
                                          str(data_path), "--out", str(out), *args])
        try:
            cli.main()
        except SystemExit as exc:
            return exc.code
        return 0

    assert run("--pattern", "3:2") == 2
    assert "3:2" in capsys.readouterr().err and not out.exists()
    assert run("--sparsity", "1.5") == 2 and not out.exists()
    assert run("--sparsity", "0.85", "--no-sizes") in (0, None), capsys.readouterr().err
    saved = keras.models.load_model(out, compile=False)
    zeros, total = _kernel_zeros(saved)
    assert zeros / total >= 0.85
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]   # no temporary left


def test_layers_too_big_for_exact_obs_fall_back_to_the_activation_criterion(mlp, digits, monkeypatch):
    from edgesparse.passes.sparsify import refit as refit_module

    monkeypatch.setattr(refit_module, "OBS_FLOP_BUDGET", 3e6)   # 64x64 kernels: ~8e6, 64x10: ~1.4e6
    result = sparse_refit(mlp, digits.x_train[:300], 0.8, UNSTRUCTURED, allocation="uniform")
    used = [r.criterion for r in result.layers]
    assert used == ["activation", "activation", "obs"]
    assert _kernel_zeros(result.model)[0] / _kernel_zeros(result.model)[1] >= 0.8
