"""The lowrank pass on the real runtimes: full-rank factorisations reproduce the layer, a MAC
target is met, every factorised model exports and verifies for the three targets, prune can
prune the new bottlenecks, and bad input is refused before any work."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgesparse._tf import keras
from edgesparse.cli import run as cli
from edgesparse.convert.onnx import to_onnx
from edgesparse.convert.tflite import to_tflite
from edgesparse.data import synthetic
from edgesparse.errors import UserError
from edgesparse.graph.channels import ChannelGraph
from edgesparse.graph.stats import count_macs
from edgesparse.passes.lowrank import forms as F
from edgesparse.passes.lowrank import select as S
from edgesparse.passes.lowrank.pass_ import LowRankPass
from edgesparse.passes.lowrank.procedure import Settings, candidates
from edgesparse.passes.lowrank.spectra import round_rank, vbmf_rank
from edgesparse.passes.prune.pass_ import PrunePass
from edgesparse.pipeline import RunContext
from edgesparse.state import ModelState

import prune_models as zoo
from litert_run import run_tflite

ROOT = Path(__file__).resolve().parent.parent
CNN = ROOT / "sample_models" / "digits_cnn.keras"
DATA = ROOT / "sample_models" / "digits.npz"
L = keras.layers


def small_net(seed=0):
    """k x k convs (strided, dilated, 'valid'), a 1x1 conv, a Dense on a sequence and a head."""
    keras.utils.set_random_seed(seed)
    i = L.Input((10, 10, 3))
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="c1")(i)
    x = L.Conv2D(12, (3, 2), strides=2, padding="same", name="c2")(x)
    x = L.Conv2D(10, 3, dilation_rate=2, padding="valid", activation="relu", name="c3")(x)
    x = L.Conv2D(16, 1, name="p")(x)
    x = L.Reshape((-1, 16))(x)
    x = L.Dense(12, activation="relu", name="seq")(x)
    x = L.Flatten()(x)
    o = L.Dense(5, activation="softmax", name="head")(x)
    return zoo._randomise_bn(keras.Model(i, o, name="small"), seed)


def first_dense(model) -> str:
    return next(l.name for l in model.layers if type(l).__name__ == "Dense")


def run(model, x, tmp_path, **config):
    state = ModelState(model=model, name=model.name)
    ctx = RunContext(target=None, data=synthetic(tuple(model.inputs[0].shape[1:]), n=96), workdir=tmp_path)
    ctx.data.x_calib = x
    return LowRankPass(**config).run(state, ctx)


def litert(model, x: np.ndarray) -> np.ndarray:
    return run_tflite(to_tflite(model, "fp32"), x)


def onnxruntime(model, x: np.ndarray, tmp_path) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(to_onnx(model, tmp_path / "m.onnx")), providers=["CPUExecutionProvider"])
    return np.stack([sess.run(None, {"input": sample[None]})[0][0] for sample in x])


@pytest.mark.parametrize("method", ["tucker2", "spatial"])
def test_full_rank_reproduces_the_model_in_keras_litert_and_onnxruntime(method, tmp_path):
    model = small_net()
    x = zoo.sample_inputs(model, 96, seed=1)
    ranks = {l.name: list(F.limits(l, F.forms_for(l, method)[0])) for l in model.layers if F.kind_of(l)}
    state = run(model, x, tmp_path, method=method, ranks=ranks)
    facts = state.facts["lowrank"]
    assert {r["form"] for r in facts["layers"]} == {method, "svd"}          # Dense and 1x1 convs: SVD
    assert len(facts["layers"]) == 6 and all(r["kept"] for r in facts["layers"])
    assert not any(l.name in ranks for l in state.model.layers)            # every layer was replaced
    want = model(x[:16]).numpy()
    np.testing.assert_allclose(state.model(x[:16]).numpy(), want, atol=2e-5)
    np.testing.assert_allclose(litert(state.model, x[:16]), want, atol=2e-5)
    np.testing.assert_allclose(onnxruntime(state.model, x[:16], tmp_path), want, atol=2e-5)


def test_mac_target_is_met_and_counted_as_planned(tmp_path):
    model = zoo.conv_bn()
    x = zoo.sample_inputs(model, 128, seed=2)
    state = run(model, x, tmp_path, macs=0.5, method="auto")
    f = state.facts["lowrank"]
    assert count_macs(state.model) <= 0.5 * count_macs(model)
    assert f["macs_after"] == count_macs(state.model) and f["macs_before"] == count_macs(model)
    assert all(r["macs_after"] < r["macs_before"] for r in f["layers"])    # only where it saves MACs
    assert 0 < f["energy_threshold"] < 1
    assert all(r["error_after"] <= r["error_before"] for r in f["layers"])


def test_mac_target_spends_what_the_rounding_leaves(tmp_path):
    """Rounding ranks to 8 makes the common threshold jump below the target; the slack is then
    spent: no factorised layer fits back whole, and no mode can go one SIMD step up, without
    passing the target."""
    model = zoo.conv_bn()
    x = zoo.sample_inputs(model, 128, seed=2)
    f = run(model, x, tmp_path, macs=0.5, method="auto", round_to=8).facts["lowrank"]
    target = 0.5 * f["macs_before"]
    assert f["macs_after"] <= target
    assert f["layers"]
    for r in f["layers"]:
        assert f["macs_after"] - r["macs_after"] + r["macs_before"] > target, r
        layer = model.get_layer(r["layer"])
        for mode, (rank, limit) in enumerate(zip(r["ranks"], r["limits"])):
            assert rank % 8 == 0 or rank == limit
            up = round_rank(rank + 1, 8, limit)
            if up == rank:
                continue
            raised = F.macs(layer, r["form"], tuple(r["ranks"][:mode]) + (up,) + tuple(r["ranks"][mode + 1:]))
            assert raised >= r["macs_before"] or f["macs_after"] - r["macs_after"] + raised > target, (r, mode)


def test_measure_keeps_only_faster_layers_and_spreads_the_target_over_them(tmp_path):
    """measure: true times each factorisation alone in LiteRT. Whatever the timings on this
    host, a kept layer measured faster, a layer left whole measured not faster, and the MAC
    target holds unless the layers that run faster cannot reach it (then a note says so)."""
    model = zoo.conv_bn()
    x = zoo.sample_inputs(model, 128, seed=7)
    state = run(model, x, tmp_path, macs=0.6, method="auto", round_to=4, measure=True)
    f = state.facts["lowrank"]
    assert f["layers"] and all("speedup_host" in r for r in f["layers"])
    for r in f["layers"]:
        assert r["kept"] == (r["speedup_host"] > 1.0), r
    kept = {r["layer"] for r in f["layers"] if r["kept"]}
    assert {l.name for l in state.model.layers}.isdisjoint(kept)               # kept ones were replaced
    assert all(model.get_layer(r["layer"]).name in {l.name for l in state.model.layers}
               for r in f["layers"] if not r["kept"])                           # dropped ones stayed
    missed = [w for w in state.warnings if "MAC target 0.6 is missed" in w]
    assert (f["macs_after"] <= 0.6 * f["macs_before"]) != bool(missed), (f["macs_kept"], missed)
    assert f["macs_after"] == count_macs(state.model)
    # missed only when the layers that run faster, all at rank 4, cannot reach the target
    dropped = {r["layer"] for r in f["layers"] if not r["kept"]}
    faster = [c for c in candidates(model, Settings(method="auto"))[0] if c.name not in dropped]
    least = S.least_macs(faster, [], f["macs_before"], 4)
    assert bool(missed) == (least > 0.6 * f["macs_before"]), (dropped, least)


def _conv2_like():
    """digits_cnn's conv2: 3x3, 32 -> 64 channels on 4x4."""
    i = L.Input((4, 4, 32))
    model = keras.Model(i, L.Conv2D(64, 3, padding="same", name="conv")(i))
    layer = model.get_layer("conv")
    spectra = {"tucker2": [np.linspace(2, 1, 32), np.linspace(2, 1, 64)]}
    return S.Candidate("conv", layer, ["tucker2"], count_macs(model), spectra)


