"""Knowledge distillation: the compressed student learns from the imported teacher.

Loss (Hinton et al. 2015):  α·CE(labels, s) + (1−α)·T²·KL(softmax(t/T) ‖ softmax(s/T))
With no labels the first term is dropped (pure distillation on unlabelled inputs), so a user with
only raw inputs can still recover accuracy. Optional FitNets-style feature matching pulls named
intermediate layers of the student towards the teacher's through a learned 1x1 adapter (the
pruned student has fewer channels than the teacher).

Our sample models end in a softmax. Distillation needs logits; log(softmax(z)) = z − logsumexp(z)
differs from z by a per-sample constant, and softmax is shift-invariant, so log-probabilities
are exact stand-ins for logits here.
"""
from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from edgesparse.errors import UserError
from edgesparse.pipeline import CALIBRATION, TEACHER, Pass, PassConfig, PlanContext, register_pass
from edgesparse.state import ModelState


class DistillConfig(PassConfig):
    epochs: int = Field(15, ge=1, le=1000)
    batch_size: int = Field(64, ge=1)
    learning_rate: float = Field(2e-3, gt=0)
    schedule: Literal["cosine", "constant"] = "cosine"
    alpha: float = Field(0.3, ge=0, le=1, description="weight of the label loss; 0 = pure distillation")
    temperature: float = Field(4.0, gt=0)
    patience: int = Field(4, ge=1, description="epochs without validation improvement before stopping")
    feature_layers: list[tuple[str, str]] = Field(
        default_factory=list, description="[student_layer, teacher_layer] pairs to match (FitNets)")
    feature_weight: float = Field(1.0, ge=0)
    teacher: str | None = Field(None, description="a teacher model file; default: the model as imported")

    @model_validator(mode="after")
    def _finite(self):
        if not math.isfinite(self.learning_rate):
            raise ValueError("learning_rate must be a finite number")
        return self


def _log_probs(tf, outputs, from_logits: bool):
    return tf.nn.log_softmax(outputs) if from_logits else tf.math.log(tf.clip_by_value(outputs, 1e-12, 1.0))


