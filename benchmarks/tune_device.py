"""The tuned artifact against the default recipe's and the TF Model Optimization guide's, device in the loop.

    python benchmarks/tune_device.py [--trials 30] [--model M --data D] [--target rpi4] [--out DIR] [--quick]

Steps, all in this one run:
  1. start a real agent (`python -m edgesparse.profile.agent`) on 127.0.0.1 with a fresh token;
  2. `edgesparse tune MODEL --agent URL --pick fastest-within-budget --max-accuracy-drop 1`
     (every trial's latency p50 measured on the agent; the Pareto set fine-tuned and measured again);
  3. `edgesparse build MODEL --recipe picked-recipe.yaml` (the picked point rebuilt from its recipe);
  4. the default recipe's artifact and the guide's (80% magnitude sparsity + int8), built with
     benchmarks/compare.py's own functions (imported, not copied), at its equal training budget;
  5. the three int8 .tflite timed in ONE interleaved LiteRT run at 1 thread (benchmarks/common.py),
     then each profiled on the agent, alternating, a few rounds (the agent's own p50).

Table: accuracy in LiteRT on the validation split, MACs of the Keras model behind each artifact,
.tflite bytes, p50 in both measurements, and the ratios to the tfmot and the default artifact.
The issue's goal is picked <= 0.5x the tfmot artifact's p50 at accuracy within 1 point of it;
the verdict says whether that was met, whatever the ratios are.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (ROOT, SAMPLES, SAMPLE_DATA, interleaved_latency, machine_info, machine_lines,  # noqa: E402
                    round_ratio, runtime_accuracy)
from compare import Settings, edgesparse_variant, guide_variants, recipe_training_epochs  # noqa: E402

KEYS = ("picked", "default", "tfmot")
TITLES = {"picked": "edgesparse tune, picked (fastest within 1 point)",
          "default": "edgesparse default recipe", "tfmot": "tfmot guide: 80% sparse + int8"}


def child_env() -> dict:
    """Children import this source tree and run single-threaded TF (the host is shared)."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}


