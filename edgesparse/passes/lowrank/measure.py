"""`measure: true`: time a layer against its factorised chains in LiteRT on THIS machine.

The layer and each candidate chain (the same layer at a few rank settings) are converted alone
(fp32, batch 1) and timed interleaved in ONE run, in one process with the target's thread count
(DESIGN "Measuring"), so the ratios of one layer's candidates are comparable with each other.
This host is not the target (an x86 build machine, not a Cortex-A72 or an Edge TPU): the report
says so, and the choice is only as good as the host's resemblance to the device.
"""
from __future__ import annotations

import numpy as np

from edgesparse._tf import keras


def _single(shape: tuple, layers: list):
    i = keras.Input(shape[1:], batch_size=1)
    x = i
    for layer in layers:
        x = layer(x)
    return keras.Model(i, x)


def speedups(layer, chains: list[list], threads: int = 1, rounds: int = 15, k: int = 30) -> list[float]:
    """Per chain, p50 latency of the layer divided by that of the chain (> 1: the chain is
    faster), the layer and every chain timed in one interleaved run."""
    shape = tuple(layer.input_shape)
    original = keras.layers.deserialize({"class_name": type(layer).__name__, "config": layer.get_config()})
    from edgesparse.convert.tflite import to_tflite
    from edgesparse.runtime.interleave import interleaved_times

    blobs = [to_tflite(_single(shape, [original]), "fp32")] + [to_tflite(_single(shape, c), "fp32") for c in chains]
    times = interleaved_times(blobs, threads=threads, rounds=rounds, k=k)
    p50 = [float(np.median(np.concatenate(t))) for t in times]
    return [p50[0] / max(p, 1.0) for p in p50[1:]]
