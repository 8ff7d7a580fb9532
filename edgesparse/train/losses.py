"""The training objectives: cross-entropy and knowledge distillation, one place for both.

An objective is called as `loss(model, x, y, training)` and returns a scalar tensor; `y` is None
when there are no labels. `validation_loss(model, x, y)` is what early stopping compares, and
`trainable_variables` lists any variables the objective itself learns (feature adapters).

Whether a model's outputs are probabilities or logits is decided by the one softmax detector,
`edgesparse.graph.functional.outputs_are_probabilities`.
"""
from __future__ import annotations

from edgesparse._tf import keras, tf
from edgesparse.graph.functional import outputs_are_probabilities


def sparse_cross_entropy(model):
    """Keras' sparse categorical cross-entropy, on probabilities or logits as `model` outputs."""
    return keras.losses.SparseCategoricalCrossentropy(from_logits=not outputs_are_probabilities(model))


def log_probs(outputs, from_logits: bool):
    """Log-probabilities from logits or from probabilities.

    log(softmax(z)) differs from z by a per-sample constant and softmax is shift-invariant, so
    log-probabilities are exact stand-ins for logits wherever a temperature softmax follows.
    """
    return tf.nn.log_softmax(outputs) if from_logits else tf.math.log(tf.clip_by_value(outputs, 1e-12, 1.0))


class Objective:
    """Base: the validation loss is the loss itself, and there is nothing extra to learn."""

    trainable_variables: tuple = ()

    def __call__(self, model, x, y, training: bool):
        raise NotImplementedError

    def validation_loss(self, model, x, y):
        return self(model, x, y, training=False)


class CrossEntropy(Objective):
    """Mean sparse categorical cross-entropy against the labels."""

    def __call__(self, model, x, y, training: bool):
        if y is None:
            raise ValueError("cross-entropy needs labels")
        return sparse_cross_entropy(model)(y, model(x, training=training))


class Distillation(Objective):
    """kd_weight·KL(softmax(t/T) ‖ softmax(s/T)) + ce_weight·CE(labels, s) + feature matching.

    Hinton et al. (2015) weigh the terms (1−α)·T² and α (`Distillation.hinton`). Without labels
    the CE term is dropped, so a user with only raw inputs can still learn from the teacher.
    FitNets-style feature matching pulls named student layers towards the teacher's through a
    learned linear adapter (a pruned student has fewer channels than its teacher).
    """

    def __init__(self, teacher, *, temperature: float = 1.0, kd_weight: float = 1.0, ce_weight: float = 1.0,
                 features: list[tuple[str, str]] | tuple = (), feature_weight: float = 1.0):
        self.teacher = teacher
        self.temperature = float(temperature)
        self.kd_weight, self.ce_weight = float(kd_weight), float(ce_weight)
        self.features, self.feature_weight = list(features), float(feature_weight)
        self.t_from_logits = not outputs_are_probabilities(teacher)
        self.t_feat = keras.Model(teacher.inputs, [teacher.output]
                                  + [teacher.get_layer(t).output for _, t in self.features])
        self.adapters = [keras.layers.Dense(int(teacher.get_layer(t).output_shape[-1]), use_bias=False,
                                            name=f"adapt_{i}") for i, (_, t) in enumerate(self.features)]
        self._student_feats: dict[int, object] = {}

    @classmethod
    def hinton(cls, teacher, *, alpha: float, temperature: float, **kw) -> "Distillation":
        return cls(teacher, temperature=temperature, kd_weight=(1.0 - alpha) * temperature * temperature,
                   ce_weight=alpha, **kw)

    @property
    def trainable_variables(self) -> list:
        return [v for a in self.adapters for v in a.trainable_variables]

    def _student(self, model):
        """The student with its matched feature layers as extra outputs (the model itself without)."""
        if not self.features:
            return model
        if id(model) not in self._student_feats:
            self._student_feats[id(model)] = keras.Model(
                model.inputs, [model.output] + [model.get_layer(s).output for s, _ in self.features])
        return self._student_feats[id(model)]

    def __call__(self, model, x, y, training: bool):
        t_out = self.t_feat(x, training=False)
        s_out = self._student(model)(x, training=training)
        t_out = t_out if isinstance(t_out, list) else [t_out]
        s_out = s_out if isinstance(s_out, list) else [s_out]
        t_lp = log_probs(t_out[0], self.t_from_logits)
        s_lp = log_probs(s_out[0], not outputs_are_probabilities(model))
        T = self.temperature
        p_t = tf.nn.softmax(t_lp / T)
        kd = tf.reduce_mean(tf.reduce_sum(p_t * (tf.nn.log_softmax(t_lp / T) - tf.nn.log_softmax(s_lp / T)), -1))
        loss = self.kd_weight * kd
        if y is not None and self.ce_weight > 0:
            ce = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, s_lp, from_logits=True))
            loss += self.ce_weight * ce
        for ad, s_f, t_f in zip(self.adapters, s_out[1:], t_out[1:]):
            loss += self.feature_weight * tf.reduce_mean(tf.square(ad(s_f) - tf.stop_gradient(t_f)))
        return loss

    def validation_loss(self, model, x, y):
        """The teacher-matching terms only: the measure that exists with and without labels."""
        return self(model, x, None, training=False)
