"""Sparse training methods at equal training budgets (issue 11): dense, static random masks,
GMP, SET, RigL, and a dense network with as many weights as the sparse ones keep.

    PYTHONPATH=$PWD python benchmarks/dynamic_sparse.py [--seeds 3] [--epochs 30] [--tasks digits,mnist1d]
        [--sparsities 0.98] [--methods dense,rigl] [--update-every 100] [--lr 3e-3] [--json out.json]

Every network is trained from a fresh random initialisation with the same epochs, batch size,
Adam and cosine learning-rate decay (the one training loop, edgesparse/train/). The sparse
methods use ERK allocation and train from a random mask with the sparse-aware initialisation
(train/sparse_init.py; gmp starts dense and prunes); mask updates every ΔT steps with drop
fraction 0.3 on a cosine, none in the last quarter.
Tasks: sklearn digits with the 64-256-256-10 MLP at 90% and 98%, and mnist1d (procedural,
4000/1000) with a 40-256-256-10 MLP at 95%. Accuracy is test accuracy in percent, mean ± std
over seeds; training accuracy (of the final weights) is printed beside it, to tell underfitting
from overfitting. Needs the `bench` extra (mnist1d).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import mnist1d  # noqa: E402  (the loader benchmarks/grow.py shares)
from edgesparse._tf import keras  # noqa: E402
from edgesparse.passes.sparsify.dynamic import Settings, sparse_train  # noqa: E402
from edgesparse.train.losses import CrossEntropy  # noqa: E402
from edgesparse.train.metrics import accuracy  # noqa: E402
from edgesparse.train.trainer import train  # noqa: E402

METHODS = ("dense", "static", "gmp", "set", "rigl", "small dense")


def digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    return train_test_split(x, d.target, test_size=0.2, random_state=0, stratify=d.target)


def mlp(inputs: int, widths: tuple[int, ...], seed: int):
    keras.utils.set_random_seed(seed)
    i = keras.Input((inputs,))
    h = i
    for w in widths:
        h = keras.layers.Dense(w, activation="relu")(h)
    return keras.Model(i, keras.layers.Dense(10)(h))


def kernel_weights(inputs: int, widths: tuple[int, ...]) -> int:
    dims = (inputs, *widths, 10)
    return sum(a * b for a, b in zip(dims, dims[1:]))


def equal_width(inputs: int, depth: int, budget: int) -> int:
    """The widest dense MLP of this depth with no more kernel weights than `budget`."""
    w = 1
    while kernel_weights(inputs, (w + 1,) * depth) <= budget:
        w += 1
    return w


def run_one(task, method, sparsity, seed, args) -> tuple[float, float, int]:
    """(test accuracy, training accuracy, kernel weights kept) of one trained network."""
    x_tr, x_te, y_tr, y_te = task["data"]
    inputs, widths = x_tr.shape[1], task["widths"]
    common = dict(epochs=args.epochs, lr=args.lr, batch_size=task["batch"], seed=seed, schedule="cosine")
    if method in ("dense", "small dense"):
        if method == "small dense":
            budget = int(round((1 - sparsity) * kernel_weights(inputs, widths)))
            widths = (equal_width(inputs, len(widths), budget),) * len(widths)
        model = mlp(inputs, widths, seed)
        train(model, (x_tr, y_tr), loss=CrossEntropy(), **common)
        return accuracy(model, x_te, y_te), accuracy(model, x_tr, y_tr), kernel_weights(inputs, widths)
    settings = Settings(method, sparsity, update_every=args.update_every or task["update_every"],
                        epochs=args.epochs, batch_size=task["batch"], learning_rate=args.lr,
                        lr_schedule="cosine", init="random", seed=seed)
    result = sparse_train(mlp(inputs, widths, seed), x_tr, y_tr, settings)
    nonzero = sum(r.weights - r.zeros for r in result.layers)
    return accuracy(result.model, x_te, y_te), accuracy(result.model, x_tr, y_tr), nonzero


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + seeds - 1 (more seeds later)")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--tasks", default="digits,mnist1d")
    ap.add_argument("--sparsities", help="only these of each task's sparsities, e.g. 0.98 (default: all)")
    ap.add_argument("--methods", default=",".join(METHODS), help="only these methods (a one-seed probe)")
    ap.add_argument("--update-every", type=int, help="ΔT in steps for every task (default: 25 digits, 40 mnist1d)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    tasks = []
    if "digits" in args.tasks:
        tasks += [{"name": "digits 64-256-256-10", "data": digits(), "widths": (256, 256), "batch": 64,
                   "update_every": 25, "sparsities": (0.9, 0.98)}]
    if "mnist1d" in args.tasks:
        tasks += [{"name": "mnist1d 40-256-256-10", "data": mnist1d(), "widths": (256, 256), "batch": 128,
                   "update_every": 40, "sparsities": (0.95,)}]
    if args.sparsities:
        wanted = {round(float(v), 6) for v in args.sparsities.split(",")}
        for task in tasks:
            task["sparsities"] = tuple(v for v in task["sparsities"] if round(v, 6) in wanted)
    methods = [m for m in METHODS if m in args.methods.split(",")]
    started = time.time()
    rows = []

    def summary(runs) -> dict:
        test, fit, kept = zip(*runs)
        return {"mean": float(np.mean(test)), "std": float(np.std(test)), "runs": list(test),
                "train_mean": float(np.mean(fit)), "train_runs": list(fit), "kernel_weights": int(kept[0])}

    for task in tasks:
        seeds = range(args.first_seed, args.first_seed + args.seeds)
        dense = summary([run_one(task, "dense", 0.0, s, args) for s in seeds]) if "dense" in methods else None
        for sparsity in task["sparsities"]:
            row = {"task": task["name"], "sparsity": sparsity}
            for method in methods:
                row[method] = dense if method == "dense" else summary(
                    [run_one(task, method, sparsity, s, args) for s in seeds])
                print(f"  {task['name']} {sparsity:.0%} {method}: {row[method]['mean']:.2f} ± {row[method]['std']:.2f}"
                      f" (train {row[method]['train_mean']:.2f})", flush=True)
            rows.append(row)
    minutes = (time.time() - started) / 60
    print(f"\n{args.seeds} seeds, {args.epochs} epochs each, Adam lr {args.lr:g} cosine; {minutes:.1f} min\n")
    gaps = [("rigl", "static"), ("rigl", "small dense"), ("rigl", "dense"), ("gmp", "dense")]
    gaps = [(a, b) for a, b in gaps if a in methods and b in methods]
    print("| task | sparsity | " + " | ".join(methods) + "".join(f" | {a} − {b}" for a, b in gaps) + " |")
    print("|---|---|" + "---|" * (len(methods) + len(gaps)))
    for r in rows:
        cells = [f"{r[m]['mean']:.2f} ± {r[m]['std']:.2f}" for m in methods]
        print(f"| {r['task']} | {r['sparsity']:.0%} | " + " | ".join(cells)
              + "".join(f" | {r[a]['mean'] - r[b]['mean']:+.2f}" for a, b in gaps) + " |")
    print("\ntraining accuracy of the final weights:")
    for r in rows:
        print(f"  {r['task']} {r['sparsity']:.0%}: " + ", ".join(f"{m} {r[m]['train_mean']:.2f}" for m in methods))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "minutes": minutes, "seeds": args.seeds,
                                         "epochs": args.epochs, "lr": args.lr,
                                         "update_every": args.update_every}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
