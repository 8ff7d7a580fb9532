"""Run a .tflite in LiteRT one sample at a time (batch 1, as exported): the tests' own check of an
artifact, independent of edgesparse's runtime/ opener."""
from __future__ import annotations

import numpy as np
from ai_edge_litert.interpreter import Interpreter


def run_tflite(blob: bytes, x: np.ndarray, threads: int | None = None) -> np.ndarray:
    it = Interpreter(model_content=blob, num_threads=threads)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    rows = []
    for sample in x:
        it.set_tensor(inp["index"], sample[None])
        it.invoke()
        rows.append(it.get_tensor(out["index"])[0])
    return np.stack(rows)
