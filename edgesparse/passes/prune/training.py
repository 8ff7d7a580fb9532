"""The prune pass's short supervised fine-tune, on the one training loop (train.trainer)."""
from __future__ import annotations

import numpy as np

from edgesparse.train.losses import CrossEntropy
from edgesparse.train.trainer import train


def finetune(model, x: np.ndarray, y: np.ndarray, epochs: int, lr: float,
             batch_size: int = 64, seed: int = 0) -> list[float]:
    """A short supervised fine-tune in place (Adam, constant rate); returns the loss per epoch.

    Keras' own shuffle: the batch order `model.fit(x, y, shuffle=True)` gave, so the figures stay."""
    result = train(model, (x, y), loss=CrossEntropy(), epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                   shuffle="keras")
    return result.history["loss"]
