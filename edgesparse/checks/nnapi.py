"""Which TFLite operators LiteRT's NNAPI delegate hands to NNAPI, and which fall back to the CPU.

Source: `NNAPIDelegateKernel::Validate` in LiteRT, tflite/delegates/nnapi/nnapi_delegate.cc
(github.com/google-ai-edge/LiteRT; the same switch lives in tensorflow/lite/delegates/nnapi in
TensorFlow). Each entry below is one `case` of that switch: the highest operator version it
accepts (`ExpectMaxOpVersion` / `ExpectOpVersion`, both "version <= max"), the Android API level
it needs (`ExpectMinAndroidSdkVersion`: 27 = NNAPI 1.0, 28 = 1.1, 29 = 1.2, 30 = 1.3), and the
restrictions that can be read from the .tflite file alone. Operators not in the switch are
"Unsupported operation type" and run on the CPU, which splits the graph into partitions.

We check against NNAPI 1.3 (Android 11, API level 30): the first level that takes signed int8
tensors everywhere, and the floor for the devices this target describes. NNAPI is deprecated
from Android 15 (API 35) on; the target profile says so.
"""
from __future__ import annotations

from dataclasses import dataclass

from edgesparse.runtime.tflite_file import OpInfo, TFLiteModel

ASSUMED_SDK = 30   # NNAPI 1.3, Android 11

# Tensor dtypes NNAPI takes for activations ("IsFloatOrQuant8" plus int32/bool where allowed).
QUANT8_OR_FLOAT = ("float32", "int8", "uint8")


@dataclass(frozen=True)
class NnapiOp:
    max_version: int | None        # None: the delegate does not check the version
    min_sdk: int = 27
    float_only: bool = False       # `ExpectIsFloatOperator`: float32 input only
    max_rank: int | None = None    # "Input rank should be <= 4" and friends
    note: str = ""


NNAPI_OPS: dict[str, NnapiOp] = {
    "ADD": NnapiOp(2, max_rank=4),
    "ARG_MAX": NnapiOp(2, 29), "ARG_MIN": NnapiOp(2, 29),
    "MUL": NnapiOp(2, max_rank=4, note="version 3 only when an accelerator is named"),
    "AVERAGE_POOL_2D": NnapiOp(2), "MAX_POOL_2D": NnapiOp(2),
    "L2_POOL_2D": NnapiOp(1, float_only=True),
    "CONV_2D": NnapiOp(5, note="needs a bias input"),
    "DEPTHWISE_CONV_2D": NnapiOp(3),
    "FULLY_CONNECTED": NnapiOp(5, note="no int16 output; keep_num_dims needs API 30"),
    "HARD_SWISH": NnapiOp(None),
    "SOFTMAX": NnapiOp(2, max_rank=4),
    "RESHAPE": NnapiOp(1, max_rank=4, note="the new shape must be a constant"),
    "RESIZE_BILINEAR": NnapiOp(3, note="rank-4 input, constant size"),
    "RESIZE_NEAREST_NEIGHBOR": NnapiOp(3, 29, note="constant size"),
    "SQUEEZE": NnapiOp(1, 28),
    "UNIDIRECTIONAL_SEQUENCE_LSTM": NnapiOp(2, 29),
    "L2_NORMALIZATION": NnapiOp(2, note="no fused activation"),
    "LOCAL_RESPONSE_NORMALIZATION": NnapiOp(1),
    "LSH_PROJECTION": NnapiOp(1),
    "CONCATENATION": NnapiOp(2, max_rank=4, note="no fused activation"),
    "DEQUANTIZE": NnapiOp(2, note="versions 1-2; constant fp16 weights are folded by the delegate"),
    "FLOOR": NnapiOp(1),
    "RELU": NnapiOp(2), "RELU_N1_TO_1": NnapiOp(2), "RELU6": NnapiOp(2), "LOGISTIC": NnapiOp(2),
    "TANH": NnapiOp(2),
    "SUB": NnapiOp(3, max_rank=4),
    "DIV": NnapiOp(1, 28, float_only=True),
    "PAD": NnapiOp(2, 28), "PADV2": NnapiOp(2, 28),
    "UNIDIRECTIONAL_SEQUENCE_RNN": NnapiOp(1, 29),
    "SPACE_TO_BATCH_ND": NnapiOp(2, 28), "BATCH_TO_SPACE_ND": NnapiOp(2, 28),
    "STRIDED_SLICE": NnapiOp(2, 28),
    "TRANSPOSE": NnapiOp(2, 28, note="constant permutation"),
    "ABS": NnapiOp(1, 29, float_only=True), "EXP": NnapiOp(1, 29, float_only=True),
    "LOG": NnapiOp(1, 29, float_only=True),
    "RSQRT": NnapiOp(2, 29, float_only=True, note="quantized from feature level 7"),
    "POW": NnapiOp(1, 29, float_only=True),
    "SLICE": NnapiOp(2, 29),
    "SIN": NnapiOp(1, 29, float_only=True), "COS": NnapiOp(1, 29, float_only=True),
    "TRANSPOSE_CONV": NnapiOp(4, 29, note="constant output shape and weights"),
    "SQRT": NnapiOp(1, 29, float_only=True),
    "RNN": NnapiOp(1), "SPACE_TO_DEPTH": NnapiOp(2), "SVDF": NnapiOp(1, 28),
    "LSTM": NnapiOp(3, 28),
    "MEAN": NnapiOp(2, 28),
    "EMBEDDING_LOOKUP": NnapiOp(1), "HASHTABLE_LOOKUP": NnapiOp(1),
    "MAXIMUM": NnapiOp(3, 29), "MINIMUM": NnapiOp(3, 29),
    "CAST": NnapiOp(1, 29),
    "LEAKY_RELU": NnapiOp(1, 29), "PRELU": NnapiOp(1, 29),
    "TILE": NnapiOp(1, 29),
    "LOGICAL_OR": NnapiOp(1, 29), "LOGICAL_AND": NnapiOp(1, 29), "LOGICAL_NOT": NnapiOp(1, 29),
    "LESS": NnapiOp(2, 29), "LESS_EQUAL": NnapiOp(2, 29), "GREATER": NnapiOp(2, 29),
    "GREATER_EQUAL": NnapiOp(2, 29), "EQUAL": NnapiOp(2, 29), "NOT_EQUAL": NnapiOp(2, 29),
    "NEG": NnapiOp(2, 29),
    "TOPK_V2": NnapiOp(2, 29),
    "SELECT": NnapiOp(2, 29),
    "GATHER": NnapiOp(2, 29),
    "BIDIRECTIONAL_SEQUENCE_LSTM": NnapiOp(1, 29),
    "EXPAND_DIMS": NnapiOp(1, 29),
    "SPLIT": NnapiOp(3, 29), "SPLIT_V": NnapiOp(2, 30),
    "LOG_SOFTMAX": NnapiOp(1, 29, float_only=True),
    "QUANTIZE": NnapiOp(2, 29),
    "REDUCE_ANY": NnapiOp(2, 29), "REDUCE_MIN": NnapiOp(2, 29), "REDUCE_MAX": NnapiOp(2, 29),
    "DEPTH_TO_SPACE": NnapiOp(None),
    "REDUCE_PROD": NnapiOp(1, 29, float_only=True), "SUM": NnapiOp(1, 29, float_only=True),
    "ELU": NnapiOp(1, 30, float_only=True),
    "FILL": NnapiOp(1, 30),
    "PACK": NnapiOp(2, 30),
    "SQUARED_DIFFERENCE": NnapiOp(2, 28),
    "DENSIFY": NnapiOp(None, 30, note="constant sparse weights only"),
}


