"""Knowledge distillation: the compressed student learns from the imported teacher.

Loss (Hinton et al. 2015):  α·CE(labels, s) + (1−α)·T²·KL(softmax(t/T) ‖ softmax(s/T))
With no labels the first term is dropped (pure distillation on unlabelled inputs), so a user with
only raw inputs can still recover accuracy. Optional FitNets-style feature matching pulls named
intermediate layers of the student towards the teacher's through a learned 1x1 adapter (the
pruned student has fewer channels than the teacher). The loss is `train.losses.Distillation`,
the loop `train.trainer.train`.

Early stopping: validate before training and after every epoch (labelled validation split, or
20% of the inputs held out without labels); keep the best epoch, which must beat the start.
"""
from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, field_validator, model_validator

from edgesparse.errors import UserError
from edgesparse.pipeline import TEACHER, Pass, PassConfig, PlanContext, Stage, register_pass
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

    @field_validator("feature_layers", mode="before")
    @classmethod
    def _pairs(cls, v):
        # pydantic's own "feature_layers.0: Input should be a valid tuple" did not say what it wants.
        if isinstance(v, list) and not all(isinstance(p, (list, tuple)) and len(p) == 2
                                           and all(isinstance(n, str) for n in p) for p in v):
            raise ValueError("give [student_layer, teacher_layer] pairs of layer names, e.g. "
                             "[[dense_1, dense_1]]")
        return v

    @model_validator(mode="after")
    def _finite(self):
        if not math.isfinite(self.learning_rate):
            raise ValueError("learning_rate must be a finite number")
        return self


@register_pass
class DistillPass(Pass):
    """Fine-tune the working model against the imported teacher (KD, optional feature matching)."""

    name = "distill"
    Config = DistillConfig
    needs = frozenset({TEACHER})
    changes_model = True
    stage = Stage.TRANSFORM
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
            problems.extend(_feature_layer_problems(self.config.feature_layers, teacher=teacher))
            if plan.data.num_classes and t_out != plan.data.num_classes:
                problems.append(f"teacher {self.config.teacher} has {t_out} outputs but the model has "
                                f"{plan.data.num_classes}; give a teacher for the same task")
        return problems

    def run(self, state: ModelState, ctx) -> ModelState:
        from edgesparse.train.losses import Distillation
        from edgesparse.train.trainer import train

        cfg: DistillConfig = self.config
        teacher = self._teacher(state)
        student = state.model
        _check_feature_layers(cfg.feature_layers, student, teacher)
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
        loss = Distillation.hinton(teacher, alpha=alpha, temperature=cfg.temperature,
                                   features=cfg.feature_layers, feature_weight=cfg.feature_weight)
        result = train(student, (x, y), loss=loss, epochs=cfg.epochs, lr=cfg.learning_rate,
                       batch_size=cfg.batch_size, seed=ctx.seed, schedule=cfg.schedule,
                       validation=(x_val, y_val), patience=cfg.patience, progress=ctx.progress,
                       label="distill")
        h = result.history
        history = [{"epoch": i + 1, "val_kd_loss": round(vloss, 5),
                    **({"val_accuracy": round(h["val_accuracy"][i], 3)} if y_val is not None else {})}
                   for i, vloss in enumerate(h["val_loss"])]
        state.record(self.name, epochs_run=result.epochs_run, best_epoch=result.best_epoch, alpha_used=alpha,
                     temperature=float(cfg.temperature), labels_used=y is not None, history=history,
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


def _feature_layer_problems(pairs, student=None, teacher=None) -> list[str]:
    """A feature_layers name that is not a layer of its model. Names change when a file is
    loaded (a layer built as dense_18 can load as dense_29), so this is a common mistake; it was
    an internal ValueError from get_layer once training had started."""
    problems = []
    for which, model, k in (("student", student, 0), ("teacher", teacher, 1)):
        if model is None:
            continue
        names = [layer.name for layer in model.layers]
        for pair in pairs:
            if pair[k] not in names:
                problems.append(f"feature_layers: the {which} has no layer {pair[k]!r}; its layers are "
                                f"{', '.join(names[:12])}{' …' if len(names) > 12 else ''}")
    return problems


def _check_feature_layers(pairs, student, teacher) -> None:
    problems = _feature_layer_problems(pairs, student, teacher)
    if problems:
        raise UserError(f"distill {problems[0]}")

