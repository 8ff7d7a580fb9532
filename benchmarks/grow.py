"""The `grow` pass against training the final architecture from scratch (issue 11, "Done when").

    PYTHONPATH=$PWD python benchmarks/grow.py [--task digits|mnist1d] [--seeds 3] [--first-seed 0]
        [--only grow|grow-prune|width] [--json out.json]

--task digits (the default): sklearn digits (the same 80/20 test split as
benchmarks/dynamic_sparse.py; 15% of the training part is the validation split grow and the
control stop on), the 64-256-256-10 MLP family. --task mnist1d: mnist1d's 4000 training samples
(15% of them, stratified, random_state 0, the validation split) and its 1000 test samples
(benchmarks/common.py's loader, shared with dynamic_sparse.py), the 40-256-256-10 MLP family:
a task where an MLP's width matters, unlike digits. Batch size and learning rate are the
pass's defaults (32, 1e-3) on both tasks.

1. grow vs scratch: grow starts at width 0.25 (64-64) with re-initialised weights and grows by
   0.25 of the given width on every plateau until the MAC cap (1.0: 64-256-256-10) is spent
   (target 100%, so only the cap stops it). The control trains the architecture grow ended at
   from scratch with the same loop, patience and epoch limit. Cost is MAC-epochs: dense MACs of
   the network trained x its epochs, summed over grow's phases. A sparse start (`--grow
   '{"start_width": 1.0, "start_density": 0.1, ...}'`: the full width, 10% of the connections,
   grown by gradient) also prints the cost in active-connection MAC-epochs (each phase at its
   masks' density, the dense gradient batches of each growth at dense: sparse training's FLOPs
   as RigL counts them) and the wall-time ratio, which on this machine is not lower (TensorFlow
   trains masked kernels dense).
2. grow-and-prune: start at width 0.25, grow until validation accuracy reaches the target
   (default 98%) or the cap (default 0.25 of the MACs: grown near the final size, not to
   256-256 and then cut by 97%), then prune to 2,000 nonzero kernel weights.

Both runs use the pass's defaults for everything else; --grow / --grow-prune override them
(JSON of GrowConfig fields), which is how the variants in docs/benchmarks.md were measured;
--only grow / --only grow-prune runs one of the two comparisons (the same figures as in the
full run, for half the machine time); --only width trains 64-64 and 256-256 from scratch with
the control's loop (does width matter on this task?).

Accuracy is test accuracy in percent (a split neither run saw), mean ± std over seeds.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import load_average, mnist1d  # noqa: E402
from edgesparse._tf import keras  # noqa: E402
from edgesparse.graph.stats import count_macs  # noqa: E402
from edgesparse.passes.grow import GrowConfig, Grower  # noqa: E402
from edgesparse.train.losses import CrossEntropy  # noqa: E402
from edgesparse.train.metrics import accuracy  # noqa: E402
from edgesparse.train.trainer import train  # noqa: E402


def digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    x_tr, x_te, y_tr, y_te = train_test_split(x, d.target, test_size=0.2, random_state=0, stratify=d.target)
    x_tr, x_val, y_tr, y_val = train_test_split(x_tr, y_tr, test_size=0.15, random_state=0, stratify=y_tr)
    return SimpleNamespace(x_train=x_tr, y_train=y_tr, x_val=x_val, y_val=y_val, x_test=x_te, y_test=y_te)


def mnist1d_task():
    from sklearn.model_selection import train_test_split

    x_tr, x_te, y_tr, y_te = mnist1d()
    x_tr, x_val, y_tr, y_val = train_test_split(x_tr, y_tr, test_size=0.15, random_state=0, stratify=y_tr)
    return SimpleNamespace(x_train=x_tr, y_train=y_tr, x_val=x_val, y_val=y_val, x_test=x_te, y_test=y_te)


TASKS = {"digits": digits, "mnist1d": mnist1d_task}


def mlp(widths: tuple[int, ...], seed: int, inputs: int = 64):
    keras.utils.set_random_seed(seed)
    i = keras.Input((inputs,))
    h = i
    for n, w in enumerate(widths):
        h = keras.layers.Dense(w, activation="relu", name=f"fc{n + 1}")(h)
    return keras.Model(i, keras.layers.Dense(10, name="logits")(h))


def nonzero_kernels(model) -> int:
    return int(sum(np.count_nonzero(l.kernel.numpy()) for l in model.layers if hasattr(l, "kernel")))


def grow_run(data, cfg: GrowConfig, seed: int) -> dict:
    given = mlp((256, 256), seed, data.x_train.shape[1])
    g = Grower(given, cfg, data, seed, teacher=given)
    started = time.perf_counter()
    net, facts = g.run()
    return {"test": accuracy(net, data.x_test, data.y_test), "mac_epochs": facts["mac_epochs"],
            "seconds": time.perf_counter() - started,
            "active_mac_epochs": facts["active_mac_epochs"],
            "epochs": facts["epochs"], "widths": facts["final"]["widths"], "nonzero": nonzero_kernels(net),
            "stopped_by": facts["stopped_by"], "grown_val": facts["grown"]["accuracy"],
            "steps": [(r["event"], r["epochs"], r["accuracy"], r["widths"]) for r in facts["trajectory"]]}


def scratch_run(data, widths: tuple[int, ...], cfg: GrowConfig, seed: int) -> dict:
    model = mlp(widths, seed + 1000, data.x_train.shape[1])
    started = time.perf_counter()
    result = train(model, (data.x_train, data.y_train), loss=CrossEntropy(), epochs=cfg.max_epochs,
                   lr=cfg.learning_rate, batch_size=cfg.batch_size, seed=seed,
                   validation=(data.x_val, data.y_val), patience=cfg.patience)
    return {"test": accuracy(model, data.x_test, data.y_test), "epochs": result.epochs_run,
            "seconds": time.perf_counter() - started,
            "mac_epochs": float(count_macs(model)) * result.epochs_run}


def ms(values) -> str:
    return f"{np.mean(values):.2f} ± {np.std(values):.2f}"


def paired_difference(a: list[float], b: list[float]) -> tuple[np.ndarray, float]:
    """The per-seed differences a − b and the standard error of their mean."""
    d = np.asarray(a) - np.asarray(b)
    return d, float(np.std(d, ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")


def end_line(seeds: int, started: float) -> str:
    return (f"\n{seeds} seeds, {(time.time() - started) / 60:.1f} min; end {time.strftime('%H:%M:%S', time.gmtime())} UTC, "
            f"load average {load_average()}\n")


def paired(grow: list[float], scratch: list[float]) -> str:
    """The per-seed difference grow − scratch: its mean and standard error. The data split is
    the same for every seed; a seed sets both runs' initialisation and batch order, which are
    drawn independently of each other, so the pairing removes little spread (about
    sqrt(std_grow² + std_scratch²) / sqrt(seeds)): the error bar is honest, not narrowed."""
    d, se = paired_difference(grow, scratch)
    return (f"paired grow − scratch: {d.mean():+.2f} ± {se:.2f} points (mean ± standard error, {len(d)} seeds; "
            f"grow {np.mean(grow):.2f} ± {np.std(grow, ddof=1) if len(d) > 1 else 0:.2f}, "
            f"scratch {np.mean(scratch):.2f} ± {np.std(scratch, ddof=1) if len(d) > 1 else 0:.2f}, sample std)")


def width_check(data, cfg: GrowConfig, args, started: float) -> int:
    """64-64 and 256-256 trained from scratch with the control's loop, on the same seeds: does
    the width the growth adds buy accuracy on this task, beyond the seed noise?"""
    runs = {(64, 64): [], (256, 256): []}
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for widths in runs:
            r = scratch_run(data, widths, cfg, seed)
            runs[widths].append(r)
            print(f"seed {seed}: {widths} from scratch {r['test']:.2f}% ({r['epochs']} ep, {r['mac_epochs']:.3g} "
                  f"MAC-epochs)", flush=True)
    minutes = (time.time() - started) / 60
    print(end_line(args.seeds, started))
    for widths, rs in runs.items():
        t = [r["test"] for r in rs]
        print(f"{widths}: {np.mean(t):.2f} ± {np.std(t, ddof=1) if len(t) > 1 else 0:.2f} (sample std; "
              f"{', '.join(f'{v:.2f}' for v in t)}), epochs {[r['epochs'] for r in rs]}")
    wide, narrow = ([r["test"] for r in runs[w]] for w in ((256, 256), (64, 64)))
    d, se = paired_difference(wide, narrow)
    print(f"256-256 − 64-64: {d.mean():+.2f} ± {se:.2f} points (paired mean ± standard error)")
    if args.json:
        args.json.write_text(json.dumps({"width": {f"{a}-{b}": rs for (a, b), rs in runs.items()},
                                         "minutes": minutes}, indent=2, default=str))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", choices=tuple(TASKS), default="digits",
                    help="digits (64-256-256-10) or mnist1d (40-256-256-10, where width matters)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=0,
                    help="seeds first-seed .. first-seed + seeds - 1 (add seeds to an earlier run)")
    ap.add_argument("--max-epochs", type=int, default=60)
    ap.add_argument("--prune-target", type=float, default=98.0, help="grow-and-prune: grow until this val accuracy")
    ap.add_argument("--prune-to", type=int, default=2000)
    ap.add_argument("--prune-max-macs", type=float, default=0.25,
                    help="grow-and-prune: the growth cap (fraction of 64-256-256-10's MACs)")
    ap.add_argument("--grow", type=json.loads, default={}, metavar="JSON",
                    help='other GrowConfig fields of the grow run, e.g. \'{"keep_moments": false}\'')
    ap.add_argument("--grow-prune", type=json.loads, default={}, metavar="JSON",
                    help="other GrowConfig fields of the grow-and-prune run")
    ap.add_argument("--only", choices=("grow", "grow-prune", "width"),
                    help="run one of the two comparisons (the machine is shared: variants of one need not pay the "
                         "other), or 'width': 64-64 and 256-256 from scratch with the control's loop")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    data = TASKS[args.task]()
    started = time.time()
    print(f"task {args.task}: {len(data.y_train)} train / {len(data.y_val)} val / {len(data.y_test)} test, "
          f"{data.x_train.shape[1]} features; start {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} UTC, "
          f"load average {load_average()}", flush=True)
    grow_cfg = GrowConfig(**{"start_width": 0.25, "target_accuracy": 100.0, "max_macs": 1.0,
                             "max_epochs": args.max_epochs, **args.grow})
    prune_cfg = GrowConfig(**{"start_width": 0.25, "target_accuracy": args.prune_target,
                              "max_macs": args.prune_max_macs, "max_epochs": args.max_epochs,
                              "prune_to_params": args.prune_to, **args.grow_prune})
    print("grow:", grow_cfg.model_dump(exclude_defaults=True), "| grow-and-prune:",
          prune_cfg.model_dump(exclude_defaults=True), flush=True)
    if args.only == "width":
        return width_check(data, grow_cfg, args, started)
    rows = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        row = {"seed": seed}
        if args.only != "grow-prune":
            grown = grow_run(data, grow_cfg, seed)
            widths = tuple(grown["widths"][f"fc{i + 1}"] for i in range(2))
            scratch = scratch_run(data, widths, grow_cfg, seed)
            row.update(grow=grown, scratch=scratch)
            print(f"seed {seed}: grow {grown['test']:.2f}% ({grown['mac_epochs']:.3g} MAC-epochs, {grown['epochs']} ep, "
                  f"{widths}) | scratch {scratch['test']:.2f}% ({scratch['mac_epochs']:.3g}, {scratch['epochs']} ep) "
                  f"| cost ratio {grown['mac_epochs'] / scratch['mac_epochs']:.2f} "
                  f"(active connections: {grown['active_mac_epochs'] / scratch['mac_epochs']:.2f})", flush=True)
            for step in grown["steps"]:
                print("   grow", step)
        if args.only != "grow":
            pruned = grow_run(data, prune_cfg, seed)
            row.update(grow_prune=pruned)
            print(f"seed {seed}: grow+prune {pruned['test']:.2f}% at {pruned['nonzero']} nonzero ({pruned['widths']})",
                  flush=True)
            for step in pruned["steps"]:
                print("   grow+prune", step)
        rows.append(row)
    minutes = (time.time() - started) / 60
    print(end_line(args.seeds, started))
    print("| variant | test accuracy % | training cost (MAC-epochs) | nonzero kernel weights |")
    print("|---|---|---|---|")
    if args.only != "grow-prune":
        g = [r["grow"]["test"] for r in rows]
        s = [r["scratch"]["test"] for r in rows]
        ratio = [r["grow"]["mac_epochs"] / r["scratch"]["mac_epochs"] for r in rows]
        active = [r["grow"]["active_mac_epochs"] / r["scratch"]["mac_epochs"] for r in rows]
        wall = [r["grow"]["seconds"] / r["scratch"]["seconds"] for r in rows]
        print(f"| grow 0.25 → cap | {ms(g)} | {np.mean([r['grow']['mac_epochs'] for r in rows]):.3g} | "
              f"{np.mean([r['grow']['nonzero'] for r in rows]):.0f} |")
        print(f"| same final architecture from scratch | {ms(s)} | "
              f"{np.mean([r['scratch']['mac_epochs'] for r in rows]):.3g} | |")
    if args.only != "grow":
        p = [r["grow_prune"]["test"] for r in rows]
        nz = [r["grow_prune"]["nonzero"] for r in rows]
        print(f"| grow-and-prune (cap {args.prune_max_macs:g}, to {args.prune_to}) | {ms(p)} "
              f"({', '.join(f'{v:.2f}' for v in p)}) | "
              f"{np.mean([r['grow_prune']['mac_epochs'] for r in rows]):.3g} | {max(nz)} (max) |")
    if args.only != "grow-prune":
        print(f"\ngrow − scratch: {np.mean(g) - np.mean(s):+.2f} points (grow {', '.join(f'{v:.2f}' for v in g)}; "
              f"scratch {', '.join(f'{v:.2f}' for v in s)}); grow cost / scratch cost: "
              f"{np.mean(ratio):.2f} (per seed {', '.join(f'{r:.2f}' for r in ratio)})")
        if any(a != r for a, r in zip(active, ratio)):
            print(f"counting only active connections (a sparse start; the dense gradient batches of connection "
                  f"growth included): {np.mean(active):.2f} (max {max(active):.2f}; per seed "
                  f"{', '.join(f'{a:.2f}' for a in active)})")
        print(f"wall time grow / scratch on this machine (TensorFlow trains masked kernels dense; grow's time includes "
              f"its per-phase validation and records): {np.mean(wall):.2f} (per seed {', '.join(f'{w:.2f}' for w in wall)})")
        print(paired(g, s))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "minutes": minutes}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
