"""Time a few .tflite blobs against each other in LiteRT, interleaved (DESIGN "Measuring").

The passes that choose a form by speed (lowrank `measure: true`, sparsify `auto-block`) ask
this one timer: every variant is loaded in this process with the same thread count and random
input, warmed up, then timed round by round with the order alternating, each inference on its
own with `perf_counter_ns`. Callers take the statistic they need from the raw times.
Standard library, numpy and LiteRT only.
"""
from __future__ import annotations

import time

import numpy as np


def litert_interpreter(blob: bytes, threads: int = 1):
    """The blob loaded in LiteRT with a random float input set once (batch 1, one input)."""
    from ai_edge_litert.interpreter import Interpreter

    from edgesparse.convert import quiet

    with quiet():
        it = Interpreter(model_content=blob, num_threads=threads)
        it.allocate_tensors()
    d = it.get_input_details()[0]
    it.set_tensor(d["index"], np.random.default_rng(0).normal(size=d["shape"]).astype(np.float32))
    return it


def interleaved_times(blobs: list[bytes], *, threads: int = 1, rounds: int = 15, k: int | None = None,
                      warmup: int = 10, round_ns: int = 2_000_000) -> list[list[list[int]]]:
    """times[variant][round] = k single-inference times in ns. `k=None` picks k so that one
    variant's block of a round lasts about `round_ns` (from the first variant's warm-up)."""
    runners = [litert_interpreter(b, threads) for b in blobs]
    for it in runners:
        for _ in range(warmup):
            it.invoke()
    if k is None:
        t0 = time.perf_counter_ns()
        for _ in range(warmup):
            runners[0].invoke()
        k = int(min(2000, max(5, round_ns * warmup / max(time.perf_counter_ns() - t0, 1))))
    times: list[list[list[int]]] = [[] for _ in runners]
    order = list(range(len(runners)))
    for rnd in range(rounds):
        for j in (order if rnd % 2 == 0 else order[::-1]):
            block = []
            for _ in range(k):
                s = time.perf_counter_ns()
                runners[j].invoke()
                block.append(time.perf_counter_ns() - s)
            times[j].append(block)
    return times
