"""Short fine-tunes and accuracy for the prune pass (tf_keras fit, sparse cross-entropy)."""
from __future__ import annotations

import numpy as np

from edgesparse._tf import keras, tf
from edgesparse.graph.functional import outputs_are_probabilities

def loss_fn(model):
    return keras.losses.SparseCategoricalCrossentropy(from_logits=not outputs_are_probabilities(model))


def accuracy(model, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> float:
    pred = model.predict(x, batch_size=batch_size, verbose=0)
    return float(np.mean(np.argmax(pred, axis=-1) == np.asarray(y).reshape(-1)))


def agreement(model, reference_pred: np.ndarray, x: np.ndarray, batch_size: int = 256) -> float:
    """Top-1 agreement with a reference's predictions: the fidelity measure without labels."""
    pred = model.predict(x, batch_size=batch_size, verbose=0)
    return float(np.mean(np.argmax(pred, -1) == np.argmax(reference_pred, -1)))


def finetune(model, x: np.ndarray, y: np.ndarray, epochs: int, lr: float,
             batch_size: int = 64, seed: int = 0) -> list[float]:
    """A short supervised fine-tune in place; returns the loss per epoch."""
    tf.random.set_seed(seed)
    model.compile(optimizer=keras.optimizers.Adam(lr), loss=loss_fn(model))
    hist = model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0, shuffle=True)
    return [float(v) for v in hist.history["loss"]]
