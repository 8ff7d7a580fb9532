"""Two `edgesparse tune worker` processes on one PostgreSQL study: nothing lost, nothing twice, and how
much faster than one.

    python benchmarks/tune_workers.py [--trials 24] [--model M --data D] [--target rpi4] [--out DIR]

A throwaway PostgreSQL cluster (tests/postgres.py: initdb in a temporary folder, loopback port,
removed afterwards) holds two studies of the same search: the first is run by ONE worker process,
the second by TWO started together. Each study is created here exactly as `edgesparse tune` creates
it (set-up record, budget, enqueued baselines), so the phases differ only in the number of workers.
Latency is the roofline estimate (no device): a trial's cost is the proxy build itself.

Per phase: trials by state (COMPLETE must be exactly N; RUNNING/WAITING must be 0; PRUNED are the
"over budget" asks of the last trials), COMPLETE trials per distinct parameter set (a set twice that
is not a lease retry is a duplicate), which worker ran each, and throughput two ways: trials per
minute from the first trial's start to the last trial's end (the work), and over the processes'
wall time (with each worker's start-up: importing TensorFlow and planning the builds).

The host is shared: the ratio is bounded by the free cores, so the load average is recorded at the
start and end of each phase. Each worker runs TensorFlow single-threaded.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, SAMPLES, SAMPLE_DATA, load_average, machine_info, machine_lines  # noqa: E402

sys.path.insert(0, str(ROOT / "tests"))
import postgres  # noqa: E402  (tests/postgres.py: the throwaway cluster the tests use)


def child_env() -> dict:
    # One core per worker: TensorFlow AND the BLAS behind numpy (the reconstruction's least
    # squares). With BLAS free to thread, one worker already takes both cores of a 2-core host and
    # a second worker has nothing left to add (measured: 1.01x).
    single = {k: "1" for k in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS",
                               "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    return {**os.environ, "PYTHONPATH": str(ROOT), **single}


def create_study(base, url: str, name: str, model: Path, target: str, data: Path, trials: int,
                 sampler: str = "tpe"):
    """What `edgesparse tune` does before it works: the set-up record, the budget, the baselines."""
    from edgesparse.search import session
    from edgesparse.search import study as studies
    from edgesparse.search import tune as search

    settings = search.TuneSettings(trials=trials, sampler=sampler)   # the workers read it from the study
    storage = studies.storage_url(url, Path("."))
    study = session.open_for(base, settings, storage, name, data, session.setup_attrs(model, target, data, settings))
    study.set_user_attr("budget", trials)
    search.enqueue_baselines(study, search.baseline_points(base.space, session._default_keep(base.default_recipe)))
    return storage


def phase(base, url: str, workers: int, model: Path, target: str, data: Path, trials: int, out: Path,
          sampler: str = "tpe") -> dict:
    import optuna

    name = f"workers-{workers}"
    storage = create_study(base, url, name, model, target, data, trials, sampler)
    load_start = load_average()
    started = time.monotonic()
    procs = []
    for i in range(workers):
        log = open(out / f"{name}-{i}.log", "w")
        procs.append((subprocess.Popen([sys.executable, "-m", "edgesparse.cli", "tune", "worker", "--storage", url,
                                        "--study", name], stdout=log, stderr=subprocess.STDOUT, env=child_env()), log))
    codes = []
    for p, log in procs:
        codes.append(p.wait(timeout=3600))
        log.close()
    wall_s = time.monotonic() - started
    load_end = load_average()
    study = optuna.load_study(study_name=name, storage=storage)
    trials_all = study.get_trials(deepcopy=False)
    states = collections.Counter(t.state.name for t in trials_all)
    done = [t for t in trials_all if t.state == optuna.trial.TrialState.COMPLETE]
    by_point = collections.defaultdict(list)
    for t in done:
        if "retry_of" not in t.user_attrs:
            by_point[json.dumps(t.user_attrs.get("point", t.params), sort_keys=True)].append(t)
    duplicates = {k: v for k, v in by_point.items() if len(v) > 1}
    per_worker = collections.Counter(t.user_attrs.get("worker") for t in done)
    first = min(t.datetime_start for t in done)
    last = max(t.datetime_complete for t in done)
    work_s = (last - first).total_seconds()
    return {"workers": workers, "exit_codes": codes, "states": dict(states), "completed": len(done),
            "distinct_points": len(by_point), "duplicates": sum(len(v) - 1 for v in duplicates.values()),
            "duplicated_trials": [{"point": json.loads(k), "trials": [[t.number, t.user_attrs.get("worker")] for t in v]}
                                  for k, v in duplicates.items()],
            "retries": sum("retry_of" in t.user_attrs for t in done),
            "numbers_unique": len({t.number for t in trials_all}) == len(trials_all),
            "lost": trials - len(done) + states.get("RUNNING", 0) + states.get("WAITING", 0),
            "per_worker": dict(per_worker), "work_s": round(work_s, 1), "wall_s": round(wall_s, 1),
            "trials_per_min_work": round(60 * len(done) / work_s, 2), "trials_per_min_wall": round(60 * len(done) / wall_s, 2),
            "load_start": load_start, "load_end": load_end}


def run(model: Path, data: Path, target: str, trials: int, out: Path, sampler: str = "tpe") -> dict:
    from edgesparse.search.session import prepare

    out.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    if not postgres.available():
        raise SystemExit("PostgreSQL is not installed (apt-get install -y postgresql)")
    base = prepare(model, target, data, agents=[], token_file=None, local=False, max_accuracy_drop=1.0)
    with postgres.throwaway_cluster() as url:
        phases = []
        for n in (1, 2):
            print(f"[tune_workers] {n} worker(s), {trials} trials", file=sys.stderr, flush=True)
            phases.append(phase(base, url, n, model, target, data, trials, out, sampler))
            print(f"[tune_workers]   {phases[-1]}", file=sys.stderr, flush=True)
    machine["load_average_at_end"] = load_average()
    one, two = phases
    return {"machine": machine, "trials": trials, "model": str(model), "target": target, "sampler": sampler,
            "phases": phases,
            "ratio_work": round(two["trials_per_min_work"] / one["trials_per_min_work"], 2),
            "ratio_wall": round(two["trials_per_min_wall"] / one["trials_per_min_wall"], 2)}


def render(r: dict, command: str) -> str:
    lines = [f"Command: `{command}`", "", *machine_lines(r["machine"]),
             f"- load average at the end: {r['machine']['load_average_at_end']}", "",
             f"{r['trials']} proxy trials per study ({Path(r['model']).name}, target {r['target']}, roofline latency, "
             f"sampler {r.get('sampler', 'tpe')}), "
             "one throwaway PostgreSQL cluster on 127.0.0.1.", "",
             "| workers | COMPLETE | other states | distinct points | duplicates | lost | trials per worker | "
             "work s | trials/min (work) | wall s | trials/min (wall) | load start -> end |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in r["phases"]:
        other = ", ".join(f"{k} {v}" for k, v in sorted(p["states"].items()) if k != "COMPLETE") or "none"
        per = ", ".join(str(v) for v in sorted(p["per_worker"].values(), reverse=True))
        lines.append(f"| {p['workers']} | {p['completed']} | {other} | {p['distinct_points']} | {p['duplicates']} | "
                     f"{p['lost']} | {per} | {p['work_s']} | {p['trials_per_min_work']} | {p['wall_s']} | "
                     f"{p['trials_per_min_wall']} | {p['load_start']} -> {p['load_end']} |")
    two = r["phases"][1]
    kept = two["completed"] == r["trials"] and two["lost"] == 0 and two["numbers_unique"]
    lines += ["", f"- 2 workers: {'no trial lost' if kept else 'TRIALS LOST'} ({two['completed']} of {r['trials']} "
              f"COMPLETE, none left running), {two['duplicates'] or 'no'} point(s) evaluated twice outside lease "
              f"retries{'' if two['duplicates'] else ': no duplicated trial'} (exit codes {two['exit_codes']}, "
              f"{two['retries']} lease retries)."]
    for d in two["duplicated_trials"]:
        lines.append("  - the same point in trials " + ", ".join(f"{n} ({w})" for n, w in d["trials"]))
    lines += [
              f"- throughput, 2 workers / 1 worker: {r['ratio_work']}x over the work, {r['ratio_wall']}x over the wall "
              f"time with start-up; goal >= 1.6x: {'MET' if r['ratio_work'] >= 1.6 else 'NOT met'} "
              "(bounded by the free cores of this shared 2-core host: see the load averages)."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, default=SAMPLES / "digits_cnn.keras")
    p.add_argument("--data", type=Path, default=SAMPLE_DATA)
    p.add_argument("--target", default="rpi4")
    p.add_argument("--trials", type=int, default=24)
    p.add_argument("--sampler", default="tpe", help="the study's sampler (edgesparse tune --sampler)")
    p.add_argument("--out", type=Path, default=ROOT / "out" / "bench-tune-workers")
    a = p.parse_args(argv)
    command = ("python benchmarks/tune_workers.py " + " ".join(sys.argv[1:] if argv is None else argv)).strip()
    r = run(a.model.resolve(), a.data.resolve(), a.target, a.trials, a.out, a.sampler)
    (a.out / "tune_workers.json").write_text(json.dumps(r, indent=1, default=str) + "\n")
    text = render(r, command)
    (a.out / "tune_workers.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
