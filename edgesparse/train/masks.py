"""Binary masks beside layers' kernels, kept exact through training (the sparse optimizer).

A `Masks` holds one non-trainable mask variable per masked kernel, *outside* the model: the
model itself stays a plain functional tf_keras model, so export, cloning and saving never see
a wrapper (tfmot's `strip_pruning` step exists only because its masks live inside wrappers).

`apply` is a post-step hook of the training loop (`train(post_step=[masks.apply])`): after every
optimizer step it multiplies each kernel and the optimizer's moments of that kernel by the mask.
For an element-wise optimizer (Adam, SGD with momentum) this is the same as masking the
gradient: masked weights stay exactly zero and carry no moments, so a weight regrown later
starts at zero with fresh moments (RigL resets the momentum of new connections the same way,
google-research/rigl rigl_tf2/mask_updaters.py). `update` installs a new mask (a drop-and-grow
or a pruning step) and resets the moments of every connection that was not active before.
`strip` applies the masks one last time and detaches them; the zeros are then in the weights.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from edgesparse._tf import tf

# tf_keras optimizers keep per-variable slots in lists indexed by `_index_dict[_var_key(var)]`.
_SLOT_LISTS = ("_momentums", "_velocities", "_velocity_hats", "momentums")


def optimizer_slots(optimizer, variable) -> list:
    """The optimizer's state variables of `variable` (Adam: m and v), [] before the first step."""
    if optimizer is None or not hasattr(optimizer, "_index_dict"):
        return []
    key = optimizer._var_key(variable)
    if key not in optimizer._index_dict:
        return []
    index = optimizer._index_dict[key]
    slots = []
    for attr in _SLOT_LISTS:
        values = getattr(optimizer, attr, None)
        if values and index < len(values) and values[index] is not None:
            slots.append(values[index])
    return slots


class Masks:
    """One 0/1 mask per named layer's kernel (same shape as the kernel)."""

    def __init__(self, model, initial: dict[str, np.ndarray]):
        self.kernels: dict[str, Any] = {}
        self.masks: dict[str, Any] = {}
        for name, mask in initial.items():
            kernel = model.get_layer(name).kernel
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != tuple(kernel.shape):
                raise ValueError(f"mask for {name} has shape {mask.shape}, its kernel {tuple(kernel.shape)}")
            self.kernels[name] = kernel
            self.masks[name] = tf.Variable(mask.astype(np.float32), trainable=False, name=f"{name}_mask")
        self.optimizer = None      # bound by the trainer's callback (MaskUpdate) or by `bind`
        self.project()

    def bind(self, optimizer) -> None:
        self.optimizer = optimizer

    # ---------------------------------------------------------------- inside the training step

    def apply(self, net=None) -> None:
        """Post-step hook (graph-safe): kernels and their optimizer moments times the mask."""
        for name, kernel in self.kernels.items():
            mask = self.masks[name]
            kernel.assign(kernel * mask)
            for slot in optimizer_slots(self.optimizer, kernel):
                slot.assign(slot * mask)

    # ---------------------------------------------------------------- between steps (eager)

    def project(self) -> None:
        self.apply()

    def mask(self, name: str) -> np.ndarray:
        return self.masks[name].numpy().astype(bool)

    def update(self, name: str, new_mask: np.ndarray) -> dict[str, int]:
        """Install `new_mask`; connections that were not active before start at zero with zero
        moments. Returns how many were dropped and grown."""
        old = self.mask(name)
        new = np.asarray(new_mask, dtype=bool)
        grown = new & ~old
        kernel = self.kernels[name]
        keep = new & ~grown
        kernel.assign(kernel.numpy() * keep)
        for slot in optimizer_slots(self.optimizer, kernel):
            slot.assign(slot.numpy() * keep)
        self.masks[name].assign(new.astype(np.float32))
        return {"dropped": int((old & ~new).sum()), "grown": int(grown.sum())}

    def counts(self) -> dict[str, tuple[int, int]]:
        """(active, total) connections per layer."""
        return {n: (int(self.mask(n).sum()), int(self.mask(n).size)) for n in self.masks}

    def sparsity(self) -> float:
        active = sum(a for a, _ in self.counts().values())
        total = sum(t for _, t in self.counts().values())
        return 1.0 - active / total

    def strip(self) -> dict[str, np.ndarray]:
        """Zero the masked weights a last time and detach: returns the final masks. The model is
        left a plain tf_keras model whose kernels hold the zeros (checked here, not trusted)."""
        self.project()
        final = {n: self.mask(n) for n in self.masks}
        for name, kernel in self.kernels.items():
            stray = int(np.count_nonzero(kernel.numpy()[~final[name]]))
            if stray:
                raise RuntimeError(f"{name}: {stray} masked weights are not zero after strip")
        self.kernels, self.masks, self.optimizer = {}, {}, None
        return final
