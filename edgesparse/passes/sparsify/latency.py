"""`pattern: auto-block`: 1x4 blocks only on the Dense layers they make faster, measured here.

1x4 blocks pay only where a Dense layer is wide enough for the sparse kernel's saving to beat
its per-op overhead (benchmarks/block_sparse.py: 19x on a 2048-wide MLP, 0.84x on the digits
MLP). So each Dense layer is converted alone twice (fp32, batch 1): dense, and with a random
1x4-block mask at the density the allocation gives it, stored in TFLite's sparse encoding.
Both run interleaved in LiteRT in one process, one thread; a layer keeps blocks when its
blocked form is at least `MIN_SPEEDUP` faster (median over rounds of the per-round ratio).
Every other layer is trained unstructured and labelled "size only".

This host is an x86 build machine, not the device: the decision is only as good as the host's
resemblance to it, and the facts say where it was measured.
"""
from __future__ import annotations

import platform

import numpy as np

from edgesparse._tf import keras

BLOCK = 4                 # fp32 blocks (1x16 is the int8 kernel's; auto-block chooses fp32 1x4)
MIN_SPEEDUP = 1.1         # below this the measured gain is within this shared host's timing noise
ROUNDS = 15               # each variant runs about 2 ms per round (interleaved_times)


def _alone(layer, kernel: np.ndarray, bias: np.ndarray | None):
    """The Dense layer by itself, batch 1, with the given kernel."""
    config = dict(layer.get_config(), name="alone")
    i = keras.Input((int(kernel.shape[0]),), batch_size=1)
    dense = keras.layers.Dense.from_config(config)
    model = keras.Model(i, dense(i))
    dense.set_weights([kernel] + ([bias] if bias is not None else []))
    return model


def random_blocks(shape: tuple[int, int], density: float, rng) -> np.ndarray:
    """A 0/1 kernel mask of random 1x4 blocks along the input axis keeping `density` of them."""
    units = (shape[0] // BLOCK, shape[1])
    keep = max(1, int(round(density * units[0] * units[1])))
    flat = np.zeros(units[0] * units[1], dtype=bool)
    flat[rng.permutation(flat.size)[:keep]] = True
    return np.repeat(flat.reshape(units), BLOCK, axis=0)


def measure_layer(layer, density: float, seed: int = 0) -> dict:
    """Time the layer dense and 1x4-blocked at `density`; p50s in µs and the ratio."""
    from edgesparse.checks.sparse import block_sparse_check
    from edgesparse.convert.tflite import to_tflite
    from edgesparse.runtime.interleave import interleaved_times
    from edgesparse.runtime.tflite_file import read_tflite

    kernel = layer.kernel.numpy()
    bias = layer.bias.numpy() if getattr(layer, "use_bias", False) else None
    mask = random_blocks(kernel.shape, density, np.random.default_rng(seed))
    dense_blob = to_tflite(_alone(layer, kernel, bias), "fp32")
    block_blob = to_tflite(_alone(layer, kernel * mask, bias), "fp32", sparse=True)
    stored = block_sparse_check(read_tflite(block_blob), BLOCK)
    times = interleaved_times([dense_blob, block_blob], rounds=ROUNDS)
    rounds = [[float(np.median(block)) for block in variant] for variant in times]
    ratio = float(np.median(np.asarray(rounds[0]) / np.asarray(rounds[1])))
    return {"dense_us": round(float(np.median(rounds[0])) / 1e3, 2),
            "block_us": round(float(np.median(rounds[1])) / 1e3, 2),
            "speedup": round(ratio, 3), "stored_in_blocks": bool(stored["passed"])}


def choose_blocks(model, densities: dict[str, float], seed: int = 0) -> dict[str, dict]:
    """Per Dense layer named in `densities`: the measurement and the choice (block 4 or 1).

    A layer whose input width is not a multiple of 4 cannot hold 1x4 blocks: unstructured,
    unmeasured. A blocked form the converter did not store in blocks runs dense: no blocks.
    """
    where = f"LiteRT fp32, 1 thread, batch 1, layer alone, on this host ({platform.machine()})"
    out = {}
    for name, density in densities.items():
        layer = model.get_layer(name)
        if type(layer).__name__ != "Dense" or int(layer.kernel.shape[0]) % BLOCK:
            why = ("not a Dense layer" if type(layer).__name__ != "Dense"
                   else f"{int(layer.kernel.shape[0])} inputs, not a multiple of {BLOCK}")
            out[name] = {"block": 1, "latency": f"size only ({why}; not measured)"}
            continue
        if density >= 1.0:
            out[name] = {"block": 1, "density": 1.0,
                         "latency": "dense (the allocation keeps every weight; not measured)"}
            continue
        m = measure_layer(layer, density, seed)
        faster = m["stored_in_blocks"] and m["speedup"] >= MIN_SPEEDUP
        label = (f"measured {m['speedup']:.2f}x faster in 1x{BLOCK} blocks ({where})" if faster else
                 f"size only (1x{BLOCK} blocks measured {m['speedup']:.2f}x, below {MIN_SPEEDUP:g}x; {where})")
        out[name] = {**m, "density": round(density, 6), "block": BLOCK if faster else 1, "latency": label}
    return out
