"""The grow pass (issue 11, part 2): start small, grow connections and neurons on plateaus,
stop at the target or the cap, record every step, grow-and-prune to a nonzero count."""
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from edgesparse._tf import keras
from edgesparse.data import load_data
from edgesparse.errors import UserError
from edgesparse.passes.grow import GrowConfig, GrowPass, Grower
from edgesparse.pipeline import DataInfo, PlanContext

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "sample_models" / "digits.npz"
ROW_KEYS = {"step", "event", "epochs", "mac_epochs", "accuracy", "macs", "params", "connections", "widths"}


@pytest.fixture(scope="module")
def data():
    return load_data(DIGITS, (64,), 10)


def mlp(widths=(32, 32), seed=0):
    keras.utils.set_random_seed(seed)
    i = keras.Input((64,))
    h = i
    for n, w in enumerate(widths):
        h = keras.layers.Dense(w, activation="relu", name=f"fc{n + 1}")(h)
    return keras.Model(i, keras.layers.Dense(10, activation="softmax", name="probs")(h))


def test_widening_keeps_outputs_and_the_old_masks(data):
    given = mlp()
    g = Grower(given, GrowConfig(start_width=0.5, start_density=0.5, max_epochs=1), data, 0, given)
    assert g.widths() == {"fc1": 16, "fc2": 16}
    before = g.net.predict(data.x_val, verbose=0)
    old_masks = {n: m.copy() for n, m in g.masks.items()}
    assert g.grow_neurons(*g.cap()) > 0
    assert g.widths() == {"fc1": 24, "fc2": 24}
    np.testing.assert_allclose(g.net.predict(data.x_val, verbose=0), before, atol=1e-5)
    for name, old in old_masks.items():                 # old positions keep their mask exactly
        new = g.masks[name]
        assert np.array_equal(new[:old.shape[0], :old.shape[1]], old)
        assert np.count_nonzero(g.net.get_layer(name).kernel.numpy()[~new]) == 0
    grown = g.grow_connections(None)                    # by gradient, starting at zero: same outputs
    assert grown > 0
    np.testing.assert_allclose(g.net.predict(data.x_val, verbose=0), before, atol=1e-5)


def test_plateau_triggers_growth_and_every_step_is_recorded(data):
    given = mlp()
    cfg = GrowConfig(start_width=0.25, target_accuracy=100.0, grow_patience=1, max_epochs=6, grow_step=0.5)
    net, facts = Grower(given, cfg, data, 0, given).run()
    rows = facts["trajectory"]
    events = [r["event"] for r in rows]
    assert events[0] == "start" and "grow neurons" in events
    first = events.index("grow neurons")
    assert events[first - 1] == "train" and rows[first - 1]["plateau"]
    assert rows[first]["widths"]["fc1"] > rows[0]["widths"]["fc1"]
    for r in rows:
        assert ROW_KEYS <= set(r)
    epochs = [r["epochs"] for r in rows]
    assert epochs == sorted(epochs) and facts["epochs"] == epochs[-1] <= cfg.max_epochs
    # MAC-epochs: each phase's MACs times its epochs, summed
    spent = sum(r["macs"] * r["epochs_in_phase"] for r in rows if r["event"] == "train")
    assert facts["mac_epochs"] == pytest.approx(spent)
    assert net.get_layer("fc1").units == rows[-1]["widths"]["fc1"]


def test_stops_at_the_target_without_growing(data):
    given = mlp()
    net, facts = Grower(given, GrowConfig(target_accuracy=50.0, max_epochs=20), data, 0, given).run()
    assert facts["stopped_by"] == "target" and facts["reached"]
    assert [r["event"] for r in facts["trajectory"]] == ["start", "train"]
    assert facts["trajectory"][-1]["accuracy"] >= 50.0


def test_stops_when_the_cap_is_spent(data):
    given = mlp()
    g = Grower(given, GrowConfig(start_width=0.5, target_accuracy=100.0, max_macs=0.43, patience=3, grow_patience=1,
                                 max_epochs=40), data, 0, given)
    one_more, _ = g._widened({"fc1": 1, "fc2": 1})      # the start fits the cap, one more channel does not
    assert g.macs() <= g.cap()[0] < g.macs(one_more)
    net, facts = g.run()
    assert facts["stopped_by"] == "cap" and not facts["reached"]
    assert not g.can_grow() and g.phase_patience() == 3     # at the cap: patience, not grow_patience
    assert facts["trajectory"][1]["epochs_in_phase"] >= 3
    below = Grower(given, GrowConfig(start_width=0.5, patience=3, grow_patience=1), data, 0, given)
    assert below.can_grow() and below.phase_patience() == 1
    assert "grow neurons" not in [r["event"] for r in facts["trajectory"]]
    assert facts["final"]["macs"] <= facts["cap"]["macs"]
    assert g.warnings and "cap is spent" in g.warnings[0]


