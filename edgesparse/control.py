"""The control a careful reader asks for: the same small architecture trained from scratch.

If a pruned-and-distilled network is no better than its architecture trained from random
initialisation with the same number of epochs, the pruning bought nothing but the shape
(Liu et al., "Rethinking the Value of Network Pruning", 2019). The report puts both side by side.
"""
from __future__ import annotations

from typing import Any

from edgesparse.graph.stats import model_summary
from edgesparse.train.losses import CrossEntropy
from edgesparse.train.metrics import accuracy
from edgesparse.train.trainer import train

FALLBACK_EPOCHS = 15


def epochs_used(state) -> int:
    """Epochs of training the compressed model received, summed over the passes' facts."""
    return int(sum(int(f.get("epochs_run", 0) or 0) for f in state.facts.values() if isinstance(f, dict)))


def train_from_scratch(state, records, data, seed: int, progress) -> dict[str, Any]:
    from edgesparse._tf import keras

    if not data.labelled:
        return {"skipped": "the control needs labelled data"}
    epochs = epochs_used(state)
    note = None
    if epochs == 0:
        epochs, note = FALLBACK_EPOCHS, f"the compressed model was not trained; the control gets {FALLBACK_EPOCHS} epochs"
    keras.utils.set_random_seed(seed)
    scratch = keras.models.clone_model(state.model)          # same architecture, fresh initialisation
    train(scratch, (data.x_train, data.y_train), loss=CrossEntropy(), epochs=epochs, lr=2e-3,
          schedule="cosine", batch_size=64, seed=seed, shuffle="keras", progress=progress,
          label="control: training the pruned architecture from scratch")
    out = {"epochs": epochs, "architecture": model_summary(scratch),
           "accuracy_from_scratch": round(accuracy(scratch, data.x_val, data.y_val), 3),
           "accuracy_compressed": round(accuracy(state.model, data.x_val, data.y_val), 3)}
    if note:
        out["note"] = note
    return out
