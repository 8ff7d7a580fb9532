"""Magnitude pruning with a labelled fine-tune, through tensorflow-model-optimization.

The traps (DESIGN.md, trap 2) and what we do about them:

- `prune_low_magnitude` wraps the *same* layer objects: we clone the model first, so the dense
  network (the teacher, the reference) is never pruned by accident.
- `PolynomialDecay`'s default `frequency=100` with a short fine-tune leaves the model at 0%:
  begin/end steps and the frequency are derived from epochs x steps-per-epoch, and sparsity
  ramps up over the first 2/3 of the steps so the last third recovers at the final mask.
- `UpdatePruningStep` is mandatory (without it the masks never move).
- After `strip_pruning` we *count* the zeros per layer instead of trusting the schedule.

N:M uses tfmot's `sparsity_m_by_n=(M-N, M)` (zeros per block, blocks along the input
channels); tfmot supports it only for rank-2 (Dense) and rank-4 (Conv2D) kernels and sets the
mask once, at the first step, from the weights' magnitudes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgesparse._tf import keras
from edgesparse.graph import linear
from edgesparse.passes.sparsify.masks import Pattern
from edgesparse.graph.functional import clone_with_weights
from edgesparse.passes.sparsify.refit import LayerRecord
from edgesparse.train.losses import CrossEntropy
from edgesparse.train.trainer import train

PRUNE_FRACTION = 2 / 3      # share of the fine-tune spent ramping sparsity up
MASK_UPDATES = 10           # how many times the mask moves during the ramp


@dataclass
class Schedule:
    begin_step: int
    end_step: int
    frequency: int
    total_steps: int


def derive_schedule(samples: int, batch_size: int, epochs: int) -> Schedule:
    """Steps that reach the final sparsity inside the fine-tune, whatever its length.

    tfmot prunes at step t when begin <= t <= end and (t - begin) % frequency == 0, and its
    step counter runs 0 .. total-1; so end must be a multiple of frequency below total.
    """
    steps_per_epoch = max(1, math.ceil(samples / batch_size))
    total = steps_per_epoch * max(1, epochs)
    ramp = max(1, int(total * PRUNE_FRACTION))
    frequency = max(1, ramp // MASK_UPDATES)
    end = min((ramp // frequency) * frequency, total - 1)
    end = max(end - end % frequency, 0)
    return Schedule(begin_step=0, end_step=end, frequency=frequency, total_steps=total)


def _wrappable(layer, pattern: Pattern) -> bool:
    if linear.why_not_linear(layer) is not None:
        return False
    if pattern.structured:
        # tfmot's m_by_n reshapes rank-2 and rank-4 kernels only (no Conv1D).
        return len(layer.kernel.shape) in (2, 4)
    return True


@dataclass
class MagnitudeResult:
    model: Any
    layers: list[LayerRecord] = field(default_factory=list)
    schedule: Schedule | None = None
    history: dict[str, list[float]] = field(default_factory=dict)


def magnitude_prune(model, x_train: np.ndarray, y_train: np.ndarray, sparsity: float,
                    pattern: Pattern, epochs: int = 4, batch_size: int = 32,
                    learning_rate: float = 1e-3, seed: int = 0, progress=None) -> MagnitudeResult:
    """Fine-tune a pruned copy of `model` with labels; `model` itself is not changed."""
    import tensorflow_model_optimization as tfmot  # heavy, and only this route needs it

    sparsity_api = tfmot.sparsity.keras
    schedule = derive_schedule(len(x_train), batch_size, epochs)
    final = pattern.sparsity if pattern.structured else sparsity
    pruning_schedule = sparsity_api.PolynomialDecay(
        initial_sparsity=0.0, final_sparsity=float(final), begin_step=schedule.begin_step,
        end_step=schedule.end_step, frequency=schedule.frequency)
    params = {"pruning_schedule": pruning_schedule}
    if pattern.structured:
        params["sparsity_m_by_n"] = pattern.tfmot_m_by_n

    base = clone_with_weights(model)      # trap 2: never wrap the caller's layer objects
    wrapped_names = []

    def wrap(layer):
        if _wrappable(layer, pattern):
            wrapped_names.append(layer.name)
            return sparsity_api.prune_low_magnitude(layer, **params)
        return layer

    # The wrappers hold base's own layer objects, so the weights come along.
    pruned = keras.models.clone_model(base, clone_function=wrap)
    result = train(pruned, (np.asarray(x_train, np.float32), np.asarray(y_train)), loss=CrossEntropy(),
                   epochs=epochs, lr=learning_rate, batch_size=batch_size, seed=seed, shuffle="keras",
                   callbacks=[sparsity_api.UpdatePruningStep()],     # trap 2: the masks never move without it
                   progress=progress, label="sparsify: fine-tune with magnitude pruning")
    stripped = sparsity_api.strip_pruning(pruned)
    layers = []   # count the zeros: the schedule's word is not proof (trap 2)
    for layer in stripped.layers:
        kernels = [k.numpy() for k in linear.kernels_of(layer)]
        if not kernels:
            continue
        size = int(sum(k.size for k in kernels))
        zeros = int(sum((k == 0).sum() for k in kernels))
        skipped = None
        if layer.name not in wrapped_names:
            skipped = linear.why_not_linear(layer) or "tfmot N:M takes rank-2/rank-4 kernels only"
        layers.append(LayerRecord(layer=layer.name, kind=type(layer).__name__,
                                  shape=[int(d) for d in kernels[0].shape], weights=size,
                                  zeros=zeros, sparsity=round(zeros / size, 4), skipped=skipped))
    return MagnitudeResult(model=stripped, layers=layers, schedule=schedule,
                           history=result.history)

