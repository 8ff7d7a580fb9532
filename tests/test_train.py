"""The one training loop (edgesparse/train/): Keras `fit` with our losses, regularizers, post-step
hooks and callbacks, on real tf_keras models small enough to train in a second."""
import numpy as np
import pytest

from edgesparse._tf import keras, tf
from edgesparse.train.callbacks import EveryNSteps
from edgesparse.train.losses import CrossEntropy, Distillation
from edgesparse.train.metrics import accuracy, agreement
from edgesparse.train.trainer import train


def _task(n=240, d=8, k=3, seed=0):
    """Inputs whose label is the largest of the first k features: a linear model can learn it."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x, np.argmax(x[:, :k], axis=1).astype(np.int64)


def _dense(d=8, k=3, activation="softmax", seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((d,))
    return keras.Model(inp, keras.layers.Dense(k, activation=activation, name="fc")(inp))


def _l1(model):
    return float(np.abs(model.get_layer("fc").kernel.numpy()).sum())


class _Recorder:
    """The pipeline's Progress protocol, remembering what it was told."""

    def __init__(self):
        self.tasks = []

    def task(self, description, total=None):
        rec = {"description": description, "total": total, "advanced": 0, "closed": False, "updates": []}
        self.tasks.append(rec)

        class _T:
            def advance(self, n=1):
                rec["advanced"] += n

            def update(self, **fields):
                rec["updates"].append(fields)

            def close(self):
                rec["closed"] = True
        return _T()


def test_cross_entropy_learns_and_reports_loss_per_epoch():
    x, y = _task()
    model = _dense()
    before = accuracy(model, x, y)
    progress = _Recorder()
    r = train(model, (x, y), loss=CrossEntropy(), epochs=5, lr=0.05, batch_size=32, seed=0,
              progress=progress, label="fit")
    assert r.epochs_run == 5 and len(r.history["loss"]) == 5 and not r.stopped_early and r.best_epoch is None
    assert r.history["loss"][-1] < r.history["loss"][0]
    assert accuracy(model, x, y) > max(before, 90.0)
    (task,) = progress.tasks
    assert task["description"] == "fit" and task["total"] == 5 and task["advanced"] == 5 and task["closed"]


def test_the_same_seed_repeats_and_another_seed_shuffles_differently():
    x, y = _task()
    runs = []
    for seed in (0, 0, 1):
        model = _dense(seed=3)                       # the same start each time
        train(model, (x, y), loss=CrossEntropy(), epochs=2, lr=0.05, batch_size=16, seed=seed)
        runs.append(model.get_layer("fc").kernel.numpy())
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.allclose(runs[0], runs[2])


def test_keras_shuffle_repeats_a_plain_keras_fit_bit_for_bit():
    """shuffle="keras" is what `model.fit(x, y, shuffle=True)` did for the prune fine-tune, the
    magnitude sparsify and the control (their published figures): the same batches, dropout
    masks, updates and loss history; the numpy permutation (distill, QAT) is another order."""
    x, y = _task(n=200)                        # 200 / 32: the last batch of an epoch is short

    def net():
        keras.utils.set_random_seed(3)
        inp = keras.Input((8,))
        h = keras.layers.Dropout(0.3)(keras.layers.Dense(16, activation="relu")(inp))
        return keras.Model(inp, keras.layers.Dense(3, activation="softmax")(h))

    plain = net()
    tf.random.set_seed(0)
    plain.compile(optimizer=keras.optimizers.Adam(0.01), loss=keras.losses.SparseCategoricalCrossentropy())
    plain_loss = plain.fit(x, y, epochs=3, batch_size=32, shuffle=True, verbose=0).history["loss"]
    ours = {}
    for shuffle in ("keras", "permutation"):
        model = net()
        r = train(model, (x, y), loss=CrossEntropy(), epochs=3, lr=0.01, batch_size=32, seed=0, shuffle=shuffle)
        ours[shuffle] = (model.get_weights(), r.history["loss"])
    weights, losses = ours["keras"]
    assert losses == [float(v) for v in plain_loss]
    for w, w_plain in zip(weights, plain.get_weights()):
        np.testing.assert_array_equal(w, w_plain)
    assert not np.allclose(ours["permutation"][0][0], weights[0])
    with pytest.raises(ValueError, match="shuffle"):
        train(net(), (x, y), loss=CrossEntropy(), epochs=1, lr=0.01, shuffle="sorted")


def test_an_l1_regularizer_drives_the_kernel_norm_down():
    x, y = _task()
    norms = {}
    for strength in (0.0, 0.05):
        model = _dense(seed=1)

        def l1(m, s=strength):
            return s * tf.reduce_sum(tf.abs(m.get_layer("fc").kernel))

        train(model, (x, y), loss=CrossEntropy(), epochs=8, lr=0.02, batch_size=32, seed=0, regularizers=[l1])
        norms[strength] = _l1(model)
    assert norms[0.05] < 0.6 * norms[0.0], norms


