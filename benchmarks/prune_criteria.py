"""Structured pruning criteria side by side on the sample models.

For each sample model and criterion, at one budget (default: keep 50% of the MACs):
MACs, params, validation accuracy one-shot (cut only), after least-squares reconstruction, and
after reconstruction plus a short fine-tune; and the measured fp32 TFLite latency ratio against
the unpruned model. All latency variants are measured in this one process, interleaved round
by round in a rotating order, same LiteRT interpreter settings and thread count.

The control a careful reader asks for is printed too: the pruned architecture trained from
scratch (fresh initialisation) for as many epochs as the sample model got.

    python benchmarks/prune_criteria.py                       # both sample models, all criteria
    python benchmarks/prune_criteria.py --models digits_cnn --macs 0.5 --rounds 40
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from edgesparse._tf import keras, tf
from edgesparse.data import load_data
from edgesparse.graph.stats import count_macs
from edgesparse.passes.prune.allocation import Budget
from edgesparse.passes.prune.criteria import CRITERIA
from edgesparse.passes.prune.procedure import Data, Settings, prune
from edgesparse.train.losses import sparse_cross_entropy as loss_fn
from edgesparse.train.metrics import accuracy

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_models"


def tflite_blob(model) -> bytes:
    spec = tf.TensorSpec((1,) + tuple(model.inputs[0].shape[1:]), tf.float32)
    fn = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    return tf.lite.TFLiteConverter.from_concrete_functions([fn], model).convert()


class Timed:
    def __init__(self, blob: bytes, x: np.ndarray, threads: int):
        from ai_edge_litert.interpreter import Interpreter

        self.it = Interpreter(model_content=blob, num_threads=threads)
        self.it.allocate_tensors()
        self.inp = self.it.get_input_details()[0]["index"]
        self.it.set_tensor(self.inp, x[:1])
        self.samples: list[float] = []

    def block(self, n: int) -> None:
        it = self.it
        start = time.perf_counter()
        for _ in range(n):
            it.invoke()
        self.samples.append((time.perf_counter() - start) / n)


def measure_latency(blobs: dict[str, bytes], x: np.ndarray, threads: int, rounds: int) -> dict[str, dict]:
    timers = {k: Timed(b, x, threads) for k, b in blobs.items()}
    base = timers["unpruned"]
    for t in timers.values():             # warm up
        t.block(50)
        t.samples.clear()
    start = time.perf_counter()
    base.block(200)
    per_call = max((time.perf_counter() - start) / 200, 1e-7)
    base.samples.clear()
    n = max(20, int(0.02 / per_call))     # ~20 ms per block for the unpruned model
    names = list(timers)
    for r in range(rounds):
        for k in names[r % len(names):] + names[: r % len(names)]:   # rotate the order each round
            timers[k].block(n)
    out = {}
    b = np.array(base.samples)
    for k, t in timers.items():
        s = np.array(t.samples)
        ratio = s / b                                                 # per round, same round
        out[k] = {"p50_us": float(np.median(s) * 1e6), "ratio": float(np.median(s) / np.median(b)),
                  "ratio_iqr": (float(np.percentile(ratio, 25)), float(np.percentile(ratio, 75)))}
    return out


def scratch_control(arch, data, epochs: int, seed: int) -> float:
    keras.utils.set_random_seed(seed)
    scratch = keras.models.clone_model(arch)      # same architecture, fresh initialisation
    scratch.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss_fn(scratch))
    scratch.fit(data.x_train, data.y_train, batch_size=32, epochs=epochs, shuffle=True, verbose=0)
    return accuracy(scratch, data.x_val, data.y_val)


def run_model(name: str, args) -> list[dict]:
    model = keras.models.load_model(SAMPLES / f"{name}.keras")
    data = load_data(SAMPLES / "digits.npz", tuple(model.inputs[0].shape[1:]), 10)
    d = Data(data.x_calib[: args.calibration], data.x_train, data.y_train, data.x_val, data.y_val)
    base_acc = accuracy(model, data.x_val, data.y_val)
    rows = [{"model": name, "variant": "unpruned", "macs": count_macs(model), "params": model.count_params(),
             "one_shot": base_acc, "recon": base_acc, "finetuned": base_acc}]
    blobs = {"unpruned": tflite_blob(model)}
    arch = None
    for crit, alloc in args.variants:
        settings = Settings(budget=Budget("macs", args.macs), criterion=crit, allocation=alloc,
                            round_to=args.round_to, finetune_epochs=args.finetune_epochs, seed=args.seed)
        started = time.perf_counter()
        res = prune(model, settings, d)
        step = res.facts["steps"][0]
        key = f"{crit}/{alloc}"
        rows.append({"model": name, "variant": key, "macs": res.facts["macs_after"],
                     "params": res.facts["params_after"], "one_shot": step["accuracy_pruned"],
                     "recon": step["accuracy_reconstructed"], "finetuned": step.get("accuracy_finetuned"),
                     "seconds": time.perf_counter() - started})
        blobs[key] = tflite_blob(res.model)
        if arch is None and alloc == "uniform":
            arch = res.model
    lat = measure_latency(blobs, data.x_val, args.threads, args.rounds)
    for r in rows:
        r.update(lat[r["variant"]])
    if arch is not None and args.scratch_epochs > 0:
        rows.append({"model": name, "variant": f"scratch ({args.scratch_epochs} ep, uniform arch)",
                     "macs": count_macs(arch), "params": arch.count_params(), "one_shot": None, "recon": None,
                     "finetuned": scratch_control(arch, data, args.scratch_epochs, args.seed)})
    return rows


def fmt(v, pct=False):
    if v is None:
        return "—"
    return f"{v:.2f}" if pct else str(v)    # accuracies are percentages already


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["digits_cnn", "digits_mlp"])
    p.add_argument("--criteria", nargs="+", default=sorted(c for c in CRITERIA if c != "taylor") + ["taylor"])
    p.add_argument("--global-for", nargs="*", default=["l1", "thinet"], help="criteria also run with global allocation")
    p.add_argument("--macs", type=float, default=0.5, help="fraction of MACs to keep")
    p.add_argument("--round-to", type=int, default=4)
    p.add_argument("--finetune-epochs", type=int, default=3)
    p.add_argument("--scratch-epochs", type=int, default=40)
    p.add_argument("--calibration", type=int, default=512)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    args.variants = [(c, "uniform") for c in args.criteria] + [(c, "global") for c in args.global_for]

    print(f"budget: keep <= {args.macs:.0%} of MACs, round_to={args.round_to}, fine-tune "
          f"{args.finetune_epochs} epochs; LiteRT fp32, batch 1, {args.threads} thread(s), "
          f"{args.rounds} interleaved rounds; accuracy on the digits validation split (%)")
    header = ["model", "variant", "MACs", "params", "acc cut", "acc +LS", "acc +LS+FT",
              "latency p50 us", "latency ratio (IQR)"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name in args.models:
        for r in run_model(name, args):
            lat = (f"{r['ratio']:.2f} ({r['ratio_iqr'][0]:.2f}-{r['ratio_iqr'][1]:.2f})"
                   if "ratio" in r else "—")
            p50 = f"{r['p50_us']:.1f}" if "p50_us" in r else "—"
            print(f"| {r['model']} | {r['variant']} | {r['macs']} | {r['params']} | {fmt(r['one_shot'], True)} | "
                  f"{fmt(r['recon'], True)} | {fmt(r['finetuned'], True)} | {p50} | {lat} |", flush=True)


if __name__ == "__main__":
    main()