def test_width_options_are_simd_widths_within_the_budget():
    """The settings measure: true times: the chosen ranks first, then their neighbours at or
    below (one rounding step) and the multiples of 8 and 16 near them, within the MAC budget."""
    c = _conv2_like()
    chosen = S._choice(c, "tucker2", (16, 40))
    assert chosen.macs_after == 141_312
    options = S.width_options(c, chosen, 4, budget=142_000)
    assert options[0] == chosen
    assert {o.ranks for o in options} == {(16, 40), (16, 36), (16, 32), (12, 48), (12, 40), (12, 36), (12, 32)}
    assert all(o.macs_after <= 142_000 and o.form == "tucker2" for o in options)
    # without a MAC target (energy, vbmf) only ranks at or above the chosen: the energy asked is kept
    up = S.width_options(c, chosen, 4, budget=None)
    assert up[0] == chosen and len(up) > 1
    assert all(a >= b for o in up for a, b in zip(o.ranks, chosen.ranks))
    assert all(o.macs_after < c.macs for o in up)
    # rounding to 16: no rank that is not a multiple of 16 (or the limit)
    wide = S.width_options(c, S._choice(c, "tucker2", (16, 48)), 16, budget=10**9)
    assert all(r % 16 == 0 for o in wide for r in o.ranks) and len(wide) <= S.MAX_WIDTHS


