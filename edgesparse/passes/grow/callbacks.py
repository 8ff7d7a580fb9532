"""Callbacks the grow loop adds to the one training loop (train/trainer.py): Adam's state
carried across growths, the stop at the target accuracy, a cosine decay that ignores the
optimizer's carried step count."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgesparse.passes.grow.grower import Grower


def carry_moments(grower: "Grower"):
    """Keep Adam's state across the phases of one grow run: the phase's optimizer is built
    with the moments and step count the last phase ended with (widened on a growth), and its
    own are saved when it ends. A restarted Adam (fresh moments, bias correction from step 1)
    moves every converged weight by about the learning rate per step; the carried one does not."""
    from edgesparse._tf import keras
    from edgesparse.train.masks import optimizer_slots

    def trainable(net):
        return [((l.name, j), w) for l in net.layers for j, w in enumerate(l.weights) if w.trainable]

    class CarryMoments(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            saved, optimizer, net = grower.moments, self.model.optimizer, grower.net
            if saved is None:
                return
            variables = trainable(net)
            optimizer.build([v for _, v in variables])
            optimizer.iterations.assign(saved["iterations"])
            for key, v in variables:
                for slot, value in zip(optimizer_slots(optimizer, v), saved["slots"].get(key, ())):
                    slot.assign(value)

        def on_train_end(self, logs=None):
            optimizer = self.model.optimizer
            grower.moments = {"iterations": int(optimizer.iterations.numpy()),
                              "slots": {key: [s.numpy() for s in optimizer_slots(optimizer, v)]
                                        for key, v in trainable(grower.net)}}

    return CarryMoments()


def stop_at_target(target: float):
    from edgesparse._tf import keras

    class StopAtTarget(keras.callbacks.Callback):
        """Ends training at the first epoch whose validation accuracy reaches the target."""

        def on_epoch_end(self, epoch, logs=None):
            if (logs or {}).get("val_accuracy", -1.0) >= target:
                self.model.stop_training = True

    return StopAtTarget()


def cosine_decay(lr: float, steps: int):
    """The learning rate from `lr` to 0 over `steps` batches of this fit, by a cosine. Set per
    batch, not through a schedule on the optimizer's step count, which keep_moments carries
    over from earlier phases."""
    from edgesparse._tf import keras

    class CosineDecay(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.step = 0

        def on_train_batch_begin(self, batch, logs=None):
            self.model.optimizer.learning_rate.assign(lr * 0.5 * (1.0 + math.cos(math.pi * min(self.step, steps) / steps)))
            self.step += 1

    return CosineDecay()
