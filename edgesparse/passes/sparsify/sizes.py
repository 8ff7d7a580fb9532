"""What sparsity buys on disk: raw, gzip, and TFLite's sparse tensor encoding.

Zeros alone shrink nothing: a dense float32 kernel full of zeros is as large as before. They
pay off only when something compresses them (DESIGN.md trap 4):

- gzip (or any zip) of the flatbuffer: long zero runs compress well;
- `tf.lite.Optimize.EXPERIMENTAL_SPARSITY`: the converter stores each rank-2/rank-4 weight
  whose sparsity is at least 30% in CSR form (values + indices). It also tries 1x4 blocks, and
  picks them when block sparsity / element sparsity exceeds 0.9 (float) or 0.8 (int8)
  (tensorflow/compiler/mlir/lite/transforms/dense_to_sparse_pass.cc). For a random mask at
  element sparsity s the block sparsity is about s^4, so above s ~ 0.965 (float) or ~ 0.93
  (int8) the converter switches to 1x4 blocks and stores four values per surviving weight:
  a sparser tensor can give a *larger* file. The index overhead is paid per non-zero, so on
  int8 models (1-byte values) the encoding can also lose to plain int8. We measure all of it,
  list how each tensor was encoded (`sparse_encoding`), and say so (`int8_sparse_larger`).

Nothing here says anything about latency: a CSR tensor gets a Densify op in front of its
consumer (dense arithmetic at run time); 1x4-block tensors go to TFLite's sparse
FullyConnected kernels, whose speed this pass does not measure; and XNNPACK's sparse
inference is off on AVX x86 CPUs. No speed-up is claimed.

The files are converted exactly as export converts them (edgesparse/convert/tflite.py: the batch
fixed to 1, full-integer int8, the converter's output captured), so the sizes are those of the
artifacts a build ships, and a model export can convert (an LSTM, whose tensor lists need a
static batch) can be measured.
"""
from __future__ import annotations

import gzip
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgesparse.convert.tflite import to_tflite

REPRESENTATIVE_SAMPLES = 100


def _gzip_size(data: bytes) -> int:
    return len(gzip.compress(data, compresslevel=9, mtime=0))


def keras_bytes(model) -> int:
    """Size of the model saved as a .keras file (a zip, so already partly compressed)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.keras"
        model.save(path)
        return path.stat().st_size


def sparse_encoding(flatbuffer: bytes) -> list[dict[str, Any]] | None:
    """How the converter stored each sparse tensor: CSR, or CSR over 1x4 blocks."""
    try:
        from tensorflow.lite.python import schema_py_generated as schema
    except ImportError:  # pragma: no cover - the schema module moves between TF releases
        return None
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(flatbuffer, 0))
    found = []
    for graph in model.subgraphs:
        for t in graph.tensors:
            if t.sparsity is None:
                continue
            data = model.buffers[t.buffer].data
            block = [int(b) for b in (t.sparsity.blockMap if t.sparsity.blockMap is not None else [])]
            name = t.name.decode() if isinstance(t.name, bytes) else str(t.name)
            found.append({"tensor": name.split(";")[0], "shape": [int(d) for d in t.shape],
                          "bytes": 0 if data is None else int(len(data)),
                          "encoding": "csr, 1x4 blocks" if block else "csr"})
    return found


def model_sizes(model, x_calib: np.ndarray | None = None, int8: bool = True) -> dict[str, Any]:
    """Bytes of the model in every form that matters for size; int8 needs calibration inputs."""
    weights = model.get_weights()
    raw_weights = b"".join(np.ascontiguousarray(w).tobytes() for w in weights)
    sizes: dict[str, Any] = {
        "weights_bytes": len(raw_weights),
        "weights_gzip_bytes": _gzip_size(raw_weights),
        "keras_bytes": keras_bytes(model),
    }
    fp32 = to_tflite(model, "fp32")
    fp32_sparse = to_tflite(model, "fp32", sparse=True)
    sizes.update(tflite_fp32_bytes=len(fp32), tflite_fp32_gzip_bytes=_gzip_size(fp32),
                 tflite_fp32_sparse_bytes=len(fp32_sparse),
                 tflite_fp32_sparse_encoding=sparse_encoding(fp32_sparse))
    if int8 and x_calib is not None:
        q = to_tflite(model, "int8", x_calib=x_calib, calibration_samples=REPRESENTATIVE_SAMPLES)
        q_sparse = to_tflite(model, "int8", sparse=True, x_calib=x_calib,
                             calibration_samples=REPRESENTATIVE_SAMPLES)
        sizes.update(tflite_int8_bytes=len(q), tflite_int8_gzip_bytes=_gzip_size(q),
                     tflite_int8_sparse_bytes=len(q_sparse),
                     tflite_int8_sparse_encoding=sparse_encoding(q_sparse),
                     int8_sparse_larger=len(q_sparse) > len(q))
    return sizes
