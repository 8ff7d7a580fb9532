"""`pattern: auto-block` (issue 11): 1x4 blocks per Dense layer only where LiteRT ran the layer
faster in blocks on this host; every other layer unstructured and labelled "size only".
Real conversions and real LiteRT timings on tiny layers; no speed is asserted (benchmarks/ does)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from edgesparse._tf import keras
from edgesparse.passes.sparsify import latency
from edgesparse.passes.sparsify.dynamic import Settings, planned_densities, sparse_train
from edgesparse.passes.sparsify.pass_ import SparsifyConfig, SparsifyPass

sys.path.insert(0, str(Path(__file__).parent))
from digits_mlp import digits_split, mlp  # noqa: E402

L = keras.layers


@pytest.fixture(scope="module")
def digits():
    return digits_split()


_mlp = mlp


def _block_fill(kernel: np.ndarray, block: int = 4) -> float:
    """Nonzeros over the weights of the 1xb blocks (input axis) holding any: 1.0 for a block
    mask (a little less when a kept weight ends exactly at zero, e.g. one regrown into a dead
    unit), about 0.3 for a random 90% mask."""
    alive = kernel.reshape(kernel.shape[0] // block, block, kernel.shape[1]) != 0
    return float(alive.sum() / (block * alive.any(axis=1).sum()))


def _is_blocked(kernel: np.ndarray) -> bool:
    return _block_fill(kernel) >= 0.9


def test_config_takes_auto_block_with_mask_methods_only():
    cfg = SparsifyConfig(method="rigl", pattern=" Auto-Block ")
    assert cfg.auto_block() and cfg.block_size() is None and cfg.target_sparsity() == 0.9
    with pytest.raises(ValidationError, match="gmp, set or rigl"):
        SparsifyConfig(pattern="auto-block")                 # refit cannot train blocks


def test_each_dense_layer_is_timed_and_blocked_only_when_measured_faster():
    model = _mlp((256, 30), inputs=512)                     # 30 inputs into the classifier: no 1x4 blocks
    densities = planned_densities(model, 0.9, "erk")
    choice = latency.choose_blocks(model, densities)
    assert set(choice) == {l.name for l in model.layers[1:]}
    classifier = model.layers[-1].name
    assert choice[classifier]["block"] == 1 and "not measured" in choice[classifier]["latency"]
    for name, c in choice.items():
        if name == classifier:
            continue
        assert c["dense_us"] > 0 and c["block_us"] > 0 and c["stored_in_blocks"]
        assert c["density"] == pytest.approx(densities[name], abs=1e-6)
        faster = c["speedup"] >= latency.MIN_SPEEDUP
        assert c["block"] == (4 if faster else 1)
        assert c["latency"].startswith("measured" if faster else "size only")


def test_layer_blocks_train_blocks_on_the_chosen_layer_and_elements_elsewhere(digits):
    x, y, _, _ = digits
    model = _mlp()
    first, second = model.layers[1].name, model.layers[2].name
    result = sparse_train(model, x, y, Settings("rigl", 0.9, update_every=20, epochs=2, batch_size=64,
                                                layer_blocks=((first, 4),)))
    kernels = {l.name: l.kernel.numpy() for l in result.model.layers[1:]}
    assert _is_blocked(kernels[first])
    assert not _is_blocked(kernels[second])                 # unstructured at 90%: blocks would be chance
    zeros = sum(int((k == 0).sum()) for k in kernels.values())
    assert zeros / sum(k.size for k in kernels.values()) == pytest.approx(0.9, abs=0.01)


def _run_pass(digits, tmp_path):
    from edgesparse.data import Dataset
    from edgesparse.pipeline import RunContext, SilentProgress
    from edgesparse.state import ModelState

    x, y, x_val, y_val = digits
    data = Dataset(x, y, x_val, y_val, x_calib=x, labelled=True, real=True, source="digits",
                   splits={"calibration": "train"})
    model = _mlp()
    state = ModelState(model=model, name="m", reference=model, source={})
    ctx = RunContext(target=None, data=data, workdir=tmp_path, seed=0, progress=SilentProgress())
    return SparsifyPass(method="rigl", pattern="auto-block", sparsity=0.9, epochs=2, update_every=20,
                        sizes=False).run(state, ctx)


def test_the_pass_checks_the_chosen_layers_are_stored_in_blocks(digits, tmp_path, monkeypatch):
    monkeypatch.setattr(latency, "MIN_SPEEDUP", 0.0)        # choose every layer that can hold blocks
    state = _run_pass(digits, tmp_path)
    facts = state.facts["sparsify"]
    chosen = [n for n, c in facts["block_choice"].items() if c["block"] == 4]
    assert chosen == [l.name for l in state.model.layers[1:]]   # 64 and 32 inputs: all can
    assert facts["artifact_check"]["passed"], facts["artifact_check"]
    assert facts["artifact_check"]["chosen_layers"] == chosen and state.sparse_storage
    fills = {n: _block_fill(state.model.get_layer(n).kernel.numpy()) for n in chosen}
    assert all(f >= 0.9 for f in fills.values()), fills
    assert "measured faster" in facts["latency"] and "size only" not in facts["latency"]


def test_without_a_measured_gain_every_layer_is_size_only_and_export_stays_plain(digits, tmp_path, monkeypatch):
    monkeypatch.setattr(latency, "MIN_SPEEDUP", float("inf"))
    state = _run_pass(digits, tmp_path)
    facts = state.facts["sparsify"]
    assert all(c["block"] == 1 and c["latency"].startswith("size only") for c in facts["block_choice"].values())
    assert "artifact_check" not in facts and not state.sparse_storage
    assert facts["latency"].startswith("size only") and facts["sparsity"] >= 0.9 - 1e-3
    assert not any(_is_blocked(l.kernel.numpy()) for l in state.model.layers[1:])


def test_cli_reaches_auto_block_and_prints_the_choice(digits, tmp_path, monkeypatch, capsys):
    import sys

    from edgesparse import cli

    x, y, x_val, y_val = digits
    model_path, data_path, out = tmp_path / "m.keras", tmp_path / "d.npz", tmp_path / "s.keras"
    _mlp().save(model_path)
    np.savez(data_path, x_train=x, y_train=y, x_val=x_val, y_val=y_val)
    monkeypatch.setattr(sys, "argv", ["edgesparse", "sparsify", str(model_path), "--data", str(data_path),
                                      "--out", str(out), "--method", "rigl", "--pattern", "auto-block",
                                      "--sparsity", "0.9", "--epochs", "2", "--update-every", "20", "--no-sizes"])
    try:
        code = cli.main()
    except SystemExit as exc:
        code = exc.code
    printed = capsys.readouterr()
    assert code in (0, None), printed.err
    said = printed.out + printed.err                         # the console writes to stderr
    assert "auto-block" in said and ("size only" in said or "measured faster" in said)
    saved = keras.models.load_model(out, compile=False)
    zeros = sum(int((l.kernel.numpy() == 0).sum()) for l in saved.layers[1:])
    assert zeros / sum(l.kernel.numpy().size for l in saved.layers[1:]) >= 0.9 - 1e-3
