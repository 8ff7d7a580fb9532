"""`measure: true`: keep a factorisation only where it runs faster in LiteRT on THIS machine.

Each layer and its factorised chain are converted alone (fp32, batch 1) and timed interleaved
in one process with the target's thread count (DESIGN "Measuring"). This host is not the target
(an x86 build machine, not a Cortex-A72 or an Edge TPU): the report says so, and the decision
is only as good as the host's resemblance to the device.
"""
from __future__ import annotations

import time

import numpy as np

from edgesparse._tf import keras


def _single(shape: tuple, layers: list):
    i = keras.Input(shape[1:], batch_size=1)
    x = i
    for layer in layers:
        x = layer(x)
    return keras.Model(i, x)


def _interpreter(model, threads: int):
    from ai_edge_litert.interpreter import Interpreter

    from edgesparse.convert import quiet
    from edgesparse.convert.tflite import to_tflite

    blob = to_tflite(model, "fp32")
    with quiet():
        it = Interpreter(model_content=blob, num_threads=threads)
        it.allocate_tensors()
    d = it.get_input_details()[0]
    it.set_tensor(d["index"], np.random.default_rng(0).normal(size=d["shape"]).astype(np.float32))
    return it


def speedup(layer, chain: list, threads: int = 1, rounds: int = 15, k: int = 30) -> float:
    """p50 latency of the layer divided by that of its factorised chain (> 1: the chain is faster)."""
    shape = tuple(layer.input_shape)
    original = keras.layers.deserialize({"class_name": type(layer).__name__, "config": layer.get_config()})
    runners = [_interpreter(_single(shape, [original]), threads), _interpreter(_single(shape, chain), threads)]
    times: list[list[int]] = [[], []]
    for it in runners:
        for _ in range(10):
            it.invoke()
    for rnd in range(rounds):
        for j in ((0, 1) if rnd % 2 == 0 else (1, 0)):
            it = runners[j]
            for _ in range(k):
                t0 = time.perf_counter_ns()
                it.invoke()
                times[j].append(time.perf_counter_ns() - t0)
    return float(np.median(times[0]) / max(np.median(times[1]), 1.0))