def test_measure_times_rank_widths_and_keeps_the_fastest(tmp_path):
    """measure: true times a few rank settings of each chosen layer in one interleaved LiteRT
    run and keeps the fastest of them: the chosen setting is the argmax of the measured speed-ups,
    so for the layer measured first it is at least as fast as the setting chosen without
    measuring (which is among the timed ones, first); the MAC target holds."""
    model = zoo.conv_bn()
    x = zoo.sample_inputs(model, 128, seed=7)
    plain = run(model, x, tmp_path, macs=0.5, method="auto", round_to=4).facts["lowrank"]
    state = run(model, x, tmp_path, macs=0.5, method="auto", round_to=4, measure=True)
    f = state.facts["lowrank"]
    assert f["macs_after"] <= 0.5 * f["macs_before"] and f["macs_after"] == count_macs(state.model)
    assert f["layers"]
    for r in f["layers"]:
        timed = r["timed"]
        assert 1 <= len(timed) <= S.MAX_WIDTHS
        fastest = max(timed, key=lambda t: t["speedup_host"])
        assert r["speedup_host"] == fastest["speedup_host"]
        if r["kept"]:
            assert r["ranks"] == fastest["ranks"] and r["macs_after"] == fastest["macs"], r
        layer = model.get_layer(r["layer"])
        for t in timed:
            assert t["macs"] == F.macs(layer, r["form"], tuple(t["ranks"])) < r["macs_before"]
            assert all(v % 4 == 0 or v == lim for v, lim in zip(t["ranks"], r["limits"])), t
        assert r["layer"] in f["measured_on"]
    first = max(f["layers"], key=lambda r: (r["macs_before"], r["layer"]))
    unmeasured = next(r for r in plain["layers"] if r["layer"] == first["layer"])
    assert first["timed"][0]["ranks"] == unmeasured["ranks"]             # the unmeasured choice, timed
    assert len(first["timed"]) > 1                                       # and other widths with it
    assert first["speedup_host"] >= first["timed"][0]["speedup_host"]
    budget = unmeasured["macs_after"] + 0.5 * plain["macs_before"] - plain["macs_after"]
    assert all(t["macs"] <= budget for t in first["timed"])
    assert "not the target device" in f["measured_on"]


