"""PyTorch models -> the working form, through ONNX: a `.pt2` file (torch.export.save) or, from
Python, an `nn.Module` with an example input (`from_module`). Both are exported to ONNX by
`torch.onnx.export` in a child process (frontends/torch_export.py) and then translated and
checked against ONNX Runtime by the ONNX frontend (frontends/onnx.py), so the result is made of
real, prunable tf_keras layers.

torch is the optional extra `edgesparse[torch]`; nothing else in edgesparse imports it, and this
module imports it only inside `from_module`, whose caller already holds a torch module.

A `.pt2` is untrusted input (docs/security.md): torch.export.load unpickles some of its members.
Before the child starts, the archive is read here as a zip (no torch): members torch would load
with plain pickle or as a compiled library are refused unless `unsafe` (--unsafe-load); the child
forces torch's weights-only unpickler for the rest.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from edgesparse.errors import UserError

INSTALL = "pip install edgesparse[torch]"
EXPORT_TIMEOUT_S = 600
ARCHIVE_FORMAT = "archive_format"          # <root>/archive_format holds b"pt2" (torch.export.save)
# Members torch.export.load would unpickle with plain `pickle` (custom and opaque objects in the
# constants) or load as native code (AOTInductor packages).
UNSAFE_CONSTANTS = ("custom_obj_", "opaque_obj_")
NATIVE_CODE_DIRS = ("data/aotinductor/",)


def _fail(path, why: str) -> UserError:
    return UserError(f"cannot import {path}: {why}")


def pt2_root(path: Path) -> str | None:
    """The archive's root folder when `path` is a torch.export.save file, else None (content, not name)."""
    try:
        if not zipfile.is_zipfile(path):
            return None
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if info.filename.endswith("/" + ARCHIVE_FORMAT) and info.file_size < 64:
                    if zf.read(info).strip() == b"pt2":
                        return info.filename[: -len(ARCHIVE_FORMAT)]
    except (OSError, zipfile.BadZipFile):
        return None
    return None


def check_pt2(path: Path, root: str, unsafe: bool) -> None:
    """Refuse, before torch sees the file, what would run code on load (unless `unsafe`)."""
    from edgesparse.frontends.archive import check_members, read_json
    from edgesparse.frontends.keras import UNSAFE_FLAG

    with zipfile.ZipFile(path) as zf:
        check_members(zf, path)
        names = zf.namelist()
        if not any(n.startswith(root + "models/") and n.endswith(".json") for n in names):
            raise _fail(path, "the .pt2 archive holds no exported program (models/*.json); save the model "
                              "with torch.export.save(torch.export.export(model, (example,)), 'model.pt2')")
        if unsafe:
            return
        native = [n for n in names if n[len(root):].startswith(NATIVE_CODE_DIRS)]
        if native:
            raise _fail(path, f"the .pt2 holds a compiled AOTInductor package ({native[0][len(root):]!r}) that "
                              f"loading would run; save the exported program without it, or, if you trust the "
                              f"file as much as a script, pass {UNSAFE_FLAG}")
        for name in names:
            if name.startswith(root + "data/constants/") and name.endswith("_constants_config.json"):
                config = read_json(zf, name, path).get("config", {})
                pickled = [k for k, v in config.items() if str(v.get("path_name", "")).startswith(UNSAFE_CONSTANTS)]
                if pickled:
                    raise _fail(path, f"the .pt2 holds a pickled Python object ({pickled[0]!r}) that loading "
                                      f"would run; export a module whose constants are tensors, or, if you "
                                      f"trust the file as much as a script, pass {UNSAFE_FLAG}")


def _require_torch(path) -> None:
    if importlib.util.find_spec("torch") is None:
        raise _fail(path, f"reading a PyTorch program needs torch; {INSTALL}")


