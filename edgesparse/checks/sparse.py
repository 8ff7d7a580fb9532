"""Is a block-sparse artifact really executed sparse? Read from the .tflite itself.

TFLite's built-in FULLY_CONNECTED kernel runs weights stored in 1x4 blocks (fp32) or 1x16 blocks
(int8) directly; any other sparse weight gets a DENSIFY op in front of its consumer, i.e. dense
arithmetic at run time (DESIGN.md trap 4). So "stored sparse and executed sparse" means: every
FULLY_CONNECTED weight we meant to be blocked carries SparsityParameters with that block on the
inner (input-channel) axis, and the graph holds no DENSIFY op.
"""
from __future__ import annotations

from typing import Any

from edgesparse.runtime.tflite_file import TFLiteModel

WEIGHT_INPUT = 1   # FULLY_CONNECTED inputs: (activation, weight [out, in], bias)


def fully_connected_storage(model: TFLiteModel) -> list[dict[str, Any]]:
    """One row per FULLY_CONNECTED op: its weight tensor, shape and how it is stored."""
    rows = []
    for op in model.ops:
        if op.name != "FULLY_CONNECTED" or len(op.inputs) <= WEIGHT_INPUT:
            continue
        t = model.tensor(op.inputs[WEIGHT_INPUT])
        rows.append({"op": op.index, "tensor": t.name.split(";")[0], "shape": list(t.shape),
                     "constant": t.constant,
                     "storage": "dense" if t.sparsity is None else t.sparsity.describe(),
                     "block": (None if t.sparsity is None or not t.sparsity.blocked
                               else dict(zip(t.sparsity.block_map, t.sparsity.block_sizes)))})
    return rows


def block_sparse_check(model: TFLiteModel, block: int, expected: int | None = None) -> dict[str, Any]:
    """passed when no DENSIFY op exists, no FULLY_CONNECTED weight is stored sparse other than in
    1x`block` blocks on its inner axis (dim 1 of [out, in]), and at least `expected` (default one)
    are. A weight the converter kept dense (it does so below ~30% sparsity) runs dense: listed in
    `dense_weights`, and no speed-up is due there."""
    rows = fully_connected_storage(model)
    blocked = [r for r in rows if r["block"] == {1: block}]
    other = [r for r in rows if r["storage"] != "dense" and r["block"] != {1: block}]
    densify = [op.index for op in model.ops if op.name == "DENSIFY"]
    need = 1 if expected is None else expected
    passed = not densify and not other and len(blocked) >= need
    if densify:
        reason = (f"{len(densify)} DENSIFY op(s): a sparse weight is expanded to dense before use, "
                  "so it runs at dense speed")
    elif other:
        reason = f"{', '.join(r['tensor'] for r in other)} stored sparse but not in 1x{block} blocks"
    elif len(blocked) < need:
        reason = (f"{len(blocked)} of {need} FULLY_CONNECTED weights stored in 1x{block} blocks; "
                  "export with the sparsity optimization and a 1x{0} block mask".format(block))
    else:
        reason = ""
    return {"passed": passed, "reason": reason, "blocked_weights": len(blocked),
            "densify_ops": densify, "dense_weights": [r["tensor"] for r in rows if r["storage"] == "dense"],
            "weights": rows}
