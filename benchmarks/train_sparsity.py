"""Sparsity learned in training against one-shot pruning (issue 10), at equal total epochs.

For each model (the sample digits CNN, a MobileNetV2-style net with inverted residuals, depthwise
convs and ReLU6, a DS-CNN-style Conv1D/SeparableConv1D net), each seed and each MAC target (2x and
3.3x fewer MACs), every method starts from the same dense model (trained --pretrain epochs) and
gets the same --epochs of training after it:

  oneshot      prune: l1 criterion + least-squares reconstruction + fine-tune (epochs)
  group_lasso  regularize: group_lasso at the MAC target (epochs), then prune: group_norm (no refit)
  slimming     regularize: slimming (epochs), then prune: bn_scale (no refit)
  gates        regularize: gates at the MAC target (epochs): the gates cut by themselves
  movement     prune: movement criterion + reconstruction + fine-tune; the criterion's own scoring
               fine-tune (MovementScore.epochs) counts, so the fine-tune after the cut is that much shorter
  scratch      the gates' final architecture (the first of SCRATCH_FROM that ran, when the gates failed),
               trained from random init for pretrain + epochs

A method that fails (a collapse, an unreachable target) is printed with its trajectory and recorded
as failed; the run goes on. Each result's MACs are printed and checked against the target (+5%).

Each result is converted to LiteRT int8 (full integer, calibrated on training inputs) and measured
there: accuracy on the validation split, and batch-1 latency, all variants of one model interleaved
in one run (common.interleaved_latency), as a ratio to the dense int8 artifact.

    python benchmarks/train_sparsity.py                       # 3 seeds, all models (long)
    python benchmarks/train_sparsity.py --models cnn --seeds 1 --epochs 4   # a quick look
    python benchmarks/train_sparsity.py --table run.jsonl     # the table of rows --json appended
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
from common import (SAMPLE_DATA, SAMPLES, interleaved_latency, load_average, machine_info,  # noqa: E402
                    machine_lines, round_ratio, runtime_accuracy)

from edgesparse._tf import keras  # noqa: E402
from edgesparse.convert.tflite import to_tflite  # noqa: E402
from edgesparse.data import Dataset  # noqa: E402
from edgesparse.errors import UserError  # noqa: E402
from edgesparse.graph.stats import count_macs, count_params  # noqa: E402
from edgesparse.passes.prune.pass_ import PrunePass  # noqa: E402
from edgesparse.passes.regularize import RegularizePass  # noqa: E402
from edgesparse.pipeline import RunContext  # noqa: E402
from edgesparse.state import ModelState  # noqa: E402
from edgesparse.targets import load_target  # noqa: E402
from edgesparse.train.losses import CrossEntropy  # noqa: E402
from edgesparse.train.metrics import accuracy  # noqa: E402
from edgesparse.train.trainer import train  # noqa: E402

L = keras.layers
METHODS = ("oneshot", "group_lasso", "slimming", "gates", "movement", "scratch")
SCRATCH_FROM = ("gates", "group_lasso", "oneshot", "slimming", "movement")   # whose architecture the control trains


def mobilenet_v2_style(input_shape=(8, 8, 1), classes=10, seed=0):
    """Stem, three inverted residual blocks (expand 1x1 -> depthwise 3x3 -> project 1x1, ReLU6, BN),
    two with an identity add, then pooling and a Dense head."""
    keras.utils.set_random_seed(seed)
    i = L.Input(input_shape)
    x = L.ReLU(6.0)(L.BatchNormalization()(L.Conv2D(16, 3, padding="same", use_bias=False)(i)))

    def block(x, expand, out, stride=1):
        h = L.ReLU(6.0)(L.BatchNormalization()(L.Conv2D(expand, 1, use_bias=False)(x)))
        h = L.ReLU(6.0)(L.BatchNormalization()(L.DepthwiseConv2D(3, stride, padding="same", use_bias=False)(h)))
        h = L.BatchNormalization()(L.Conv2D(out, 1, use_bias=False)(h))
        return L.Add()([x, h]) if stride == 1 and x.shape[-1] == out else h
    x = block(x, 64, 16)
    x = block(x, 64, 24, stride=2)
    x = block(x, 96, 24)
    x = L.ReLU(6.0)(L.BatchNormalization()(L.Conv2D(64, 1, use_bias=False)(x)))
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(i, L.Dense(classes, activation="softmax")(x), name="mobilenetv2_style")


def ds_cnn_style(input_shape=(8, 8), classes=10, seed=0):
    """Keyword-spotting DS-CNN in 1D: a Conv1D stem, depthwise-separable Conv1D blocks with BN/ReLU,
    global pooling, Dense. The 8x8 digits are read as 8 time steps of 8 features."""
    keras.utils.set_random_seed(seed)
    i = L.Input(input_shape)
    x = L.ReLU()(L.BatchNormalization()(L.Conv1D(64, 3, padding="same", use_bias=False)(i)))
    for _ in range(3):
        x = L.ReLU()(L.BatchNormalization()(L.SeparableConv1D(64, 3, padding="same", use_bias=False)(x)))
    x = L.GlobalAveragePooling1D()(x)
    return keras.Model(i, L.Dense(classes, activation="softmax")(x), name="ds_cnn_style")


def digits_cnn(input_shape=(8, 8, 1), classes=10, seed=0):
    from edgesparse.frontends.keras import load_model

    keras.utils.set_random_seed(seed)
    trained = load_model(SAMPLES / "digits_cnn.keras")[0]
    return keras.models.clone_model(trained)     # the sample's architecture, trained here per seed


MODELS = {"cnn": (digits_cnn, (8, 8, 1)), "mobilenetv2": (mobilenet_v2_style, (8, 8, 1)),
          "dscnn": (ds_cnn_style, (8, 8))}


def data_for(shape) -> Dataset:
    d = np.load(SAMPLE_DATA)
    x, xv = d["x_train"].reshape((-1,) + shape), d["x_val"].reshape((-1,) + shape)
    return Dataset(x, d["y_train"], xv, d["y_val"], x_calib=x[:256], labelled=True, real=True, source="digits")


def run_method(method, dense, data, macs, epochs, seed):
    """(model, facts) of one method from the dense model, with `epochs` of training in all."""
    from edgesparse.passes.prune.criteria import MovementScore

    ctx = RunContext(target=load_target("rpi4"), data=data, workdir=None, seed=seed)
    model = keras.models.clone_model(dense)
    model.set_weights(dense.get_weights())
    state = ModelState(model=model, name=method, reference=dense)
    if method in ("oneshot", "movement"):
        crit = "l1" if method == "oneshot" else "movement"
        # movement's criterion fine-tunes a copy for MovementScore.epochs to score the units: those
        # epochs count, so its fine-tune after the cut is that much shorter (equal total epochs)
        ft = epochs if method == "oneshot" else epochs - MovementScore.epochs
        if ft < 0:
            raise ValueError(f"--epochs must be at least {MovementScore.epochs} (movement's scoring fine-tune)")
        passes = [PrunePass(macs=macs, criterion=crit, finetune_epochs=ft, round_to=1, seed=seed)]
    elif method in ("group_lasso", "slimming"):
        crit = "group_norm" if method == "group_lasso" else "bn_scale"
        passes = [RegularizePass(method=method, macs=macs, epochs=epochs, round_to=1),
                  PrunePass(macs=macs, criterion=crit, reconstruct=False, round_to=1)]
    elif method == "gates":
        passes = [RegularizePass(method="gates", macs=macs, epochs=epochs)]
    else:
        raise ValueError(method)
    for p in passes:
        state = p.run(state, ctx)
    facts = state.facts.get("regularize", {})
    return state.model, facts


def from_scratch(architecture, data, epochs, seed):
    """The control: the same architecture, fresh weights, every epoch the others had in all."""
    keras.utils.set_random_seed(seed)
    m = keras.models.clone_model(architecture)
    train(m, (data.x_train, data.y_train), loss=CrossEntropy(), epochs=epochs, lr=2e-3, schedule="cosine",
          seed=seed, shuffle="keras")
    return m


def trajectory_line(facts: dict) -> str:
    rows = facts.get("trajectory") or []
    return "; ".join(f"e{r['epoch']}: kept {r.get('kept', 1):.2f} macs {r.get('macs', float('nan')):.3f} "
                     f"acc {r['metric']:.1f}" for r in rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--pretrain", type=int, default=40, help="epochs of the dense model")
    ap.add_argument("--epochs", type=int, default=10, help="epochs each method gets after the dense model")
    ap.add_argument("--macs", nargs="+", type=float, default=[0.5, 0.3])
    ap.add_argument("--dense-cache", type=Path, help="keep the trained dense models here and reuse them "
                    "(the same model, seed and --pretrain)")
    ap.add_argument("--json", type=Path, help="append every result row here as it is measured (JSON lines)")
    ap.add_argument("--table", type=Path, nargs="+", help="only print the table of the rows in these JSON lines files")
    args = ap.parse_args(argv)
    if args.table:
        table_from_json(args.table)
        return 0
    machine = machine_info()
    print("\n".join(machine_lines(machine)), flush=True)
    t0 = time.time()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            build, shape = MODELS[name]
            data = data_for(shape)
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                cached = args.dense_cache and args.dense_cache / f"{name}-seed{seed}-pretrain{args.pretrain}.keras"
                if cached and cached.exists():
                    dense = keras.models.load_model(cached)
                else:
                    dense = build(shape, seed=seed)
                    train(dense, (data.x_train, data.y_train), loss=CrossEntropy(), epochs=args.pretrain, lr=2e-3,
                          schedule="cosine", seed=seed)
                    if cached:
                        args.dense_cache.mkdir(parents=True, exist_ok=True)
                        dense.save(cached)
                print(f"{name} seed {seed} dense: keras {accuracy(dense, data.x_val, data.y_val):.2f}% "
                      f"after {args.pretrain} epochs, {(time.time() - t0) / 60:.1f} min", flush=True)
                variants, notes = {"dense": dense}, {}
                for macs in args.macs:
                    for method in args.methods:
                        if method == "scratch":
                            continue
                        key, t1 = f"{method}@{macs}", time.time()
                        try:
                            variants[key], facts = run_method(method, dense, data, macs, args.epochs, seed)
                        except UserError as e:        # a collapse or a miss is a result, not a crash
                            notes[key] = f"failed: {e}"
                            print(f"{name} seed {seed} {key}: FAILED {e}", flush=True)
                            continue
                        got = count_macs(variants[key]) / count_macs(dense)
                        print(f"{name} seed {seed} {key}: MACs {got:.3f} (target {macs}), keras "
                              f"{accuracy(variants[key], data.x_val, data.y_val):.2f}%, {time.time() - t1:.0f} s"
                              + (f"; trajectory {trajectory_line(facts)}" if facts.get("trajectory") else ""),
                              flush=True)
                    if "scratch" in args.methods:
                        # the gates' final architecture; another method's if the gates failed (said in the note)
                        source = next((f"{m}@{macs}" for m in SCRATCH_FROM if f"{m}@{macs}" in variants), None)
                        if source is not None:
                            variants[f"scratch@{macs}"] = from_scratch(variants[source], data,
                                                                       args.pretrain + args.epochs, seed)
                            notes[f"scratch@{macs}"] = f"architecture of {source}"
                paths = {}
                for key, m in variants.items():
                    p = Path(tmp) / f"{name}-{seed}-{key}.tflite"
                    p.write_bytes(to_tflite(m, "int8", x_calib=data.x_train))
                    paths[key] = p
                lat = interleaved_latency(paths, "litert", 1, data.x_val[:1], rounds=20)
                macs0 = count_macs(dense)
                for key in list(variants) + [k for k in notes if k not in variants]:
                    m = variants.get(key)
                    target = float(key.split("@")[1]) if "@" in key else 1.0
                    row = {"model": name, "seed": seed, "variant": key, "target": target, "note": notes.get(key)}
                    if m is not None:
                        row |= {"macs": count_macs(m) / macs0, "params": count_params(m),
                                "keras": accuracy(m, data.x_val, data.y_val),
                                "int8": runtime_accuracy(paths[key], data.x_val, data.y_val),
                                "latency": round_ratio(lat[key], lat["dense"])[0]}
                        row["on_target"] = bool(row["macs"] <= target * 1.05 + 1e-9)
                    rows.append(row)
                    if args.json:
                        with open(args.json, "a") as f:
                            f.write(json.dumps(row) + "\n")
                print(f"{name} seed {seed} done, {(time.time() - t0) / 60:.1f} min", flush=True)
    print_table(rows)
    print(f"\n{(time.time() - t0) / 60:.1f} min, LiteRT int8, batch 1, 1 thread, variants interleaved; "
          f"load average at the end {load_average()}")
    return 0


def print_table(rows) -> None:
    """Mean over seeds; "vs dense" pairs each seed with its own dense model. A variant that failed
    in some seed says so (its figures are over the others)."""
    print("| model | variant | MACs kept | on target | params | LiteRT int8 accuracy (%) mean ± sd "
          "| vs dense (points) | worst seed vs its dense | latency ratio | seeds |")
    print("|---|---|---:|---|---:|---:|---:|---:|---:|---|")
    for name in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == name]
        dense_of = {r["seed"]: r["int8"] for r in mine if r["variant"] == "dense"}
        for v in dict.fromkeys(r["variant"] for r in mine):
            rs = [r for r in mine if r["variant"] == v and "int8" in r]
            failed = [r for r in mine if r["variant"] == v and "int8" not in r]
            seeds = f"{len(rs)}" + (f" ({len(failed)} failed)" if failed else "")
            if not rs:
                print(f"| {name} | {v} | - | - | - | failed | - | - | - | {seeds} |")
                continue
            acc = np.array([r["int8"] for r in rs])
            gap = np.array([r["int8"] - dense_of[r["seed"]] for r in rs])       # each seed against its dense
            on = "yes" if all(r["on_target"] for r in rs) else f"{sum(r['on_target'] for r in rs)}/{len(rs)}"
            print(f"| {name} | {v} | {np.mean([r['macs'] for r in rs]):.3f} | {on} "
                  f"| {int(np.mean([r['params'] for r in rs]))} "
                  f"| {acc.mean():.2f} ± {acc.std():.2f} | {gap.mean():+.2f} | {gap.min():+.2f} "
                  f"| {np.median([r['latency'] for r in rs]):.2f} | {seeds} |")


def table_from_json(paths: list[Path]) -> None:
    """The rows of several runs; a (model, seed, variant) measured twice (the cached dense model
    of a second run) counts once, its first measurement."""
    rows = {}
    for path in paths:
        for line in Path(path).read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                rows.setdefault((r["model"], r["seed"], r["variant"]), r)
    print_table(list(rows.values()))


if __name__ == "__main__":
    sys.exit(main())
