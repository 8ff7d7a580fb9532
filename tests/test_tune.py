"""edgesparse tune on real trials: SQLite by default, a real PostgreSQL server shared by two worker
processes (one of them killed mid-trial), real agents on 127.0.0.1 as the device fleet, and the
bad inputs. Trials prune the sample MLP with reconstruction, quantize to int8, export TFLite and
verify in LiteRT: about a second each."""
from __future__ import annotations

import importlib.util
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


def test_tune_sqlite_front_baselines_and_report(tmp_path, capsys):
    from edgesparse.report.markdown import sig

    out = tmp_path / "out"
    assert tune(MLP, "--data", DATA, "--trials", 8, "--no-refine", "--out", out, "--seed", 1) == 0
    printed = capsys.readouterr().err        # tables go to stderr (edgesparse/console.py)
    report = json.loads((out / "report.json").read_text())
    assert len(report["trials"]) == 8
    # Baselines were enqueued and measured: no compression first, then uniform keeps.
    kinds = sorted(b["baseline"] for b in report["baselines"])
    assert kinds[0] == "none" and kinds.count("uniform") >= 2
    none = next(b for b in report["baselines"] if b["baseline"] == "none")
    assert all(v == 1.0 for k, v in none["params"].items() if k.startswith("keep:"))
    # A latency of some µs is printed with its digits, not rounded to 0.02 ms (or 0.00).
    assert sig(none["latency_ms"]) in printed
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
    # People read it: only what differs from each pass's defaults (it dumped every field,
    # `blocks: 0` among them, beside the point's choices).
    written = (out / "picked-recipe.yaml").read_text()
    assert "per_group" in written and "blocks: 0" not in written and "calibration_samples" not in written
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
    assert "cannot open the study storage" in err and "s3cret-pw" not in err and "postgresql://me:***@127.0.0.1:1/db" in err
    assert not out.exists()
    # Constraints nothing meets: say so and show the closest.
    assert tune(MLP, "--data", DATA, "--trials", 3, "--no-refine", "--max-bytes", 10, "--out", out) == 2
    err = capsys.readouterr().err
    assert "no trial meets --max-bytes 10 (the closest trial is" in err and "closest: trial" in err
    # With --pick, the constraint no trial meets is named (it used to blame the accuracy budget
    # whatever was unmet), and the report does not round a µs-scale limit to 0.00.
    assert tune(MLP, "--data", DATA, "--trials", 2, "--no-refine", "--max-latency-ms", 0.000001,
                "--pick", "fastest-within-budget", "--storage", tmp_path / "p.db",
                "--out", tmp_path / "p") == 2
    err = capsys.readouterr().err
    assert "--max-latency-ms 1e-06 (the closest trial is" in err and "accuracy budget" not in err
    assert "max_latency_ms = 1e-06" in (tmp_path / "p" / "report.md").read_text()
    assert not (tmp_path / "p" / "picked-recipe.yaml").exists()
    # A study that exists for another model is refused, not mixed.
    db = tmp_path / "s.db"
    assert tune(MLP, "--data", DATA, "--trials", 1, "--no-refine", "--storage", db, "--study", "x",
                "--out", tmp_path / "a") == 0
    assert tune(CNN, "--data", DATA, "--trials", 1, "--no-refine", "--storage", db, "--study", "x",
                "--out", tmp_path / "b") == 2
    assert "was started for another search (differs in: model, space)" in capsys.readouterr().err
    # A blank study name, an accuracy drop above 100 points, a file that is not a study.
    assert tune(MLP, "--data", DATA, "--study", "  ", "--out", tmp_path / "f") == 2
    assert "--study is blank" in capsys.readouterr().err
    assert tune(MLP, "--data", DATA, "--max-accuracy-drop", 150, "--out", tmp_path / "f") == 2
    assert "at most 100 points" in capsys.readouterr().err
    (tmp_path / "junk.db").write_bytes(b"not a database" * 100)
    assert tune(MLP, "--data", DATA, "--storage", tmp_path / "junk.db", "--out", tmp_path / "f") == 2
    err = capsys.readouterr().err
    assert "a study file `edgesparse tune` wrote" in err and "server" not in err
    assert not (tmp_path / "f").exists()
    # Unlabelled data, an unknown pick rule, a worker without a study.
    assert tune(MLP, "--out", tmp_path / "c") == 2
    assert tune(MLP, "--data", DATA, "--pick", "best", "--out", tmp_path / "d") == 2
    assert tune("worker") == 2
    assert not (tmp_path / "c").exists() and not (tmp_path / "d").exists()
    capsys.readouterr()
    # A bad constraint names the flag (not the temporary recipe it would have been written to),
    # and a storage scheme we ship no driver for is refused before the model is loaded.
    for flag, value in (("--max-accuracy-drop", -1), ("--max-latency-ms", 0), ("--max-bytes", -5)):
        assert tune(MLP, "--data", DATA, flag, value, "--out", tmp_path / "e") == 2
        err = capsys.readouterr().err
        assert f"{flag} {value}: must be" in err and ".yaml" not in err
    assert tune(MLP, "--data", DATA, "--storage", "mysql://me:pw@db/x", "--out", tmp_path / "e") == 2
    err = capsys.readouterr().err
    assert "unsupported scheme" in err and "postgresql://" in err and ":pw@" not in err
    assert not (tmp_path / "e").exists()


