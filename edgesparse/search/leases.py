"""Trial leases: a running trial belongs to a worker only while that worker keeps renewing it.

Optuna's RDB heartbeat covers `study.optimize()` only, not ask-and-tell (DESIGN trap 15), and a
device-in-the-loop search must ask and tell itself. So edgesparse owns the leases: a worker that
asks a trial writes `lease_until` (wall-clock seconds) into the trial's system attributes and
renews it from a background thread while it works. Any worker that finds a RUNNING trial whose
lease has expired (its worker or device died) tells it as FAILED and re-enqueues its parameters
once; a re-enqueued trial that dies again stays failed, so a point that kills workers cannot
loop forever.

A worker that dies between asking a trial and taking its lease leaves a RUNNING trial with no
lease at all. Left alone it would count against the budget forever, and the other workers would
wait for it forever. A reaper that sees such a trial still lease-less `UNLEASED_GRACE_S` after
it first saw it treats it as expired. The grace is timed on the reaper's own clock (not the
trial's start time, which another machine's clock and time zone wrote).
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager

LEASE_KEY = "edgesparse:lease_until"
WORKER_KEY = "edgesparse:worker"
RETRY_OF_KEY = "retry_of"          # user attribute of a re-enqueued trial: the trial it repeats
UNLEASED_GRACE_S = 60.0            # asking and taking the lease take well under a second

_unleased_since: dict[tuple[int, int], float] = {}   # (study id, trial id) -> when this process first saw it


def _storage_and_id(study, trial):
    return study._storage, trial._trial_id


def take(study, trial, worker: str, lease_s: float) -> None:
    storage, tid = _storage_and_id(study, trial)
    storage.set_trial_system_attr(tid, WORKER_KEY, worker)
    storage.set_trial_system_attr(tid, LEASE_KEY, time.time() + lease_s)


@contextmanager
def held(study, trial, worker: str, lease_s: float):
    """Hold the lease of `trial` while the body runs, renewing it every lease_s / 3 seconds."""
    take(study, trial, worker, lease_s)
    storage, tid = _storage_and_id(study, trial)
    stop = threading.Event()

    def renew():
        while not stop.wait(lease_s / 3):
            try:
                storage.set_trial_system_attr(tid, LEASE_KEY, time.time() + lease_s)
            except Exception:   # the trial finished meanwhile, or the storage blinked: next time
                pass

    thread = threading.Thread(target=renew, name=f"lease-{trial.number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def reap_expired(study, now: float | None = None) -> list[int]:
    """Fail every RUNNING trial whose lease has run out; re-enqueue each one once.

    Returns the numbers of the trials it failed. Safe to run from several workers at once: a
    trial that another worker already told is skipped (Optuna refuses to tell it twice).
    """
    optuna = __import__("optuna")
    now = time.time() if now is None else now
    reaped = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        until = t.system_attrs.get(LEASE_KEY)
        if until is None:
            first = _unleased_since.setdefault((study._study_id, t._trial_id), now)
            if now - first <= UNLEASED_GRACE_S:
                continue
            why = f"no lease taken within {UNLEASED_GRACE_S:.0f} s (its worker died after asking)"
        elif until > now:
            continue
        else:
            why = f"lease expired (worker {t.system_attrs.get(WORKER_KEY)})"
        try:
            study._storage.set_trial_user_attr(t._trial_id, "failed_because", why)
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)
        except Exception:    # told by another worker meanwhile (Optuna refuses a second tell)
            continue
        reaped.append(t.number)
        if RETRY_OF_KEY not in t.user_attrs:
            study.enqueue_trial(t.params, user_attrs={RETRY_OF_KEY: t.number}, skip_if_exists=False)
    return reaped
