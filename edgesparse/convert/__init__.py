"""Keras (tf_keras) model -> TFLite / ONNX files. Used by the export pass.

The converters write chatter straight to file descriptor 2 from C++ ("fully_quantize: 0,
inference_type: 6 ...", absl and MLIR logs), which Python-level redirection cannot catch.
`quiet()` points fd 2 at a temporary file for the duration of a conversion and keeps the text,
so a failure can still say what the converter said. Python's own `sys.stderr` is pointed at the
original terminal meanwhile, so the CLI's progress display (rich, on stderr) keeps drawing.

Python logging is chatter too: onnxruntime's quantizer calls `logging.warning(...)` ("Axis 1 is
out-of-range for weight ..." on every unfolded normalisation). On a root logger without handlers
that call runs `logging.basicConfig()`, which binds a handler to whatever `sys.stderr` is at that
moment: our temporary stream, closed on the way out, so every later warning printed a "Logging
error" traceback. A root handler writing into the capture is in place for the duration instead:
the records are kept with the converter's other words, and basicConfig finds a handler and
does nothing.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from typing import Iterator


class ConverterOutput:
    text: str = ""

    def tail(self, lines: int = 3) -> str:
        kept = [line.strip() for line in self.text.splitlines() if line.strip()]
        return " | ".join(kept[-lines:])


@contextlib.contextmanager
def quiet() -> Iterator[ConverterOutput]:
    """Capture everything written to fd 2 (C++ logs); Python writes still reach the terminal."""
    captured = ConverterOutput()
    old_stderr = sys.stderr
    try:
        old_stderr.flush()
    except (AttributeError, ValueError):
        pass
    saved = os.dup(2)
    terminal = os.fdopen(os.dup(saved), "w", buffering=1, encoding="utf-8", errors="replace")
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        sys.stderr = terminal
        # It shares fd 2's file offset, so log records land in order with the C++ lines.
        records = logging.StreamHandler(os.fdopen(os.dup(sink.fileno()), "w", buffering=1, encoding="utf-8",
                                                  errors="replace"))
        logging.getLogger().addHandler(records)
        try:
            yield captured
        finally:
            logging.getLogger().removeHandler(records)
            records.stream.close()
            sys.stderr = old_stderr
            terminal.close()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.text = sink.read().decode(errors="replace")
