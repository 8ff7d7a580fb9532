"""tf_keras model files (.keras, .h5, SavedModel) -> the working form, a functional tf_keras model.

`load_model(path)` looks at the bytes, not the file name (a `.keras` file is a zip, an `.h5` file
starts with the HDF5 signature, a SavedModel is a folder), loads tf_keras files with tf_keras, and
translates Keras 3 files layer by layer (frontends/keras3.py), checking the translation's outputs
against Keras 3's own.

A model file is untrusted input (docs/security.md). tf_keras applies safe mode only to `.keras`
zips: an `.h5` or SavedModel holding a Lambda layer runs its Python code on load (DESIGN trap 14).
So every format loads under tf_keras's `SafeModeScope(True)`: the `.h5` is refused, and the
SavedModel loads its Lambda as the traced TensorFlow graph without running the Python (the
channel graph then keeps that group unpruned). `unsafe=True` (`--unsafe-load`) is the only way
to run code from a model file; a recipe cannot turn it on.
"""
from __future__ import annotations

import contextvars
import json
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from edgesparse._tf import keras
from edgesparse.data import check_sample_size
from edgesparse.errors import UserError
from edgesparse.frontends.archive import check_members, read_json
from edgesparse.frontends.keras3 import translate_keras3

ACCEPTED = ("edgesparse accepts tf_keras or Keras 3 .keras files, .h5 files, SavedModel folders, ONNX files "
            "and PyTorch .pt2 files (torch.export.save)")
ZIP_MAGIC = b"PK\x03\x04"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"

# Formats people reasonably try; the error names what the file is, so the fix is obvious.
OTHER_FORMATS = {
    ".onnx": "an ONNX model (load it with edgesparse.frontends.load_model, which reads ONNX)",
    ".tflite": "a TFLite model (edgesparse produces TFLite; it does not read it)",
    ".pt": "a PyTorch model", ".pth": "a PyTorch model", ".ckpt": "a checkpoint",
    ".pb": "a frozen TensorFlow graph", ".mlmodel": "a Core ML model",
    ".safetensors": "a weights-only file",
}


def cannot_import(path: Path | str, why: str) -> UserError:
    return UserError(f"cannot import {path}: {why}; {ACCEPTED}")


UNSAFE_FLAG = "--unsafe-load"     # the CLI's opt-in (cli/__init__.py UNSAFE_LOAD_HELP says what it means)
# The policy of the current build (set by the caller that parsed --unsafe-load), for loads deep
# inside a pipeline (a distill teacher) that a flag cannot reach: a recipe cannot change it.
_UNSAFE_LOAD = contextvars.ContextVar("edgesparse_unsafe_load", default=False)


@contextmanager
def unsafe_loading(allowed: bool) -> Iterator[None]:
    """Within this block, load_model(path) without `unsafe=` follows `allowed`."""
    token = _UNSAFE_LOAD.set(bool(allowed))
    try:
        yield
    finally:
        _UNSAFE_LOAD.reset(token)


def _runs_code(err: Exception) -> bool:
    """tf_keras's safe-mode refusal (a Lambda layer or a serialized lambda function)."""
    text = str(err)
    return "safe_mode" in text and "arbitrary code execution" in text


def refused_code(path: Path | str) -> UserError:
    return UserError(f"cannot import {path}: it holds Python code (a Lambda layer or lambda function) that "
                     f"loading would run, and edgesparse runs no code from model files by default; if you "
                     f"trust this file as much as a script, pass {UNSAFE_FLAG}")



# ----------------------------------------------------------------------------- loading


def load_model(path: str | Path, check: bool = True, unsafe: bool | None = None) -> tuple[Any, dict[str, Any]]:
    """Load any accepted model file as a functional tf_keras model.

    Returns (model, info); info has format ("tf_keras", "keras3", "h5" or "savedmodel"),
    container, keras_version, path, how it was translated, and the numerical check (Keras 3).
    check=False skips running Keras 3 to check a translation (only for callers that compare
    against Keras 3 outputs themselves, like the tests); the build always checks.
    unsafe=True lets tf_keras run Python code stored in the file; None follows `unsafe_loading`
    (default: refuse).
    """
    from tf_keras.src.saving.serialization_lib import SafeModeScope

    unsafe = _UNSAFE_LOAD.get() if unsafe is None else bool(unsafe)
    with SafeModeScope(not unsafe):
        return _load_model(Path(path), check, unsafe)