def _export_in_child(pt2: Path, onnx_path: Path, shown, trusted: bool) -> None:
    """torch.onnx.export in a child process, bounded in time; its failure as one line."""
    from edgesparse.frontends.keras import UNSAFE_FLAG
    from edgesparse.frontends.torch_export import REFUSED_PICKLE

    command = [sys.executable, "-m", "edgesparse.frontends.torch_export", str(pt2), str(onnx_path)]
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONWARNINGS="ignore")
    package_root = str(Path(__file__).resolve().parents[2])       # this edgesparse, in the child too
    env["PYTHONPATH"] = os.pathsep.join([package_root, *filter(None, [env.get("PYTHONPATH")])])
    try:
        done = subprocess.run(command + (["--trusted"] if trusted else []), env=env, capture_output=True,
                              text=True, timeout=EXPORT_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise _fail(shown, f"torch.onnx.export did not finish within {EXPORT_TIMEOUT_S} s; export the model "
                           "to ONNX yourself and give edgesparse the .onnx file") from None
    if done.returncode != 0 or not onnx_path.is_file():
        if f"error: {REFUSED_PICKLE}" in done.stderr:
            raise _fail(shown, f"the .pt2 holds pickled data that is not plain tensors, which loading would run "
                               f"as code; save the program again from plain tensors, or, if you trust the file "
                               f"as much as a script, pass {UNSAFE_FLAG}")
        lines = [ln.strip() for ln in done.stderr.splitlines() if ln.strip()]
        said = next((ln[len("error: "):] for ln in reversed(lines) if ln.startswith("error: ")),
                    lines[-1] if lines else f"exit code {done.returncode}")
        raise _fail(shown, f"PyTorch could not export it to ONNX ({said[:400]}); export the model to ONNX "
                           "yourself (torch.onnx.export) to see the full error, then give edgesparse the .onnx file")


def _through_onnx(pt2: Path, shown, trusted: bool, input_shape, check: bool, samples=None):
    from edgesparse.frontends.onnx import load_onnx
    from edgesparse.frontends.torch_export import OPSET

    with tempfile.TemporaryDirectory(prefix="edgesparse-torch-") as tmp:
        onnx_path = Path(tmp) / f"{Path(str(shown)).stem or 'model'}.onnx"
        _export_in_child(pt2, onnx_path, shown, trusted)
        try:
            model, info = load_onnx(onnx_path, input_shape=input_shape, check=check, samples=samples)
        except UserError as err:       # name the user's file, not our temporary ONNX file
            raise UserError(str(err).replace(str(onnx_path), str(shown))) from None
    info.update(format="pytorch", container="pt2", translated=f"PyTorch -> ONNX (torch.onnx.export, opset "
                f"{OPSET}) -> tf_keras, node by node")
    return model, info


def load_pt2(path: str | Path, input_shape=None, check: bool = True, unsafe: bool = False) -> tuple[Any, dict]:
    """A torch.export.save file -> (functional tf_keras model, facts about the translation)."""
    path = Path(path)
    root = pt2_root(path)
    if root is None:
        raise _fail(path, "it is not a torch.export.save archive (no archive_format member); save the model "
                          "with torch.export.save")
    check_pt2(path, root, unsafe)
    _require_torch(path)
    return _through_onnx(path, path, trusted=unsafe, input_shape=input_shape, check=check)


def from_module(module, example_input, check: bool = True, samples=None, name: str = "torch_model"):
    """An `nn.Module` and one example input tensor (a batch of 1 is fine) -> (tf_keras model, info).

    The module is traced with torch.export in this process (in inference mode; its training flag
    is restored afterwards), saved as a `.pt2`, and exported to ONNX in a child process like a
    `.pt2` file. The input shape is the example's. samples: extra check inputs, channels-last.
    """
    import torch

    if not isinstance(module, torch.nn.Module):
        raise UserError(f"from_module takes a torch.nn.Module, not {type(module).__name__}")
    if not isinstance(example_input, torch.Tensor) or example_input.dtype != torch.float32:
        raise UserError("from_module takes one float32 example tensor (e.g. torch.randn(1, 3, 224, 224)); "
                        f"got {type(example_input).__name__}")
    example = example_input[:1] if example_input.dim() > 1 else example_input
    was_training = module.training
    try:
        module.eval()
        with torch.no_grad():
            program = torch.export.export(module, (example.detach(),))
    except Exception as err:
        first = " ".join(str(err).split())[:300] or type(err).__name__
        raise UserError(f"cannot import {name}: torch.export could not trace the module ({first}); "
                        "see https://pytorch.org/docs/stable/export.html for what it supports") from None
    finally:
        module.train(was_training)
    with tempfile.TemporaryDirectory(prefix="edgesparse-torch-") as tmp:
        pt2 = Path(tmp) / f"{name}.pt2"
        torch.export.save(program, str(pt2))
        model, info = _through_onnx(pt2, name, trusted=True, input_shape=None, check=check, samples=samples)
    info.update(container="nn.Module", path=name)
    return model, info