def test_a_proximal_post_step_hook_makes_exact_zeros():
    """Soft-thresholding after every step (proximal L1): the unused inputs' weights become 0."""
    x, y = _task()
    model = _dense(seed=2)

    def prox(m, t=0.01):
        k = m.get_layer("fc").kernel
        k.assign(tf.sign(k) * tf.maximum(tf.abs(k) - t, 0.0))

    train(model, (x, y), loss=CrossEntropy(), epochs=6, lr=0.02, batch_size=32, seed=0, post_step=[prox])
    kernel = model.get_layer("fc").kernel.numpy()
    assert (kernel[3:] == 0).mean() > 0.5            # features 3.. carry no signal
    assert accuracy(model, x, y) > 80.0              # and it still learned (chance is 33%)


def test_every_n_steps_sees_the_trained_model_at_the_right_steps():
    x, y = _task(n=64)
    model = _dense()
    seen = []
    train(model, (x, y), loss=CrossEntropy(), epochs=3, lr=0.01, batch_size=16, seed=0,   # 4 steps an epoch
          callbacks=[EveryNSteps(5, lambda net, step: seen.append((net is model, step)))])
    assert seen == [(True, 5), (True, 10)]


def test_early_stopping_keeps_the_best_epoch_and_restores_its_weights():
    """A model that is already right, trained on wrong labels: validation only gets worse, so
    training stops after `patience` epochs and the starting weights come back."""
    x, y = _task()
    model = _dense(activation=None)
    fc = model.get_layer("fc")
    fc.set_weights([np.eye(8, 3, dtype=np.float32) * 5, np.zeros(3, np.float32)])
    start = [w.copy() for w in model.get_weights()]
    assert accuracy(model, x, y) == 100.0
    progress = _Recorder()
    r = train(model, (x, (y + 1) % 3), loss=CrossEntropy(), epochs=10, lr=0.1, batch_size=32, seed=0,
              validation=(x, y), patience=2, progress=progress, label="t")
    assert r.best_epoch == 0 and r.epochs_run == 2 and r.stopped_early
    assert all(a < 100.0 for a in r.history["val_accuracy"]) and len(r.history["val_loss"]) == 2
    for w, w0 in zip(model.get_weights(), start):
        np.testing.assert_array_equal(w, w0)
    assert "val acc" in progress.tasks[0]["updates"][-1]["description"]


def test_distillation_sees_logits_and_probabilities_as_the_same_function():
    """A logits teacher and its softmax twin as student: the KD loss is zero, whichever ends in the softmax."""
    x, y = _task(n=64)
    logits = _dense(activation=None, seed=4)
    probs = _dense(activation="softmax", seed=5)
    probs.set_weights(logits.get_weights())
    xt = tf.constant(x)
    for teacher, student in ((logits, probs), (probs, logits)):
        kd = Distillation.hinton(teacher, alpha=0.0, temperature=4.0)
        assert float(kd(student, xt, None, training=False)) == pytest.approx(0.0, abs=1e-5)
    other = _dense(activation="softmax", seed=6)
    kd = Distillation.hinton(logits, alpha=0.5, temperature=2.0)
    assert float(kd(other, xt, None, training=False)) > 1e-3
    # labels add the CE term; the validation loss is the teacher-matching part alone
    with_labels = float(kd(other, xt, tf.constant(y), training=False))
    assert with_labels > float(kd(other, xt, None, training=False))
    assert float(kd.validation_loss(other, xt, tf.constant(y))) == pytest.approx(
        float(kd(other, xt, None, training=False)))


def test_cross_entropy_is_the_same_on_logits_and_on_probabilities():
    x, y = _task(n=64)
    logits = _dense(activation=None, seed=7)
    probs = _dense(activation="softmax", seed=8)
    probs.set_weights(logits.get_weights())
    ce = CrossEntropy()
    a, b = (float(ce(m, tf.constant(x), tf.constant(y), training=False)) for m in (logits, probs))
    assert a == pytest.approx(b, rel=1e-4) and a > 0.1


def test_distillation_with_feature_matching_trains_the_adapter_too():
    x, _ = _task(n=128)
    keras.utils.set_random_seed(0)
    inp = keras.Input((8,))
    teacher = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(keras.layers.Dense(16, name="t_h")(inp)))
    inp2 = keras.Input((8,))
    student = keras.Model(inp2, keras.layers.Dense(3, activation="softmax")(keras.layers.Dense(4, name="s_h")(inp2)))
    kd = Distillation.hinton(teacher, alpha=0.0, temperature=2.0, features=[("s_h", "t_h")])
    start = kd(student, tf.constant(x), None, training=False)     # builds the adapter
    adapter0 = kd.trainable_variables[0].numpy().copy()
    train(student, (x, None), loss=kd, epochs=5, lr=0.01, batch_size=32, seed=0)
    assert kd.trainable_variables[0].shape == (4, 16)
    assert not np.allclose(kd.trainable_variables[0].numpy(), adapter0)
    assert float(kd(student, tf.constant(x), None, training=False)) < float(start)


def test_accuracy_and_agreement_are_percentages():
    x, y = _task(n=40)
    model = _dense(activation=None)
    model.get_layer("fc").set_weights([np.eye(8, 3, dtype=np.float32), np.zeros(3, np.float32)])
    assert accuracy(model, x, y) == 100.0
    wrong = y.copy()
    wrong[:10] = (wrong[:10] + 1) % 3
    assert accuracy(model, x, wrong) == 75.0
    assert agreement(model, np.eye(3)[wrong], x) == 75.0
