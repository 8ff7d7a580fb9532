"""Block patterns LiteRT executes sparse: 1x4 blocks (fp32) and 1x16 blocks (int8) of a Dense
weight's inner axis (TFLite [out, in]: four or sixteen consecutive input channels of one output).
Light on purpose (no TensorFlow): the CLI validates the pattern at start-up."""
from __future__ import annotations

import re

BLOCKS = {"block1x4": 4, "block1x16": 16}
AUTO_BLOCK = "auto-block"     # 1x4 blocks per Dense layer where measured faster (latency.py)
_BLOCK = re.compile(r"^\s*block\s*1x(\d+)\s*$")


def is_auto_block(pattern: str) -> bool:
    return pattern.strip().lower() == AUTO_BLOCK


def block_size(pattern: str) -> int | None:
    """4 for 'block1x4', 16 for 'block1x16', None for a pattern that is no block pattern."""
    if not _BLOCK.match(pattern.lower()):
        return None
    name = pattern.strip().lower().replace(" ", "")
    if name not in BLOCKS:
        raise ValueError(f"pattern {pattern!r}: the runtime runs 1x4 (fp32) and 1x16 (int8) blocks "
                         "without densifying; use 'block1x4' or 'block1x16'")
    return BLOCKS[name]
