"""tf_keras model -> .tflite bytes through TFLiteConverter, with the batch dimension fixed.

`TFLiteConverter.from_keras_model` leaves the batch dimension dynamic (-1 in shape_signature),
which NNAPI and the Edge TPU refuse (DESIGN trap 6). We trace the model as a `tf.function` whose
input signature has the batch fixed, and convert that concrete function instead.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from edgesparse.convert import quiet
from edgesparse.errors import UserError

PRECISIONS = ("fp32", "fp16", "dynamic", "int8")
# TensorFlow 2.21's full-integer quantizer kills the process (SIGSEGV, no exception to catch) on
# the while loops GRU and SimpleRNN lower to; LSTM has a fused TFLite op and converts. Checked
# kind by kind on 2026-12-04 (GRU with and without reset_after or return_sequences, SimpleRNN:
# exit 139; LSTM, LSTM sequences, Bidirectional(LSTM): converted).
INT8_CRASHING_LAYERS = ("GRU", "SimpleRNN")


def int8_crashing_layers(model) -> list[str]:
    """Names of the layers (inside wrappers and nested models too) full-integer int8 cannot convert."""
    found: list[str] = []

    def visit(layer, outer: str | None = None) -> None:
        if type(layer).__name__ in INT8_CRASHING_LAYERS:
            found.append(outer or layer.name)
        for inner in (getattr(layer, "layer", None), getattr(layer, "forward_layer", None)):
            if inner is not None:
                visit(inner, outer or layer.name)
        for inner in getattr(layer, "layers", []) if hasattr(layer, "inputs") else []:
            visit(inner)

    for layer in model.layers:
        visit(layer)
    return list(dict.fromkeys(found))


def _signature_function(model, batch: int | None):
    from edgesparse._tf import tf

    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise UserError(f"export handles single-input, single-output models; this one has "
                        f"{len(model.inputs)} inputs and {len(model.outputs)} outputs")
    shape = (batch,) + tuple(model.inputs[0].shape[1:])
    spec = tf.TensorSpec(shape, tf.float32, name="input")
    fn = tf.function(lambda x: model(x, training=False), input_signature=[spec])
    return fn.get_concrete_function()


def representative_samples(x_calib: np.ndarray, n: int, batch: int = 1) -> Iterator[list[np.ndarray]]:
    """The first `n` calibration samples, `batch` at a time, as the converter wants them."""
    x = np.asarray(x_calib[:n], dtype=np.float32)
    for i in range(0, len(x) - batch + 1, batch):
        yield [x[i:i + batch]]


def to_tflite(model, precision: str, *, batch: int | None = 1, io: str = "float32", sparse: bool = False,
              x_calib: np.ndarray | None = None, calibration_samples: int = 200) -> bytes:
    """Convert `model` at `precision` ("fp32" | "fp16" | "dynamic" | "int8").

    sparse: also store sparse weights in TFLite's sparse format (tf.lite.Optimize.EXPERIMENTAL_SPARSITY);
    weights masked in 1x4 (fp32) / 1x16 (int8) blocks then run sparse in FULLY_CONNECTED, while other
    sparse weights get a DENSIFY op (DESIGN trap 4).
    int8 is full-integer: every op int8 (TFLITE_BUILTINS_INT8), activation ranges from the first
    `calibration_samples` of `x_calib`, model inputs/outputs of dtype `io`.
    """
    from edgesparse._tf import tf

    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    concrete = _signature_function(model, batch)
    # The converter saves its trackable object as a SavedModel and loads it back. Handing it the
    # Keras model serialises every layer's Keras metadata (~85% of a small model's conversion
    # time); a bare module holding the weights gives byte-identical .tflite (same signature and
    # tensor names) several times faster (measured, docs/benchmarks.md, tune).
    holder = tf.Module()
    holder.weights = list(model.weights)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], holder)
    if precision == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif precision == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]   # int8 weights, float activations
    elif precision == "int8":
        if x_calib is None or len(x_calib) == 0:
            raise UserError("int8 export needs calibration samples; pass --data")
        crashing = int8_crashing_layers(model)
        if crashing:
            raise UserError(f"full-integer int8 export of {', '.join(crashing[:3])} "
                            f"({'/'.join(INT8_CRASHING_LAYERS)}) crashes TensorFlow's TFLite converter "
                            "(a segfault, not an error); export this model at dynamic, fp16 or fp32 "
                            "(quantize: {precisions: [dynamic]}); the Edge TPU runs full-integer int8 "
                            "only, so it cannot be built for coral")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        step = batch or 1
        converter.representative_dataset = lambda: representative_samples(x_calib, calibration_samples, step)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        dtypes = {"float32": tf.float32, "int8": tf.int8, "uint8": tf.uint8}
        if io not in dtypes:
            raise UserError(f"unknown I/O dtype {io!r}; choose float32, int8 or uint8")
        converter.inference_input_type = dtypes[io]
        converter.inference_output_type = dtypes[io]
    if sparse:
        converter.optimizations = list(converter.optimizations) + [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    with quiet() as said:
        try:
            return converter.convert()
        except Exception as exc:  # the converter raises ConverterError, RuntimeError, ValueError...
            error = exc
    raise UserError(f"TFLite conversion ({precision}) failed: {str(error).splitlines()[0] if str(error) else type(error).__name__}"
                    f"{'; converter said: ' + said.tail(3) if said.text.strip() else ''}")
