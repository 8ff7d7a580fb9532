"""Issue 4: after structured pruning, does distillation recover more than plain fine-tuning?

    python benchmarks/distill_vs_finetune.py [--model M ... --data D] [--epochs 5 15 30] [--seeds 0 1 2]
                                             [--starts recipe cut-only] [--target rpi4]
                                             [--out benchmarks/results/]

Per model: prune ONCE with the target's default-recipe prune config (rpi4: keep 30% of the
MACs) but with finetune_epochs 0, so no recovery happens inside prune. That config refits the
layers after the cut by least squares, which can leave little to recover; so by default a
second starting point is the same prune with `reconstruct: false` (the cut alone), where the
training methods have real work to do. Then, from a fresh copy of the pruned model, recover
for E epochs with:
  finetune   labels only: the distill pass with alpha = 1, whose loss is then exactly
             cross-entropy on the labels. Using the same pass keeps everything else identical:
             Adam, the cosine learning-rate schedule, batch size, shuffling, best-epoch choice.
  distill    the distill pass as the default recipe configures it (alpha, temperature).
  pure KD    alpha 0 and no labels anywhere: trained on the teacher's outputs only, best epoch
             chosen by the KD loss on held-out inputs (the label-free case the pass supports).
Early stopping is off (patience = E): every run trains exactly E epochs and keeps its best epoch
on a selection split carved from the training data (20%, the same inputs for all three; pure KD
sees them without labels). Accuracy is measured on the validation split, which no run sees,
for the Keras model and for its int8 TFLite artifact run in LiteRT. Each (method, E) runs once
per seed (the seed picks the selection split and the batch order; all methods share both);
tables give mean and min-max over seeds.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (ROOT, SAMPLE_DATA, SAMPLE_MODELS, keras_accuracy, machine_info,  # noqa: E402
                    machine_lines, runtime_accuracy)

from edgesparse._tf import keras  # noqa: E402
from edgesparse.data import Dataset, load_data  # noqa: E402
from edgesparse.graph.stats import count_macs  # noqa: E402
from edgesparse.frontends.keras import load_model  # noqa: E402
from edgesparse.graph.functional import clone_with_weights  # noqa: E402
from edgesparse.pipeline import RunContext  # noqa: E402
from edgesparse.recipe import recipe_for  # noqa: E402
from edgesparse.state import ModelState  # noqa: E402
from edgesparse.targets import load_target  # noqa: E402

METHODS = {"finetune": {"alpha": 1.0}, "distill": {}, "pure KD": {"alpha": 0.0}}
STARTS = {"recipe": {}, "cut-only": {"reconstruct": False}}   # prune config changes per starting point


def recipe_pass(target, name: str):
    found = [p for p in recipe_for(target, None).passes if p.name == name]
    if not found:
        raise SystemExit(f"the default recipe of {target.name} has no {name} pass to compare")
    return found[0]


def splits(data: Dataset, seed: int) -> tuple[Dataset, Dataset]:
    """(labelled, unlabelled) training views sharing one 20% selection split of the training data."""
    order = np.random.default_rng(seed).permutation(len(data.x_train))
    cut = len(order) // 5          # the distill pass holds out exactly x[:len(x)//5] without labels
    sel, fit = order[:cut], order[cut:]
    labelled = Dataset(data.x_train[fit], data.y_train[fit], data.x_train[sel], data.y_train[sel],
                       x_calib=data.x_calib, labelled=True, real=True, source=data.source)
    unlabelled = Dataset(np.concatenate([data.x_train[sel], data.x_train[fit]]), None, None, None,
                         x_calib=data.x_calib, labelled=False, real=True, source=data.source)
    return labelled, unlabelled


def int8_accuracy(model, data: Dataset, workdir: Path) -> float:
    from edgesparse.convert.tflite import to_tflite

    path = workdir / "student-int8.tflite"
    path.write_bytes(to_tflite(model, "int8", x_calib=data.x_calib, calibration_samples=200))
    return runtime_accuracy(path, data.x_val, data.y_val)


def prune_without_finetune(model, data: Dataset, target, workdir: Path, start: str):
    prune = recipe_pass(target, "prune")
    prune = type(prune)(prune.config.model_copy(update={"finetune_epochs": 0, **STARTS[start]}))
    state = ModelState(model=clone_with_weights(model), name="m", reference=model)
    state = prune.run(state, RunContext(target=target, data=data, workdir=workdir))
    return state.model, prune.config


def recover(method: str, pruned, teacher, views, epochs: int, seed: int, target, workdir: Path) -> tuple:
    distill = recipe_pass(target, "distill")
    cfg = distill.config.model_copy(update={"epochs": epochs, "patience": epochs, **METHODS[method]})
    labelled, unlabelled = views
    student = clone_with_weights(pruned)
    keras.utils.set_random_seed(seed)
    state = ModelState(model=student, name="m", reference=teacher)
    ctx = RunContext(target=target, data=unlabelled if method == "pure KD" else labelled,
                     workdir=workdir, seed=seed)
    state = type(distill)(cfg).run(state, ctx)
    return state.model, state.facts["distill"]


def run_model(model_path: Path, data_path: Path, target_name: str, epochs: list[int], seeds: list[int],
              start: str) -> dict:
    target = load_target(target_name)
    teacher, _ = load_model(model_path)
    shape, classes = tuple(int(d) for d in teacher.input_shape[1:]), int(teacher.output_shape[-1])
    data = load_data(data_path, shape, classes, seed=0)
    if not data.labelled or data.x_val is None:
        raise SystemExit(f"{data_path}: this comparison needs labelled data with a validation split")
    name = model_path.stem
    with tempfile.TemporaryDirectory(prefix="dvf-") as tmp:
        work = Path(tmp)
        pruned, prune_cfg = prune_without_finetune(teacher, data, target, work, start)
        result = {"model": name, "start": start, "path": str(model_path), "n_val": int(len(data.x_val)),
                  "prune": prune_cfg.model_dump(), "macs_dense": count_macs(teacher), "macs_pruned": count_macs(pruned),
                  "dense": {"keras": keras_accuracy(teacher, data.x_val, data.y_val),
                            "int8": int8_accuracy(teacher, data, work)},
                  "pruned_no_recovery": {"keras": keras_accuracy(pruned, data.x_val, data.y_val),
                                         "int8": int8_accuracy(pruned, data, work)},
                  "runs": []}
        views = {seed: splits(data, seed) for seed in seeds}
        for e in epochs:
            for method in METHODS:
                for seed in seeds:
                    started = time.perf_counter()
                    student, facts = recover(method, pruned, teacher, views[seed], e, seed, target, work)
                    run = {"method": method, "epochs": e, "seed": seed,
                           "keras": keras_accuracy(student, data.x_val, data.y_val),
                           "int8": int8_accuracy(student, data, work), "best_epoch": facts["best_epoch"],
                           "epochs_run": facts["epochs_run"], "alpha": facts["alpha_used"],
                           "labels_used": facts["labels_used"], "seconds": round(time.perf_counter() - started, 2)}
                    print(f"[{name} {start}] {method:8s} {e:3d} ep seed {seed}: keras {run['keras']:.2f} "
                          f"int8 {run['int8']:.2f} (best epoch {run['best_epoch']})", file=sys.stderr, flush=True)
                    result["runs"].append(run)
    return result


def spread(values: list[float]) -> str:
    return f"{np.mean(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def render(results: list[dict], machine: dict, command: str) -> str:
    out = ["# Distillation vs plain fine-tuning after structured pruning", "", f"Command: `{command}`", "",
           *machine_lines(machine), "",
           "Validation accuracy (%), mean (min-max) over seeds; Keras model and its int8 TFLite in LiteRT.", ""]
    for r in results:
        p = r["prune"]
        out += [f"## {r['model']}, start: {r['start']} ({r['n_val']} validation samples: one sample = "
                f"{100 / r['n_val']:.2f} points)", "",
                f"Pruned to macs {p['macs']} ({r['macs_dense']:,} -> {r['macs_pruned']:,} MACs, criterion "
                f"{p['criterion']}, {p['steps']} step(s), reconstruction {p['reconstruct']}, no fine-tune). "
                f"Dense: {r['dense']['keras']} Keras / {r['dense']['int8']} int8. "
                f"Pruned, before recovery: {r['pruned_no_recovery']['keras']} / {r['pruned_no_recovery']['int8']}.", "",
                "| epochs | method | Keras % | int8 LiteRT % | best epoch (per seed) | s per run |",
                "|---|---|---|---|---|---|"]
        epochs = sorted({x["epochs"] for x in r["runs"]})
        for e in epochs:
            for m in METHODS:
                runs = [x for x in r["runs"] if x["epochs"] == e and x["method"] == m]
                out.append(f"| {e} | {m} | {spread([x['keras'] for x in runs])} | {spread([x['int8'] for x in runs])} "
                           f"| {', '.join(str(x['best_epoch']) for x in runs)} | {np.mean([x['seconds'] for x in runs]):.1f} |")
        out += ["", "Verdict (difference of means, Keras accuracy; 'within spread' when the min-max ranges overlap):", ""]
        for e in epochs:
            acc = {m: [x["keras"] for x in r["runs"] if x["epochs"] == e and x["method"] == m] for m in METHODS}
            means = {m: round(float(np.mean(v)), 3) for m, v in acc.items()}
            top = [m for m in METHODS if means[m] == max(means.values())]
            best = f"best mean: {top[0]}" if len(top) == 1 else f"tie between {', '.join(top)}"
            d = means["distill"] - means["finetune"]
            overlap = min(max(acc["distill"]), max(acc["finetune"])) >= max(min(acc["distill"]), min(acc["finetune"]))
            spread_word = ("one seed, no spread" if len(acc["distill"]) < 2 else
                           "within spread" if overlap else "ranges do not overlap")
            out.append(f"- {r['model']} ({r['start']}), {e} epochs: {best}; distill - finetune = {d:+.2f} points "
                       f"({spread_word}); pure KD - finetune = {means['pure KD'] - means['finetune']:+.2f}")
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", nargs="+", type=Path)
    p.add_argument("--data", type=Path)
    p.add_argument("--target", default="rpi4")
    p.add_argument("--epochs", nargs="+", type=int, default=[5, 15, 30])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--starts", nargs="+", choices=list(STARTS), default=list(STARTS),
                   help="recipe: the recipe's prune (with reconstruction); cut-only: reconstruct false")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args(argv)
    if args.model and not args.data:
        p.error("--model needs --data: a labelled .npz for that model")
    command = ("python benchmarks/distill_vs_finetune.py " + " ".join(sys.argv[1:] if argv is None else argv)).strip()
    machine = machine_info()
    results = [run_model(m, args.data or SAMPLE_DATA, args.target, args.epochs, args.seeds, start)
               for m in (args.model or SAMPLE_MODELS) for start in args.starts]
    machine["load_average_at_end"] = machine_info()["load_average_1_5_15"]
    md = render(results, machine, command)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "distill_vs_finetune.md").write_text(md + "\n")
    (args.out / "distill_vs_finetune.json").write_text(
        json.dumps({"command": command, "machine": machine, "results": results}, indent=1, default=str) + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
