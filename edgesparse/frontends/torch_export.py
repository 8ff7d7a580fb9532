"""The child process of frontends/torch.py: a `.pt2` (torch.export.save) -> an ONNX file.

    python -m edgesparse.frontends.torch_export IN.pt2 OUT.onnx [--trusted]

It imports only torch and onnx, never TensorFlow, so the two runtimes never share a process
(their thread pools and allocators do not mix), and a hang or crash in the exporter ends here,
bounded by the parent's time-out. A failure is one line on stderr starting with `error:`.

Untrusted mode (the default) sets TORCH_FORCE_WEIGHTS_ONLY_LOAD before torch is imported:
torch.export.load falls back to `torch.load(weights_only=False)` (full pickle) for some payloads,
and the variable makes every torch.load use the restricted weights-only unpickler instead. The
archive members torch would unpickle with plain `pickle` or dlopen (custom or opaque objects,
AOTInductor libraries) are refused by the parent before this process starts (torch.py).
"""
from __future__ import annotations

import os
import re
import sys
import warnings
from pathlib import Path

# The ONNX opset the export writes: inside the ONNX frontend's checked range (onnx.py).
OPSET = 17
# The first word of the error line when the weights-only unpickler refused a member (torch.py words the fix).
REFUSED_PICKLE = "refused-pickle"


def export_module(module, args: tuple, out: Path) -> None:
    """Export with the TorchScript-based exporter (dynamo=False): it needs no onnxscript, and with
    TrainingMode.PRESERVE on an eval-mode module it keeps BatchNormalization a node (the eval
    export folds BN into the convolutions, and the bn_scale criterion reads BN scales)."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")           # the exporter's deprecation and tracer notes
        torch.onnx.export(_frozen(module), args, str(out), dynamo=False, opset_version=OPSET,
                          training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=True,
                          input_names=["input"], output_names=["output"])


def _frozen(module):
    """The module an ExportedProgram gives back refuses `.train()`, which the exporter calls to
    select inference mode; the program is in it already, so `.train()` becomes a no-op."""
    module.train = lambda mode=True: module
    return module


def export_pt2(src: Path, out: Path) -> None:
    import torch

    program = torch.export.load(str(src))
    args, kwargs = program.example_inputs or ((), {})
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    if kwargs or len(args) != 1 or len(tensors) != 1:
        raise ValueError(f"the program takes {len(args)} positional and {len(kwargs or {})} keyword inputs; "
                         "edgesparse takes a model of one tensor input: export it with one example tensor")
    if tensors[0].dtype != torch.float32:
        raise ValueError(f"the example input is {tensors[0].dtype}, not float32; export it with a float32 input")
    export_module(program.module(), (tensors[0],), out)


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3) or (len(argv) == 3 and argv[2] != "--trusted"):
        print("error: usage: python -m edgesparse.frontends.torch_export IN.pt2 OUT.onnx [--trusted]",
              file=sys.stderr)
        return 2
    if "--trusted" not in argv:
        os.environ.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)
        os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    import pickle

    try:
        export_pt2(Path(argv[0]), Path(argv[1]))
    except pickle.UnpicklingError:
        print(f"error: {REFUSED_PICKLE}", file=sys.stderr)
        return 2
    except Exception as err:          # one line for the parent; the parent adds the fix
        text = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(err)).split()) or type(err).__name__
        print(f"error: {type(err).__name__}: {text[:400]}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