def op_problem(model: TFLiteModel, op: OpInfo, sdk: int = ASSUMED_SDK) -> str | None:
    """Why NNAPI would not take this operator (None: it would)."""
    first = model.tensor(op.inputs[0]) if op.inputs and op.inputs[0] >= 0 else None
    if op.name == "DEQUANTIZE" and first is not None and first.dtype == "float16" and first.constant:
        # fp16 weights: DoPrepare finds these with IsDequantizeConstFloat16 and remaps them to
        # fp32 constants (FP16GraphPartitionHelper) before Validate sees the graph.
        return None
    rule = NNAPI_OPS.get(op.name)
    if rule is None:
        return "operator not supported by the NNAPI delegate"
    if rule.max_version is not None and op.version > rule.max_version:
        return f"version {op.version} > {rule.max_version}, the highest the NNAPI delegate accepts"
    if sdk < rule.min_sdk:
        return f"needs Android API level {rule.min_sdk}"
    if first is not None:
        if rule.float_only and first.dtype != "float32":
            return f"NNAPI runs {op.name} on float32 only, input is {first.dtype}"
        if first.dtype in ("int16", "float16", "int64"):
            return f"input dtype {first.dtype} is not taken by NNAPI for {op.name}"
        if rule.max_rank is not None and len(first.shape) > rule.max_rank:
            return f"input rank {len(first.shape)} > {rule.max_rank}"
    if op.name == "CONV_2D" and (len(op.inputs) < 3 or op.inputs[2] < 0):
        return "Conv2D with omitted bias is not supported"
    if op.name == "RESHAPE" and len(op.inputs) >= 2 and not model.tensor(op.inputs[1]).constant:
        return "the shape input of RESHAPE must be constant"
    if op.name in ("CONCATENATION", "L2_NORMALIZATION") and \
            op.options.get("fused_activation", "NONE") != "NONE":
        return f"fused activation {op.options['fused_activation']} is not supported"
    if op.name == "FULLY_CONNECTED":
        out = model.tensor(op.outputs[0])
        if out.dtype == "int16":
            return "int16 output is not supported"
        if op.options.get("keep_num_dims") and sdk < 30:
            return "keep_num_dims needs Android API level 30"
    return None


def unsupported_ops(model: TFLiteModel, sdk: int = ASSUMED_SDK) -> list[dict]:
    """One entry per operator that NNAPI would leave on the CPU, with its version and reason."""
    found = []
    for op in model.ops:
        reason = op_problem(model, op, sdk)
        if reason:
            found.append({"index": op.index, "op": op.name, "version": op.version, "reason": reason})
    return found