def test_grow_and_prune_ends_at_the_requested_nonzero_count(data):
    given = mlp()
    cfg = GrowConfig(start_width=0.5, target_accuracy=60.0, max_epochs=4, prune_to_params=400, prune_epochs=2,
                     prune_distill=None)
    net, facts = Grower(given, cfg, data, 0, given).run()
    nonzero = sum(int(np.count_nonzero(l.kernel.numpy())) for l in net.layers if hasattr(l, "kernel"))
    assert nonzero == 400 == facts["final"]["connections"]
    assert facts["teacher_mac_epochs"] == 0                     # labels only: no teacher ran
    assert [r["event"] for r in facts["trajectory"][-2:]] == ["prune", "fine-tune"]   # at the final masks
    for layer in ("fc1", "fc2", "probs"):          # no layer emptied: every unit keeps an input
        assert (np.abs(net.get_layer(layer).kernel.numpy()).sum(axis=0) > 0).all()


def test_bad_inputs_are_refused_before_training(data):
    for bad in (0.0, 1.5, -0.25):
        with pytest.raises(ValidationError, match="start_width"):
            GrowConfig(start_width=bad)
    with pytest.raises(ValidationError, match="start_density"):
        GrowConfig(start_density=0.0)
    given = mlp()
    with pytest.raises(UserError, match="max_macs=0.01.*smaller than the starting network"):
        Grower(given, GrowConfig(max_macs=0.01), data, 0, given)
    with pytest.raises(UserError, match="max_params=0.01"):
        Grower(given, GrowConfig(max_params=0.01), data, 0, given)
    with pytest.raises(UserError, match="prune_to_params=5 is below"):
        Grower(given, GrowConfig(prune_to_params=5), data, 0, given)
    unlabelled = DataInfo(real=True, labelled=False)
    problems = GrowPass(GrowConfig()).check(PlanContext(target=None, data=unlabelled, passes=[], index=0))
    assert problems and "labelled --data" in problems[0]


def test_cli_refuses_bad_input_and_writes_nothing(tmp_path):
    from edgesparse.cli import run

    out = tmp_path / "g.keras"
    model = ROOT / "sample_models" / "digits_mlp.keras"
    assert run(["grow", str(model), "--data", str(DIGITS), "--start-width", "0", "--out", str(out)]) != 0
    assert run(["grow", str(model), "--data", str(DIGITS), "--max-macs", "0.01", "--out", str(out)]) != 0
    unlabelled = tmp_path / "x.npz"
    np.savez(unlabelled, x=np.load(DIGITS)["x_train"][:50])
    assert run(["grow", str(model), "--data", str(unlabelled), "--out", str(out)]) != 0
    assert not out.exists()