def start_agent(token: Path) -> tuple[subprocess.Popen, str]:
    p = subprocess.Popen([sys.executable, "-m", "edgesparse.profile.agent", "--token-file", str(token), "--port", "0"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=child_env())
    line = p.stdout.readline()
    if "listening on http://127.0.0.1:" not in line:
        p.kill()
        raise RuntimeError(f"the agent did not start: {line!r}")
    return p, line.split("listening on ")[1].split()[0]


def cli(args: list, log: Path) -> None:
    started = time.perf_counter()
    with open(log, "w") as f:
        rc = subprocess.run([sys.executable, "-m", "edgesparse.cli", *map(str, args)], stdout=f,
                            stderr=subprocess.STDOUT, env=child_env()).returncode
    if rc != 0:
        raise RuntimeError(f"edgesparse {args[0]} failed (exit {rc}); see {log}:\n" + log.read_text()[-3000:])
    print(f"  edgesparse {args[0]}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)


def agent_latency(url: str, token: str, paths: dict[str, Path], rounds: int) -> dict[str, dict]:
    """Each artifact profiled on the agent (1 thread), alternating, `rounds` times: median of the
    agent's p50s, and the per-round ratios to tfmot and default."""
    from edgesparse.profile import client

    p50 = {k: [] for k in paths}
    names = list(paths)
    for rnd in range(rounds):
        shift = rnd % len(names)
        for k in names[shift:] + names[:shift]:
            r = client.profile_remote(url, token, paths[k], busy_retries=5, runs=200, warmup=20,
                                      min_seconds=1.0, threads=1, seed=0)
            p50[k].append(float(r["timing"]["p50_ms"]))
    out = {}
    for k, v in p50.items():
        a = np.asarray(v)
        out[k] = {"p50_ms": round(float(np.median(a)), 5), "rounds": v,
                  "ratio_to": {ref: round(float(np.median(a / np.asarray(p50[ref]))), 3) for ref in ("tfmot", "default")}}
    return out


def time_here(paths: dict[str, Path], sample: np.ndarray, rounds: int, block_ms: float) -> dict[str, dict]:
    """The three artifacts in ONE interleaved LiteRT run at 1 thread, each with its p50 ratios to
    the tfmot and the default artifact (whole-run and per round)."""
    lat = interleaved_latency(paths, "litert", 1, sample, rounds, block_ms)
    return {k: {**L.summary(), "ratio_to": {ref: {"p50": round(L.p50_us / lat[ref].p50_us, 3),
                                                   "rounds_p25_p50_p75": [round(x, 3) for x in sorted(round_ratio(L, lat[ref]))]}
                                             for ref in ("tfmot", "default")}}
            for k, L in lat.items()}


def run(model_path: Path, data_path: Path, target_name: str, trials: int, out: Path, quick: bool,
        command: str, reuse: bool = False) -> dict:
    from edgesparse.data import load_data
    from edgesparse.frontends.keras import load_model
    from edgesparse.graph.stats import count_macs
    from edgesparse.targets import load_target

    machine = machine_info()
    out.mkdir(parents=True, exist_ok=True)
    log = lambda msg: print(f"[tune_device] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    token = out / "token"
    token.write_text(secrets.token_urlsafe(32) + "\n")
    token.chmod(0o600)
    agent, url = start_agent(token)
    try:
        # 2. the search, latency measured on the agent
        tune_out, study = out / "tune", out / "tune.study.db"
        if not (reuse and (tune_out / "report.json").exists()):
            for stale in (study, out / "tune.study.db-journal", tune_out / "report.json", out / "picked" / "report.json"):
                stale.unlink(missing_ok=True)
            log(f"agent at {url}; tune: {trials} trials")
            started = time.perf_counter()
            cli(["tune", model_path, "--target", target_name, "--data", data_path, "--agent", url, "--token-file",
                 token, "--trials", trials, "--pick", "fastest-within-budget", "--max-accuracy-drop", 1,
                 "--storage", study, "--out", tune_out], out / "tune.log")
            (out / "tune.seconds").write_text(f"{time.perf_counter() - started:.1f}\n")
        tune_s = float((out / "tune.seconds").read_text())
        tuned = json.loads((tune_out / "report.json").read_text())
        # 3. the picked recipe, built by `edgesparse build --recipe`
        if not (reuse and (out / "picked" / "report.json").exists()):
            log("build --recipe picked-recipe.yaml")
            cli(["build", model_path, "--target", target_name, "--data", data_path,
                 "--recipe", tune_out / "picked-recipe.yaml", "--out", out / "picked"], out / "build-picked.log")
        built = json.loads((out / "picked" / "report.json").read_text())
        picked_tflite = next(out / "picked" / a["path"] for a in built["artifacts"]
                             if a["format"] == "tflite" and a["precision"] == "int8")
        # 4. the default recipe and the guide, with compare.py's code
        target = load_target(target_name)
        s = Settings(finetune_epochs=4 if quick else None)
        s.finetune_epochs = s.finetune_epochs or recipe_training_epochs(target, None)
        model, _ = load_model(model_path)
        shape, classes = tuple(int(d) for d in model.input_shape[1:]), int(model.output_shape[-1])
        data = load_data(data_path, shape, classes, seed=0)    # the split the builds use
        log("default recipe build")
        d = edgesparse_variant("d", model_path, data_path, target, None, out / "default", "int8")
        log(f"tfmot guide ({s.finetune_epochs} fine-tune epochs)")
        b, _c = guide_variants(model, data, s, out / "guide")
        paths = {"picked": picked_tflite, "default": d.tflite, "tfmot": b.tflite}
        facts = {
            "picked": {"macs": built["model"]["final"]["macs"], "trial": tuned["picked"]["number"],
                       "tune_accuracy": tuned["picked"]["accuracy"],
                       "tune_latency_ms": tuned["picked"]["latency_ms"], "widths": tuned["picked"].get("widths")},
            "default": {"macs": count_macs(d.model)},
            "tfmot": {"macs": count_macs(b.model), "kernel_sparsity": b.facts["kernel_sparsity"],
                      "epochs": b.facts["epochs"]}}
        for k, p in paths.items():
            facts[k].update(tflite=str(p), bytes=p.stat().st_size,
                            accuracy_litert=runtime_accuracy(p, data.x_val, data.y_val))
        # 5. one interleaved run here, then the agent
        rounds, block_ms = (8, 4.0) if quick else (40, 10.0)
        log(f"interleaved LiteRT latency, 1 thread, {rounds} rounds")
        load_before = os.getloadavg()
        local = time_here(paths, data.x_val[0], rounds, block_ms)
        log("agent latency")
        on_agent = agent_latency(url, token.read_text().strip(), paths, 3 if quick else 7)
    finally:
        agent.terminate()
        agent.wait(timeout=10)
    machine["load_average_at_end"] = machine_info()["load_average_1_5_15"]
    return {"command": command, "machine": machine, "trials": trials, "tune_seconds": round(tune_s, 1),
            "tune": {"reference_accuracy": tuned["reference_accuracy"], "latency_source": tuned["latency_source"],
                     "feasible_trials": tuned["feasible_trials"], "proxy_front": len(tuned["proxy_front"]),
                     "refined": len(tuned["refined"]), "full_front": len(tuned["full_front"])},
            "n_val": int(len(data.x_val)), "facts": facts, "litert_1_thread": local,
            "load_average_before_timing": [round(v, 2) for v in load_before],
            "agent_1_thread": on_agent, "verdict": verdict(facts, local, on_agent)}


def verdict(facts: dict, local: dict, on_agent: dict) -> list[str]:
    gap = facts["picked"]["accuracy_litert"] - facts["tfmot"]["accuracy_litert"]
    equal = abs(gap) <= 1.0 + 1e-9
    lines = [f"accuracy in LiteRT: picked {facts['picked']['accuracy_litert']}% vs tfmot "
             f"{facts['tfmot']['accuracy_litert']}% ({gap:+.2f} points): "
             f"{'within 1 point' if equal else 'NOT within 1 point'}"]
    for where, r in (("LiteRT here (interleaved)", local["picked"]["ratio_to"]["tfmot"]["p50"]),
                     ("on the agent", on_agent["picked"]["ratio_to"]["tfmot"])):
        met = r <= 0.5 and equal
        lines.append(f"{where}: picked/tfmot p50 = {r:.2f} -> goal <= 0.5x at equal accuracy "
                     f"{'MET' if met else 'NOT met'}")
    return lines


def render(r: dict) -> str:
    f, loc, ag = r["facts"], r["litert_1_thread"], r["agent_1_thread"]
    t = r["tune"]
    lines = [f"Command: `{r['command']}`", "", *machine_lines(r["machine"]),
             f"- load average before the timing: {r['load_average_before_timing']}; at the end: "
             f"{r['machine']['load_average_at_end']}", "",
             f"Tune: {r['trials']} proxy trials, latency from `{t['latency_source']}` (a local agent on this host), "
             f"{t['feasible_trials']} feasible; {t['refined']} Pareto points fine-tuned; {r['tune_seconds']} s in all. "
             f"Picked trial {f['picked']['trial']} (fastest fine-tuned point within 1 point of the imported "
             f"model's {t['reference_accuracy']}%). {r['n_val']} validation samples (one sample = "
             f"{100 / r['n_val']:.2f} points); tfmot: {f['tfmot']['epochs']} fine-tune epochs, kernel sparsity "
             f"{f['tfmot']['kernel_sparsity']:.2%}.", "",
             "| artifact (int8 .tflite) | LiteRT accuracy % | MACs | bytes | p50 µs here (p25-p75) | x tfmot | x default | p50 ms on agent | x tfmot | x default |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for k in KEYS:
        L, A = loc[k], ag[k]
        lines.append(f"| {TITLES[k]} | {f[k]['accuracy_litert']:.2f} | {f[k]['macs']:,} | {f[k]['bytes']:,} | "
                     f"{L['p50_us']:.1f} ({L['p25_us']:.1f}-{L['p75_us']:.1f}) | {L['ratio_to']['tfmot']['p50']:.2f} | "
                     f"{L['ratio_to']['default']['p50']:.2f} | {A['p50_ms']:.4f} | {A['ratio_to']['tfmot']:.2f} | "
                     f"{A['ratio_to']['default']:.2f} |")
    q = loc["picked"]["ratio_to"]["tfmot"]["rounds_p25_p50_p75"]
    lines += ["", f"Picked/tfmot per interleaved round (p25, p50, p75): {q}. Agent: median over "
              f"{len(ag['picked']['rounds'])} alternating profiles of 1 s each, 1 thread.", "", "Verdict:", ""]
    lines += [f"- {v}" for v in r["verdict"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, default=SAMPLES / "digits_cnn.keras")
    p.add_argument("--data", type=Path, default=SAMPLE_DATA)
    p.add_argument("--target", default="rpi4")
    p.add_argument("--trials", type=int, default=30)
    p.add_argument("--out", type=Path, default=ROOT / "out" / "bench-tune-device")
    p.add_argument("--quick", action="store_true", help="smoke run: 4 tfmot epochs, fewer latency rounds")
    p.add_argument("--reuse", action="store_true", help="keep OUT's finished tune and picked build (after a later "
                   "step failed); everything else is rebuilt and all three are timed again")
    a = p.parse_args(argv)
    command = "python benchmarks/tune_device.py " + " ".join(sys.argv[1:] if argv is None else argv)
    r = run(a.model.resolve(), a.data.resolve(), a.target, a.trials, a.out, a.quick, command.strip(), a.reuse)
    (a.out / "tune_device.json").write_text(json.dumps(r, indent=1, default=str) + "\n")
    text = render(r)
    (a.out / "tune_device.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
