"""The descent sampler (search/descent.py): its rounds, read from a real Optuna study.

The trials here are told by hand (accuracy, latency, bytes and the constraint tune records), so
each test fixes which points are feasible and how accurate, and checks what the sampler asks next.
"""
from __future__ import annotations

import pytest

optuna = pytest.importorskip("optuna")

from edgesparse.search import descent  # noqa: E402
from edgesparse.search.space import DEPTH_PREFIX, DROP, KEEP, Knob, SearchSpace  # noqa: E402
from edgesparse.search.tune import TuneSettings, make_sampler  # noqa: E402

BLOCK = f"{DEPTH_PREFIX}add"
SPACE = SearchSpace(
    knobs=(Knob("keep:a", "float", low=0.1, high=1.0), Knob("keep:b", "float", low=0.1, high=1.0),
           Knob(BLOCK, "categorical", choices=(KEEP, DROP))),
    model_sha256="0" * 64, group_sizes={"a": 32, "b": 16}, round_to=4, blocks={"add": ("conv",)})
FULL = {"keep:a": 1.0, "keep:b": 1.0, BLOCK: KEEP}
CHEAP = {"keep:a": 0.25, "keep:b": 0.25, BLOCK: DROP}


def cost(point):
    """Latency of a toy model: the widths' product plus the block's share."""
    return point["keep:a"] * point["keep:b"] + (0.2 if point[BLOCK] == KEEP else 0.0)


class Toy:
    """A study as tune runs it, on a toy model whose accuracy and feasibility the test sets."""

    def __init__(self, accuracy, seed=0):
        self.accuracy = accuracy          # point -> accuracy; feasible when >= 90
        sampler = make_sampler(TuneSettings(sampler="descent", seed=seed), space=SPACE)
        self.study = optuna.create_study(sampler=sampler, directions=["maximize", "minimize", "minimize"])
        self.study.enqueue_trial(FULL, user_attrs={"baseline": "none"})
        for _ in range(9):
            self.study.enqueue_trial(CHEAP)

    def step(self):
        trial = self.study.ask()
        point = SPACE.sample(trial)
        trial.set_user_attr("point", point)
        acc = self.accuracy(point)
        trial.set_user_attr("constraints", [90.0 - acc])
        self.study.tell(trial, [acc, cost(point), 1000 * cost(point)])
        return trial.number, point, self.study.trials[trial.number].user_attrs.get(descent.DESCENT_KEY)

    def descents(self, n):
        """Run n trials; the descent steps among them as (number, point, record)."""
        return [s for s in (self.step() for _ in range(n)) if s[2] is not None]


def only_full(point):
    return 95.0 if point == FULL else 80.0


def test_the_first_round_asks_every_move_of_the_baseline_and_only_on_odd_trials_after_start_up():
    toy = Toy(only_full)
    steps = toy.descents(16)              # trials 0-15: start-up 0-9, then 10-15
    assert [n for n, _, _ in steps] == [11, 13, 15]
    assert {r["move"] for _, _, r in steps} == {"keep:a", "keep:b", BLOCK}
    assert all(r["parent"] == 0 and r["attempt"] == 0 for _, _, r in steps)
    points = {r["move"]: p for _, p, r in steps}
    assert descent.DESCENT_SHARE == 0.5                        # the widths below follow from it
    assert points["keep:a"] == {**FULL, "keep:a": 16 / 32}     # half of 32: four SIMD units of 4
    assert points["keep:b"] == {**FULL, "keep:b": 8 / 16}      # half of 16: two units
    assert points[BLOCK] == {**FULL, BLOCK: DROP}


def test_a_round_with_no_feasible_child_is_asked_again_at_half_the_step_then_the_descent_ends():
    toy = Toy(only_full)
    steps = toy.descents(40)
    by_attempt = {a: sorted((r["move"], p[r["move"]]) for _, p, r in steps if r["attempt"] == a) for a in (1, 2)}
    # Half steps: keep:a 4 units -> 2 -> 1, keep:b 2 units -> 1 -> none; the block is dropped once only.
    assert by_attempt[1] == [("keep:a", 24 / 32), ("keep:b", 12 / 16)]
    assert by_attempt[2] == [("keep:a", 28 / 32)]
    assert len(steps) == 6                # then no step is left: TPE takes every later trial
    assert descent.propose(toy.study, SPACE, __import__("numpy").random.default_rng(0)) is None