def test_report_shows_the_growth_trajectory(data):
    from edgesparse.report import plots
    from edgesparse.report.html import _grow as html_grow
    from edgesparse.report.markdown import _grow as md_grow

    given = mlp()
    _, facts = Grower(given, GrowConfig(target_accuracy=100.0, grow_patience=1, max_epochs=3, grow_step=0.5),
                      data, 0, given).run()
    md = "\n".join(md_grow({"facts": {"grow": facts}}))
    assert "## Growing the network" in md and "grow neurons" in md
    png = plots.grow_plot(facts["trajectory"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<img" in html_grow(facts, True)


def test_keep_moments_carries_adams_state_into_the_widened_network(data):
    given = mlp()
    g = Grower(given, GrowConfig(start_width=0.5, keep_moments=True, target_accuracy=100.0, max_epochs=4),
               data, 0, given)
    g.train_phase(1)
    steps = g.moments["iterations"]
    assert steps > 0
    before = {k: [s.copy() for s in v] for k, v in g.moments["slots"].items()}
    assert g.grow_neurons(*g.cap()) > 0                     # 16 -> 24 channels per layer
    after = g.moments["slots"]
    m, v = after[("fc1", 0)]
    assert m.shape == (64, 24) and np.array_equal(m[:, :16], before[("fc1", 0)][0])
    assert not m[:, 16:].any() and not v[:, 16:].any()      # new columns start without moments
    m2 = after[("fc2", 0)][0]
    assert np.array_equal(m2[:16, :16], before[("fc2", 0)][0]) and not m2[16:].any() and not m2[:, 16:].any()
    assert np.abs(before[("fc1", 0)][0]).sum() > 0           # there was something to carry
    g.train_phase(1)
    assert g.moments["iterations"] == 2 * steps             # the step count went on, not from 1


def test_a_large_step_is_clipped_to_the_cap(data):
    given = mlp()
    g = Grower(given, GrowConfig(start_width=0.25, grow_step=4.0, max_macs=1.0, max_epochs=1), data, 0, given)
    assert g.grow_neurons(*g.cap()) > 0
    assert g.widths() == {"fc1": 32, "fc2": 32}             # the given width is the largest within max_macs 1.0
    assert g.macs() <= g.cap()[0]
    assert g.grow_neurons(*g.cap()) == 0 and not g.can_grow()


def test_drop_and_regrow_keeps_every_layers_count(data):
    given = mlp()
    g = Grower(given, GrowConfig(start_width=0.5, max_epochs=1), data, 0, given)
    masks = g.prune_masks(600, {n: np.ones(tuple(g.net.get_layer(n).kernel.shape), bool) for n in ("fc1", "fc2", "probs")})
    swapped = g._drop_and_regrow(masks, 0.3)
    for name, m in masks.items():
        assert swapped[name].sum() == m.sum()
    moved = sum(int((swapped[n] & ~masks[n]).sum()) for n in masks)
    assert 0 < moved <= int(0.3 * 600) + 1


def test_grow_and_prune_with_regrowth_ends_at_the_requested_count(data):
    given = mlp()
    cfg = GrowConfig(start_width=0.5, target_accuracy=60.0, max_epochs=3, prune_to_params=400, prune_epochs=3,
                     prune_regrow=0.3)
    net, facts = Grower(given, cfg, data, 0, given).run()
    nonzero = sum(int(np.count_nonzero(l.kernel.numpy())) for l in net.layers if hasattr(l, "kernel"))
    assert nonzero <= 400 and facts["trajectory"][-1]["active"] == 400


def test_split_growth_keeps_outputs_and_the_copies_inherit_their_sources_masks(data):
    given = mlp()
    g = Grower(given, GrowConfig(start_width=0.5, start_density=0.5, grow_init="split", max_epochs=1), data, 0, given)
    g.train_phase(1)                                    # trained weights, so the copies are not noise
    before = g.net.predict(data.x_val, verbose=0)
    old_masks = {n: m.copy() for n, m in g.masks.items()}
    old_fc1 = g.net.get_layer("fc1").kernel.numpy()
    assert g.grow_neurons(*g.cap()) > 0
    assert g.widths() == {"fc1": 24, "fc2": 24}
    np.testing.assert_allclose(g.net.predict(data.x_val, verbose=0), before, atol=1e-4)
    fc1 = g.net.get_layer("fc1").kernel.numpy()
    np.testing.assert_array_equal(fc1[:, :16], old_fc1)
    for j in range(16, 24):                             # each new neuron is a copy of an old one, mask included
        source = [s for s in range(16) if np.array_equal(fc1[:, j], fc1[:, s])]
        assert source and np.array_equal(g.masks["fc1"][:, j], old_masks["fc1"][:, source[0]])
    assert np.abs(g.net.get_layer("fc2").kernel.numpy()[16:]).sum() > 0   # read at once, unlike zero units
    for name, m in g.masks.items():
        assert np.count_nonzero(g.net.get_layer(name).kernel.numpy()[~m]) == 0


def test_grow_and_prune_can_distil_from_the_grown_network(data):
    given = mlp()
    cfg = GrowConfig(start_width=0.5, target_accuracy=60.0, max_epochs=3, prune_to_params=400, prune_epochs=2,
                     prune_distill=4.0)
    g = Grower(given, cfg, data, 0, given)
    net, facts = g.run()
    rows = facts["trajectory"]
    assert rows[-1]["active"] == 400 and [r["event"] for r in rows[-2:]] == ["prune", "fine-tune"]
    taught = facts["epochs"] - rows[-3]["epochs"]       # the prune's and the fine-tune's epochs
    assert taught > 0 and facts["teacher_mac_epochs"] == pytest.approx(rows[-3]["macs"] * taught)


def test_cap_epochs_anneal_the_last_phase_for_exactly_that_many_epochs(data):
    from edgesparse.passes.grow.callbacks import cosine_decay

    given = mlp()
    cfg = GrowConfig(start_width=0.5, target_accuracy=100.0, max_macs=0.43, patience=1, cap_epochs=4, max_epochs=40)
    net, facts = Grower(given, cfg, data, 0, given).run()      # at the cap from the start
    phases = [r for r in facts["trajectory"] if r["event"] == "train"]
    assert len(phases) == 1 and phases[0]["epochs_in_phase"] == 4 == facts["epochs"]   # not stopped on patience 1
    seen = []                                   # the rate falls from the given one to ~0 within the fit

    class Watch(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(float(self.model.optimizer.learning_rate.numpy()))

    model = mlp((8,))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    model.fit(data.x_train[:64], data.y_train[:64], batch_size=16, epochs=2, verbose=0,
              callbacks=[cosine_decay(1e-3, 8), Watch()])
    assert seen[0] == pytest.approx(1e-3) and seen[-1] < 0.05 * 1e-3
    assert all(a >= b for a, b in zip(seen, seen[1:]))


def test_a_sparse_start_counts_only_its_active_connections(data):
    """active_mac_epochs: each phase at its masks' density (dense gradient batches at dense),
    the dense count beside it; a dense start's two counts agree."""
    from edgesparse.graph.stats import macs_by_layer
    from edgesparse.passes.grow.grower import GRADIENT_BATCH
    from edgesparse.report.html import _grow as html_grow
    from edgesparse.report.markdown import _grow as md_grow

    given = mlp()
    cfg = GrowConfig(start_width=1.0, start_density=0.2, connection_step=10.0, target_accuracy=100.0)
    g = Grower(given, cfg, data, 0, given)
    per_layer = macs_by_layer(g.net)
    sparse = sum(m * (g.masks[n].mean() if n in g.masks else 1.0) for n, m in per_layer.items())
    assert g.active_macs() == pytest.approx(sparse) and sparse < 0.3 * g.macs()
    g.train_phase(1)                     # one epoch sparse, the growth to dense, one epoch dense
    assert g.grow_connections(None) > 0 and all(m.all() for m in g.masks.values())
    g.train_phase(1)
    batch = g.macs() * min(GRADIENT_BATCH, len(data.x_train)) / len(data.x_train)
    assert g.active_mac_epochs == pytest.approx(sparse + batch + g.macs())
    assert g.mac_epochs == pytest.approx(2 * g.macs())
    dense = Grower(given, GrowConfig(start_width=0.5, max_epochs=2, target_accuracy=100.0), data, 0, given)
    _, dense_facts = dense.run()
    assert dense_facts["active_mac_epochs"] == pytest.approx(dense_facts["mac_epochs"])
    # the report states the active count for a sparse start only
    _, sparse_facts = Grower(given, GrowConfig(start_density=0.2, max_epochs=2, target_accuracy=100.0),
                             data, 0, given).run()
    assert "counting only the active connections" in "\n".join(md_grow({"facts": {"grow": sparse_facts}}))
    assert "counting only the active connections" in html_grow(sparse_facts, False)
    assert "active connections" not in "\n".join(md_grow({"facts": {"grow": dense_facts}}))


def test_a_sparse_start_gives_each_unit_the_dense_init_variance(data):
    """A sparse start's active incoming weights are scaled to each unit's fan-in (Evci et al.
    2022), so the summed squares per unit (the pre-activation variance for unit-variance inputs)
    match the dense initialiser's; masking alone would leave about density x of it."""
    given = mlp((64, 64))

    def per_unit(cfg):
        k = Grower(given, cfg, data, 3, given).net.get_layer("fc2").kernel.numpy()
        return float(np.mean(np.sum(k ** 2, axis=0)))

    dense = per_unit(GrowConfig(start_width=1.0))
    assert per_unit(GrowConfig(start_width=1.0, start_density=0.25)) / dense == pytest.approx(1.0, abs=0.12)
