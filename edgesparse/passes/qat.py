"""Quantization-aware training (tfmot `quantize_apply`).

Used when post-training int8 loses more accuracy than the budget allows: the model trains a
few epochs with fake-quantised weights and activations, so the int8 artifact the converter
makes from it keeps its accuracy. When the model is sparse (a sparsify pass ran, or most
weights are exact zeros), the prune-preserving scheme keeps the zeros through training; verify
checks them again in the exported file.

Learning signal: labels when there are any, plus distillation from the imported model, so QAT
also works on unlabelled inputs.
"""
from __future__ import annotations

import numpy as np
from pydantic import Field

from edgesparse.errors import UserError
from edgesparse.pipeline import Pass, PassConfig, PlanContext, Stage, register_pass
from edgesparse.state import ModelState, QATFacts

SPARSE_ENOUGH = 0.3   # fraction of zero kernel weights above which we preserve sparsity


class QATConfig(PassConfig):
    epochs: int = Field(3, ge=1, le=200)
    batch_size: int = Field(64, ge=1)
    learning_rate: float = Field(1e-4, gt=0)
    preserve_sparsity: bool | None = Field(
        None, description="keep exact zeros through QAT; None: decide from the model's sparsity")


def kernel_sparsity(model) -> float:
    """Fraction of exact zeros over all kernels (biases aside)."""
    zeros = total = 0
    for w in model.weights:
        if "kernel" in w.name:
            v = w.numpy()
            zeros += int(np.sum(v == 0))
            total += v.size
    return zeros / total if total else 0.0


def initialise_activation_ranges(qmodel, float_model, x: np.ndarray) -> None:
    """Start each activation quantizer at the range the float model really produces.

    tfmot's activation quantizers begin at [-6, 6] and follow batch ranges with an EMA of decay
    0.999, so a short fine-tune (a small data set has a few dozen steps per epoch) ends with
    ranges that are still mostly the initial guess, and the int8 model loses accuracy. We set
    them from calibration activations of the float model instead, as post-training int8 would.
    """
    from edgesparse._tf import keras

    wanted = {}   # float layer name -> [(variable, "min"/"max", "output"/"pre_activation"/"input")]
    for layer in qmodel.layers:
        for v in layer.non_trainable_variables:
            base = v.name.split("/")[-1].split(":")[0]
            for kind in ("output", "post_activation", "pre_activation", "quantize_layer"):
                if base in (f"{kind}_min", f"{kind}_max"):
                    inner = getattr(layer, "layer", None)
                    name = inner.name if inner is not None else None
                    wanted.setdefault(name, []).append((v, base.rsplit("_", 1)[1], kind))
    if not wanted:
        return
    layers = {l.name: l for l in float_model.layers}
    probes, keys = [], []
    for name in wanted:
        if name is None:
            continue
        layer = layers.get(name)
        if layer is None:
            continue
        probes.append(layer.input if any(k == "pre_activation" for _, _, k in wanted[name]) else layer.output)
        keys.append(name)
    values = keras.Model(float_model.inputs, probes)(x, training=False) if probes else []
    values = values if isinstance(values, (list, tuple)) else [values]
    observed = {None: x}
    for name, value in zip(keys, values):
        if any(k == "pre_activation" for _, _, k in wanted[name]):   # the layer without its activation
            layer = layers[name]
            linear = type(layer).from_config({**layer.get_config(), "activation": "linear"})
            linear.build(value.shape)
            linear.set_weights(layer.get_weights())
            value = linear(value)
        observed[name] = np.asarray(value)
    for name, entries in wanted.items():
        if name not in observed:
            continue
        lo, hi = min(0.0, float(observed[name].min())), max(0.0, float(observed[name].max()))
        for var, end, _ in entries:
            var.assign(lo if end == "min" else hi)


@register_pass
class QATPass(Pass):
    """Quantization-aware fine-tuning; the int8 export then uses the learned ranges."""

    name = "qat"
    Config = QATConfig
    changes_model = True
    stage = Stage.QUANTIZE
    summary = "quantization-aware training (tfmot), prune-preserving when the model is sparse"

    def check(self, plan: PlanContext) -> list[str]:
        problems = []
        if not plan.data.real:
            problems.append("quantization-aware training needs real inputs; pass --data")
        if not any(p.name == "quantize" and "int8" in p.config.precisions for p in plan.later()):
            problems.append("qat only makes sense before a quantize pass that asks for int8")
        return problems

    def run(self, state: ModelState, ctx) -> ModelState:
        import tensorflow_model_optimization as tfmot

        from edgesparse.train.losses import Distillation
        from edgesparse.train.trainer import train

        cfg: QATConfig = self.config
        sparsity = kernel_sparsity(state.model)
        preserve = cfg.preserve_sparsity if cfg.preserve_sparsity is not None else sparsity >= SPARSE_ENOUGH
        q = tfmot.quantization.keras
        try:
            annotated = q.quantize_annotate_model(state.model)
            scheme = (q.collab_opts.Default8BitPrunePreserveQuantizeScheme() if preserve
                      else q.default_8bit.Default8BitQuantizeScheme())
            with q.quantize_scope():
                qmodel = q.quantize_apply(annotated, scheme)
        except (ValueError, RuntimeError, TypeError) as exc:
            raise UserError(f"quantization-aware training cannot wrap this model ({exc}); "
                            "remove the qat pass and use post-training int8") from None
        if qmodel is None:   # trap 3: tfmot sometimes returns None instead of raising
            raise UserError("tfmot returned no model for quantization-aware training; remove the qat pass")

        data = ctx.data
        x = data.x_train if data.x_train is not None else data.x_calib
        initialise_activation_ranges(qmodel, state.model, x[:512])
        # KL to the imported model at temperature 1, plus cross-entropy when there are labels.
        loss = Distillation(state.reference, temperature=1.0, kd_weight=1.0, ce_weight=1.0)
        train(qmodel, (x, data.y_train if data.labelled else None), loss=loss, epochs=cfg.epochs,
              lr=cfg.learning_rate, batch_size=cfg.batch_size, seed=ctx.seed, progress=ctx.progress, label="qat")
        state.model = qmodel
        state.qat_trained = True      # quantize carries it into the QuantPlan export follows
        state.record(QATFacts(epochs_run=cfg.epochs, preserve_sparsity=preserve,
                              sparsity_before=round(sparsity, 4), sparsity_after=round(kernel_sparsity(qmodel), 4),
                              labels_used=data.labelled, teacher="imported model"))
        return state
