"""The ehvi sampler (search/ehvi.py): its pieces against brute force, and what it asks in a real
Optuna study.

The toy studies are told by hand: latency is an exact function of the widths (so the cost model
must recover it), accuracy is set by the test, and the accuracy constraint is recorded the way
tune records it (value <= 0 is feasible).
"""
from __future__ import annotations

import numpy as np
import pytest

optuna = pytest.importorskip("optuna")

from edgesparse.search import ehvi  # noqa: E402
from edgesparse.search.space import Knob, RankLayer, SearchSpace  # noqa: E402
from edgesparse.search.tune import TuneSettings, hypervolume, make_sampler  # noqa: E402

# A three-layer toy: 8 inputs -> group a (32) -> group b (16) -> 10 outputs; widths in steps of 4.
SPACE = SearchSpace(
    knobs=(Knob("keep:a", "float", low=0.1, high=1.0), Knob("keep:b", "float", low=0.1, high=1.0)),
    model_sha256="0" * 64, group_sizes={"a": 32, "b": 16}, round_to=4,
    rank_layers={"l1": RankLayer(8, 32, None, "a"), "l2": RankLayer(32, 16, "a", "b"),
                 "l3": RankLayer(16, 10, "b", None)})
FINE = SearchSpace(knobs=SPACE.knobs, model_sha256=SPACE.model_sha256, group_sizes=SPACE.group_sizes,
                   round_to=1, rank_layers=SPACE.rank_layers)      # 30 x 15 widths
THRESHOLD = 89.5


def latency(point):
    a, b = round(32 * point["keep:a"]), round(16 * point["keep:b"])
    return 0.01 * (8 * a) + 0.002 * (a * b) + 0.03 * (b * 10) + 0.5


def smooth(point):
    """Accuracy rising with both widths: feasible (>= 90) from about half of each."""
    return 80.0 + 12.0 * min(1.0, point["keep:a"] / 0.5) + 6.0 * min(1.0, point["keep:b"] / 0.5) - 8.0


class Toy:
    def __init__(self, accuracy, sampler="ehvi", seed=0, max_latency_ms=None, space=SPACE, worker=None):
        self.accuracy, self.space = accuracy, space
        settings = TuneSettings(sampler=sampler, seed=seed, max_latency_ms=max_latency_ms)
        self.names = tuple(n for n, v in settings.constraints().items() if v is not None)
        self.max_latency = max_latency_ms
        self.study = optuna.create_study(sampler=make_sampler(settings, worker, space=space),
                                         directions=["maximize", "minimize", "minimize"])
        self.study.enqueue_trial({"keep:a": 1.0, "keep:b": 1.0}, user_attrs={"baseline": "none"})

    def step(self):
        trial = self.study.ask()
        point = self.space.sample(trial)
        trial.set_user_attr("point", point)
        acc, lat = self.accuracy(point), latency(point)
        # tune's constraints: the accuracy drop against a 91-point reference with a 1-point budget
        constraints = [THRESHOLD - acc]
        if self.max_latency is not None:
            constraints.append(lat - self.max_latency)
        trial.set_user_attr("constraints", constraints)
        self.study.tell(trial, [acc, lat, 100 * lat])
        return point

    def run(self, n):
        return [self.step() for _ in range(n)]


def test_improvement_2d_is_the_hypervolume_a_point_adds():
    rng = np.random.default_rng(0)
    ref = (50.0, 10.0)
    front = np.column_stack([rng.uniform(55, 95, 7), rng.uniform(1, 9, 7)])
    lat = rng.uniform(0.5, 11, 40)
    acc = rng.uniform(45, 99, (40, 3))
    got = ehvi.improvement_2d(front, ref, lat, acc)
    rows = [{"accuracy": a, "latency_ms": l} for a, l in front]
    before = hypervolume(rows, ref, key="latency_ms")
    for i in range(40):
        for q in range(3):
            after = hypervolume(rows + [{"accuracy": acc[i, q], "latency_ms": lat[i]}], ref, key="latency_ms")
            assert got[i, q] == pytest.approx(after - before, abs=1e-9)
    # An empty front: the rectangle between the point and the reference.
    empty = ehvi.improvement_2d(np.zeros((0, 2)), ref, np.array([4.0]), np.array([[60.0]]))
    assert empty[0, 0] == pytest.approx(10.0 * 6.0)


def test_the_candidates_are_every_rounded_point_or_a_sample_of_them():
    rng = np.random.default_rng(0)
    every = ehvi.candidates(SPACE, rng)
    assert len(every) == 8 * 4 and len({ehvi.key(p) for p in every}) == 32
    assert all(SPACE.built(p) == p for p in every)          # already at the target's widths
    few = ehvi.candidates(SPACE, rng, limit=10)
    assert 1 <= len(few) <= 10 and all(ehvi.key(p) in {ehvi.key(q) for q in every} for p in few)


def test_the_cost_model_recovers_a_latency_linear_in_the_layer_products():
    rng = np.random.default_rng(1)
    every = ehvi.candidates(SPACE, rng)
    seen = [every[i] for i in rng.choice(len(every), 8, replace=False)]
    got = ehvi.fit_costs(ehvi.cost_features(SPACE, seen), np.array([latency(p) for p in seen]),
                         ehvi.cost_features(SPACE, every))
    assert got == pytest.approx([latency(p) for p in every], rel=1e-6)


def test_the_thresholds_are_read_back_from_the_recorded_constraints():
    toy = Toy(smooth, max_latency_ms=2.0)
    toy.run(3)
    done = toy.study.get_trials(deepcopy=False)
    assert ehvi.thresholds(done, toy.names) == pytest.approx({"max_accuracy_drop": THRESHOLD, "max_latency_ms": 2.0})


