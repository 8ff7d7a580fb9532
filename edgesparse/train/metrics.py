"""Keras-side measurements shared by the instruments, the budget search and the passes.

Accuracy and agreement are percentages everywhere (the one unit the reports print).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from edgesparse.graph.stats import model_summary


def predict(model, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Model outputs without Keras' per-call overhead or progress bars."""
    outs = [np.asarray(model(x[i:i + batch_size], training=False)) for i in range(0, len(x), batch_size)]
    return np.concatenate(outs) if outs else np.zeros((0,))


def accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy in percent."""
    return float(np.mean(predict(model, x).argmax(axis=-1) == np.asarray(y).reshape(-1)) * 100.0)


def agreement(model, reference_outputs: np.ndarray, x: np.ndarray) -> float:
    """Top-1 agreement in percent with a reference's outputs: the fidelity measure without labels."""
    return float(np.mean(predict(model, x).argmax(axis=-1) == np.argmax(reference_outputs, -1)) * 100.0)


def keras_metrics(state, ctx) -> dict[str, Any]:
    """Params, MACs and (with labelled data) Keras validation accuracy of the working model."""
    metrics: dict[str, Any] = dict(model_summary(state.model))
    data = ctx.data
    if data.labelled and data.x_val is not None:
        metrics["accuracy"] = round(accuracy(state.model, data.x_val, data.y_val), 3)
    return metrics
