"""tf_keras model files (.keras, .h5, SavedModel) -> the working form, a functional tf_keras model.

`load_model(path)` looks at the bytes, not the file name (a `.keras` file is a zip, an `.h5` file
starts with the HDF5 signature, a SavedModel is a folder), loads tf_keras files with tf_keras, and
translates Keras 3 files layer by layer (frontends/keras3.py), checking the translation's outputs
against Keras 3's own.
"""
from __future__ import annotations

import json
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from edgesparse._tf import keras
from edgesparse.errors import UserError
from edgesparse.frontends.keras3 import translate_keras3

ACCEPTED = "edgesparse accepts tf_keras or Keras 3 .keras files, .h5 files, and SavedModel folders"
ZIP_MAGIC = b"PK\x03\x04"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"

# Formats people reasonably try; the error names what the file is, so the fix is obvious.
OTHER_FORMATS = {
    ".onnx": "an ONNX model (edgesparse produces ONNX; it does not read it)",
    ".tflite": "a TFLite model (edgesparse produces TFLite; it does not read it)",
    ".pt": "a PyTorch model", ".pth": "a PyTorch model", ".ckpt": "a checkpoint",
    ".pb": "a frozen TensorFlow graph", ".mlmodel": "a Core ML model",
    ".safetensors": "a weights-only file",
}


def cannot_import(path: Path | str, why: str) -> UserError:
    return UserError(f"cannot import {path}: {why}; {ACCEPTED}")



# ----------------------------------------------------------------------------- loading


def load_model(path: str | Path, check: bool = True) -> tuple[Any, dict[str, Any]]:
    """Load any accepted model file as a functional tf_keras model.

    Returns (model, info); info has format ("tf_keras", "keras3", "h5" or "savedmodel"),
    container, keras_version, path, how it was translated, and the numerical check (Keras 3).
    check=False skips running Keras 3 to check a translation (only for callers that compare
    against Keras 3 outputs themselves, like the tests); the build always checks.
    """
    path = Path(path)
    if not path.exists():
        raise cannot_import(path, "no such file or folder")
    if path.is_dir():
        model, info = _load_savedmodel(path)
    else:
        try:
            with open(path, "rb") as f:
                head = f.read(8)
        except OSError as err:
            raise cannot_import(path, f"the file cannot be read ({err.strerror})") from None
        if head.startswith(ZIP_MAGIC):
            model, info = _load_keras_zip(path, check)
        elif head == HDF5_MAGIC:
            model, info = _load_h5(path, check)
        else:
            raise cannot_import(path, _what_it_is(path))
    model, converted = as_functional(model, path)
    # Checked here as well as in the pass: the build reads the input shape before the pipeline runs.
    check_working_form(model, str(path))
    info.update(path=str(path), converted_to_functional=converted)
    return model, info


def _looks_like_other(path: Path) -> bool:
    return any(path.name.lower().endswith(suffix) for suffix in OTHER_FORMATS)


def _what_it_is(path: Path) -> str:
    name = path.name.lower()
    for suffix, what in OTHER_FORMATS.items():
        if name.endswith(suffix):
            return f"it looks like {what}"
    if path.stat().st_size == 0:
        return "the file is empty"
    return "it is not a zip (.keras), HDF5 (.h5) or SavedModel file"


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:300]


def _tf_keras_load(path: Path, fmt: str, shown: Path | None = None):
    try:
        return keras.models.load_model(path, compile=False)   # later passes compile for themselves
    except Exception as err:
        raise cannot_import(shown or path, f"tf_keras could not load this {fmt} file ({_first_line(err)})") from None


def _translate(path: Path, container: str, check: bool):
    try:
        return translate_keras3(path, container, check=check)
    except UserError:
        raise
    except Exception as err:     # a damaged config or weights file inside an intact container
        raise cannot_import(path, f"the Keras 3 file could not be read ({_first_line(err)})") from None