def test_a_storage_error_hides_the_password_but_keeps_the_message_readable():
    from edgesparse.errors import UserError
    from edgesparse.search import study

    # A one-letter password must not be cut out of every word of the driver's message.
    with pytest.raises(UserError) as e:
        study.open_storage("postgresql+psycopg2://me:p@127.0.0.1:1/db")
    assert "psycopg2.OperationalError" in str(e.value) and "me:***@127.0.0.1:1/db" in str(e.value)
    # Where a driver does echo it, as a token or URL-encoded, it is replaced.
    text = study._first_line(Exception("auth failed: password=s3cr%t! for me:s3cr%t!@db"), "postgresql://me:s3cr%25t!@db/x")
    assert "s3cr" not in text and text.count("***") == 2


def test_a_password_is_hidden_wherever_the_storage_string_holds_it(tmp_path, capsys, monkeypatch):
    from edgesparse.errors import UserError
    from edgesparse.search import study

    # In the query string, and with an unescaped @ (refused before the driver splits it wrongly
    # and names the password's tail as the host).
    assert study.redact("postgresql://me@db/x?password=hunter2&sslmode=require") == \
        "postgresql://me@db/x?password=***&sslmode=require"
    assert "hunter" not in study.redact("postgresql://me:hun@ter2@db/x")
    with pytest.raises(UserError) as e:
        study.storage_url("postgresql://me:hun@ter2@db:5432/x", tmp_path)
    assert "%40" in str(e.value) and "hun" not in str(e.value) and "ter2" not in str(e.value)
    # A libpq keyword string is not a SQLite file name: nothing is created, nothing is echoed.
    monkeypatch.chdir(tmp_path)
    assert tune(MLP, "--data", DATA, "--storage", "host=db user=me password=hunter2 dbname=x",
                "--out", tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert "keyword string" in err and "postgresql://" in err and "hunter2" not in err
    assert list(tmp_path.iterdir()) == []


def test_tune_leaves_no_scratch_folder_and_rank_alone_is_refused_by_name(tmp_path, capsys, monkeypatch):
    """Every run left an edgesparse-tune-* folder in the temp dir; --knobs rank alone failed on
    tune's own temporary recipe ("/tmp/edgesparse-tune-.../proxy.yaml: passes[0] (prune) ...")."""
    import tempfile

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    assert tune(MLP, "--data", DATA, "--trials", 1, "--no-refine", "--storage", tmp_path / "s.db",
                "--out", tmp_path / "o") == 0
    assert tune(MLP, "--data", DATA, "--knobs", "rank", "--trials", 1, "--storage", tmp_path / "r.db",
                "--out", tmp_path / "r") == 2
    err = capsys.readouterr().err
    assert "--knobs rank: tune searches widths first" in err and "use --knobs keep,rank" in err
    assert "proxy.yaml" not in err
    assert [p.name for p in scratch.iterdir() if p.name.startswith("edgesparse-tune-")] == []


def test_a_worker_does_not_leave_a_study_file_behind_and_a_missing_folder_is_named(tmp_path, capsys):
    assert tune("worker", "--storage", tmp_path / "new.db", "--study", "s") == 2
    assert "does not exist" in capsys.readouterr().err and not (tmp_path / "new.db").exists()
    assert tune(MLP, "--data", DATA, "--storage", tmp_path / "no" / "x.db", "--out", tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert f"the folder {tmp_path / 'no'} does not exist" in err
    assert list(tmp_path.iterdir()) == []


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


@pytest.mark.parametrize("sampler", ["random", "nsga2", "tpe", pytest.param(
    "gp", marks=pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                                   reason="--sampler gp needs torch (the torch extra); not in .[dev]"))])
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
    # Enough trials that the coordinator is still working when the second worker has imported
    # TensorFlow and prepared the model: with 10, an idle host finished the study first (~1 s per
    # MLP trial) and the worker never ran one.
    name, n = "shared", 30
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


# ----------------------------------------------------------------------------- knobs and the table


def residual_digits(path: Path) -> Path:
    """A small residual CNN trained briefly on digits: two removable blocks (Add with identity)."""
    import numpy as np

    from edgesparse._tf import keras

    keras.utils.set_random_seed(0)
    L = keras.layers
    i = keras.Input((8, 8, 1))
    x = L.Conv2D(16, 3, padding="same", activation="relu", name="stem")(i)
    for b in range(2):
        y = L.Conv2D(16, 3, padding="same", activation="relu", name=f"block{b}_a")(x)
        y = L.Conv2D(16, 3, padding="same", name=f"block{b}_b")(y)
        x = L.ReLU(name=f"block{b}_relu")(L.Add(name=f"block{b}_add")([x, y]))
    x = L.GlobalAveragePooling2D()(x)
    model = keras.Model(i, L.Dense(10, activation="softmax", name="probs")(x))
    d = np.load(DATA)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(d["x_train"], d["y_train"], epochs=4, batch_size=64, verbose=0)
    model.save(path)
    return path


def _base(model: Path, **kw):
    from edgesparse.search.session import prepare

    return prepare(model, "rpi4", DATA, agents=kw.pop("agents", []), token_file=kw.pop("token_file", None),
                   local=kw.pop("local", False), **kw)


def test_depth_knobs_drop_named_blocks_in_the_artifact(tmp_path):
    from edgesparse.runtime.tflite_file import read_tflite
    from edgesparse.search.trials import run_trial

    model = residual_digits(tmp_path / "res.keras")
    base = _base(model)
    space = base.space
    assert space.block_names == ["block0_add", "block1_add"]
    assert {k.name: k.choices for k in space.knobs if k.name.startswith("depth:")} == {
        "depth:block0_add": ("keep", "drop"), "depth:block1_add": ("keep", "drop")}
    # A baseline keeps every block.
    assert all(v == "keep" for k, v in space.uniform(0.5).items() if k.startswith("depth:"))
    point = {**space.uniform(1.0), "depth:block1_add": "drop"}
    # block1_b produces into the stem's group (tied by the Adds): the group lives on by another name,
    # and block1_a's own group is gone with its branch.
    assert "block1_a" not in space.per_group(point) and "stem" in space.per_group(point)
    kept = run_trial(base, space.uniform(1.0), "proxy", keep_dir=tmp_path / "kept")
    dropped = run_trial(base, point, "proxy", keep_dir=tmp_path / "dropped")
    assert dropped.removed_blocks == ["block1_add"] and kept.removed_blocks == []
    assert dropped.macs < kept.macs

    def ops(folder):
        tfl = next(folder.rglob("*.tflite"))
        return [op.name for op in read_tflite(tfl).ops]
    k, d = ops(tmp_path / "kept"), ops(tmp_path / "dropped")
    assert k.count("ADD") == 2 and d.count("ADD") == 1
    assert k.count("CONV_2D") - d.count("CONV_2D") == 2
    # The full recipe (what --pick writes) asks prune for the same blocks by name.
    from edgesparse.search.trials import full_recipe

    prune = next(p for p in full_recipe(base.default_recipe, point, space, 1.0)["passes"] if p["pass"] == "prune")
    assert prune["blocks"] == ["block1_add"]
    # A model without residual blocks gets no depth knob, and its space keeps its fingerprint.
    mlp = _base(MLP).space
    assert not mlp.block_names and mlp.fingerprint() == _base(MLP, knobs=("keep", "precision")).space.fingerprint()


def test_rank_knobs_are_opt_in_and_factorise(tmp_path):
    from edgesparse.search.trials import run_trial

    assert not _base(CNN).space.rank_names                      # off by default
    base = _base(CNN, knobs=("keep", "rank"))
    space = base.space
    assert space.rank_names == ["conv2", "fc1", "probs"]         # conv1 reads 1 channel: nothing to gain
    point = {**space.uniform(0.5), "rank:fc1": "0.5"}
    # fc1 reads conv2's 32 kept channels at 4 positions and writes 32: full rank 32, half = 16
    # (a multiple of rpi4's SIMD width 4).
    assert space.ranks(point) == {"fc1": 16}
    result = run_trial(base, point, "proxy")
    assert result.ranks == {"fc1": [16]}
    plain = run_trial(base, space.uniform(0.5), "proxy")
    assert plain.ranks == {} and result.macs < plain.macs
    assert result.accuracy is not None and result.accuracy > 50
    with pytest.raises(Exception, match="--knobs"):
        _base(CNN, knobs=("keep", "width"))


def test_latency_table_covers_the_space_and_is_what_trials_report(fleet, tmp_path):
    """Measured on a real agent on 127.0.0.1: every layer at every width the space can produce;
    a trial's latency is the table's sum; the front is measured again on the agent."""
    from edgesparse.profile.layer_table import key

    urls, token = fleet
    target = tmp_path / "wide.yaml"       # SIMD width 128: widths 128 and 256 per group, a small table
    import yaml

    from edgesparse.targets import load_target
    spec = yaml.safe_load((ROOT / "targets" / "rpi4.yaml").read_text())
    spec.update(name="wide", simd_width=128)
    target.write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    assert load_target(str(target)).simd_width == 128
    assert tune(MLP, "--data", DATA, "--target", target, "--trials", 3, "--no-refine", "--out", out,
                "--knobs", "keep", "--latency-table", "--agent", urls[0], "--token-file", token) == 0
    report = json.loads((out / "report.json").read_text())
    table = report["latency_table"]
    assert table["device"] == f"agent {urls[0]}"
    entries = table["entries"]["int8"]
    # fc1: 64 inputs x {128, 256} outputs; fc2: {128, 256} x {128, 256}; probs: {128, 256} x 10.
    assert sorted(entries) == ["fc1", "fc2", "probs"]
    assert sorted(entries["fc1"]) == ["64x128", "64x256"] and len(entries["fc2"]) == 4
    assert sorted(entries["probs"]) == ["128x10", "256x10"]
    assert all(v >= 0 for row in entries.values() for v in row.values())
    for t in report["trials"]:
        assert t["latency_source"] == f"table (agent {urls[0]})"
        w = t["widths"]
        expect = table["fixed_ms"]["int8"] + entries["fc1"][key(64, w["fc1"])] + \
            entries["fc2"][key(w["fc1"], w["fc2"])] + entries["probs"][key(w["fc2"], 10)]
        assert t["latency_ms"] == pytest.approx(expect, abs=1e-3)
    # The uncompressed point is exact by construction; the front was measured on the agent.
    assert report["table_check"] and len(report["table_check"]) == len(report["proxy_front"])
    assert all(c["measured_on"] == f"agent {urls[0]}" and c["measured_ms"] > 0 for c in report["table_check"])
    md = (out / "report.md").read_text()
    assert "## Latency table (agent" in md and "liked widths" in md
    # Without a device there is nothing to measure the table on.
    assert tune(MLP, "--data", DATA, "--trials", 2, "--out", tmp_path / "x", "--latency-table") == 2
    assert not (tmp_path / "x").exists()


def test_the_report_names_every_latency_source_not_only_the_first_trials():
    from edgesparse.search.session import latency_sources

    rows = [{"latency_source": "agent http://a"}] * 3 + [{"latency_source": "agent http://b"}]
    assert latency_sources(rows) == "agent http://a (3 trials); agent http://b (1 trial)"
    assert latency_sources(rows[:2]) == "agent http://a"
    assert latency_sources([]) is None


def test_gp_sampler_models_a_constrained_study_of_widths_precision_and_depth(tmp_path):
    """`--sampler gp` end to end: after GP_STARTUP trials the Gaussian process (not its random
    start-up, not TPE) chooses every knob, the categorical precision and depth ones included, and
    reads the accuracy constraint each trial sets."""
    pytest.importorskip("torch")
    from edgesparse.search.tune import GP_STARTUP

    model = residual_digits(tmp_path / "res.keras")
    out, trials = tmp_path / "gp", GP_STARTUP + 3
    assert tune(model, "--data", DATA, "--sampler", "gp", "--trials", trials, "--max-accuracy-drop", 2,
                "--no-refine", "--out", out, "--seed", 0) == 0
    study = optuna.load_study(study_name=optuna.get_all_study_names(f"sqlite:///{tmp_path / 'gp.study.db'}")[0],
                              storage=f"sqlite:///{tmp_path / 'gp.study.db'}")
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == trials
    assert all("max_accuracy_drop" in t.constraints for t in done)
    # GPSampler stores what its model chose; TPE and random store nothing under this key.
    modelled = [t for t in done if any(k.startswith("gp:relative_params") for k in t.system_attrs)]
    assert [t.number for t in modelled] == list(range(GP_STARTUP, trials))
    chosen = json.loads("".join(v for k, v in sorted(modelled[-1].system_attrs.items())
                                if k.startswith("gp:relative_params")))
    assert set(chosen) == set(modelled[-1].params)
    assert {"precision", "depth:block0_add", "depth:block1_add"} <= set(chosen)
    assert json.loads((out / "report.json").read_text())["settings"]["sampler"] == "gp"


def test_gp_without_torch_is_one_line_naming_the_extra(tmp_path):
    """torch is not in the search extra: without it `--sampler gp` says what to install."""
    code = ("import sys; sys.modules['torch'] = None\n"
            "from edgesparse.errors import UserError\n"
            "from edgesparse.search.tune import TuneSettings, make_sampler\n"
            "try:\n    make_sampler(TuneSettings(sampler='gp'))\nexcept UserError as e:\n    print(e)\n")
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert 'pip install "edgesparse[torch]"' in done.stdout and "--sampler gp" in done.stdout
