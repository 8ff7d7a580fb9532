"""The one training loop: Keras `fit` on the tf_keras working form, with our loss and callbacks.

The model is wrapped in a small `keras.Model` whose `train_step` computes the objective, adds
the regularizers (callables model -> scalar tensor) and the model's own layer losses, applies
the gradients, then runs the post-step hooks (callables model -> None, e.g. proximal steps).
Keras does the rest: the loop, callbacks, `stop_training`, History.

Seeded, and the batch order is the caller's choice (`shuffle`): "permutation" draws every
epoch's order from `numpy.random.default_rng(seed)`, independent of TensorFlow's random state
(what distill and QAT always did); "keras" is Keras fit's own shuffle of the arrays, drawn from
TensorFlow's global seed (what `model.fit(x, y, shuffle=True)` did for the prune fine-tune, the
magnitude sparsify and the control, so their figures stay the same). Either way the last batch of
an epoch may be short, and `tf.random.set_seed(seed)` fixes dropout and any other random op.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Sequence

import numpy as np

from edgesparse._tf import keras, tf
from edgesparse.errors import UserError
from edgesparse.train.callbacks import EarlyStopping, EveryNSteps, ProgressCallback
from edgesparse.train.losses import Objective
from edgesparse.train.metrics import accuracy

Regularizer = Callable[[Any], Any]   # model -> scalar tensor added to the loss
PostStep = Callable[[Any], None]     # model -> None, runs after every optimizer step


@dataclass
class TrainResult:
    history: dict[str, list[float]] = field(default_factory=dict)   # per epoch: loss, val_loss, ...
    epochs_run: int = 0
    best_epoch: int | None = None      # with validation: the epoch whose weights were kept (0 = none)
    stopped_early: bool = False


class _Trainee(keras.Model):
    """Wraps the model being trained; only `train_step` is used (the model keeps its own call)."""

    def __init__(self, net, objective: Objective, regularizers: Sequence[Regularizer],
                 post_step: Sequence[PostStep], own_rates: Sequence[tuple[Sequence, float]] = ()):
        super().__init__()
        self.net = net
        self._objective, self._regularizers, self._post_step = objective, list(regularizers), list(post_step)
        # Variables with their own learning rate get their own Adam (L0 gates learn ~10x faster).
        self._own = [([v.ref() for v in vs], keras.optimizers.Adam(rate)) for vs, rate in own_rates]
        self.loss_tracker = keras.metrics.Mean(name="loss")

    def call(self, x, training=False):
        return self.net(x, training=training)

    @property
    def metrics(self):
        return [self.loss_tracker]   # reset by fit at every epoch start: the epoch's mean loss

    def train_step(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            loss = self._objective(self.net, x, y, training=True)
            for reg in self._regularizers:
                loss += reg(self.net)
            if self.net.losses:          # layers' own regularizers, as compiled Keras losses add them
                loss += tf.add_n(self.net.losses)
        variables = self.net.trainable_variables + list(self._objective.trainable_variables)
        pairs = list(zip(tape.gradient(loss, variables), variables))
        for refs, optimizer in self._own:
            optimizer.apply_gradients([(g, v) for g, v in pairs if v.ref() in refs])
        own = {r for refs, _ in self._own for r in refs}
        self.optimizer.apply_gradients([(g, v) for g, v in pairs if v.ref() not in own])
        for hook in self._post_step:
            hook(self.net)
        self.loss_tracker.update_state(loss, sample_weight=tf.shape(x)[0])
        return {"loss": self.loss_tracker.result()}


def _batches(x: np.ndarray, y: np.ndarray | None, batch_size: int, epochs: int, seed: int):
    """A dataset of every epoch's batches, in the seeded order."""
    rng = np.random.default_rng(seed)
    steps = max(1, math.ceil(len(x) / batch_size))

    def gen():
        for _ in range(epochs):
            order = rng.permutation(len(x))
            for s in range(steps):
                idx = order[s * batch_size:(s + 1) * batch_size]
                yield (x[idx],) if y is None else (x[idx], y[idx])

    spec = [tf.TensorSpec((None,) + x.shape[1:], x.dtype)]
    if y is not None:
        spec.append(tf.TensorSpec((None,) + y.shape[1:], y.dtype))
    return tf.data.Dataset.from_generator(gen, output_signature=tuple(spec)), steps


