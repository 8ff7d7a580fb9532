"""The budget parametrization (benchmarks/budget_space.py): (MAC budget, per-group shares) -> keep fractions."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("optuna")

ROOT = Path(__file__).resolve().parents[1]
# A benchmark's module (benchmarks/tune_front.py --parametrization budget), not the product's: it
# did not beat random search (docs/benchmarks.md, stop 20), so tune does not use it; tested
# because the published figures rest on its MAC model.
sys.path.insert(0, str(ROOT / "benchmarks"))
CNN = ROOT / "sample_models" / "digits_cnn.keras"
DATA = ROOT / "sample_models" / "digits.npz"


@pytest.fixture(scope="module")
def cnn():
    from budget_space import BudgetMap, MacModel
    from edgesparse.frontends import load_model
    from edgesparse.search.space import build_space

    model, _ = load_model(CNN)
    space = build_space(model, "x", ["int8"], round_to=4, families=("keep",))
    macs = MacModel.of(model, space)
    return model, space, macs, BudgetMap(space, macs)


def test_full_widths_count_the_models_macs(cnn):
    from edgesparse.graph.stats import count_macs

    model, space, macs, _ = cnn
    assert len(space.groups) >= 2
    assert macs.point_macs(space, space.uniform(1.0)) == count_macs(model)


@pytest.mark.parametrize("scale", ["macs", "keep"])
@pytest.mark.parametrize("keep", [1.0, 0.9, 0.75, 0.55, 0.3, 0.12, 0.05])
def test_equal_shares_give_back_the_uniform_point(cnn, keep, scale):
    from budget_space import BudgetMap

    _, space, macs, _ = cnn
    bmap = BudgetMap(space, macs, scale)
    uniform = space.clip(space.uniform(keep))
    params = bmap.params_of(space.uniform(keep))
    assert set(params) == {"budget", *(f"share:{g}" for g in space.groups)}
    assert bmap.point(params) == uniform
    # any common share, not only 1
    assert bmap.point({**params, **{f"share:{g}": 0.37 for g in space.groups}}) == uniform


def test_the_budget_is_hit_and_monotone(cnn):
    _, space, macs, bmap = cnn
    rng = np.random.default_rng(0)
    for _ in range(20):
        shares = {g: float(rng.uniform(0.1, 1.0)) for g in space.groups}
        previous_keeps, previous_macs = None, -1.0
        for b in np.linspace(bmap.lowest, 1.0, 15):
            keeps = bmap.keeps(b, shares)
            got = macs.macs(keeps)
            assert got == pytest.approx(b * bmap.full, rel=1e-6)
            assert got > previous_macs
            if previous_keeps is not None:
                assert all(keeps[g] >= previous_keeps[g] - 1e-9 for g in space.groups)
            previous_keeps, previous_macs = keeps, got
    # a larger share keeps at least as much of its group at any budget
    keeps = bmap.keeps(0.4, {space.groups[0]: 1.0, **{g: 0.2 for g in space.groups[1:]}})
    assert all(keeps[space.groups[0]] >= keeps[g] for g in space.groups[1:])
    # the keep scale: budget u spends what every group at clip(u) spends
    from budget_space import BudgetMap

    by_keep = BudgetMap(space, macs, "keep")
    for u in (0.2, 0.5, 0.8):
        assert by_keep.fraction(u) * bmap.full == pytest.approx(macs.point_macs(space, space.clip(space.uniform(u))))
    assert by_keep.fraction(0.3) < by_keep.fraction(0.31)
    # the ends: the lowest budget is every group at its lowest keep, 1 is the whole model
    assert bmap.keeps(1.0, {g: 0.1 for g in space.groups}) == {g: 1.0 for g in space.groups}
    assert bmap.keeps(0.0, {}) == {g: pytest.approx(bmap.low[i]) for i, g in enumerate(space.groups)}


def test_a_depthwise_conv_scales_linearly_in_its_group():
    from budget_space import MacModel
    from edgesparse._tf import keras
    from edgesparse.graph.stats import layer_macs
    from edgesparse.search.space import build_space

    L = keras.layers
    i = keras.Input((8, 8, 3))
    h = L.Conv2D(16, 3, padding="same", name="c1")(i)
    h = L.DepthwiseConv2D(3, padding="same", name="dw")(h)
    h = L.Conv2D(8, 1, name="pw")(h)
    model = keras.Model(i, L.Dense(4, name="out")(L.GlobalAveragePooling2D()(h)))
    space = build_space(model, "x", ["int8"], families=("keep",))
    macs = MacModel.of(model, space)
    assert macs.layers["dw"].linear and not macs.layers["c1"].linear
    group = macs.layers["dw"].in_group
    assert group in space.groups and macs.layers["dw"].out_group == group
    dw = model.get_layer("dw")
    size = space.group_sizes[group]
    for keep in (0.5, 0.25):
        with_dw = macs.macs({group: keep}) - macs.macs({group: keep}, gone={"dw"})
        assert with_dw == pytest.approx(layer_macs(dw, int(size * keep), int(size * keep)))
        assert with_dw == pytest.approx(keep * layer_macs(dw))


def test_a_proxy_trial_reports_the_macs_the_model_predicts(tmp_path):
    """The MAC model against a real pruned and exported model, at rounded budget points."""
    import optuna

    from budget_space import BudgetSpace, MacModel
    from edgesparse.search.session import prepare
    from edgesparse.search.trials import run_trial

    base = prepare(CNN, "rpi4", DATA, agents=[], token_file=None, local=False, knobs=("keep",))
    space = BudgetSpace(base.space, MacModel.of(base.plans["proxy"].pristine, base.space))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    for _ in range(2):
        trial = study.ask()
        point = space.sample(trial)
        result = run_trial(base, point, "proxy")
        assert result.macs == round(space.budget_map.mac_model.point_macs(base.space, point))
        assert result.macs == pytest.approx(trial.params["budget"] * space.budget_map.full, rel=0.15)