def test_ranks_round_to_the_simd_width(tmp_path):
    model = zoo.mlp()
    x = zoo.sample_inputs(model, 128, seed=3)
    state = run(model, x, tmp_path, energy=0.8, round_to=8)
    ranks = [r["ranks"][0] for r in state.facts["lowrank"]["layers"]]
    assert ranks and all(r % 8 == 0 or r == lim[0] for r, lim in
                         zip(ranks, (r["limits"] for r in state.facts["lowrank"]["layers"])))


def test_whitening_keeps_the_directions_the_data_uses(tmp_path):
    """Inputs live in an 8-dimensional subspace of 64: at rank 8 the whitened SVD (before any
    refit) reproduces the layer on the data, the plain SVD of the weights does not."""
    keras.utils.set_random_seed(4)
    i = L.Input((64,))
    model = keras.Model(i, L.Dense(32, name="d")(i))
    basis = np.random.default_rng(4).normal(size=(8, 64))
    x = (np.random.default_rng(5).normal(size=(256, 8)) @ basis).astype("float32")
    errors = {}
    for whiten in (True, False):
        from edgesparse.passes.lowrank.procedure import factorise_model
        r = factorise_model(model, Settings(ranks={"d": (8,)}, refit=False, whiten=whiten), x)
        errors[whiten] = r.facts["layers"][0]["error_before"]
    assert errors[True] < 1e-4 < 0.1 < errors[False]


def test_vbmf_finds_a_planted_rank():
    rng = np.random.default_rng(0)
    y = rng.normal(size=(60, 6)) @ rng.normal(size=(6, 90)) * 3 + 0.2 * rng.normal(size=(60, 90))
    assert vbmf_rank(np.linalg.svd(y, compute_uv=False), y.shape) == 6


def test_prune_prunes_the_new_bottleneck(tmp_path):
    model = zoo.mlp()
    x = zoo.sample_inputs(model, 128, seed=6)
    state = run(model, x, tmp_path, ranks={first_dense(model): 24}, round_to=1)
    fact = state.facts["lowrank"]["layers"][0]
    first = fact["new_layers"][0]
    graph = ChannelGraph(state.model)
    group = next(g for g in graph.groups if first in g.producers)
    assert group.prunable and group.size == 24
    ctx = RunContext(target=None, data=synthetic((64,), n=64), workdir=tmp_path)
    pruned = PrunePass(ratio=0.5, criterion="l1").run(state, ctx).model
    assert pruned.get_layer(first).units < 24
    assert count_macs(pruned) < count_macs(model)


@pytest.mark.parametrize("config,message", [
    ({"ranks": {"FIRST": 100}}, "above its limit 48"),
    ({"ranks": {"nope": 4}}, "no layer of that name"),
    ({"macs": 0.01}, "out of reach"),
    ({"macs": 0.5, "energy": 0.9}, "one rank selection"),
    ({}, "say how to pick ranks"),
])
def test_bad_input_is_refused_before_any_work(config, message, tmp_path):
    model = zoo.mlp()
    if "ranks" in config and "FIRST" in config["ranks"]:
        config = {"ranks": {first_dense(model): config["ranks"]["FIRST"]}}
    with pytest.raises(UserError, match=message):
        run(model, zoo.sample_inputs(model, 16), tmp_path, **config)


def test_a_layer_that_cannot_be_factorised_named_in_ranks(tmp_path):
    model = zoo.conv1d()
    name = next(l.name for l in model.layers if type(l).__name__ == "Conv1D")
    with pytest.raises(UserError, match=f"{name}.*Conv1D cannot be factorised"):
        run(model, zoo.sample_inputs(model, 16), tmp_path, ranks={name: 4})
    with pytest.raises(UserError, match="two ranks are for a Tucker-2"):
        mlp = zoo.mlp()
        run(mlp, zoo.sample_inputs(mlp, 16), tmp_path, ranks={first_dense(mlp): [4, 4]})


RECIPES = {
    "rpi4": "  - pass: quantize\n    precisions: [int8, fp32]\n  - pass: export\n  - pass: verify\n",
    "android-nnapi": "  - pass: quantize\n    precisions: [int8, fp16]\n  - pass: export\n  - pass: verify\n",
    "coral": "  - pass: quantize\n    precisions: [int8]\n    io: int8\n  - pass: export\n  - pass: verify\n",
}


