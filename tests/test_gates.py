"""L0 hard-concrete gates (issue 10): graph/gates.py (the layer the channel graph sees through),
train/gates.py (where gates go, the expected-MAC penalty, folding) and `regularize: {method: gates}`
on the real training loop: the gates end within +-5% of the requested MACs and no gate is exported."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgesparse._tf import keras
from edgesparse.data import Dataset, synthetic
from edgesparse.errors import UserError
from edgesparse.frontends.keras import load_model
from edgesparse.graph.channels import ChannelGraph
from edgesparse.graph.gates import CLOSED, HardConcreteGate
from edgesparse.graph.layers import Role, rule_of, training_only_layers
from edgesparse.graph.stats import count_macs
from edgesparse.passes.export import Export
from edgesparse.passes.regularize import RegularizeConfig, RegularizePass
from edgesparse.pipeline import RunContext
from edgesparse.state import ModelState
from edgesparse.targets import load_target
from edgesparse.train.gates import Gates
from edgesparse.train.losses import CrossEntropy
from edgesparse.train.trainer import train

import prune_models as zoo

SAMPLES = Path(__file__).resolve().parents[1] / "sample_models"


def _digits() -> Dataset:
    d = np.load(SAMPLES / "digits.npz")
    return Dataset(d["x_train"], d["y_train"], d["x_val"], d["y_val"], x_calib=d["x_train"][:256],
                   labelled=True, real=True, source="digits")


def _cnn():
    return load_model(SAMPLES / "digits_cnn.keras")[0]


def _ctx(data, tmp_path=None):
    return RunContext(target=load_target("rpi4"), data=data, workdir=tmp_path)


def test_the_gate_is_a_training_only_channelwise_layer_the_graph_sees_through(tmp_path):
    model = _cnn()
    gates = Gates(model)
    assert rule_of(next(iter(gates.gates.values()))).role is Role.CHANNELWISE
    # a gate after the BN that alone reads each conv, and after the Dense (its relu commutes)
    assert gates.sites == {"conv1": "bn1", "conv2": "bn2", "fc1": "fc1"}
    before = [sorted(g.producers) for g in ChannelGraph(model).groups]
    assert [sorted(g.producers) for g in gates.graph.groups] == before
    assert gates.macs(np.ones(gates.n)) == pytest.approx(count_macs(model))
    half = np.ones(gates.n)
    a, b = gates.spans["conv2"]
    half[a:a + (b - a) // 2] = 0.0
    cut = count_macs(model) - gates.macs(half)
    conv2, fc1 = model.get_layer("conv2"), model.get_layer("fc1")
    # half of conv2's outputs: half of conv2's MACs and half of fc1's inputs
    assert cut == pytest.approx((count_macs(keras.Model(model.input, conv2.output))
                                 - count_macs(keras.Model(model.input, conv1_out(model)))) / 2
                                + fc1.input_shape[-1] * fc1.units / 2)
    assert sorted(training_only_layers(gates.model)) == ["conv1_l0_gate", "conv2_l0_gate", "fc1_l0_gate"]
    with pytest.raises(UserError, match="training-only layers"):
        Export().run(ModelState(model=gates.model, name="m"), _ctx(synthetic((8, 8, 1), n=16), tmp_path))


def conv1_out(model):
    return model.get_layer("conv1").output


@pytest.mark.parametrize("build", [lambda: _cnn(), zoo.mobile, zoo.conv1d])
def test_folding_is_exact_and_the_closed_channels_are_cut(build):
    model = build()
    gates = Gates(model)
    rng = np.random.default_rng(0)
    for g in gates.gates.values():
        n = int(g.log_alpha.shape[0])
        g.log_alpha.assign(rng.uniform(-4, 3, n).astype(np.float32))
        g.log_alpha[0].assign(3.0)                  # at least one open channel per layer
    closed = {p: int((g.log_alpha.numpy() <= CLOSED).sum()) for p, g in gates.gates.items()}
    assert sum(closed.values()) > 0
    x = zoo.sample_inputs(model, 32)
    want = gates.model.predict(x, verbose=0)
    expected_macs = gates.macs(gates.is_open().numpy())
    cut = gates.finish()
    assert not training_only_layers(cut)
    np.testing.assert_allclose(cut.predict(x, verbose=0), want, rtol=1e-4, atol=1e-4)
    for p, n in closed.items():
        assert cut.get_layer(p).output_shape[-1] == model.get_layer(p).output_shape[-1] - n
    assert count_macs(cut) == pytest.approx(expected_macs)


def test_gates_reach_the_mac_target_on_the_real_training_loop():
    """Done-when: the gates end within +-5% of the requested MACs (digits CNN, macs 0.3)."""
    data = _digits()
    model = _cnn()
    macs0 = count_macs(model)
    state = RegularizePass(method="gates", macs=0.3, epochs=8).run(ModelState(model=model, name="m"), _ctx(data))
    f = state.facts["regularize"]
    assert abs(f["macs_gates"] - 0.3) <= 0.05 * 0.3, f       # the gates themselves, before any finish
    assert abs(count_macs(state.model) / macs0 - 0.3) <= 0.05 * 0.3 and f["reached"]
    assert not training_only_layers(state.model)
    assert f["end"] >= f["start"] - 3.0, (f["start"], f["end"])
    traj = f["trajectory"]
    assert len(traj) == 8 and traj[0]["macs"] > traj[-1]["macs"]
    assert max(r["strength"] for r in traj) > traj[0]["strength"] * 0.99
    # the gates chose uneven widths: where cutting buys MACs
    kept = {p: w[1] / w[0] for p, w in f["widths"].items()}
    assert max(kept.values()) - min(kept.values()) > 0.05, kept


def test_a_target_the_gates_cannot_reach_without_emptying_a_layer_is_refused_before_training():
    data = _digits()
    with pytest.raises(UserError, match="cannot reach macs 0.001 without emptying a layer.*ask for macs >="):
        RegularizePass(method="gates", macs=0.001, epochs=1).run(ModelState(model=_cnn(), name="m"), _ctx(data))


def test_gates_config_errors():
    with pytest.raises(ValueError, match="MAC target"):
        RegularizeConfig(method="gates", width=0.5)
    with pytest.raises(ValueError, match="gates must be the last stage"):
        RegularizeConfig(stages=[{"until": 0.5, "method": "gates", "macs": 0.3},
                                 {"until": 1.0, "method": "group_lasso", "macs": 0.3}])
    RegularizeConfig(stages=[{"until": 0.3, "method": "l1", "strength": 1e-4},
                             {"until": 1.0, "method": "gates", "macs": 0.3}])


def test_own_learning_rates_step_their_variables_with_their_own_adam():
    keras.utils.set_random_seed(0)
    i = keras.Input((4,))
    d = keras.layers.Dense(3, name="d")
    gate = HardConcreteGate(name="g")
    m = keras.Model(i, keras.layers.Dense(2)(gate(d(i))))
    x = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    y = np.random.default_rng(1).integers(0, 2, 64)
    k0, a0 = d.kernel.numpy().copy(), gate.log_alpha.numpy().copy()
    train(m, (x, y), loss=CrossEntropy(), epochs=1, lr=1e-3, own_rates=[([gate.log_alpha], 0.0)])
    assert np.array_equal(gate.log_alpha.numpy(), a0) and not np.array_equal(d.kernel.numpy(), k0)
    train(m, (x, y), loss=CrossEntropy(), epochs=1, lr=0.0, own_rates=[([gate.log_alpha], 0.1)])
    assert not np.array_equal(gate.log_alpha.numpy(), a0)


def test_the_from_scratch_control_trains_the_final_architecture_for_the_same_epochs():
    from edgesparse.graph.stats import model_summary

    data = _digits()
    state = RegularizePass(method="gates", macs=0.5, epochs=3, control=True).run(
        ModelState(model=_cnn(), name="m"), _ctx(data))
    f = state.facts["regularize"]
    c = f["control"]
    assert f["epochs_run"] == 3 and c["epochs"] == 3           # the build's control counts these too
    assert c["architecture"] == model_summary(state.model)
    assert 10.0 < c["accuracy_from_scratch"] <= 100.0 and c["accuracy_regularized"] == pytest.approx(f["end"], abs=1e-3)
