"""Built-in passes. `load_builtin_passes()` imports the modules that register them.

Importing this package does not import them (nor TensorFlow): the CLI's command modules live
under it, and `edgesparse agent serve` must start on a device with no TensorFlow.

Pipeline order (enforced by each pass's `stage`): import, then model transforms (prune,
sparsify, distill), then quantize (and qat), export, verify.
"""
import importlib

BUILTIN_MODULES = ("importer", "regularize", "grow", "prune.pass_", "sparsify.pass_", "lowrank.pass_", "distill", "qat",
                   "quantize", "export", "verify")


def load_builtin_passes():
    """Import the modules that register the built-in passes (they import TensorFlow); return the
    registry (`edgesparse.pipeline.PASSES`)."""
    from edgesparse.pipeline import PASSES

    for module in BUILTIN_MODULES:
        importlib.import_module(f"{__name__}.{module}")
    return PASSES