def _load_keras_zip(path: Path, check: bool):
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            if not {"metadata.json", "config.json"} <= names:
                hint = _what_it_is(path) if _looks_like_other(path) else "it is a zip, but not a .keras file"
                raise cannot_import(path, f"{hint} (no metadata.json/config.json inside)")
            version = str(json.loads(zf.read("metadata.json")).get("keras_version", ""))
    except (zipfile.BadZipFile, json.JSONDecodeError, KeyError, OSError) as err:
        raise cannot_import(path, f"the .keras file is corrupt ({err})") from None

    info: dict[str, Any] = {"container": "keras_zip", "keras_version": version}
    if version.startswith("3."):
        model, facts = _translate(path, "keras_zip", check)
        info.update(format="keras3", **facts)
        return model, info
    if path.suffix != ".keras":
        # tf_keras recognises the zip format only by the .keras suffix.
        with tempfile.TemporaryDirectory(prefix="edgesparse-import-") as tmp:
            link = Path(tmp) / "model.keras"
            link.symlink_to(path.resolve())
            model = _tf_keras_load(link, ".keras", shown=path)
    else:
        model = _tf_keras_load(path, ".keras")
    info.update(format="tf_keras", translated="no: loaded by tf_keras", check=None)
    return model, info


def _load_h5(path: Path, check: bool):
    import h5py

    try:
        with h5py.File(path, "r") as f:
            version = f.attrs.get("keras_version", b"")
            has_config = "model_config" in f.attrs
    except OSError as err:
        raise cannot_import(path, f"the .h5 file is corrupt ({err})") from None
    version = version.decode() if isinstance(version, bytes) else str(version)
    if not has_config:
        raise cannot_import(path, "the .h5 file holds weights only, no model; save the whole model with model.save()")
    info: dict[str, Any] = {"container": "h5", "keras_version": version}
    if version.startswith("3."):
        model, facts = _translate(path, "h5", check)
        info.update(format="keras3", **facts)
        return model, info
    model = _tf_keras_load(path, ".h5")
    info.update(format="h5", translated="no: loaded by tf_keras", check=None)
    return model, info


def _load_savedmodel(path: Path):
    if not ((path / "saved_model.pb").exists() or (path / "saved_model.pbtxt").exists()):
        raise cannot_import(path, "the folder is not a SavedModel (it has no saved_model.pb)")
    if not (path / "keras_metadata.pb").exists():
        # tf.saved_model.save and Keras 3's model.export() write bare TF graphs: the layers are
        # gone, so there is nothing to prune or retrain.
        raise cannot_import(path, "this SavedModel has no Keras metadata (it was written by "
                                  "tf.saved_model.save or Keras 3 export); save the Keras model itself "
                                  "with model.save('model.keras')")
    model = _tf_keras_load(path, "SavedModel")
    return model, {"container": "savedmodel", "keras_version": "", "format": "savedmodel",
                   "translated": "no: loaded by tf_keras", "check": None}


# ----------------------------------------------------------------------------- working form


def as_functional(model, path: Path | str = "the model") -> tuple[Any, bool]:
    """A functional tf_keras model with the same layers; (model, whether it was converted)."""
    if not isinstance(model, keras.Model):
        raise cannot_import(path, f"it loaded as a {type(model).__name__}, not a Keras model")
    if isinstance(model, keras.Sequential):
        if not model.inputs:
            raise UserError(f"cannot import {path}: the Sequential model has no input shape; build it with "
                            "keras.Input(shape=...) as its first layer and save it again")
        return keras.Model(model.inputs, model.outputs, name=model.name), True
    if not getattr(model, "_is_graph_network", False):
        raise UserError(f"cannot import {path}: it is a subclassed Keras model (no layer graph); "
                        "edgesparse works on functional or Sequential models")
    return model, False


def check_working_form(model, where: str = "the model") -> None:
    """One input with a fully known per-sample shape, one output: what every later pass needs."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise UserError(f"cannot use {where}: it has {len(model.inputs)} inputs and {len(model.outputs)} "
                        "outputs; edgesparse works on single-input single-output models")
    shape = tuple(model.inputs[0].shape)
    if any(d is None for d in shape[1:]):
        raise UserError(f"cannot use {where}: its input shape {shape} has unknown dimensions; edge targets "
                        "need static shapes, so rebuild it with keras.Input(shape=(...)) fully given")
    # The one check of weight values: NaN/inf weights build, "meet" a budget and ship an all-NaN model.
    for w in model.weights:
        values = np.asarray(w.numpy())
        bad = int(np.size(values) - np.count_nonzero(np.isfinite(values)))
        if bad:
            raise UserError(f"cannot use {where}: weight {w.name} holds {bad} NaN or infinite values "
                            "(training diverged, or the file is damaged); retrain it or use a good checkpoint")
