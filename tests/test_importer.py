"""The import pass: tf_keras, .h5 and SavedModel files load; Keras 3 files are translated and
match Keras 3's own outputs; everything else is a one-line UserError naming what is accepted."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edgesparse._tf import keras, tf
from edgesparse.errors import UserError
from edgesparse.frontends.keras import load_model
from edgesparse.passes.importer import ImportPass
from edgesparse.frontends.keras3 import compare_outputs
from edgesparse.pipeline import PASSES, RunContext
from edgesparse.state import ModelState

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_models"
DATA = ROOT / "tests" / "data"
ACCEPTED = ("edgesparse accepts tf_keras or Keras 3 .keras files, .h5 files, SavedModel folders, ONNX files "
            "and PyTorch .pt2 files (torch.export.save)")

# Made by Keras 3 in a subprocess (this process has tf_keras loaded): a functional model with
# many layer kinds and random non-default weights, nested models (one shared), a Sequential
# (.keras and legacy .h5), and two that must be refused. Outputs are Keras 3's own.
_MAKE_KERAS3_MODELS = r"""
import os, sys
import numpy as np
import keras
from keras import layers
out = sys.argv[1]
keras.utils.set_random_seed(0)

inp = keras.Input((8, 8, 1), name="img")
x = layers.Rescaling(2.0, offset=-1.0)(inp)
x = layers.ZeroPadding2D(1)(x)
x = layers.Conv2D(8, 3, activation="silu")(x)
x = layers.BatchNormalization()(x)
x = layers.PReLU(shared_axes=[1, 2])(x)
a = layers.SeparableConv2D(8, 3, padding="same")(x)
a = layers.LayerNormalization()(a)
a = layers.ELU()(a)
b = layers.DepthwiseConv2D(3, padding="same")(x)
b = layers.LeakyReLU(0.2)(b)
x = layers.Add()([a, b])
x = layers.Multiply()([x, layers.Activation("sigmoid")(x)])
x = layers.AveragePooling2D(2)(x)
x = layers.UpSampling2D(2)(x)
x = layers.Conv2DTranspose(4, 3, padding="same")(x)
x = layers.Cropping2D(1)(x)
x = layers.SpatialDropout2D(0.1)(x)
c = layers.GlobalMaxPooling2D()(x)
d = layers.Flatten()(layers.MaxPooling2D(2)(x))
x = layers.Concatenate()([c, d])
x = layers.GaussianNoise(0.1)(x)
x = layers.Reshape((4, -1))(x)
x = layers.Permute((2, 1))(x)
x = layers.GlobalAveragePooling1D()(x)
x = layers.Dense(10)(x)
x = layers.Softmax()(x)
zoo = keras.Model(inp, x, name="zoo")
# Distinct, non-default values everywhere (BatchNorm's moving mean/variance too), so a weight
# copied into the wrong slot changes the outputs.
rng = np.random.default_rng(0)
for layer in zoo.layers:
    layer.set_weights([rng.uniform(0.5, 1.5, w.shape) if len(w.shape) == 1 else rng.normal(0, 0.3, w.shape)
                       for w in layer.get_weights()])
zoo.save(f"{out}/zoo.keras")

block_in = keras.Input((16,))
block = keras.Model(block_in, layers.Dense(16, activation="relu")(block_in), name="block")
head = keras.Sequential([keras.Input((16,)), layers.Dense(10, activation="softmax")], name="head")
pixels = keras.Input((64,), name="pixels")
h = block(block(layers.Dense(16)(pixels)))          # the same nested model called twice
nested = keras.Model(pixels, head(h), name="nested")
nested.save(f"{out}/nested.keras")

seq = keras.Sequential([keras.Input((64,)), layers.Dense(32, activation="relu"), layers.Dropout(0.1),
                        layers.Dense(10)], name="seq")
seq.save(f"{out}/seq.keras")
seq.save(f"{out}/seq.h5")

keras.Sequential([layers.Dense(4)]).save(f"{out}/no_input_shape.keras")

@keras.saving.register_keras_serializable(package="mine")
class Dense(layers.Dense):          # a user class with a built-in layer's name
    pass

c = keras.Input((64,))
keras.Model(c, Dense(3, name="my_dense")(c)).save(f"{out}/custom.keras")
u = keras.Input((64,))
keras.Model(u, layers.UnitNormalization(name="unit_norm")(u)).save(f"{out}/unsupported.keras")

