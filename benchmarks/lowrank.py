"""Low-rank factorisation (issue 12): whitened vs plain SVD, and lowrank vs channel pruning.

Part 1, digits MLP: every hidden Dense at the same rank, no fine-tune: plain SVD of the weights,
the whitened (data-aware) SVD, and the whitened SVD with the least-squares refit; Keras accuracy.

Part 2, the sample CNN and a MobileNet-style CNN trained here on digits: at <= `--macs` of the
MACs, lowrank (auto, with a short fine-tune), lowrank with `measure: true` (each factorised
layer's rank widths chosen by timing a few settings in LiteRT on this host, a layer factorised
only where its chain runs faster; the target is spread over the rest),
channel pruning (same fine-tune) and prune then lowrank (prune to 0.7, lowrank to the rest, one
fine-tune): accuracy over seeds, and LiteRT fp32 batch-1 p50 measured interleaved in one run
against the original. Every variant gets the same fine-tune (epochs, learning rate); all run
under the rpi4 profile's rounding (widths and ranks to 4), with 1 thread like the timing.

    python benchmarks/lowrank.py
    python benchmarks/lowrank.py --seeds 0 1 2 --epochs 4 --macs 0.5
"""
from __future__ import annotations

import argparse
import sys
import time
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (SAMPLE_DATA, SAMPLES, interleaved_latency, machine_info, machine_lines,  # noqa: E402
                    round_ratio)

from edgesparse._tf import keras  # noqa: E402
from edgesparse.convert.tflite import to_tflite  # noqa: E402
from edgesparse.data import load_data  # noqa: E402
from edgesparse.graph.stats import count_macs  # noqa: E402
from edgesparse.passes.lowrank.pass_ import LowRankPass  # noqa: E402
from edgesparse.passes.lowrank.procedure import Settings, factorise_model  # noqa: E402
from edgesparse.passes.prune.pass_ import PrunePass  # noqa: E402
from edgesparse.pipeline import RunContext  # noqa: E402
from edgesparse.state import ModelState  # noqa: E402
from edgesparse.train.losses import CrossEntropy  # noqa: E402
from edgesparse.train.metrics import accuracy  # noqa: E402
from edgesparse.train.trainer import train  # noqa: E402

L = keras.layers


def part1(ranks: list[int]) -> list[str]:
    mlp = keras.models.load_model(SAMPLES / "digits_mlp.keras")
    d = np.load(SAMPLE_DATA)
    x_tr, x_val, y_val = d["x_train"].reshape(-1, 64), d["x_val"].reshape(-1, 64), d["y_val"]
    base = accuracy(mlp, x_val, y_val)
    rows = ["| rank (fc1, fc2) | MACs kept | plain SVD | whitened SVD | whitened + refit | whitened - plain |",
            "|---|---|---|---|---|---|"]
    for r in ranks:
        pin = {"fc1": (r,), "fc2": (r,)}
        acc = {}
        for name, whiten, refit in (("plain", False, False), ("white", True, False), ("refit", True, True)):
            res = factorise_model(mlp, Settings(ranks=pin, whiten=whiten, refit=refit), x_tr[:512])
            acc[name] = accuracy(res.model, x_val, y_val)
            kept = res.facts["macs_kept"]
        rows.append(f"| {r} | {kept:.1%} | {acc['plain']:.2f} | {acc['white']:.2f} | {acc['refit']:.2f} | "
                    f"{acc['white'] - acc['plain']:+.2f} |")
    return [f"digits MLP (Dense 64-256-256-10), unfactorised {base:.2f} %, 360 validation samples, "
            "no fine-tune:", ""] + rows


