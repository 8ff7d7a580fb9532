"""Trial leases on a real Optuna study (SQLite file): an expired lease is reaped and retried once,
and so is a trial whose worker died before it ever took a lease. Time is passed in as `now`."""
from __future__ import annotations

import time

import pytest

optuna = pytest.importorskip("optuna")

from edgesparse.search import leases  # noqa: E402

RUNNING, FAIL, WAITING = (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.FAIL,
                          optuna.trial.TrialState.WAITING)


@pytest.fixture
def study(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", study_name="s")


def asked(study, x: float | None = None):
    if x is not None:
        study.enqueue_trial({"x": x})
    trial = study.ask()
    trial.suggest_float("x", 0.0, 1.0)
    return trial


def test_expired_lease_is_failed_and_retried_once(study):
    t0 = time.time()
    trial = asked(study, 0.25)
    leases.take(study, trial, "host:1", lease_s=10)
    assert leases.reap_expired(study, now=t0 + 5) == []
    assert leases.reap_expired(study, now=t0 + 11) == [trial.number]
    dead = study.trials[trial.number]
    assert dead.state == FAIL and dead.user_attrs["failed_because"] == "lease expired (worker host:1)"
    retry = [t for t in study.trials if t.state == WAITING]
    assert len(retry) == 1 and retry[0].user_attrs[leases.RETRY_OF_KEY] == trial.number
    # The retry dies as well: it stays failed, nothing is enqueued a second time.
    again = asked(study)
    assert again.number == retry[0].number and again.params == {"x": 0.25}
    leases.take(study, again, "host:2", lease_s=10)
    assert leases.reap_expired(study, now=time.time() + 11) == [again.number]
    assert not [t for t in study.trials if t.state in (WAITING, RUNNING)]


def test_a_trial_never_leased_is_reaped_after_the_grace_and_a_late_lease_is_not(study):
    t0 = time.time()
    orphan = asked(study, 0.5)          # its worker died between ask() and take()
    late = asked(study, 0.75)           # its worker is merely slow to take the lease
    grace = leases.UNLEASED_GRACE_S
    assert leases.reap_expired(study, now=t0) == []
    leases.take(study, late, "host:3", lease_s=10 * grace)
    assert leases.reap_expired(study, now=t0 + grace - 1) == []
    assert leases.reap_expired(study, now=t0 + grace + 1) == [orphan.number]
    dead = study.trials[orphan.number]
    assert dead.state == FAIL and "no lease taken" in dead.user_attrs["failed_because"]
    assert study.trials[late.number].state == RUNNING
    retry = [t for t in study.trials if t.state == WAITING]
    assert [t.user_attrs[leases.RETRY_OF_KEY] for t in retry] == [orphan.number]