rng = np.random.default_rng(1)
xs = {"zoo": rng.random((4, 8, 8, 1), dtype=np.float32), "nested": rng.random((4, 64), dtype=np.float32),
      "seq": rng.random((4, 64), dtype=np.float32)}
ys = {"zoo": zoo.predict(xs["zoo"], verbose=0), "nested": nested.predict(xs["nested"], verbose=0),
      "seq": seq.predict(xs["seq"], verbose=0)}
np.savez(f"{out}/outputs.npz", **{f"x_{k}": v for k, v in xs.items()}, **{f"y_{k}": v for k, v in ys.items()})
"""


@pytest.fixture(scope="module")
def keras3_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("keras3")
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env.update(TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    done = subprocess.run([sys.executable, "-c", _MAKE_KERAS3_MODELS, str(out)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return out


@pytest.fixture(scope="module")
def digits_val() -> tuple[np.ndarray, np.ndarray]:
    data = np.load(SAMPLES / "digits.npz")
    return data["x_val"], data["y_val"]


def _one_line_user_error(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


# ----------------------------------------------------------------------------- tf_keras files


@pytest.mark.parametrize("name, input_shape, macs_range", [
    ("digits_cnn.keras", [8, 8, 1], (300_000, 1_000_000)),
    ("digits_mlp.keras", [64], (80_000, 90_000)),
])
def test_sample_models_load_as_functional_tf_keras(name, input_shape, macs_range, digits_val):
    model, info = load_model(SAMPLES / name)
    assert isinstance(model, keras.Model) and model._is_graph_network
    assert info["format"] == "tf_keras" and info["keras_version"].startswith("2.")
    assert info["check"] is None and info["converted_to_functional"] is False
    x, y = digits_val
    accuracy = float(np.mean(np.argmax(model.predict(x.reshape(len(x), *input_shape), verbose=0), 1) == y))
    assert accuracy > 0.95


def test_h5_and_savedmodel_round_trip(tmp_path, digits_val):
    model, _ = load_model(SAMPLES / "digits_cnn.keras")
    x = digits_val[0][:32]
    expected = model.predict(x, verbose=0)
    model.save(tmp_path / "cnn.h5")
    model.save(tmp_path / "cnn_savedmodel", save_format="tf")
    for path, fmt in ((tmp_path / "cnn.h5", "h5"), (tmp_path / "cnn_savedmodel", "savedmodel")):
        loaded, info = load_model(path)
        assert info["format"] == fmt
        assert loaded._is_graph_network
        np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, atol=1e-6)


def test_sequential_is_converted_to_functional(tmp_path):
    seq = keras.Sequential([keras.Input((64,)), keras.layers.Dense(8, activation="relu"),
                            keras.layers.Dense(3)], name="tiny_seq")
    seq.save(tmp_path / "seq.keras")
    model, info = load_model(tmp_path / "seq.keras")
    assert info["converted_to_functional"] is True
    assert not isinstance(model, keras.Sequential) and model._is_graph_network
    x = np.random.default_rng(0).random((5, 64), dtype=np.float32)
    np.testing.assert_allclose(model.predict(x, verbose=0), seq.predict(x, verbose=0), atol=1e-6)


def test_zip_with_other_suffix_still_loads(tmp_path):
    # The format is read from the bytes; tf_keras needs the .keras suffix, the importer supplies it.
    (tmp_path / "model.bin").write_bytes((SAMPLES / "digits_mlp.keras").read_bytes())
    model, info = load_model(tmp_path / "model.bin")
    assert info["format"] == "tf_keras" and model.count_params() == 85002


# ----------------------------------------------------------------------------- Keras 3 files


def test_keras3_cnn_is_translated_and_checked_against_keras3(digits_val):
    path = DATA / "digits_cnn_keras3.keras"
    model, info = load_model(path)                       # runs Keras 3 in a subprocess to check
    assert info["format"] == "keras3" and info["keras_version"].startswith("3.")
    assert info["check"]["passed"] and info["check"]["max_abs_diff"] < 1e-4
    assert info["layers_translated"] == 12 and info["weights_copied"] == 14
    # Against Keras 3 outputs stored when the file was made (validation images + random inputs).
    expected = np.load(DATA / "digits_cnn_keras3_expected.npz")
    np.testing.assert_allclose(model.predict(expected["x"], verbose=0), expected["y"], atol=1e-5)
    # The file is a copy of the tf_keras sample CNN: the translation agrees with it too.
    original, _ = load_model(SAMPLES / "digits_cnn.keras")
    x, y = digits_val
    ours, theirs = model.predict(x, verbose=0), original.predict(x, verbose=0)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    assert float(np.mean(np.argmax(ours, 1) == y)) > 0.95
    assert [type(layer).__name__ for layer in model.layers] == [type(layer).__name__ for layer in original.layers]


@pytest.mark.parametrize("file, key, kind", [
    ("zoo.keras", "zoo", "keras_zip"),
    ("nested.keras", "nested", "keras_zip"),
    ("seq.keras", "seq", "keras_zip"),
    ("seq.h5", "seq", "h5"),
])
def test_keras3_translation_matches_keras3_outputs(keras3_dir, file, key, kind):
    # check=False: this test compares against Keras 3 outputs itself (saves a subprocess each).
    model, info = load_model(keras3_dir / file, check=False)
    assert info["format"] == "keras3" and info["container"] == kind
    assert model._is_graph_network and not isinstance(model, keras.Sequential)
    outputs = np.load(keras3_dir / "outputs.npz")
    np.testing.assert_allclose(model.predict(outputs[f"x_{key}"], verbose=0), outputs[f"y_{key}"], atol=1e-5)


def test_keras3_translation_keeps_shared_nested_model(keras3_dir):
    model, _ = load_model(keras3_dir / "nested.keras", check=False)
    block = model.get_layer("block")
    assert isinstance(block, keras.Model) and len(block.inbound_nodes) == 2    # called twice
    # Shared, not duplicated: the block's weights are counted once.
    assert model.count_params() == (64 * 16 + 16) + (16 * 16 + 16) + (16 * 10 + 10)


def test_keras3_translation_is_trainable_in_tf_keras(keras3_dir):
    # The point of translating: tf_keras can fine-tune it (Keras 3 fit breaks here, DESIGN trap 12).
    model, _ = load_model(keras3_dir / "seq.keras", check=False)
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    x = np.random.default_rng(0).random((32, 64), dtype=np.float32)
    history = model.fit(x, np.arange(32) % 10, epochs=2, batch_size=16, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


def test_check_flags_outputs_that_differ():
    model, _ = load_model(SAMPLES / "digits_mlp.keras")
    x = np.random.default_rng(0).random((8, 64), dtype=np.float32)
    reference = model.predict(x, verbose=0)
    assert compare_outputs(model, x, reference)["passed"]
    kernel, bias = model.get_layer("probs").get_weights()
    # A translation bug, simulated: one class's bias off (a shift of all of them is softmax-invariant).
    model.get_layer("probs").set_weights([kernel, bias + np.eye(len(bias))[0]])
    result = compare_outputs(model, x, reference)
    assert not result["passed"] and result["max_abs_diff"] > 1e-3


def test_keras3_unsupported_layer_is_named(keras3_dir):
    with pytest.raises(UserError) as err:
        load_model(keras3_dir / "unsupported.keras", check=False)
    message = _one_line_user_error(err)
    assert "'unit_norm'" in message and "UnitNormalization" in message


def test_keras3_custom_layer_is_refused_even_with_a_builtin_name(keras3_dir):
    with pytest.raises(UserError) as err:
        load_model(keras3_dir / "custom.keras", check=False)
    message = _one_line_user_error(err)
    assert "'my_dense'" in message and "custom class mine>Dense" in message


def test_keras3_sequential_without_input_shape_is_refused(keras3_dir):
    with pytest.raises(UserError) as err:
        load_model(keras3_dir / "no_input_shape.keras", check=False)
    assert "no input shape" in _one_line_user_error(err)


# ----------------------------------------------------------------------------- bad input


def _random_bytes(path: Path) -> Path:
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    return path


def _truncated_keras(path: Path) -> Path:
    path.write_bytes((SAMPLES / "digits_mlp.keras").read_bytes()[:5000])
    return path


def _torch_like_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:      # torch.save writes a zip with a pickle inside
        zf.writestr("archive/data.pkl", b"\x80\x04N.")
    return path


def _keras3_with_damaged_weights(path: Path) -> Path:
    with zipfile.ZipFile(DATA / "digits_cnn_keras3.keras") as src, zipfile.ZipFile(path, "w") as dst:
        for name in src.namelist():
            dst.writestr(name, b"not hdf5" if name == "model.weights.h5" else src.read(name))
    return path


def _onnx_model(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    onnx.save(helper.make_model(graph), path)
    return path


def _tflite_model(path: Path) -> Path:
    # The first bytes of every .tflite flatbuffer: a root offset, then the "TFL3" identifier.
    path.write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(64))
    return path


def _weights_only_h5(path: Path) -> Path:
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.save_weights(path)
    return path


def _bare_tf_savedmodel(path: Path) -> Path:
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    tf.saved_model.save(model, str(path))      # no Keras metadata: a graph, not layers
    return path


def _plain_folder(path: Path) -> Path:
    path.mkdir()
    (path / "notes.txt").write_text("not a model")
    return path


@pytest.mark.parametrize("make, name, says", [
    (None, "missing.keras", "no such file"),
    (_random_bytes, "random.keras", "not a zip"),
    (lambda p: (p.write_bytes(b""), p)[1], "empty.h5", "empty"),
    (_truncated_keras, "truncated.keras", "corrupt"),
    (_torch_like_zip, "model.pt", "PyTorch"),
    (_keras3_with_damaged_weights, "damaged_keras3.keras", "could not be read"),
    (_onnx_model, "model.onnx", "ONNX"),
    (_tflite_model, "model.tflite", "TFLite"),
    (_weights_only_h5, "only.weights.h5", "weights only"),
    (_bare_tf_savedmodel, "bare_savedmodel", "no Keras metadata"),
    (_plain_folder, "folder", "not a SavedModel"),
])
def test_bad_input_is_one_line_user_error_naming_accepted_formats(tmp_path, make, name, says):
    path = tmp_path / name
    if make is not None:
        make(path)
    with pytest.raises(UserError) as err:
        load_model(path)
    message = _one_line_user_error(err)
    assert message.startswith(f"cannot import {path}")
    assert says in message
    assert message.endswith(ACCEPTED)


def test_subclassed_model_is_refused(tmp_path):
    class Tiny(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    model = Tiny()
    model(np.zeros((1, 4), np.float32))
    model.save(tmp_path / "sub_savedmodel", save_format="tf")
    with pytest.raises(UserError) as err:
        load_model(tmp_path / "sub_savedmodel")
    assert "subclassed" in _one_line_user_error(err)


# ----------------------------------------------------------------------------- the pass


def _run_import(model, **source):
    state = ModelState(model=model, name=model.name, source=source)
    return ImportPass().run(state, RunContext(target=None, data=None, workdir=Path(".")))


def test_import_pass_is_registered_as_stage_zero():
    assert PASSES["import"] is ImportPass
    assert ImportPass.stage == 0 and ImportPass.changes_model is False


def test_import_pass_records_facts_and_keeps_an_independent_reference(digits_val):
    model, info = load_model(SAMPLES / "digits_cnn.keras")
    state = _run_import(model, **info)
    facts = state.facts["import"]
    assert facts["format"] == "tf_keras"
    assert facts["input_shape"] == [8, 8, 1] and facts["output_shape"] == [10]
    assert facts["output_activation"] == "softmax"
    assert facts["params"] == model.count_params() and 300_000 <= facts["macs"] <= 1_000_000
    x = digits_val[0][:16]
    reference = state.reference
    assert reference is not state.model
    np.testing.assert_array_equal(reference.predict(x, verbose=0), state.model.predict(x, verbose=0))
    kernel = state.model.get_layer("conv1").get_weights()[0]
    state.model.get_layer("conv1").set_weights([np.zeros_like(kernel)])
    np.testing.assert_array_equal(reference.get_layer("conv1").get_weights()[0], kernel)


def test_import_pass_converts_sequential_and_detects_logits():
    seq = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)], name="logits_seq")
    state = _run_import(seq)
    assert not isinstance(state.model, keras.Sequential)
    assert state.facts["import"]["converted_to_functional"] is True
    assert state.facts["import"]["output_activation"] == "logits"


def test_import_pass_refuses_unknown_input_dims_and_multiple_outputs():
    inputs = keras.Input((None, None, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
    with pytest.raises(UserError, match="unknown dimensions"):
        _run_import(keras.Model(inputs, keras.layers.Dense(2)(pooled)))
    inputs = keras.Input((4,))
    with pytest.raises(UserError, match="2 outputs"):
        _run_import(keras.Model(inputs, [keras.layers.Dense(2)(inputs), keras.layers.Dense(3)(inputs)]))