def mobile_cnn(data, seed: int = 0, epochs: int = 30):
    """A MobileNet-style digits CNN (conv stem, two depthwise-separable blocks), trained here."""
    keras.utils.set_random_seed(seed)
    i = L.Input((8, 8, 1))
    x = L.ReLU()(L.BatchNormalization()(L.Conv2D(32, 3, padding="same", use_bias=False, name="stem")(i)))
    for n, (w, s) in enumerate(((64, 1), (128, 2))):
        x = L.ReLU()(L.BatchNormalization()(L.DepthwiseConv2D(3, strides=s, padding="same", use_bias=False)(x)))
        x = L.ReLU()(L.BatchNormalization()(L.Conv2D(w, 1, use_bias=False, name=f"pw{n}")(x)))
    x = L.Conv2D(128, 3, padding="same", activation="relu", name="head_conv")(x)
    x = L.GlobalAveragePooling2D()(x)
    o = L.Dense(10, activation="softmax", name="probs")(L.Dense(64, activation="relu", name="fc")(x))
    m = keras.Model(i, o, name="mobile_digits")
    train(m, (data.x_train, data.y_train), loss=CrossEntropy(), epochs=epochs, lr=2e-3, seed=seed)
    return m


ROUND_TO = None      # --round-to: widths and ranks for every variant; default the rpi4's 4


def _ctx(data, tmp, seed):
    from edgesparse.targets import load_target
    target = load_target("rpi4").model_copy(update={"threads": 1})      # measure: true times at 1 thread
    if ROUND_TO:
        target = target.model_copy(update={"simd_width": ROUND_TO})
    return RunContext(target=target, data=data, workdir=Path(tmp), seed=seed)


def _clone(m):
    c = keras.models.clone_model(m)
    c.set_weights(m.get_weights())
    return c


def variants(model, data, macs: float, epochs: int, seed: int, tmp) -> tuple[dict, dict, dict]:
    """(models, build seconds, lowrank facts) per variant; every variant from a copy of `model`."""
    ctx = _ctx(data, tmp, seed)
    out, seconds, facts = {}, {}, {}

    def timed(name, make):
        t0 = time.perf_counter()
        state = make()
        seconds[name] = time.perf_counter() - t0
        out[name] = state.model
        if "lowrank" in state.facts:
            facts[name] = state.facts["lowrank"]

    timed("lowrank", lambda: LowRankPass(macs=macs, method="auto", finetune_epochs=epochs).run(
        ModelState(model=_clone(model), name="m"), ctx))
    timed("lowrank, measure", lambda: LowRankPass(macs=macs, method="auto", measure=True, finetune_epochs=epochs)
          .run(ModelState(model=_clone(model), name="m"), ctx))
    timed("prune", lambda: PrunePass(macs=macs, criterion="l1", finetune_epochs=epochs).run(
        ModelState(model=_clone(model), name="m"), ctx))

    def prune_then_lowrank():
        pruned = PrunePass(macs=0.7, criterion="l1").run(ModelState(model=_clone(model), name="m"), ctx).model
        rest = min(1.0, macs * count_macs(model) / count_macs(pruned))
        return LowRankPass(macs=rest, method="auto", finetune_epochs=epochs).run(ModelState(model=pruned, name="m"),
                                                                                ctx)
    timed("prune+lowrank", prune_then_lowrank)
    return out, seconds, facts


def _ranks(f: dict) -> str:
    return ", ".join(f"{r['layer']} {r['form']} {r['ranks']}" for r in f["layers"] if r["kept"]) or "none"