@register_pass
class DistillPass(Pass):
    """Fine-tune the working model against the imported teacher (KD, optional feature matching)."""

    name = "distill"
    Config = DistillConfig
    needs = frozenset({TEACHER, CALIBRATION})
    changes_model = True
    stage = 1
    summary = "knowledge distillation from the imported model (works without labels)"

    def check(self, plan: PlanContext) -> list[str]:
        problems = []
        if not plan.data.real:
            problems.append("distillation needs real inputs; pass --data (labels are optional)")
        if self.config.teacher:   # load it now: a wrong teacher must fail before any training
            from edgesparse.frontends import load_model

            teacher = load_model(self.config.teacher)[0]
            t_in, t_out = tuple(teacher.input_shape[1:]), int(teacher.output_shape[-1])
            if plan.data.input_shape and t_in != tuple(plan.data.input_shape):
                problems.append(f"teacher {self.config.teacher} takes inputs {t_in}, the model {plan.data.input_shape}")
            if plan.data.num_classes and t_out != plan.data.num_classes:
                problems.append(f"teacher {self.config.teacher} has {t_out} outputs but the model has "
                                f"{plan.data.num_classes}; give a teacher for the same task")
        return problems

    def run(self, state: ModelState, ctx) -> ModelState:
        from edgesparse._tf import keras, tf
        from edgesparse.graph.functional import outputs_are_probabilities

        cfg: DistillConfig = self.config
        teacher = self._teacher(state)
        student = state.model
        if tuple(teacher.output_shape[1:]) != tuple(student.output_shape[1:]):
            raise UserError(f"the teacher's outputs {teacher.output_shape[1:]} do not match the student's "
                            f"{student.output_shape[1:]}; give a teacher for the same task")
        data = ctx.data
        x = data.x_train if data.x_train is not None else data.x_calib
        y = data.y_train if (data.labelled and cfg.alpha > 0) else None
        if data.labelled and data.x_val is not None:
            x_val, y_val = data.x_val, data.y_val
        else:  # no labelled validation split: hold out inputs and early-stop on the KD loss
            cut = max(1, len(x) // 5)
            x_val, y_val, x = x[:cut], None, x[cut:]
        alpha = cfg.alpha if y is not None else 0.0

        s_from_logits = not outputs_are_probabilities(student)
        t_from_logits = not outputs_are_probabilities(teacher)
        pairs = [(student.get_layer(s), teacher.get_layer(t)) for s, t in cfg.feature_layers]
        s_feat = keras.Model(student.inputs, [student.output] + [s.output for s, _ in pairs])
        t_feat = keras.Model(teacher.inputs, [teacher.output] + [t.output for _, t in pairs])
        adapters = [keras.layers.Dense(int(t.output_shape[-1]), use_bias=False, name=f"adapt_{i}")
                    for i, (_, t) in enumerate(pairs)]

        steps_per_epoch = max(1, math.ceil(len(x) / cfg.batch_size))
        total = cfg.epochs * steps_per_epoch
        lr = (keras.optimizers.schedules.CosineDecay(cfg.learning_rate, total)
              if cfg.schedule == "cosine" else cfg.learning_rate)
        opt = keras.optimizers.Adam(lr)
        T = float(cfg.temperature)

        def losses(xb, yb, training):
            t_out = t_feat(xb, training=False)
            s_out = s_feat(xb, training=training)
            t_out = t_out if isinstance(t_out, list) else [t_out]
            s_out = s_out if isinstance(s_out, list) else [s_out]
            t_lp = _log_probs(tf, t_out[0], t_from_logits)
            s_lp = _log_probs(tf, s_out[0], s_from_logits)
            p_t = tf.nn.softmax(t_lp / T)
            kd = tf.reduce_mean(tf.reduce_sum(p_t * (tf.nn.log_softmax(t_lp / T) - tf.nn.log_softmax(s_lp / T)), -1))
            loss = (1.0 - alpha) * T * T * kd
            if yb is not None and alpha > 0:
                ce = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(yb, s_lp, from_logits=True))
                loss += alpha * ce
            for ad, s_f, t_f in zip(adapters, s_out[1:], t_out[1:]):
                loss += cfg.feature_weight * tf.reduce_mean(tf.square(ad(s_f) - tf.stop_gradient(t_f)))
            return loss, s_lp

        @tf.function
        def train_step(xb, yb):
            with tf.GradientTape() as tape:
                loss, _ = losses(xb, yb, True)
            variables = student.trainable_variables + [v for a in adapters for v in a.trainable_variables]
            opt.apply_gradients(zip(tape.gradient(loss, variables), variables))
            return loss

        def val_score() -> tuple[float, float | None]:
            loss, s_lp = losses(tf.constant(x_val), None, False)
            acc = None if y_val is None else float(np.mean(np.argmax(s_lp.numpy(), -1) == y_val) * 100)
            return float(loss), acc

        rng = np.random.default_rng(ctx.seed)
        vloss, vacc = val_score()   # epoch 0: distillation must beat where the student started
        best_key = (vacc, -vloss) if vacc is not None else (-vloss,)
        best_weights, best_epoch, history = student.get_weights(), 0, []
        task = ctx.progress.task("distill", total=cfg.epochs)
        for epoch in range(cfg.epochs):
            order = rng.permutation(len(x))
            for s in range(steps_per_epoch):
                idx = order[s * cfg.batch_size:(s + 1) * cfg.batch_size]
                yb = None if y is None else tf.constant(y[idx])
                train_step(tf.constant(x[idx]), yb)   # yb None: pure distillation (its own trace)
            vloss, vacc = val_score()
            history.append({"epoch": epoch + 1, "val_kd_loss": round(vloss, 5),
                            **({"val_accuracy": round(vacc, 3)} if vacc is not None else {})})
            key = (vacc, -vloss) if vacc is not None else (-vloss,)
            if key > best_key:
                best_key, best_weights, best_epoch = key, student.get_weights(), epoch + 1
            task.update(description=f"distill epoch {epoch + 1}/{cfg.epochs}"
                        + (f" val acc {vacc:.2f}%" if vacc is not None else f" val loss {vloss:.4f}"))
            task.advance(1)
            if epoch + 1 - best_epoch >= cfg.patience:
                break
        task.close()
        student.set_weights(best_weights)   # early stopping restores the best epoch
        state.record(self.name, epochs_run=len(history), best_epoch=best_epoch, alpha_used=alpha,
                     temperature=T, labels_used=y is not None, history=history,
                     teacher=cfg.teacher or "imported model",
                     validation="labelled val split" if y_val is not None else "held-out 20% of inputs (KD loss)")
        return state

    def _teacher(self, state: ModelState):
        if self.config.teacher:
            from edgesparse.frontends import load_model

            return load_model(self.config.teacher)[0]
        if state.reference is None:
            raise UserError("distill has no teacher: the import pass did not run; put distill after import")
        return state.reference