def test_the_next_parent_is_the_child_that_lost_least_per_cost_saved():
    # Dropping the block saves 0.2 of 1.2 for 1 point; shrinking a saves 0.5 for 4 points,
    # shrinking b 0.5 for 0.5 points: b is the cheapest loss per saving.
    def accuracy(p):
        lost = {"keep:a": 4.0 * (p["keep:a"] < 1), "keep:b": 0.5 * (p["keep:b"] < 1), BLOCK: 1.0 * (p[BLOCK] == DROP)}
        return 95.0 - sum(lost.values())

    toy = Toy(accuracy)
    steps = toy.descents(22)
    first = [r for _, _, r in steps if r["parent"] == 0]
    later = [(r, p) for _, p, r in steps if r["parent"] != 0]
    assert len(first) == 3 and later
    parent = toy.study.trials[later[0][0]["parent"]].user_attrs["point"]
    assert parent == {**FULL, "keep:b": 8 / 16}
    # The next round starts from there: one move changed, the rest as the parent has them.
    r, p = later[0]
    assert sum(p[k] != parent[k] for k in parent) == 1 and cost(p) < cost(parent)


def test_a_point_already_in_the_study_is_not_asked_again():
    toy = Toy(only_full)
    # Before the descent's first turn, put one of its round's points in the study (as TPE might).
    for _ in range(10):
        toy.step()
    toy.study.enqueue_trial({**FULL, "keep:a": 16 / 32})
    toy.step()                                           # trial 10 asks it
    steps = toy.descents(10)
    assert {r["move"] for _, _, r in steps if r["attempt"] == 0} == {"keep:b", BLOCK}
    points = [tuple(sorted(p.items())) for _, p, _ in steps]
    assert len(points) == len(set(points))


def test_tpe_draws_again_rather_than_repeat_a_measured_point():
    # Every TPE trial here is told the same result, so its model piles up on a few widths: with
    # the resampling, the TPE trials (the even ones after the start-up) repeat no measured point
    # while unmeasured ones remain (the space has 8 x 4 x 2 = 64 points).
    toy = Toy(lambda p: 95.0)
    for _ in range(40):
        toy.step()
    tpe = [t for t in toy.study.trials[10:] if descent.DESCENT_KEY not in t.user_attrs]
    keys = [tuple(sorted(t.user_attrs["point"].items())) for t in tpe]
    earlier = {tuple(sorted(t.user_attrs["point"].items())) for t in toy.study.trials[:10]}
    assert len(set(keys)) == len(keys) and not set(keys) & earlier


def test_the_descent_sampler_needs_the_space_and_is_seeded():
    with pytest.raises(ValueError):
        make_sampler(TuneSettings(sampler="descent"))

    def moves(seed):
        return [r["move"] for _, _, r in Toy(only_full, seed=seed).descents(20)]

    assert moves(1) == moves(1)


def test_tune_with_the_descent_sampler_steps_from_the_baseline(tmp_path):
    """Through the CLI on the sample MLP: trials 11 and 13 are a round's steps from trial 0."""
    from pathlib import Path

    from edgesparse.cli import run

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "out"
    assert run(["tune", str(root / "sample_models" / "digits_mlp.keras"), "--data",
                str(root / "sample_models" / "digits.npz"), "--trials", "14", "--no-refine",
                "--sampler", "descent", "--out", str(out)]) == 0
    study = optuna.load_study(study_name=optuna.get_all_study_names(f"sqlite:///{tmp_path / 'out.study.db'}")[0],
                              storage=f"sqlite:///{tmp_path / 'out.study.db'}")
    steps = {t.number: t.user_attrs[descent.DESCENT_KEY] for t in study.trials if descent.DESCENT_KEY in t.user_attrs}
    assert sorted(steps) == [11, 13]
    base = study.trials[0].user_attrs["point"]
    assert study.trials[0].user_attrs["baseline"] == "none"
    for n, step in steps.items():
        point = study.trials[n].user_attrs["point"]
        assert step["parent"] == 0 and point == step["point"]
        assert [k for k in point if point[k] != base[k]] == [step["move"]]
