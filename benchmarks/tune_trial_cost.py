"""What one `edgesparse tune` proxy trial costs, part by part, and what the prune pass's
calibration samples (the reconstruction's rows) do to its seconds and to the accuracy it measures.

The same fixed points (the uniform keeps 0.3..1.0 and `--random` seeded random points of the space)
are built as proxy trials (search/trials.py `run_trial`'s plan, int8, LiteRT accuracy) at each
`--samples` count; the first trial of the plan is a warm-up and is not timed (it uses the loaded
model and traces every function once). Reported: seconds per trial (median), the artifact's
accuracy per point against the first count's, and the (accuracy, MACs) hypervolume of the points.
`--profile` adds a cProfile breakdown of one trial by part.

    python benchmarks/tune_trial_cost.py [--model cnn|residual] [--samples 512,256,128,64] [--profile]
"""
from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import time
from pathlib import Path

from common import ROOT, SAMPLE_DATA, load_average, machine_info, machine_lines  # noqa: E402  (puts ROOT on sys.path)

from edgesparse.search import tune as search  # noqa: E402
from edgesparse.search.session import prepare  # noqa: E402
from edgesparse.search.trials import overrides  # noqa: E402

# cProfile entries (file suffix, function) that name the parts of a proxy trial.
PARTS = {
    "prune (whole pass)": ("passes/prune/procedure.py", "prune"),
    "reconstruction (least squares)": ("passes/prune/reconstruct.py", "refit_layers"),
    "TFLite conversion": ("convert/tflite.py", "to_tflite"),
    "model clones": ("graph/functional.py", "clone_with_weights"),
    "Keras accuracy records": ("train/metrics.py", "keras_metrics"),
    "verify in LiteRT": ("passes/verify.py", "run"),
    "whole trial": ("edgesparse/build_api.py", "run_plan"),
}


def model_path(name: str, out: Path) -> Path:
    if name == "cnn":
        return ROOT / "sample_models" / "digits_cnn.keras"
    from tune_front import residual_model

    return residual_model(out / "digits_residual.keras")


def points(space, n_random: int, seed: int = 0) -> list[dict]:
    import numpy as np

    from tune_front import _Fixed

    pts = [space.sample(_Fixed(space.clip(space.uniform(k)))) for k in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)]
    rng = np.random.default_rng(seed)
    for _ in range(n_random):
        raw = {k.name: float(rng.uniform(k.low, k.high)) for k in space.knobs if k.kind == "float"}
        pts.append(space.sample(_Fixed(raw)))
    return pts


def trial(base, point: dict, samples: int) -> tuple[dict, float]:
    from edgesparse.build_api import run_plan

    o = overrides(base, point)
    o["prune"] = {**o["prune"], "calibration_samples": samples}
    started, cpu = time.perf_counter(), time.process_time()
    attempt = run_plan(base.plans["proxy"], overrides=o)
    # CPU seconds beside the wall: on a shared machine the wall mostly says how loaded it was.
    return ({"accuracy": attempt.accuracy, "macs": attempt.macs, "cpu_seconds": round(time.process_time() - cpu, 3)},
            time.perf_counter() - started)


def profile_parts(base, point: dict, samples: int) -> dict[str, float]:
    prof = cProfile.Profile()
    prof.enable()
    trial(base, point, samples)
    prof.disable()
    stats = pstats.Stats(prof).stats
    out = {}
    for label, (suffix, fn) in PARTS.items():
        out[label] = round(sum(v[3] for (f, _, name), v in stats.items()
                               if f.endswith(suffix) and name == fn), 2)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="cnn", choices=("cnn", "residual"))
    ap.add_argument("--samples", default="512,256,128,64")
    ap.add_argument("--random", type=int, default=4, help="seeded random points besides the uniform ones")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--label", default="run", help="names the JSON (e.g. before / after a change)")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "bench-tune")
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    info = machine_info()
    base = prepare(model_path(a.model, a.out), "rpi4", SAMPLE_DATA, agents=[], token_file=None, local=False)
    pts = points(base.space, a.random)
    counts = [int(s) for s in a.samples.split(",")]
    trial(base, pts[0], counts[0])                      # warm-up, not timed
    result = {"machine": info, "model": a.model, "points": pts, "runs": {}}
    if a.profile:
        result["profile"] = profile_parts(base, pts[2], counts[0])
        print(json.dumps(result["profile"], indent=1), file=sys.stderr, flush=True)
    # Interleaved: every point is built at every count before the next point, the order of the
    # counts rotating, so a change of the shared machine's load falls on all counts alike.
    result["runs"] = {n: [] for n in counts}
    for i, p in enumerate(pts):
        for n in counts[i % len(counts):] + counts[:i % len(counts)]:
            r, s = trial(base, p, n)
            result["runs"][n].append({**r, "seconds": round(s, 2)})
        print(f"{a.model} point {i + 1}/{len(pts)}; load {load_average()}", file=sys.stderr, flush=True)
    result["load_end"] = load_average()
    (a.out / f"trial_cost-{a.model}-{a.label}.json").write_text(json.dumps(result, indent=1, default=str))
    print(render(result))
    return 0


def render(r: dict) -> str:
    import edgesparse

    lines = machine_lines(r["machine"]) + [f"- load average at the end: {r['load_end']}",
                                           f"- code: {Path(edgesparse.__file__).parent}", ""]
    if "profile" in r:
        lines += ["| part of one proxy trial (cProfile, cumulative s) | s |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in r["profile"].items()] + [""]
    runs = r["runs"]
    first = next(iter(runs.values()))
    macs = [p["macs"] for p in first]
    ref = (min(p["accuracy"] for rows in runs.values() for p in rows) - 1.0, max(macs) * 1.0001)
    lines += [f"| calibration samples | median s per trial (wall) | median CPU s per trial | accuracy change vs "
              f"{next(iter(runs))} (mean / worst, points) | points changed | HV (acc, MACs) of the points |",
              "|---|---|---|---|---|---|"]
    for n, rows in runs.items():
        secs = sorted(p["seconds"] for p in rows)
        cpu = sorted(p["cpu_seconds"] for p in rows)
        diffs = [p["accuracy"] - q["accuracy"] for p, q in zip(rows, first)]
        hv = search.hypervolume(rows, ref)
        lines.append(f"| {n} | {secs[len(secs) // 2]:.2f} | {cpu[len(cpu) // 2]:.2f} | {sum(diffs) / len(diffs):+.3f} / "
                     f"{min(diffs):+.3f} | {sum(abs(d) > 1e-9 for d in diffs)} of {len(diffs)} | {hv:.4g} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