def train(model, data: tuple[np.ndarray, np.ndarray | None], *, loss: Objective, epochs: int,
          lr: float, batch_size: int = 64, seed: int = 0, schedule: Literal["constant", "cosine"] = "constant",
          validation: tuple[np.ndarray, np.ndarray | None] | None = None, patience: int | None = None,
          callbacks: Sequence[keras.callbacks.Callback] = (), regularizers: Sequence[Regularizer] = (),
          post_step: Sequence[PostStep] = (), shuffle: Literal["permutation", "keras"] = "permutation",
          own_rates: Sequence[tuple[Sequence, float]] = (), progress=None, label: str = "train") -> TrainResult:
    """Train `model` in place with Adam; see the module docstring for what is seeded.

    data: (x, y), y None to train without labels (the loss must allow it).
    schedule: "cosine" decays the learning rate to 0 over all steps.
    shuffle: the batch order, "permutation" or "keras" (see the module docstring).
    validation: (x_val, y_val or None): validated before training and after every epoch with
        `loss.validation_loss` and, given labels, accuracy (%); the best epoch's weights are
        restored at the end, and with `patience` training stops after that many epochs without
        a better one (callbacks.EarlyStopping).
    own_rates: [(variables, learning rate)]: these variables are stepped by their own Adam at a
        constant rate (the L0 gates'), the rest by the main one.
    progress: the pipeline's Progress (one task named `label`, advanced per epoch), or None.
    """
    x, y = np.asarray(data[0]), (None if data[1] is None else np.asarray(data[1]))
    tf.random.set_seed(seed)
    if shuffle == "keras":
        steps = max(1, math.ceil(len(x) / batch_size))
        batches = {"x": x, "y": y, "batch_size": batch_size, "shuffle": True}
    elif shuffle == "permutation":
        dataset, steps = _batches(x, y, batch_size, epochs, seed)
        batches = {"x": dataset, "steps_per_epoch": steps}
    else:
        raise ValueError(f"shuffle must be 'permutation' or 'keras', not {shuffle!r}")
    rate = keras.optimizers.schedules.CosineDecay(lr, epochs * steps) if schedule == "cosine" else lr
    trainee = _Trainee(model, loss, regularizers, post_step, own_rates)
    trainee.compile(optimizer=keras.optimizers.Adam(rate))

    cbs: list = []
    stopper = None
    if validation is not None:
        x_val, y_val = validation

        def validate(net) -> dict:
            return {"val_loss": float(loss.validation_loss(net, tf.constant(x_val), None if y_val is None
                                                           else tf.constant(y_val))),
                    "val_accuracy": None if y_val is None else accuracy(net, x_val, y_val)}

        stopper = EarlyStopping(model, validate, patience)
        cbs.append(stopper)
    if progress is not None:
        cbs.append(ProgressCallback(progress, label, epochs))
    for cb in callbacks:
        if isinstance(cb, EveryNSteps) and cb.net is None:
            cb.net = model
        cbs.append(cb)
    hist = trainee.fit(**batches, epochs=epochs, verbose=0, callbacks=cbs)
    if not all(np.isfinite(w).all() for w in model.get_weights()):
        # Keras trains on through NaN; the model would then ship (and be scored) as garbage. Inputs
        # far outside the usual range (x * 1e30 stays finite in float32) make the gradients overflow.
        raise UserError("training turned the model's weights into NaN or infinity (the loss "
                        "overflowed); the data's scale is likely wrong: check its range (e.g. pixels in "
                        "[0, 1], or standardised features)")
    history = {k: [float(v) for v in vs] for k, vs in hist.history.items()}
    return TrainResult(history=history, epochs_run=len(history.get("loss", [])),
                       best_epoch=stopper.best_epoch if stopper else None,
                       stopped_early=bool(stopper and stopper.stopped_early))
