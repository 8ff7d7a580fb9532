"""Sparse training on masks (issue 11): the sparse optimizer, gmp / SET / RigL, block patterns
LiteRT runs sparse, and the bad inputs refused before training. Real training loop, tiny models."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from edgesparse._tf import keras, tf
from edgesparse.errors import UserError
from edgesparse.passes.sparsify.dynamic import (Settings, cubic_sparsity, drop_and_grow, drop_fraction_at,
                                                sparse_train)
from edgesparse.passes.sparsify.pass_ import SparsifyConfig
from edgesparse.train.callbacks import MaskUpdate
from edgesparse.train.losses import CrossEntropy
from edgesparse.train.masks import Masks, optimizer_slots
from edgesparse.train.trainer import train

sys.path.insert(0, str(Path(__file__).parent))
from digits_mlp import digits_split, mlp  # noqa: E402

L = keras.layers


@pytest.fixture(scope="module")
def digits():
    return digits_split()


_mlp = mlp


def _kernels(model):
    return {l.name: l.kernel.numpy() for l in model.layers if getattr(l, "kernel", None) is not None}


# ----------------------------------------------------------------------------- the sparse optimizer


def test_masks_keep_exact_zeros_and_no_moments_through_training(digits):
    x, y, _, _ = digits
    model = _mlp()
    rng = np.random.default_rng(1)
    initial = {l.name: rng.random(l.kernel.shape) < 0.2 for l in model.layers[1:]}
    masks = Masks(model, initial)
    before = _kernels(model)
    train(model, (x, y), loss=CrossEntropy(), epochs=2, lr=1e-2, callbacks=[MaskUpdate(masks)],
          post_step=[masks.apply])
    for layer in model.layers[1:]:
        kernel, mask = layer.kernel.numpy(), initial[layer.name]
        assert np.all(kernel[~mask] == 0)                        # exactly zero, not small
        assert not np.allclose(kernel[mask], before[layer.name][mask])   # the active ones trained
        slots = optimizer_slots(masks.optimizer, layer.kernel)
        assert len(slots) == 2                                    # Adam's m and v
        for slot in slots:
            assert np.all(slot.numpy()[~mask] == 0)               # masked weights get no update
    assert masks.strip().keys() == initial.keys()
    assert len(model.weights) == 6                                # no mask variable left in the model


def test_an_update_zeroes_regrown_weights_and_resets_their_and_the_dropped_moments(digits):
    x, y, _, _ = digits
    model = _mlp()
    layer = model.layers[1]
    old = np.zeros(layer.kernel.shape, dtype=bool)
    old[:32] = True
    masks = Masks(model, {layer.name: old})
    train(model, (x, y), loss=CrossEntropy(), epochs=1, lr=1e-2, callbacks=[MaskUpdate(masks)],
          post_step=[masks.apply])
    new = old.copy()
    new[:8] = False            # dropped
    new[40:48] = True          # grown
    moved = masks.update(layer.name, new)
    cols = layer.kernel.shape[1]
    assert moved == {"dropped": 8 * cols, "grown": 8 * cols}
    kernel = layer.kernel.numpy()
    assert np.all(kernel[40:48] == 0) and np.all(kernel[:8] == 0)
    assert np.count_nonzero(kernel[8:32]) > 0                    # the kept weights are untouched
    for slot in optimizer_slots(masks.optimizer, layer.kernel):
        values = slot.numpy()
        assert np.all(values[40:48] == 0) and np.all(values[:8] == 0)
        assert np.count_nonzero(values[8:32]) > 0


def test_drop_and_grow_keeps_the_count_and_regrows_the_best_candidates():
    rng = np.random.default_rng(0)
    mask = rng.random((20, 10)) < 0.3
    drop = rng.random((20, 10))
    grow = rng.random((20, 10))
    new = drop_and_grow(mask, drop, grow, 0.3)
    assert new.sum() == mask.sum()
    n_drop = int(mask.sum() * 0.3)
    assert (mask & ~new).sum() <= n_drop
    # the active ones with the largest drop scores all survive (the dropped may be regrown)
    survivors = np.argsort(-np.where(mask, drop, -1).ravel())[: int(mask.sum()) - n_drop]
    assert new.ravel()[survivors].all()
    assert drop_fraction_at(0, Settings("rigl", 0.9), 100) == pytest.approx(0.3)
    assert drop_fraction_at(100, Settings("rigl", 0.9), 100) == pytest.approx(0.0)


@pytest.mark.parametrize("method", ["set", "rigl"])
def test_set_and_rigl_keep_sparsity_exactly_constant_and_move_connections(digits, method):
    x, y, _, _ = digits
    settings = Settings(method, 0.9, update_every=20, epochs=3, batch_size=64, init="random", seed=1)
    result = sparse_train(_mlp(), x, y, settings)
    assert len(result.updates) == result.last_update_step // 20 >= 2
    assert len({u["sparsity"] for u in result.updates}) == 1          # exactly constant
    assert result.updates[0]["grown"] > 0
    assert all(u["step"] <= 0.75 * result.total_steps for u in result.updates)   # none in the last quarter
    sparsities = [r.zeros / r.weights for r in result.layers]
    total = sum(r.zeros for r in result.layers) / sum(r.weights for r in result.layers)
    assert total >= 0.9 - 1e-3 and min(sparsities) > 0


def test_rigl_grows_where_the_dense_gradient_is_largest(digits):
    """One update by hand: the grown connections are the top |gradient| among the inactive."""
    x, y, _, _ = digits
    settings = Settings("rigl", 0.95, update_every=1000, epochs=1, init="random", end_fraction=1.0)
    with pytest.raises(UserError, match="update_every"):
        sparse_train(_mlp(), x[:500], y[:500], settings)
    model = _mlp()
    layer = model.layers[1]
    mask = np.random.default_rng(0).random(layer.kernel.shape) < 0.05
    with tf.GradientTape() as tape:
        loss = CrossEntropy()(model, x[:256], y[:256], training=False)
    grad = np.abs(tape.gradient(loss, layer.kernel).numpy())
    new = drop_and_grow(mask, np.abs(layer.kernel.numpy()) * mask, grad, 0.5)
    grown = new & ~mask
    assert grown.sum() > 0
    assert grad[grown].min() >= np.sort(grad[~new & ~mask])[-1]


def test_gmp_follows_the_cubic_schedule_and_ends_exactly_at_the_target(digits):
    x, y, _, _ = digits
    settings = Settings("gmp", 0.8, update_every=10, epochs=3, batch_size=64, allocation="uniform")
    result = sparse_train(_mlp(), x, y, settings)
    n = len(result.updates)
    assert n == result.last_update_step // 10
    for k, u in enumerate(result.updates, start=1):
        assert u["sparsity"] == pytest.approx(cubic_sparsity(0.8, k / n), abs=2e-3)
    total = sum(r.weights for r in result.layers)
    exact = 1 - np.floor(0.2 * total) / total           # the target in whole weights
    assert result.updates[-1]["sparsity"] == pytest.approx(exact, abs=1e-6)
    assert sum(r.zeros for r in result.layers) >= total - np.floor(0.2 * total)


def test_gmp_at_98_percent_empties_no_layer(digits):
    x, y, _, _ = digits
    settings = Settings("gmp", 0.98, update_every=10, epochs=2, batch_size=64)
    result = sparse_train(_mlp((256, 256)), x, y, settings)
    assert all(r.weights - r.zeros > 0 for r in result.layers)
    out_layer = result.layers[-1]
    assert out_layer.sparsity < 0.9          # ERK keeps the small classifier denser


# ----------------------------------------------------------------------------- sparse-aware initialisation


def _start(model, x, y, sparsity, init="random"):
    """The network sparse_train starts from: static masks and a zero learning rate run the real
    loop (mask set-up, initialisation, one epoch of Adam steps) without moving a weight."""
    settings = Settings("static", sparsity, epochs=1, batch_size=256, learning_rate=0.0, init=init, seed=3)
    return sparse_train(model, x, y, settings).model


def test_from_scratch_each_kept_weight_has_the_variance_glorot_targets_for_its_sparse_fans(digits):
    from edgesparse.train.sparse_init import sparse_fans

    x, y, _, _ = digits
    net = _start(_mlp((256, 256, 256)), x, y, 0.95)
    for layer in net.layers[1:]:
        kernel = layer.kernel.numpy()
        mask = kernel != 0
        fan_in, fan_out = sparse_fans(mask)
        target = 1.0 / np.maximum(1.0, (fan_in + fan_out) / 2.0)      # Glorot: 2 / (fan_in + fan_out)
        ratio = (kernel ** 2 / target)[mask]
        # a dense draw merely masked gives each weight 1/density too little variance (ratio ~0.03-0.4)
        assert ratio.mean() == pytest.approx(1.0, abs=0.1), (layer.name, mask.mean())


def test_the_fan_in_rule_is_per_output_unit_counting_the_mask():
    from edgesparse.train.sparse_init import rescale_to_sparse_fans

    keras.utils.set_random_seed(0)
    layer = L.Dense(400, kernel_initializer="he_normal")
    layer.build((None, 256))
    mask = np.zeros((256, 400), dtype=bool)
    rng = np.random.default_rng(0)
    for unit in range(400):                      # half the units keep 4 inputs, half keep 64
        mask[rng.choice(256, 4 if unit < 200 else 64, replace=False), unit] = True
    rescale_to_sparse_fans(layer, mask)
    kernel = layer.kernel.numpy()
    assert np.all(kernel[~mask] == 0)
    for units, fan_in in ((slice(0, 200), 4), (slice(200, 400), 64)):
        variance = (kernel[:, units] ** 2).sum(axis=0).mean() / fan_in
        assert variance == pytest.approx(2.0 / fan_in, rel=0.15)        # He: 2 / fan_in


def test_a_deep_95_percent_sparse_mlp_keeps_its_activation_scale_layer_to_layer(digits):
    x, y, _, _ = digits

    def pre_activation_rms(model):
        h, rms = x, []
        for layer in model.layers[1:]:
            z = h @ layer.kernel.numpy() + layer.bias.numpy()
            rms.append(float(np.sqrt(np.mean(z ** 2))))
            h = np.maximum(z, 0.0)
        return np.array(rms)

    widths = (256, 256, 256, 256)
    dense = pre_activation_rms(_mlp(widths, seed=3))
    sparse = pre_activation_rms(_start(_mlp(widths, seed=3), x, y, 0.95))
    # every layer within a factor 1.5 of the dense init's scale; masking alone shrinks the logits
    # ~sqrt of the product of the densities (here ~1e-3)
    np.testing.assert_array_less(np.abs(np.log(sparse / dense)), np.log(1.5))


def test_a_magnitude_start_keeps_the_given_weights(digits):
    x, y, _, _ = digits
    model = _mlp()
    given = _kernels(model)
    start = _kernels(_start(model, x, y, 0.9, init="magnitude"))
    for name, kernel in start.items():
        kept = kernel != 0
        np.testing.assert_array_equal(kernel[kept], given[name][kept])   # trained weights are not rescaled


# ----------------------------------------------------------------------------- into the artifact


from litert_run import run_tflite as _litert_outputs  # noqa: E402


def test_the_masks_are_stripped_and_the_zeros_are_in_the_tflite(digits, tmp_path):
    from edgesparse.convert.tflite import to_tflite
    from edgesparse.runtime.weights import tflite_sparsity

    x, y, x_val, _ = digits
    result = sparse_train(_mlp(), x, y, Settings("rigl", 0.9, update_every=20, epochs=2, batch_size=64))
    assert len(result.model.weights) == 6
    path = tmp_path / "m.tflite"
    path.write_bytes(to_tflite(result.model, "fp32"))
    found = tflite_sparsity(path)
    keras_zeros = sum(r.zeros for r in result.layers)
    assert found["zeros"] >= keras_zeros and found["fraction"] >= 0.89
    np.testing.assert_allclose(_litert_outputs(path.read_bytes(), x_val[:16]),
                               result.model(x_val[:16]).numpy(), atol=1e-4)


@pytest.mark.parametrize("pattern,precision", [("block1x4", "fp32"), ("block1x16", "int8")])
def test_block_patterns_are_stored_sparse_without_densify_and_match_keras(digits, pattern, precision):
    from edgesparse.checks.sparse import block_sparse_check
    from edgesparse.convert.tflite import to_tflite
    from edgesparse.runtime.tflite_file import read_tflite

    x, y, x_val, _ = digits
    block = int(pattern.split("x")[1])
    result = sparse_train(_mlp(), x, y, Settings("rigl", 0.9, block=block, update_every=20, epochs=2,
                                                 batch_size=64))
    for layer in result.model.layers[1:]:
        k = layer.kernel.numpy()
        blocks = k.reshape(k.shape[0] // block, block, k.shape[1])
        # blocks run along the Keras kernel's input axis: each block is all zero or (almost) all kept
        alive = (blocks != 0).any(axis=1)
        assert (blocks != 0).sum() >= 0.9 * alive.sum() * block
        assert 1 - alive.mean() >= 0.85 if layer is not result.model.layers[-1] else True
    data = to_tflite(result.model, precision, sparse=True, x_calib=x)
    check = block_sparse_check(read_tflite(data), block, expected=2)
    assert check["passed"], check
    # [out, in]: blocks on the inner axis; a weight the converter keeps dense runs dense, never densified
    assert all(w["block"] == {1: block} or w["storage"] == "dense" for w in check["weights"])
    atol = 1e-4 if precision == "fp32" else 0.35 * float(np.abs(result.model(x_val[:16]).numpy()).max()) / 4
    np.testing.assert_allclose(_litert_outputs(data, x_val[:16]), result.model(x_val[:16]).numpy(), atol=atol)
    # the dense export of the same model has no sparse weights: the check sees the difference
    assert not block_sparse_check(read_tflite(to_tflite(result.model, precision, x_calib=x)), block)["passed"]


def test_random_sparsity_gets_densify_and_fails_the_block_check(digits):
    from edgesparse.checks.sparse import block_sparse_check
    from edgesparse.convert.tflite import to_tflite
    from edgesparse.runtime.tflite_file import read_tflite

    x, y, _, _ = digits
    result = sparse_train(_mlp(), x, y, Settings("static", 0.8, epochs=1, batch_size=64, init="random"))
    check = block_sparse_check(read_tflite(to_tflite(result.model, "fp32", sparse=True)), 4)
    assert not check["passed"] and check["densify_ops"]


# ----------------------------------------------------------------------------- the pass and bad input


def test_the_pass_runs_rigl_with_a_block_pattern_and_asks_export_for_sparse_storage(digits, tmp_path):
    from edgesparse.data import Dataset
    from edgesparse.passes.sparsify.pass_ import SparsifyPass
    from edgesparse.pipeline import RunContext, SilentProgress
    from edgesparse.state import ModelState

    x, y, x_val, y_val = digits
    data = Dataset(x, y, x_val, y_val, x_calib=x, labelled=True, real=True, source="digits",
                   splits={"calibration": "train"})
    model = _mlp()
    state = ModelState(model=model, name="m", reference=model, source={})
    ctx = RunContext(target=None, data=data, workdir=tmp_path, seed=0, progress=SilentProgress())
    state = SparsifyPass(method="rigl", pattern="block1x4", sparsity=0.9, epochs=3, update_every=20,
                         sizes=False).run(state, ctx)
    facts = state.facts["sparsify"]
    assert state.sparse_storage and facts["artifact_check"]["passed"]
    assert facts["sparsity"] >= 0.9 - 1e-3 and facts["mask_updates"]
    assert facts["latency"].startswith("size only")


def test_bad_inputs_are_refused_before_training(digits):
    for bad in ({"method": "rigl", "sparsity": 1.0}, {"method": "set", "sparsity": 0.0},
                {"method": "gmp", "sparsity": -0.1}, {"pattern": "block1x4"},          # refit cannot do blocks
                {"pattern": "block1x8", "method": "rigl"}, {"method": "rigl", "pattern": "2:4"},
                {"method": "rigl", "update_every": 0}, {"method": "rigl", "drop_fraction": 1.5}):
        with pytest.raises(ValidationError):
            SparsifyConfig(**bad)
    x, y, _, _ = digits
    with pytest.raises(UserError, match="not a multiple of 4"):
        sparse_train(_mlp((30,)), x, y, Settings("rigl", 0.9, block=4, update_every=10, epochs=1))
    with pytest.raises(UserError, match="update_every=500 steps"):
        sparse_train(_mlp(), x, y, Settings("set", 0.9, update_every=500, epochs=1))


def test_cli_reaches_rigl_and_refuses_a_bad_sparsity(digits, tmp_path, monkeypatch, capsys):
    from edgesparse import cli

    x, y, x_val, y_val = digits
    model_path, data_path, out = tmp_path / "m.keras", tmp_path / "d.npz", tmp_path / "s.keras"
    _mlp().save(model_path)
    np.savez(data_path, x_train=x, y_train=y, x_val=x_val, y_val=y_val)

    def run(*args):
        monkeypatch.setattr(sys, "argv", ["edgesparse", "sparsify", str(model_path), "--data", str(data_path),
                                          "--out", str(out), *args])
        try:
            cli.main()
        except SystemExit as exc:
            return exc.code
        return 0

    assert run("--method", "rigl", "--sparsity", "1.0") == 2
    err = capsys.readouterr().err
    assert "--sparsity" in err and "Traceback" not in err and not out.exists()
    assert run("--method", "rigl", "--update-every", "5000", "--no-sizes") == 2
    assert "update_every=5000" in capsys.readouterr().err and not out.exists()
    assert run("--method", "rigl", "--sparsity", "0.9", "--epochs", "2", "--update-every", "20",
               "--no-sizes") in (0, None), capsys.readouterr().err
    saved = keras.models.load_model(out, compile=False)
    zeros = sum(int((l.kernel.numpy() == 0).sum()) for l in saved.layers[1:])
    assert zeros / sum(l.kernel.numpy().size for l in saved.layers[1:]) >= 0.9 - 1e-3
