"""The accuracy budget: bisected back-off, the trajectory in the report, a clear failure."""
import json
from pathlib import Path

import numpy as np
import pytest

from types import SimpleNamespace

from edgesparse.passes.prune.pass_ import PrunePass
from edgesparse.passes.quantize import Quantize
from edgesparse.pipeline import Pipeline
from edgesparse.search.backoff import Attempt, back_off, budget_failure, search
from edgesparse.cli import run as cli

ROOT = Path(__file__).resolve().parent.parent
CNN = ROOT / "sample_models" / "digits_cnn.keras"
DATA = ROOT / "sample_models" / "digits.npz"


def _attempt(strength, drop, budget, workdir):
    return Attempt(strength=strength, accuracy=100 - drop, drop=drop, met=drop <= budget, macs=None,
                   params=None, bytes=None, artifact=None, workdir=workdir)


def test_search_bisects_to_the_strongest_attempt_that_meets(tmp_path):
    # accuracy lost grows with strength: 10 points per unit of strength
    tried = []

    def run(strength, sub):
        tried.append(strength)
        return _attempt(strength, 10 * strength, budget=3.2, workdir=sub)

    best, attempts = search(run, tmp_path, max_steps=4, adjustable=True)
    assert tried == [1.0, 0.5, 0.25, 0.375, 0.3125]
    assert best.strength == 0.3125 and best.met
    assert [a.met for a in attempts] == [False, False, True, False, True]


def test_search_stops_when_the_first_attempt_meets_or_nothing_adjusts(tmp_path):
    best, attempts = search(lambda s, d: _attempt(s, 0.5, 1.0, d), tmp_path, 3, adjustable=True)
    assert best.strength == 1.0 and len(attempts) == 1
    best, attempts = search(lambda s, d: _attempt(s, 5.0, 1.0, d), tmp_path, 3, adjustable=False)
    assert best is None and len(attempts) == 1


def test_back_off_runs_a_build_plan_through_its_runner(tmp_path):
    """The back-off is a search strategy over a build plan: it only picks strengths and folders;
    running an attempt is the runner's job (build_api.run_plan in a build)."""
    calls = []

    def run(plan, strength, folder):
        calls.append((strength, folder.name))
        unbounded = plan.budget is None          # no budget: every attempt meets it (as build_api.judge)
        return _attempt(strength, 10 * strength, float("inf") if unbounded else plan.budget, folder)

    def plan(budget, passes):
        return SimpleNamespace(budget=budget, pipeline=Pipeline(passes),
                               recipe=SimpleNamespace(spec=SimpleNamespace(max_backoff_steps=2)))

    best, attempts = back_off(plan(3.2, [PrunePass(ratio=0.5), Quantize()]), tmp_path, run)
    assert calls == [(1.0, "attempt-0"), (0.5, "attempt-1"), (0.25, "attempt-2")] and best.strength == 0.25
    calls.clear()      # nothing scales (no prune/sparsify), or no budget: one attempt only
    assert back_off(plan(3.2, [Quantize()]), tmp_path, run)[0] is None and calls == [(1.0, "attempt-0")]
    calls.clear()
    assert back_off(plan(None, [PrunePass(ratio=0.5)]), tmp_path, run)[0].strength == 1.0 and len(calls) == 1


def test_a_validation_split_too_small_for_the_budget_is_named(tmp_path):
    attempts = [_attempt(1.0, 20.0, 1.0, tmp_path), _attempt(0.5, 20.0, 1.0, tmp_path)]
    small = str(budget_failure(attempts, 1.0, True, validation_samples=5))
    assert "the validation split has 5 samples, so one sample is 20 points" in small
    assert "give at least 100 validation samples" in small
    assert "validation split has" not in str(budget_failure(attempts, 1.0, True, validation_samples=360))
    assert "validation split has" not in str(budget_failure(attempts, 0.0, True, validation_samples=360))


def _memorising_model(tmp_path):
    """A small MLP that memorised random labels: any pruning costs accuracy, so a zero-point
    budget cannot be met and the back-off must end in a clear failure."""
    from edgesparse._tf import keras

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.random((256, 16), dtype=np.float32)
    y = rng.integers(0, 4, 256)
    inp = keras.Input((16,))
    h = keras.layers.Dense(64, activation="relu")(inp)
    out = keras.layers.Dense(4, activation="softmax")(h)
    model = keras.Model(inp, out)
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=300, batch_size=64, verbose=0)
    path = tmp_path / "memorise.keras"
    model.save(path)
    data = tmp_path / "memorise.npz"
    np.savez(data, x_train=x, y_train=y, x_val=x, y_val=y)   # validation = what it memorised
    return path, data


def test_impossible_budget_backs_off_then_fails_with_the_trajectory(tmp_path, capsys):
    model, data = _memorising_model(tmp_path)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("max_accuracy_drop: 0.0\nmax_backoff_steps: 2\npasses:\n"
                      "  - pass: prune\n    ratio: 0.8\n    criterion: random\n    reconstruct: false\n"
                      "  - pass: quantize\n  - pass: export\n    formats: [tflite]\n  - pass: verify\n")
    out = tmp_path / "out"
    code = cli(["build", str(model), "--data", str(data), "--recipe", str(recipe), "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3
    assert err[-1].startswith("error: accuracy budget of 0.0 points not met"), err[-1]
    report = json.loads((out / "report.json").read_text())
    assert report["status"].startswith("failed")
    attempts = report["budget"]["attempts"]
    assert [a["strength"] for a in attempts] == [1.0, 0.5, 0.25]
    assert not any(a["met"] for a in attempts)
    assert report["artifacts"] == [] and not list(out.glob("*.tflite"))
    steps = {r.get("step") for r in report["trajectory"]}
    assert {None, "back-off strength 0.5", "back-off strength 0.25"} <= steps
    assert "Accuracy budget" in (out / "report.md").read_text()


@pytest.mark.parametrize("text,match", [
    ("max_accuracy_drop: -1\npasses: []\n", "non-negative"),
    ("max_accuracy_drop: .nan\npasses: []\n", "non-negative"),
    ("max_accuracy_drop: one\npasses: []\n", "max_accuracy_drop"),
])
def test_bad_budgets_fail_before_training(tmp_path, capsys, text, match):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(text)
    code = cli(["build", str(CNN), "--data", str(DATA), "--recipe", str(recipe), "--out", str(tmp_path / "o")])
    assert code == 2 and match in capsys.readouterr().err


def test_budget_without_validation_labels_is_refused(tmp_path, capsys):
    data = tmp_path / "x.npz"
    np.savez(data, x=np.load(DATA)["x_train"])
    recipe = tmp_path / "r.yaml"
    recipe.write_text("max_accuracy_drop: 1.0\npasses:\n  - pass: quantize\n  - pass: export\n  - pass: verify\n")
    code = cli(["build", str(CNN), "--data", str(data), "--recipe", str(recipe), "--out", str(tmp_path / "o")])
    assert code == 2 and "no labelled validation split" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_validation_split_too_small_for_the_budget_is_warned_before_any_work(tmp_path):
    from edgesparse.build_api import plan_build

    d = np.load(DATA)
    small = tmp_path / "small.npz"
    np.savez(small, x_train=d["x_train"], y_train=d["y_train"], x_val=d["x_val"][:20], y_val=d["y_val"][:20])
    plan = plan_build(CNN, "rpi4", small, None, tmp_path / "o")
    assert any("the validation split has 20 samples: one sample is 5 points" in w for w in plan.warnings)
    assert not any("validation split has" in w for w in plan_build(CNN, "rpi4", DATA, None, tmp_path / "p").warnings)
