"""Model files -> the working form (a functional tf_keras model). `load_model` picks the frontend
by the file's content, not its name: ONNX protobufs go to frontends/onnx.py, torch.export.save
archives (`.pt2`) to frontends/torch.py (through ONNX), everything else (tf_keras and Keras 3
files, SavedModel folders) to frontends/keras.py."""
from __future__ import annotations

from pathlib import Path
from typing import Any

TORCH_SUFFIXES = (".pt", ".pth")


def load_model(path: str | Path, check: bool = True, input_shape=None,
               unsafe: bool | None = None) -> tuple[Any, dict[str, Any]]:
    """Load any accepted model file as a functional tf_keras model; returns (model, info).

    unsafe: let a Keras file run the code it holds (--unsafe-load), or a `.pt2` load the pickled
    objects it holds; None follows the enclosing `frontends.keras.unsafe_loading` policy. An ONNX
    file holds no code, so it never applies.

    input_shape: the per-sample input shape in the file's own layout, for ONNX files whose
    input has dynamic dimensions (Keras files carry theirs): a tuple or text like "3,224,224".
    """
    from edgesparse.errors import UserError

    path = Path(path)
    input_shape = parse_shape(input_shape)
    if path.is_file():
        from edgesparse.frontends.torch import pt2_root

        if path.suffix.lower() == ".pt2" or pt2_root(path) is not None:
            from edgesparse.frontends.keras import _UNSAFE_LOAD, check_working_form
            from edgesparse.frontends.torch import load_pt2

            model, info = load_pt2(path, input_shape=input_shape, check=check,
                                   unsafe=_UNSAFE_LOAD.get() if unsafe is None else bool(unsafe))
            check_working_form(model, str(path))
            info.update(path=str(path), converted_to_functional=False)
            return model, info
    if path.is_file() and _is_torch(path):
        from edgesparse.frontends.onnx import FOR_TORCH

        raise UserError(f"cannot import {path}: it is a PyTorch file (a state dict or pickled module has no "
                        f"graph edgesparse can read); {FOR_TORCH}")
    if path.is_file():
        from edgesparse.frontends.onnx import looks_like_onnx

        if looks_like_onnx(path):
            from edgesparse.frontends.keras import check_working_form
            from edgesparse.frontends.onnx import load_onnx

            model, info = load_onnx(path, input_shape=input_shape, check=check)
            check_working_form(model, str(path))
            info.update(path=str(path), converted_to_functional=False)
            return model, info
    if input_shape is not None:
        raise UserError(f"--input-shape applies to ONNX files only; {path} carries its own input shape")
    from edgesparse.frontends.keras import load_model as load_keras

    return load_keras(path, check=check, unsafe=unsafe)


def parse_shape(shape) -> tuple[int, ...] | None:
    """ "3,224,224" (or "3x224x224", or a tuple) -> (3, 224, 224)."""
    from edgesparse.errors import UserError

    if shape is None or isinstance(shape, (tuple, list)):
        return None if shape is None else tuple(int(d) for d in shape)
    parts = [p for p in str(shape).replace("x", ",").replace(" ", "").strip("()[]").split(",") if p]
    if not parts or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise UserError(f"--input-shape {shape!r} is not a shape; give positive sizes separated by commas, "
                        "e.g. 3,224,224")
    return tuple(int(p) for p in parts)


def _is_torch(path: Path) -> bool:
    """torch.save writes a zip with <name>/data.pkl (or, before 1.6, a bare pickle)."""
    import zipfile

    if path.suffix.lower() not in TORCH_SUFFIXES:
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(2)
        if head[:1] == b"\x80":               # pickle protocol 2+
            return True
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                return any(n.endswith("data.pkl") for n in zf.namelist())
    except OSError:
        return False
    return False
