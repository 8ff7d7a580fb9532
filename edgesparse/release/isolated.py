"""Run the release build in a fresh Python process, with TensorFlow made deterministic.

Why a fresh process: the artifact bytes depend on process-global state that an earlier build in
the same process would have changed. Found by building twice in one process:
- tf2onnx names inserted nodes from a global counter (`tf2onnx.utils.INTERNAL_NAME`), and a
  module it imports lazily on the first conversion draws one name at import time; the second
  ONNX file of a process gets different node names, hence different bytes;
- Keras numbers auto-named layers per process, and TensorFlow's global seed state advances.
A fresh process starts every release from the same state, exactly like `make release` does.

Why op determinism: a recipe that trains (distill, QAT, prune fine-tunes) on a Conv2D model gave
different weights, accuracy and artifact bytes on two runs (digits_cnn, prune + 3 distill
epochs); with `enable_op_determinism()` and seeds set from the recipe's seed, two runs gave
identical bytes. Determinism also makes random ops without a seed fail, so the seeds are set
first. None of this is applied to `edgesparse build`, which keeps TensorFlow's fast defaults.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any

from edgesparse.errors import BudgetError, UserError


def build_in_fresh_process(model: Path, target: str, data: Path | None, recipe: Path | None,
                           out: Path, progress: bool = False, debug: bool = False,
                           unsafe_load: bool = False) -> dict[str, Any]:
    """Build into `out` (which must not exist) in a child process; returns report.json."""
    result = out.parent / f"{out.name}.result.json"
    args = {"model": str(model), "target": str(target), "data": None if data is None else str(data),
            "recipe": None if recipe is None else str(recipe), "out": str(out), "result": str(result),
            "progress": progress, "debug": debug, "unsafe_load": unsafe_load}
    env = dict(os.environ, PYTHONHASHSEED="0")
    if not debug:
        # Deterministic tf.data pipelines make TensorFlow log harmless C++ "errors" about a
        # rewritten MapDataset node on every training epoch; keep the terminal readable.
        env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    proc = subprocess.run([sys.executable, "-m", "edgesparse.release.isolated", json.dumps(args)], env=env)
    if not result.exists():
        raise RuntimeError(f"the release build process ended (exit code {proc.returncode}) without a result")
    answer = json.loads(result.read_text())
    if answer["ok"]:
        return json.loads((out / "report.json").read_text())
    if answer.get("user_error"):
        raise (BudgetError if answer["exit_code"] == BudgetError.exit_code else UserError)(answer["message"])
    raise RuntimeError(answer["message"])


def make_deterministic(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow, and select deterministic TensorFlow kernels."""
    from edgesparse._tf import keras, tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def _child(args: dict[str, Any]) -> dict[str, Any]:
    from edgesparse.build_api import build
    from edgesparse.recipe import recipe_for
    from edgesparse.targets import load_target

    seed = recipe_for(load_target(args["target"]), args["recipe"]).spec.seed
    make_deterministic(seed)
    kwargs = dict(target=args["target"], data=args["data"], recipe=args["recipe"], out=args["out"],
                  options={"unsafe_load": bool(args.get("unsafe_load"))})
    if args["progress"]:
        from edgesparse.console import RichProgress

        with RichProgress() as progress:
            build(args["model"], progress=progress, **kwargs)
    else:
        build(args["model"], **kwargs)
    return {"ok": True}


def main(argv: list[str]) -> int:
    args = json.loads(argv[0])
    try:
        answer = _child(args)
    except UserError as exc:
        if args.get("debug"):
            traceback.print_exc()
        answer = {"ok": False, "user_error": True, "message": str(exc), "exit_code": exc.exit_code}
    except Exception as exc:  # noqa: BLE001 - the parent turns this into its own internal error
        if args.get("debug"):
            traceback.print_exc()
        answer = {"ok": False, "user_error": False, "exit_code": 1,
                  "message": f"release build failed: {type(exc).__name__}: {exc}"}
    Path(args["result"]).write_text(json.dumps(answer))
    return 0 if answer["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