def part2(name, model, data, macs, epochs, seeds, tmp) -> list[str]:
    base = accuracy(model, data.x_val, data.y_val)
    accs: dict[str, list[float]] = {}
    secs: dict[str, list[float]] = {}
    macs_of: dict[str, int] = {}
    macs_max: dict[str, int] = {}
    picked: list[str] = []
    first = None
    for seed in seeds:
        vs, seconds, facts = variants(model, data, macs, epochs, seed, tmp)
        first = first or vs
        for k, m in vs.items():
            accs.setdefault(k, []).append(accuracy(m, data.x_val, data.y_val))
            secs.setdefault(k, []).append(seconds[k])
            macs_of.setdefault(k, count_macs(m))                    # the timed model's
            macs_max[k] = max(macs_max.get(k, 0), count_macs(m))    # the bar holds on every seed
        picked.append(f"- seed {seed}: lowrank {_ranks(facts['lowrank'])}; lowrank, measure "
                      f"{_ranks(facts['lowrank, measure'])}")
        if seed == seeds[0]:
            picked.append(f"  - timed (seed {seed}): {facts['lowrank, measure']['measured_on'].split('Timed: ')[-1]}")
    paths = {"original": Path(tmp) / f"{name}-original.tflite"}
    paths["original"].write_bytes(to_tflite(model, "fp32"))
    for k, m in first.items():
        paths[k] = Path(tmp) / f"{name}-{k.replace(', ', '-')}.tflite"
        paths[k].write_bytes(to_tflite(m, "fp32"))
    lat = interleaved_latency(paths, "litert", 1, data.x_val[:1], rounds=30)
    m0 = count_macs(model)
    rows = [f"| original | {m0:,} | 100% | {base:.2f} | — | {lat['original'].p50_us:.1f} | 1.00x | — | — |"]
    speed, loss = {}, {}
    for k in first:
        a = np.asarray(accs[k])
        speed[k], loss[k] = lat["original"].p50_us / lat[k].p50_us, a.mean() - base
        _, lo, hi = round_ratio(lat["original"], lat[k])
        rows.append(f"| {k} | {macs_of[k]:,} | {macs_of[k] / m0:.1%} | {a.mean():.2f} ± {a.std():.2f} | "
                    f"{loss[k]:+.2f} | {lat[k].p50_us:.1f} | {speed[k]:.2f}x | {lo:.2f}-{hi:.2f}x | "
                    f"{np.mean(secs[k]):.1f} |")
    bars = [f"- {k}: MACs {'<=' if macs_max[k] <= macs * m0 else '>'} target on every seed; accuracy {loss[k]:+.2f} points "
            f"({'met' if loss[k] >= -1 else 'MISSED'}: <= 1 point lost); {speed[k]:.2f}x "
            f"({'met' if speed[k] >= 1.3 else 'MISSED'}: >= 1.3x)" for k in first if k.startswith("lowrank")]
    best_acc = max(first, key=lambda k: np.mean(accs[k]))
    fastest = max(first, key=lambda k: speed[k])
    return [f"{name}: at most {macs:.0%} of the MACs, fine-tune {epochs} epochs, seeds {list(seeds)} "
            "(mean ± std), LiteRT fp32 batch 1, 1 thread, interleaved (p50 of single inferences; "
            "rounds: p25-p75 of the per-round ratio; build s: the pass's wall time, mean over seeds, "
            "fine-tune included). MACs and latency: seed "
            f"{seeds[0]}'s model:", "",
            "| variant | MACs | kept | accuracy % | vs original | p50 µs | speed-up | rounds | build s |",
            "|---|---|---|---|---|---|---|---|---|"] + rows + [
            "", *bars, f"- most accurate: {best_acc}; fastest: {fastest}", "", "Ranks kept:", *picked]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ranks", type=int, nargs="+", default=[2, 4, 8, 16, 32])
    p.add_argument("--macs", type=float, default=0.5)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--skip", nargs="*", default=[], help="parts to skip: mlp cnn mobile")
    p.add_argument("--round-to", type=int, default=None,
                   help="round widths and ranks of every variant to this (default: the rpi4's 4)")
    args = p.parse_args()
    global ROUND_TO
    ROUND_TO = args.round_to
    lines = machine_lines(machine_info()) + [f"- widths and ranks rounded to {args.round_to or 4}", ""]
    if "mlp" not in args.skip:
        lines += part1(args.ranks) + [""]
    data = load_data(SAMPLE_DATA, (8, 8, 1), 10)
    with tempfile.TemporaryDirectory() as tmp:
        if "cnn" not in args.skip:
            cnn = keras.models.load_model(SAMPLES / "digits_cnn.keras")
            lines += part2("digits_cnn", cnn, data, args.macs, args.epochs, args.seeds, tmp) + [""]
        if "mobile" not in args.skip:
            lines += part2("mobile_digits", mobile_cnn(data), data, args.macs, args.epochs, args.seeds, tmp) + [""]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