def test_no_point_is_asked_twice_and_the_goals_alternate_after_start_up():
    toy = Toy(smooth)
    points = toy.run(32)                 # the whole space
    assert len({ehvi.key(p) for p in points}) == 32
    goals = [t.user_attrs.get(ehvi.EHVI_KEY, {}).get("goal") for t in toy.study.trials]
    assert goals[0] is None and set(goals[1:10]) == {"random"}
    # After the start-up: even trials hypervolume, odd ones the fastest-feasible goal (which
    # falls back to hypervolume only when no point can beat the fastest feasible trial).
    assert all(g == "hypervolume" for g in goals[10:24:2])
    assert goals[11] == "fastest"


def test_it_finds_the_cheapest_feasible_point_sooner_than_random_search():
    # 450 points; the cheapest feasible one is (16, 8). Random search needs about 225 trials.
    every = ehvi.candidates(FINE, np.random.default_rng(0))
    best = min(latency(p) for p in every if smooth(p) >= THRESHOLD)

    def trials_to_best(sampler, seed, budget=40):
        toy = Toy(smooth, sampler=sampler, seed=seed, space=FINE)
        for n in range(1, budget + 1):
            p = toy.step()
            if smooth(p) >= THRESHOLD and latency(p) == pytest.approx(best):
                return n
        return budget + 1

    ours = [trials_to_best("ehvi", s) for s in range(3)]
    rand = [trials_to_best("random", s) for s in range(3)]
    assert max(ours) <= 40 and sum(ours) < sum(rand), (ours, rand)


def test_a_point_predicted_over_the_latency_limit_is_not_asked():
    limit = 4.0
    toy = Toy(smooth, max_latency_ms=limit)
    toy.run(14)                     # 8 of the 32 points are under the limit: some are left at 14
    modelled = [t.user_attrs["point"] for t in toy.study.trials[10:]]
    assert len(modelled) == 4 and all(latency(p) <= limit for p in modelled)


def test_the_ehvi_sampler_needs_the_space_and_is_seeded():
    with pytest.raises(ValueError):
        make_sampler(TuneSettings(sampler="ehvi"))

    def asked(seed):
        return [ehvi.key(p) for p in Toy(smooth, seed=seed).run(14)]

    assert asked(3) == asked(3)

    # Workers mix their name into the seed (tune.make_sampler): their start-ups differ.
    def start_up(worker):
        return [ehvi.key(p) for p in Toy(smooth, seed=3, worker=worker).run(6)]

    assert start_up("host:1") == start_up("host:1") != start_up("host:2")


def test_tune_with_the_ehvi_sampler_through_the_cli(tmp_path):
    """On the sample MLP: every trial after the baselines records its goal, no point twice."""
    from pathlib import Path

    from edgesparse.cli import run

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "out"
    assert run(["tune", str(root / "sample_models" / "digits_mlp.keras"), "--data",
                str(root / "sample_models" / "digits.npz"), "--trials", "13", "--no-refine",
                "--sampler", "ehvi", "--out", str(out)]) == 0
    url = f"sqlite:///{tmp_path / 'out.study.db'}"
    study = optuna.load_study(study_name=optuna.get_all_study_names(url)[0], storage=url)
    trials = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(trials) == 13
    goals = {t.number: t.user_attrs.get(ehvi.EHVI_KEY, {}).get("goal") for t in trials}
    assert {goals[n] for n in (10, 12)} == {"hypervolume"} and goals[11] in ("fastest", "hypervolume")
    keys = [ehvi.key(t.user_attrs["point"]) for t in trials]
    assert len(keys) == len(set(keys))
    for t in trials:
        if ehvi.EHVI_KEY in t.user_attrs:
            assert t.user_attrs["point"] == t.user_attrs[ehvi.EHVI_KEY]["point"]


def test_two_workers_never_ask_one_point():
    """Two samplers on one storage (two workers): a running trial's point is taken, and of two
    claims on one point made at once the earlier one keeps it."""
    storage = optuna.storages.InMemoryStorage()

    def worker(name):
        settings = TuneSettings(sampler="ehvi", seed=0)
        return optuna.create_study(storage=storage, study_name="shared", load_if_exists=True,
                                   sampler=make_sampler(settings, name, space=SPACE),
                                   directions=["maximize", "minimize", "minimize"])

    a, b = worker("host:1"), worker("host:2")
    for i in range(12):                      # interleaved, nothing told until both asked
        ta, tb = a.ask(), b.ask()
        pa, pb = SPACE.sample(ta), SPACE.sample(tb)
        assert pa != pb
        for study, t, p in ((a, ta, pa), (b, tb, pb)):
            t.set_user_attr("point", p)
            t.set_user_attr("constraints", [THRESHOLD - smooth(p)])
            study.tell(t, [smooth(p), latency(p), 100 * latency(p)])
    # The race itself: trial x claimed point X at t=1, trial y chose X too and claimed it at t=2.
    x, y = a.ask(), a.ask()
    taken = {ehvi.key(t.user_attrs["point"]) for t in a.trials if "point" in t.user_attrs}
    point = next(p for p in ehvi.candidates(SPACE, np.random.default_rng(0)) if ehvi.key(p) not in taken)
    for t, at in ((x, 1.0), (y, 2.0)):
        t.set_user_attr(ehvi.EHVI_KEY, {"point": point, "goal": "hypervolume", "at": at})
    assert ehvi.claimed_before(a, y.number, point, 2.0)          # y moves on
    assert not ehvi.claimed_before(a, x.number, point, 1.0)      # x keeps it
