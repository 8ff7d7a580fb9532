"""Post-training sparsity on the sample models: how much each ingredient of the refit buys.

    python benchmarks/sparsify_refit.py [--model sample_models/digits_mlp.keras]
                                        [--data sample_models/digits.npz]
                                        [--sparsity 0.8 0.9 0.95 0.97 0.98]
                                        [--no-tfmot] [--no-sizes]

For each sparsity, validation accuracy (%) and top-1 agreement with the dense model (%) of:
  mask only         |W| mask per layer (uniform), no refit
  mask + LS         |W| mask, least-squares refit of each layer on the *dense* network's inputs
  mask + LS cascade |W| mask, refit on the already-sparsified network's inputs (uniform budget)
  ERK + cascade     the same with the ERK budget across layers
  Wanda + cascade   |W|*||x|| mask, ERK, cascade
  OBS, uniform      our refit with a uniform budget (ablation)
  ours              gradual OBS masks + refit, ERK budget, cascade (the `sparsify` default)
  tfmot 4 ep.       tfmot prune_low_magnitude with a 4-epoch labelled fine-tune (reference;
                    the only row that uses labels and gradients)
then the sizes of "ours" in bytes: TFLite fp32, gzip of it, TFLite with the sparse encoding,
int8, int8 with the sparse encoding. Calibration data is the training split; accuracy is
measured on the validation split only. Seconds are wall time of the sparsification step.
With 360 validation samples one sample is 0.28 points: agreement with the dense model is the
finer measure of how much of the network's function survived.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from edgesparse._tf import keras  # noqa: E402
from edgesparse.data import load_data  # noqa: E402
from edgesparse.train.metrics import accuracy, predict  # noqa: E402
from edgesparse.passes.sparsify.magnitude import magnitude_prune  # noqa: E402
from edgesparse.passes.sparsify.masks import Pattern, parse_pattern  # noqa: E402
from edgesparse.passes.sparsify.refit import sparse_refit  # noqa: E402
from edgesparse.passes.sparsify.sizes import model_sizes  # noqa: E402

U = Pattern()
METHODS = {
    "mask only": dict(criterion="magnitude", allocation="uniform", refit=False),
    "mask + LS": dict(criterion="magnitude", allocation="uniform", cascade=False),
    "mask + LS cascade": dict(criterion="magnitude", allocation="uniform"),
    "ERK + cascade": dict(criterion="magnitude", allocation="erk"),
    "Wanda + cascade": dict(criterion="activation", allocation="erk"),
    "OBS, uniform": dict(criterion="obs", allocation="uniform"),
    "ours": dict(criterion="obs", allocation="erk"),
}


def kernel_sparsity(model) -> float:
    kernels = [l.kernel.numpy() for l in model.layers if getattr(l, "kernel", None) is not None]
    return sum(int((k == 0).sum()) for k in kernels) / sum(k.size for k in kernels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sample_models/digits_mlp.keras")
    parser.add_argument("--data", default="sample_models/digits.npz")
    parser.add_argument("--sparsity", type=float, nargs="+", default=[0.8, 0.9, 0.95, 0.97, 0.98])
    parser.add_argument("--patterns", nargs="*", default=["2:4", "1:4"],
                        help="N:M patterns for the second table (empty: skip it)")
    parser.add_argument("--no-tfmot", action="store_true")
    parser.add_argument("--no-sizes", action="store_true")
    args = parser.parse_args()

    model = keras.models.load_model(args.model, compile=False)
    data = load_data(args.data, tuple(model.input_shape[1:]), int(model.output_shape[-1]))
    dense_acc = accuracy(model, data.x_val, data.y_val)
    print(f"model {args.model}: dense validation accuracy {dense_acc:.2f}% "
          f"({len(data.x_val)} validation samples, {len(data.x_calib)} calibration samples)\n")

    methods = dict(METHODS)
    if not args.no_tfmot:
        methods["tfmot 4 ep."] = None
    header = ["method"] + [f"{s:.0%}" for s in args.sparsity]
    dense_top1 = predict(model, data.x_val).argmax(-1)
    rows, agree_rows, time_rows, ours = [], [], [], {}
    for name, kwargs in methods.items():
        accs, agrees, secs = [], [], []
        for s in args.sparsity:
            started = time.perf_counter()
            if kwargs is None:
                sparse = magnitude_prune(model, data.x_train, data.y_train, s, U, epochs=4).model
            else:
                sparse = sparse_refit(model, data.x_calib, s, U, **kwargs).model
            secs.append(time.perf_counter() - started)
            assert kernel_sparsity(sparse) >= s - 0.005, (name, s, kernel_sparsity(sparse))
            accs.append(accuracy(sparse, data.x_val, data.y_val))
            agrees.append(100 * float(np.mean(predict(sparse, data.x_val).argmax(-1) == dense_top1)))
            if name == "ours":
                ours[s] = sparse
        rows.append([name] + [f"{a:.2f}" for a in accs])
        agree_rows.append([name] + [f"{a:.2f}" for a in agrees])
        time_rows.append([name] + [f"{t:.1f}" for t in secs])
        print(f"  {name}: done", file=sys.stderr, flush=True)
    print("validation accuracy (%) at each kernel sparsity")
    _print_table(header, rows)
    print("\ntop-1 agreement with the dense model on the validation split (%)")
    _print_table(header, agree_rows)
    print("\nseconds to sparsify")
    _print_table(header, time_rows)

    if args.patterns:
        nm_methods = {k: METHODS[k] for k in ("mask only", "mask + LS cascade", "Wanda + cascade", "ours")}
        if not args.no_tfmot:
            nm_methods["tfmot 4 ep."] = None
        nm_rows = []
        for name, kwargs in nm_methods.items():
            row = [name]
            for text in args.patterns:
                pattern = parse_pattern(text)
                if kwargs is None:
                    sparse = magnitude_prune(model, data.x_train, data.y_train, 0, pattern, epochs=4).model
                else:
                    sparse = sparse_refit(model, data.x_calib, 0, pattern, **kwargs).model
                agree = 100 * float(np.mean(predict(sparse, data.x_val).argmax(-1) == dense_top1))
                row.append(f"{accuracy(sparse, data.x_val, data.y_val):.2f} / {agree:.2f} "
                           f"({kernel_sparsity(sparse):.0%})")
            nm_rows.append(row)
        print("\nN:M patterns: validation accuracy / agreement with dense (%) (kernel sparsity)")
        _print_table(["method"] + args.patterns, nm_rows)

    if not args.no_sizes:
        print("\nsizes of 'ours' (bytes)")
        keys = ["tflite_fp32_bytes", "tflite_fp32_gzip_bytes", "tflite_fp32_sparse_bytes",
                "tflite_int8_bytes", "tflite_int8_gzip_bytes", "tflite_int8_sparse_bytes"]
        size_rows = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for label, m in [("dense", model)] + [(f"{s:.0%}", ours[s]) for s in args.sparsity]:
                sz = model_sizes(m, data.x_calib)
                size_rows.append([label] + [str(sz[k]) for k in keys]
                                 + ["yes" if sz["int8_sparse_larger"] else "no"])
        _print_table(["model"] + [k.removesuffix("_bytes") for k in keys] + ["int8 sparse larger"],
                     size_rows)


def _print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r))


if __name__ == "__main__":
    main()
