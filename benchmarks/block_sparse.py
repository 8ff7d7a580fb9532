"""Block sparsity LiteRT really runs faster (issue 11, DESIGN trap 4): 1x4-block fp32 weights at
90% against the dense fp32 artifact, one interleaved run, batch 1, one thread.

    PYTHONPATH=$PWD python benchmarks/block_sparse.py [--json out.json]

Variants per model: dense fp32; 1x4-block 90% (sparse encoding, the FULLY_CONNECTED kernel runs
the blocks); random 90% with the same encoding (CSR, the converter adds DENSIFY). Models: a
2048-wide MLP (784-2048-2048-10, weights trained briefly on random data: latency does not
depend on their values, only on the mask) and the digits MLP (64-256-256-10, trained on digits
with RigL in blocks, so its accuracy is reported too). Every artifact is read back to say how
its weights are stored (checks/sparse.py).

Then the per-layer choice of `pattern: auto-block` (edgesparse/passes/sparsify/latency.py) on
both models: every Dense layer timed alone, dense and in 1x4 blocks at its ERK density at 90%,
and the layer kept in blocks only where that ran at least MIN_SPEEDUP faster.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import interleaved_latency, round_ratio, runtime_accuracy  # noqa: E402

from edgesparse._tf import keras  # noqa: E402
from edgesparse.checks.sparse import block_sparse_check  # noqa: E402
from edgesparse.convert.tflite import to_tflite  # noqa: E402
from edgesparse.passes.sparsify import latency  # noqa: E402
from edgesparse.passes.sparsify.dynamic import Grid, Settings, _topk, planned_densities, sparse_train  # noqa: E402
from edgesparse.runtime.tflite_file import read_tflite  # noqa: E402


def mlp(inputs: int, widths, seed=0):
    keras.utils.set_random_seed(seed)
    i = keras.Input((inputs,))
    h = i
    for w in widths:
        h = keras.layers.Dense(w, activation="relu")(h)
    return keras.Model(i, keras.layers.Dense(10)(h))


def masked_copy(model, sparsity: float, block: int, seed: int):
    """A copy with each hidden Dense kernel masked to `sparsity`: random 1xblock blocks (block 1:
    random single weights)."""
    rng = np.random.default_rng(seed)
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    for layer in copy.layers[1:-1]:
        grid = Grid(layer, block)
        keep = int(round(grid.size * (1 - sparsity)))
        layer.kernel.assign(layer.kernel.numpy() * grid.to_elements(_topk(rng.random(grid.units), keep)))
    return copy


def measure(name, variants: dict, sample, tmp: Path, x=None, y=None) -> dict:
    paths, storage = {}, {}
    for key, (model, sparse) in variants.items():
        path = tmp / f"{name}-{key}.tflite"
        path.write_bytes(to_tflite(model, "fp32", sparse=sparse))
        paths[key] = path
        check = block_sparse_check(read_tflite(path), 4)
        storage[key] = {"blocked_weights": check["blocked_weights"], "densify_ops": len(check["densify_ops"]),
                        "bytes": path.stat().st_size}
    lat = interleaved_latency(paths, "litert", 1, sample)
    base = lat["dense fp32"]
    out = {}
    for key in paths:
        ratio = round_ratio(base, lat[key])
        out[key] = {**lat[key].summary(), **storage[key], "speedup_vs_dense": round(ratio[0], 3),
                    "speedup_p25_p75": [round(ratio[1], 3), round(ratio[2], 3)]}
        if x is not None:
            out[key]["accuracy"] = round(runtime_accuracy(paths[key], x, y), 2)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    started = time.time()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        wide = mlp(784, (2048, 2048))
        sample = np.random.default_rng(0).random((1, 784), dtype=np.float32)
        results["mlp 784-2048-2048-10"] = measure("wide", {
            "dense fp32": (wide, False),
            "1x4 blocks 90%": (masked_copy(wide, 0.9, 4, 0), True),
            "random 90%": (masked_copy(wide, 0.9, 1, 0), True)}, sample, tmp)

        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        d = load_digits()
        x = (d.data / 16.0).astype(np.float32)
        x_tr, x_te, y_tr, y_te = train_test_split(x, d.target, test_size=0.2, random_state=0, stratify=d.target)
        dense = mlp(64, (256, 256))
        from edgesparse.train.losses import CrossEntropy
        from edgesparse.train.trainer import train

        train(dense, (x_tr, y_tr), loss=CrossEntropy(), epochs=30, lr=3e-3, batch_size=64, schedule="cosine")
        common = dict(update_every=25, epochs=30, batch_size=64, learning_rate=3e-3, lr_schedule="cosine", init="random")
        blocked = sparse_train(mlp(64, (256, 256)), x_tr, y_tr, Settings("rigl", 0.9, block=4, **common)).model
        unstructured = sparse_train(mlp(64, (256, 256)), x_tr, y_tr, Settings("rigl", 0.9, **common)).model
        results["digits 64-256-256-10"] = measure("digits", {
            "dense fp32": (dense, False), "1x4 blocks 90% (rigl)": (blocked, True),
            "random 90% (rigl)": (unstructured, True)}, x_te[:1], tmp, x_te, y_te)
        choices = {name: latency.choose_blocks(m, planned_densities(m, 0.9, "erk"))
                   for name, m in (("mlp 784-2048-2048-10", wide), ("digits 64-256-256-10", dense))}
    minutes = (time.time() - started) / 60
    print(f"LiteRT fp32, 1 thread, batch 1, variants interleaved; {minutes:.1f} min\n")
    print("| model | variant | p50 µs | speed-up vs dense (p25-p75) | blocked FC weights | DENSIFY ops | bytes | accuracy % |")
    print("|---|---|---|---|---|---|---|---|")
    for model, rows in results.items():
        for key, r in rows.items():
            print(f"| {model} | {key} | {r['p50_us']:.1f} | {r['speedup_vs_dense']:.2f}x "
                  f"({r['speedup_p25_p75'][0]:.2f}-{r['speedup_p25_p75'][1]:.2f}) | {r['blocked_weights']} | "
                  f"{r['densify_ops']} | {r['bytes']} | {r.get('accuracy', '')} |")
    print(f"\nauto-block per-layer choice (each Dense layer alone, ERK density at 90%, "
          f"blocks kept at >= {latency.MIN_SPEEDUP:g}x)\n")
    print("| model | layer | kernel | density | dense µs | 1x4 blocks µs | speed-up | choice |")
    print("|---|---|---|---|---|---|---|---|")
    for model, layers in choices.items():
        m = wide if model.startswith("mlp") else dense
        for name, c in layers.items():
            shape = "x".join(str(int(d)) for d in m.get_layer(name).kernel.shape)
            if "speedup" not in c:
                print(f"| {model} | {name} | {shape} | | | | | {c['latency']} |")
                continue
            choice = "1x4 blocks" if c["block"] > 1 else "size only (unstructured)"
            print(f"| {model} | {name} | {shape} | {c['density']:.4f} | {c['dense_us']:.1f} | {c['block_us']:.1f} "
                  f"| {c['speedup']:.2f}x | {choice} |")
    if args.json:
        args.json.write_text(json.dumps({"variants": results, "auto_block": choices}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
