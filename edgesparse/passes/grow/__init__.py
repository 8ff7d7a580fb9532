"""The `grow` pass: start small, grow connections and neurons while training, until good enough.

    - grow: {start_width: 0.25, target_accuracy: 97, max_macs: 1.0}
    - grow: {start_width: 0.25, start_density: 0.2, prune_to_params: 2000}     # NeST-style

1. Start: every prunable channel group of the given network is shrunk to `start_width` of its
   channels (graph/surgery.shrink) and the weights are RE-INITIALISED. Not the kept slice of the
   given weights: that would be pruning the trained model, whose training cost nobody counts, and
   the "same architecture trained from scratch" control would no longer be a fair comparison. The
   given model is the teacher: it names the architecture family and the accuracy to reach.
   With `start_density` the start is also sparse: that fraction of every Dense/Conv kernel is
   active (random), on the masks of train/masks.py (masked weights stay zero, no moments), and
   the active weights are scaled to their sparse fans (train/sparse_init.py, as the dynamic
   sparse methods start): masked alone, each unit keeps about density x the variance its
   initialiser meant.
2. Train (the one training loop) until validation accuracy has not improved for `grow_patience`
   epochs (a plateau; the best epoch's weights are kept) or the target is reached. The last
   phase, once the cap allows no more growth, stops on `patience`, as the from-scratch control
   does, or with `cap_epochs` trains exactly that many epochs with the learning rate annealed to
   0 by a cosine (the best epoch still kept): the grown net starts from what the small one
   learnt, and a plateau search pays `patience` epochs at full size to end. With `keep_moments` Adam's moments and step count go on across a growth (the new
   positions start at zero): a restarted Adam moves every converged weight by about the
   learning rate per step.
3. On a plateau, grow:
   - connections (sparse start only): `connection_step` x the active count of every layer, the
     inactive positions with the largest dense gradient (RigL's regrowth without the drop). They
     start at zero, so the function is unchanged;
   - neurons/channels: every prunable group gains `grow_step` x its given width, or the largest
     step below that the MAC/parameter cap allows, by graph/surgery.grow. Either way the
     function is unchanged. `grow_init` "zero": new producer columns small and random, zero
     input rows in their consumers (new positions in a masked kernel are active with the
     layer's density); "split" (Net2WiderNet): each new neuron copies an existing one (every
     old neuron once before any twice), and the readers' rows of a neuron are shared among it
     and its copies by random fractions per weight, so the new neurons are active and get
     gradient at once (the copies inherit their source's mask).
4. Stop when the target is reached (`target_accuracy`, else the teacher's accuracy minus
   `accuracy_budget`), the cap is spent, or `max_epochs` are used.
5. Optionally prune (`prune_to_params`: nonzero kernel weights): magnitude masks on a cubic
   schedule over `prune_epochs`, every layer keeping at least one weight per output unit; with
   `prune_regrow` every mask update also swaps that fraction (cosine-decayed) of the active
   connections, smallest |w| out, largest dense gradient in (RigL), at the same count. Then the
   pruned network trains on at its final masks until a plateau (`patience`; the best epoch kept),
   or for `finetune_epochs` annealed by a cosine. With `prune_distill` (a temperature) the prune
   and the fine-tune learn from the grown network's soft targets too (Hinton's loss; the
   teacher's forward passes are counted apart, as teacher_mac_epochs).

Every step is recorded: widths, connections (nonzero kernel weights), accuracy, MACs, epochs,
and MAC-epochs (the training cost: dense MACs of the network trained x its epochs). A sparse
start also counts active_mac_epochs: each phase at its masks' density and each growth's dense
gradient batch at dense, as sparse training's FLOPs are counted (RigL). It is not this machine's
time: TensorFlow trains masked kernels dense.

The package: this module (the settings and the pass), grower.py (the algorithm: start, grow,
prune, record) and callbacks.py (what the grow loop adds to the one training loop).
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, model_validator

from edgesparse.errors import UserError
from edgesparse.passes.grow.grower import Grower, maskable
from edgesparse.pipeline import LABELS, Pass, PassConfig, PlanContext, RunContext, Stage, register_pass
from edgesparse.state import ModelState

__all__ = ["GrowConfig", "GrowPass", "Grower", "maskable"]


class GrowConfig(PassConfig):
    start_width: float = Field(0.25, description="fraction of every prunable group's channels the growth starts from, in (0, 1]")
    start_density: Optional[float] = Field(None, description="start sparse too: fraction of kernel weights active, in (0, 1]")
    target_accuracy: Optional[float] = Field(None, gt=0, le=100, description="stop growing at this validation accuracy (%); "
                                                                             "default: the given model's minus accuracy_budget")
    accuracy_budget: float = Field(1.0, ge=0, description="points below the given model's accuracy that count as good enough")
    max_macs: float = Field(1.0, gt=0, description="growth cap: MACs as a fraction of the given architecture's")
    max_params: Optional[float] = Field(None, gt=0, description="growth cap: (nonzero) parameters as a fraction of the given architecture's")
    grow_step: float = Field(0.25, gt=0, le=4, description="channels added per growth, as a fraction of each group's given width")
    connection_step: float = Field(1.0, gt=0, le=1000, description="sparse start: connections grown per growth, as a fraction of the active ones (1/density - 1 grows to dense in one step)")
    patience: int = Field(3, ge=1, le=100, description="epochs without a better validation accuracy that count as a plateau")
    grow_patience: int = Field(2, ge=1, le=100, description="the plateau that triggers a growth, in epochs; the last "
                                                            "phase, at the cap, stops on patience")
    grow_init: Literal["zero", "split"] = Field("zero", description="new neurons: 'zero' (read by zero rows, small random "
                                                                   "inputs) or 'split' (copies of existing neurons sharing "
                                                                   "their outgoing weights: Net2WiderNet)")
    cap_epochs: Optional[int] = Field(None, ge=1, le=1000, description="the last phase, once the cap allows no more "
                                                                        "growth: this many epochs, the learning rate "
                                                                        "decayed to 0 by a cosine (best epoch kept), "
                                                                        "instead of training to a plateau")
    keep_moments: bool = Field(True, description="carry Adam's moments and step count across a growth (new "
                                                  "positions start at zero) instead of restarting the optimizer")
    max_epochs: int = Field(60, ge=1, le=10_000, description="training epochs in all, the prune phase aside")
    prune_to_params: Optional[int] = Field(None, ge=1, description="prune at the end to this many nonzero kernel weights (grow-and-prune)")
    prune_epochs: int = Field(30, ge=1, le=1000, description="epochs of the final prune")
    prune_regrow: float = Field(0.3, ge=0, lt=1, description="final prune: at every mask update also drop this fraction "
                                                            "of the active connections and regrow as many by "
                                                            "gradient (RigL; cosine-decayed to 0)")
    finetune_epochs: Optional[int] = Field(None, ge=1, le=1000, description="after the final prune: this many epochs at the "
                                                                             "final masks, the learning rate decayed to 0 by "
                                                                             "a cosine (best epoch kept); None: to a plateau")
    prune_distill: Optional[float] = Field(2.0, gt=0, le=100, description="final prune and fine-tune: distil from the grown "
                                                                       "network at this temperature (Hinton's loss, labels "
                                                                       "weighted 0.5); null: labels only")
    learning_rate: float = Field(1e-3, gt=0)
    batch_size: int = Field(32, ge=1)
    seed: Optional[int] = Field(None, description="default: the build's seed")

    @model_validator(mode="after")
    def _fractions(self):
        if not 0.0 < self.start_width <= 1.0:
            raise ValueError(f"start_width {self.start_width:g} is outside (0, 1]; it is the fraction of the "
                             "given channels the growth starts from, e.g. 0.25")
        if self.start_density is not None and not 0.0 < self.start_density <= 1.0:
            raise ValueError(f"start_density {self.start_density:g} is outside (0, 1]; it is the fraction of "
                             "kernel weights active at the start, e.g. 0.2")
        return self


@register_pass
class GrowPass(Pass):
    """Grow a small network (connections by gradient, neurons by function-preserving widening)
    until it reaches the target accuracy or the MAC/parameter cap."""

    name = "grow"
    Config = GrowConfig
    needs = frozenset({LABELS})
    changes_model = True
    stage = Stage.TRANSFORM
    summary = ("grow a small network while training: connections by gradient, neurons by function-preserving "
               "widening, until the target accuracy or the MAC/parameter cap; optional final prune")

    def check(self, plan: PlanContext) -> list[str]:
        if not plan.data.labelled:
            return ["grow trains from labels and stops on validation accuracy; give labelled --data "
                    "(x_train/y_train, or x/y which is split)"]
        return []

    def run(self, state: ModelState, ctx: RunContext) -> ModelState:
        c: GrowConfig = self.config
        data = ctx.data
        if not data.labelled or data.x_train is None or data.x_val is None:
            raise UserError("grow needs labelled training and validation data (x_train/y_train and a "
                            "validation split) to measure its target; give labelled --data")
        seed = ctx.seed if c.seed is None else c.seed
        grower = Grower(state.model, c, data, seed, teacher=state.reference or state.model,
                        progress=ctx.progress)
        model, facts = grower.run()
        for w in grower.warnings:
            state.warn(w)
        state.model = model
        state.record(self.name, **facts)
        return state
