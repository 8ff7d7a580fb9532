"""Keras callbacks the trainer composes: progress, validation with early stopping, and a hook
that runs every N steps (mask updates, prune-and-regrow). tfmot's `UpdatePruningStep` is an
ordinary callback passed in beside these.
"""
from __future__ import annotations

from typing import Any, Callable

from edgesparse._tf import keras


class ProgressCallback(keras.callbacks.Callback):
    """One progress task per training run, advanced per epoch (the pipeline's Progress protocol)."""

    def __init__(self, progress, label: str, epochs: int):
        super().__init__()
        self.progress, self.label, self.epochs = progress, label, epochs
        self.task = None

    def on_train_begin(self, logs=None):
        self.task = self.progress.task(self.label, total=self.epochs)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if "val_accuracy" in logs:
            self.task.update(description=f"{self.label} epoch {epoch + 1}/{self.epochs} "
                                         f"val acc {logs['val_accuracy']:.2f}%")
        elif "val_loss" in logs:
            self.task.update(description=f"{self.label} epoch {epoch + 1}/{self.epochs} "
                                         f"val loss {logs['val_loss']:.4f}")
        self.task.advance(1)

    def on_train_end(self, logs=None):
        self.task.close()


class EarlyStopping(keras.callbacks.Callback):
    """Validate before training (epoch 0) and after every epoch; keep the best weights.

    `validate(net)` returns {"val_loss": float, "val_accuracy": float | None}. An epoch is better
    when its accuracy is higher, or, at equal accuracy (or without labels), its loss is lower;
    training must beat where the model started. Training stops once `patience` epochs pass
    without a better one (None: never), and the best weights are restored at the end either way.
    The figures go into the epoch's logs, so History and the progress bar see them.
    """

    def __init__(self, net, validate: Callable[[Any], dict], patience: int | None):
        super().__init__()
        self.net, self.validate, self.patience = net, validate, patience
        self.best_key = self.best_weights = None
        self.best_epoch, self.stopped_early = 0, False

    @staticmethod
    def _key(scores: dict) -> tuple:
        acc = scores.get("val_accuracy")
        return (acc, -scores["val_loss"]) if acc is not None else (-scores["val_loss"],)

    def on_train_begin(self, logs=None):
        self.best_key = self._key(self.validate(self.net))
        self.best_weights, self.best_epoch, self.stopped_early = self.net.get_weights(), 0, False

    def on_epoch_end(self, epoch, logs=None):
        scores = self.validate(self.net)
        if logs is not None:
            logs.update({k: v for k, v in scores.items() if v is not None})
        key = self._key(scores)
        if key > self.best_key:
            self.best_key, self.best_weights, self.best_epoch = key, self.net.get_weights(), epoch + 1
        if self.patience is not None and epoch + 1 - self.best_epoch >= self.patience:
            self.stopped_early = epoch + 1 < self.params.get("epochs", epoch + 2)
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        self.net.set_weights(self.best_weights)


class EveryNSteps(keras.callbacks.Callback):
    """Call `fn(net, step)` after every `n`-th training step (step counts from 1): the hook for
    mask updates and prune-and-regrow schedules."""

    def __init__(self, n: int, fn: Callable[[Any, int], None], net=None):
        super().__init__()
        if n < 1:
            raise ValueError("EveryNSteps needs n >= 1")
        self.n, self.fn, self.net, self.step = n, fn, net, 0

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.step % self.n == 0:
            self.fn(self.net if self.net is not None else self.model, self.step)


class MaskUpdate(EveryNSteps):
    """The mask-update hook of sparse training (train/masks.py).

    At train begin it binds the masks to the trainer's optimizer, so the post-step `masks.apply`
    also zeroes the moments of masked weights (the sparse optimizer). Then, every `n` steps up
    to and including `last_step`, it calls `fn(net, step)` (drop-and-grow, or a pruning step);
    no update after `last_step` (RigL leaves the last quarter of training to settle). `fn` None:
    static masks, only the binding.
    """

    def __init__(self, masks, fn: Callable[[Any, int], None] | None = None, n: int = 1,
                 last_step: int = 0, net=None):
        super().__init__(n, self._maybe_update, net)
        self.masks, self.update_fn, self.last_step = masks, fn, last_step

    def on_train_begin(self, logs=None):
        self.masks.bind(self.model.optimizer)

    def _maybe_update(self, net, step: int) -> None:
        if self.update_fn is not None and step <= self.last_step:
            self.update_fn(net, step)
