"""The small digits MLP and split the sparse-training tests share (real data from scikit-learn)."""
from __future__ import annotations

import numpy as np

from edgesparse._tf import keras


def digits_split():
    """sklearn digits scaled to [0, 1], shuffled with seed 0: 1,400 training and 397 test rows."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], d.target[order]
    return x[:1400], y[:1400], x[1400:], y[1400:]


def mlp(widths=(64, 32), seed=0, inputs=64):
    """ReLU Dense layers of `widths`, then a 10-way linear classifier."""
    keras.utils.set_random_seed(seed)
    i = keras.Input((inputs,))
    h = i
    for w in widths:
        h = keras.layers.Dense(w, activation="relu")(h)
    return keras.Model(i, keras.layers.Dense(10)(h))