@pytest.mark.slow
@pytest.mark.parametrize("target", sorted(RECIPES))
@pytest.mark.parametrize("method", ["tucker2", "spatial"])
def test_factorised_model_exports_and_verifies(target, method, tmp_path):
    import edgesparse

    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"passes:\n  - pass: lowrank\n    macs: 0.6\n    method: {method}\n"
                      f"    finetune_epochs: 1\n" + RECIPES[target])
    result = edgesparse.build(CNN, target=target, data=DATA, recipe=recipe, out=tmp_path / "out")
    r = result.report
    lowrank = r["facts"]["lowrank"]
    assert lowrank["macs_after"] <= 0.6 * lowrank["macs_before"]
    assert any(row["form"] == method for row in lowrank["layers"])
    assert r["artifacts"]
    for a in r["artifacts"]:
        failed = [k for k, v in a["checks"].items() if isinstance(v, dict) and v.get("passed") is False]
        assert not failed, (a["path"], failed)
        assert a["accuracy"] is not None and a["top1_agreement"] > 90, a
    text = (tmp_path / "out" / "report.md").read_text()
    assert "## Low-rank factorisation" in text and lowrank["layers"][0]["layer"] in text
    assert "Low-rank factorisation" in (tmp_path / "out" / "report.html").read_text()


def test_cli_writes_the_factorised_model(tmp_path, capsys):
    out = tmp_path / "m.keras"
    assert cli(["lowrank", str(CNN), "--data", str(DATA), "--macs", "0.6", "--finetune-epochs", "0",
                "--out", str(out)]) == 0
    m = keras.models.load_model(out)
    assert count_macs(m) <= 0.6 * count_macs(keras.models.load_model(CNN))
    said = capsys.readouterr()
    assert "ranks per layer" in said.out + said.err


def test_cli_bad_input_writes_nothing(tmp_path, capsys):
    out = tmp_path / "m.keras"
    assert cli(["lowrank", str(CNN), "--data", str(DATA), "--macs", "0.001", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "out of reach" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    # A round_to that sets the smallest rank is named as the cause (the message said only
    # "at rank 1000 still keeps 100.0%").
    assert cli(["lowrank", str(CNN), "--data", str(DATA), "--macs", "0.5", "--round-to", "1000",
                "--method", "svd", "--out", str(out)]) == 2
    assert "a smaller round_to than 1000" in capsys.readouterr().err


def test_lowrank_after_sparsify_is_refused_before_any_work():
    """The factors replaced the masked kernels: the report claimed 50% zeros in 2:4 while the
    shipped file had 1-18% and no pattern."""
    from edgesparse.build_api import pipeline_for
    from edgesparse.pipeline import DataInfo
    from edgesparse.recipe import parse_recipe
    from edgesparse.targets import load_target

    recipe = parse_recipe({"passes": [{"pass": "sparsify", "sparsity": 0.5, "pattern": "2:4"},
                                      {"pass": "lowrank", "energy": 0.9}, {"pass": "quantize"},
                                      {"pass": "export"}]}, "r.yaml")
    problems = pipeline_for(recipe).validate(load_target("rpi4"), DataInfo(real=True, labelled=True))
    assert any(p.startswith("passes[1] (lowrank): lowrank after sparsify") for p in problems), problems


def test_the_report_says_after_the_fine_tune_only_when_one_ran():
    from edgesparse.report.markdown import _lowrank

    facts = {"layers": [], "accuracy_before": 97.5, "accuracy_refit": 97.2, "accuracy_after": 97.2}
    text = "\n".join(_lowrank({"facts": {"lowrank": facts}}))
    assert "97.20 % after the refit (no fine-tune)." in text and "after the fine-tune" not in text
    facts.update(finetune_loss=[0.3], accuracy_after=97.4)
    assert "→ 97.40 % after the fine-tune." in "\n".join(_lowrank({"facts": {"lowrank": facts}}))
