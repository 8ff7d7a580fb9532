"""edgesparse tune on real trials: SQLite by default, a real PostgreSQL server shared by two worker
processes (one of them killed mid-trial), real agents on 127.0.0.1 as the device fleet, and the
bad inputs. Trials prune the sample MLP with reconstruction, quantize to int8, export TFLite and
verify in LiteRT: about a second each."""
from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

from edgesparse.cli import run  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import postgres  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MLP = ROOT / "sample_models" / "digits_mlp.keras"
CNN = ROOT / "sample_models" / "digits_cnn.keras"
DATA = ROOT / "sample_models" / "digits.npz"


def tune(*args: str) -> int:
    return run(["tune", *map(str, args)])


def cli(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "edgesparse.cli", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def completed(url: str, name: str):
    study = optuna.load_study(study_name=name, storage=url.replace("postgresql://", "postgresql+psycopg2://"))
    return study, [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]


def test_tune_sqlite_front_baselines_and_report(tmp_path):
    out = tmp_path / "out"
    assert tune(MLP, "--data", DATA, "--trials", 8, "--no-refine", "--out", out, "--seed", 1) == 0
    report = json.loads((out / "report.json").read_text())
    assert len(report["trials"]) == 8
    # Baselines were enqueued and measured: no compression first, then uniform keeps.
    kinds = sorted(b["baseline"] for b in report["baselines"])
    assert kinds[0] == "none" and kinds.count("uniform") >= 2
    none = next(b for b in report["baselines"] if b["baseline"] == "none")
    assert all(v == 1.0 for k, v in none["params"].items() if k.startswith("keep:"))
    # Every trial was measured in LiteRT and its latency labelled as the estimate it is.
    assert all(t["accuracy"] is not None and t["bytes"] > 0 for t in report["trials"])
    assert report["latency_source"] == "estimated (roofline)"
    # The front is non-dominated and feasible.
    front = report["proxy_front"]
    assert front and all(f["feasible"] for f in front)
    for a in front:
        assert not any(b["accuracy"] >= a["accuracy"] and b["latency_ms"] <= a["latency_ms"]
                       and b["bytes"] <= a["bytes"] and b is not a and
                       (b["accuracy"], b["latency_ms"], b["bytes"]) != (a["accuracy"], a["latency_ms"], a["bytes"])
                       for b in front)
    assert (out / "pareto.png").stat().st_size > 1000
    assert "Proxy front" in (out / "report.md").read_text()
    # The study lives beside the output folder and resumes: 4 more trials reach 12.
    assert (tmp_path / "out.study.db").exists()
    assert tune(MLP, "--data", DATA, "--trials", 12, "--no-refine", "--out", out, "--seed", 1) == 0
    assert len(json.loads((out / "report.json").read_text())["trials"]) == 12


def test_pick_writes_a_recipe_that_build_reproduces(tmp_path):
    out = tmp_path / "tuned"
    assert tune(MLP, "--data", DATA, "--trials", 4, "--out", out, "--pick", "fastest-within-budget",
                "--max-accuracy-drop", 3) == 0
    report = json.loads((out / "report.json").read_text())
    picked = report["picked"]
    assert picked is not None and (out / "picked-recipe.yaml").exists()
    rebuilt = tmp_path / "rebuilt"
    assert run(["build", str(MLP), "--data", str(DATA), "--recipe", str(out / "picked-recipe.yaml"),
                "--out", str(rebuilt)]) == 0
    build = json.loads((rebuilt / "report.json").read_text())
    primary = next(a for a in build["artifacts"] if a["precision"] == picked["params"].get("precision", "int8")
                   and a["path"].endswith(".tflite"))
    assert primary["accuracy"] == pytest.approx(picked["accuracy"], abs=0.3)
    assert build["model"]["final"]["macs"] == picked["macs"]


def test_bad_inputs_are_one_line_and_leave_nothing(tmp_path, capsys):
    out = tmp_path / "o"
    # An unreachable PostgreSQL server: the password is never echoed.
    assert tune(MLP, "--data", DATA, "--storage", "postgresql://me:s3cret-pw@127.0.0.1:1/db",
                "--out", out) == 2
    err = capsys.readouterr().err
    assert "cannot open the study storage" in err and "s3cret-pw" not in err and "***" in err
    assert not out.exists()
    # Constraints nothing meets: say so and show the closest.
    assert tune(MLP, "--data", DATA, "--trials", 3, "--no-refine", "--max-bytes", 10, "--out", out) == 2
    err = capsys.readouterr().err
    assert "no trial met the constraints" in err and "closest" in err
    # A study that exists for another model is refused, not mixed.
    db = tmp_path / "s.db"
    assert tune(MLP, "--data", DATA, "--trials", 1, "--no-refine", "--storage", db, "--study", "x",
                "--out", tmp_path / "a") == 0
    assert tune(CNN, "--data", DATA, "--trials", 1, "--no-refine", "--storage", db, "--study", "x",
                "--out", tmp_path / "b") == 2
    assert "was started for another search" in capsys.readouterr().err
    # Unlabelled data, an unknown pick rule, a worker without a study.
    assert tune(MLP, "--out", tmp_path / "c") == 2
    assert tune(MLP, "--data", DATA, "--pick", "best", "--out", tmp_path / "d") == 2
    assert tune("worker") == 2
    assert not (tmp_path / "c").exists() and not (tmp_path / "d").exists()


@pytest.fixture(scope="module")
def pg():
    if not postgres.available():
        if os.environ.get("EDGESPARSE_REQUIRE_POSTGRES"):
            pytest.fail("EDGESPARSE_REQUIRE_POSTGRES is set but PostgreSQL is not installed")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    with postgres.throwaway_cluster() as url:
        yield url


def _wait(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("sampler", ["random", "nsga2", "tpe"])
def test_workers_draw_their_own_points_but_the_coordinator_stays_seeded(sampler):
    """Two workers with the study's seed ran each other's points (8 of 24, docs/benchmarks.md)."""
    from edgesparse.search.tune import TuneSettings, make_sampler

    settings = TuneSettings(sampler=sampler, seed=3)

    def draws(worker):
        study = optuna.create_study(sampler=make_sampler(settings, worker), directions=["maximize"] * 2)
        return [study.ask().suggest_float("keep", 0.1, 1.0) for _ in range(5)]

    assert draws(None) == draws(None)
    assert draws("host:1") == draws("host:1")
    assert draws("host:1") != draws("host:2") != draws(None)


def test_two_workers_share_a_postgres_study_and_a_killed_worker_is_retried(pg, tmp_path):
    name, n = "shared", 10
    coordinator = cli("tune", MLP, "--data", DATA, "--storage", pg, "--study", name, "--trials", n,
                      "--no-refine", "--out", tmp_path / "out", "--lease-seconds", 4)
    url = pg.replace("postgresql://", "postgresql+psycopg2://")
    _wait(lambda: name in optuna.get_all_study_names(url), 120, "the study to exist")
    doomed = cli("tune", "worker", "--storage", pg, "--study", name)
    # Kill the second worker in the middle of one of its trials.
    def doomed_running():
        s = optuna.load_study(study_name=name, storage=url)
        return any(t.state == optuna.trial.TrialState.RUNNING
                   and str(t.system_attrs.get("edgesparse:worker", "")).endswith(f":{doomed.pid}")
                   for t in s.trials)
    _wait(doomed_running, 180, "the second worker to run a trial")
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(timeout=10)
    helper = cli("tune", "worker", "--storage", pg, "--study", name)
    assert coordinator.wait(timeout=600) == 0, coordinator.stderr.read()[-2000:]
    assert helper.wait(timeout=120) == 0, helper.stderr.read()[-2000:]
    study, done = completed(pg, name)
    # Exactly n completed, no trial left running, numbers unique.
    assert len(done) == n
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    assert len({t.number for t in study.trials}) == len(study.trials)
    # The killed worker's trial failed on its expired lease and ran again, once.
    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert failed and all("lease expired" in t.user_attrs.get("failed_because", "") for t in failed)
    retries = [t for t in done if "retry_of" in t.user_attrs]
    assert {t.user_attrs["retry_of"] for t in retries} == {t.number for t in failed}
    for t in retries:
        original = next(f for f in failed if f.number == t.user_attrs["retry_of"])
        assert t.params == original.params
    # The trial that failed was the killed worker's.
    assert all(f":{doomed.pid})" in t.user_attrs["failed_because"] for t in failed)


@pytest.fixture
def fleet(tmp_path):
    token = tmp_path / "token"
    token.write_text(secrets.token_urlsafe(32) + "\n")
    token.chmod(0o600)
    procs, urls = [], []
    for _ in range(2):
        p = subprocess.Popen([sys.executable, "-m", "edgesparse.profile.agent", "--token-file", str(token),
                              "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
        line = p.stdout.readline()
        assert "listening on http://127.0.0.1:" in line, line
        procs.append(p)
        urls.append(line.split("listening on ")[1].split()[0])
    yield urls, token
    for p in procs:
        p.terminate()
        p.wait(timeout=10)


def test_latency_measured_on_a_fleet_of_agents(fleet, tmp_path):
    urls, token = fleet
    out = tmp_path / "out"
    assert tune(MLP, "--data", DATA, "--trials", 3, "--no-refine", "--out", out, "--token-file", token,
                "--agent", urls[0], "--agent", urls[1]) == 0
    report = json.loads((out / "report.json").read_text())
    assert {t["latency_source"].split()[0] for t in report["trials"]} == {"agent"}
    assert all(t["latency_ms"] > 0 for t in report["trials"])
    # An unreachable agent fails before any work.
    assert tune(MLP, "--data", DATA, "--trials", 3, "--out", tmp_path / "x", "--token-file", token,
                "--agent", "http://127.0.0.1:1") == 2
    assert not (tmp_path / "x").exists()