def _load_model(path: Path, check: bool, unsafe: bool) -> tuple[Any, dict[str, Any]]:
    if not path.exists():
        raise cannot_import(path, "no such file or folder")
    if path.is_dir():
        model, info = _load_savedmodel(path, unsafe)
    else:
        try:
            with open(path, "rb") as f:
                head = f.read(8)
        except OSError as err:
            raise cannot_import(path, f"the file cannot be read ({err.strerror})") from None
        if head.startswith(ZIP_MAGIC):
            model, info = _load_keras_zip(path, check, unsafe)
        elif head == HDF5_MAGIC:
            model, info = _load_h5(path, check, unsafe)
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


def _tf_keras_load(path: Path, fmt: str, unsafe: bool, shown: Path | None = None):
    try:   # compile=False: later passes compile for themselves
        return keras.models.load_model(path, compile=False, safe_mode=not unsafe)
    except Exception as err:
        if _runs_code(err):
            raise refused_code(shown or path) from None
        raise cannot_import(shown or path, f"tf_keras could not load this {fmt} file ({_first_line(err)})") from None


def _translate(path: Path, container: str, check: bool):
    try:
        return translate_keras3(path, container, check=check)
    except UserError:
        raise
    except Exception as err:     # a damaged config or weights file inside an intact container
        raise cannot_import(path, f"the Keras 3 file could not be read ({_first_line(err)})") from None


def _load_keras_zip(path: Path, check: bool, unsafe: bool):
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            if not {"metadata.json", "config.json"} <= names:
                hint = _what_it_is(path) if _looks_like_other(path) else "it is a zip, but not a .keras file"
                raise cannot_import(path, f"{hint} (no metadata.json/config.json inside)")
            check_members(zf, path)          # before anything is inflated: zip bombs stop here
            metadata = read_json(zf, "metadata.json", path)
            version = str(metadata.get("keras_version", "")) if isinstance(metadata, dict) else ""
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
            model = _tf_keras_load(link, ".keras", unsafe, shown=path)
    else:
        model = _tf_keras_load(path, ".keras", unsafe)
    info.update(format="tf_keras", translated="no: loaded by tf_keras", check=None)
    return model, info


def _load_h5(path: Path, check: bool, unsafe: bool):
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
    model = _tf_keras_load(path, ".h5", unsafe)
    info.update(format="h5", translated="no: loaded by tf_keras", check=None)
    return model, info


def _load_savedmodel(path: Path, unsafe: bool):
    if not ((path / "saved_model.pb").exists() or (path / "saved_model.pbtxt").exists()):
        raise cannot_import(path, "the folder is not a SavedModel (it has no saved_model.pb)")
    if not (path / "keras_metadata.pb").exists():
        # tf.saved_model.save and Keras 3's model.export() write bare TF graphs: the layers are
        # gone, so there is nothing to prune or retrain.
        raise cannot_import(path, "this SavedModel has no Keras metadata (it was written by "
                                  "tf.saved_model.save or Keras 3 export); save the Keras model itself "
                                  "with model.save('model.keras')")
    model = _tf_keras_load(path, "SavedModel", unsafe)
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
    check_sample_size(shape[1:], f"cannot use {where}")
    check_finite_weights(model, f"cannot use {where}")


def check_finite_weights(model, lead: str = "cannot use the model") -> None:
    """The one check of weight values: NaN/inf weights build, "meet" a budget and ship an all-NaN
    model. The ONNX frontend runs it before comparing its translation with ONNX Runtime, where
    NaN outputs would otherwise be blamed on the translator."""
    for w in model.weights:
        values = np.asarray(w.numpy())
        bad = int(np.size(values) - np.count_nonzero(np.isfinite(values)))
        if bad:
            raise UserError(f"{lead}: weight {w.name} holds {bad} NaN or infinite values "
                            "(training diverged, or the file is damaged); retrain it or use a good checkpoint")
