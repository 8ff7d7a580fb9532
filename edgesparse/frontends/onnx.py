"""ONNX files -> the working form: a functional tf_keras model of built-in layers (no Lambda, no
TF-op layers), so every pass can prune, retrain and quantize it like a native Keras model.

The converters on PyPI give nothing edgesparse can work on (onnx2tf pins another TensorFlow and
emits opaque TF-op layers; onnx2keras is Keras-3 only and saves Lambda layers), so, as for Keras 3
files (frontends/keras3.py), we translate ourselves:

1. Fix the input shape (from the file, or `input_shape` when the file leaves it open) with a batch
   of 1, so every shape in the graph is known.
2. Let onnxruntime's basic graph optimisations fold constants and shape arithmetic
   (Shape -> Gather -> Concat -> Reshape becomes one constant shape), drop Dropout/Identity, and fuse
   bias adds into convolutions; BatchNormalization is kept a layer (ConvBNFusion off) because
   pruning criteria read its scales.
3. Map each node to Keras layers (frontends/onnx_ops.py), moving weights from channels-first to
   channels-last.
4. Run the translation and onnxruntime on the same seeded inputs (and user samples when given);
   a difference above the tolerance fails the import. The figure goes into the report.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgesparse.data import check_sample_size
from edgesparse.errors import UserError

# Opsets whose definitions of the operators in frontends/onnx_ops.py we checked. Older files
# use attributes that later became inputs (both forms are read); newer ones are untested.
MIN_OPSET, MAX_OPSET = 9, 23
CONTROL_FLOW = frozenset({"If", "Loop", "Scan", "SequenceMap"})
# Fusions that would remove a layer the passes need to see.
KEEP_LAYERS = ["ConvBNFusion"]
ONNX_ELEM_FLOAT = 1
CHECK_SAMPLES = 8
FOR_TORCH = ("export the PyTorch model with torch.onnx.export(model, example_input, 'model.onnx') "
             "(or torch.export + torch.onnx.export(..., dynamo=True)) and give edgesparse the .onnx file")


def _fail(path, why: str) -> UserError:
    return UserError(f"cannot import {path}: {why}")


# ----------------------------------------------------------------------------- reading


def read_onnx(path: Path):
    """Parse an ONNX file; a UserError when it is not one."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise _fail(path, f"the file does not parse as an ONNX model ({first}); export it again "
                          "with torch.onnx.export or tf2onnx") from None
    if model.ir_version <= 0 or not model.graph.node:
        raise _fail(path, "the file parses, but holds no ONNX graph; export the model again")
    _load_external_data(model, path)
    return model


def _load_external_data(model, path: Path) -> None:
    """Large exports keep their weights in files beside the model: name a missing one, rather
    than onnx's "should be stored in ..., but it doesn't exist" wrapped in a parse error."""
    from onnx.external_data_helper import ExternalDataInfo, load_external_data_for_model, uses_external_data

    tensors = [t for t in model.graph.initializer if uses_external_data(t)]
    if not tensors:
        return
    folder = path.resolve().parent
    for t in tensors:
        location = ExternalDataInfo(t).location
        where = (folder / location).resolve()
        if not where.is_relative_to(folder):
            raise _fail(path, f"the weight {t.name!r} points outside the model's folder ({location!r}); "
                              "edgesparse reads external weights only from beside the model")
        if not where.is_file():
            raise _fail(path, f"the weight {t.name!r} is stored in the external file {location!r}, which "
                              f"is not in {folder}; copy it next to the model (export keeps large weights "
                              "in a separate file)")
    try:
        load_external_data_for_model(model, str(folder))
    except Exception as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise _fail(path, f"cannot read its external weights ({first}); export the model again") from None


def looks_like_onnx(path: Path) -> bool:
    """Content sniff: an ONNX file is a ModelProto whose first field is ir_version (tag 0x08)."""
    if path.suffix.lower() == ".onnx":
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(2)
    except OSError:
        return False
    if len(head) < 2 or head[0] != 0x08 or head[1] == 0 or head[1] > 20:
        return False
    try:
        read_onnx(path)
    except UserError:
        return False
    return True


def _opset(model) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return 0


def _check_graph(model, path) -> None:
    opset = _opset(model)
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise _fail(path, f"the model uses ONNX opset {opset}; edgesparse reads opsets {MIN_OPSET}-{MAX_OPSET}; "
                          "export it again with opset_version=17 (or convert it with "
                          "onnx.version_converter.convert_version)")
    flow = [n for n in model.graph.node if n.op_type in CONTROL_FLOW]
    if flow:
        label = repr(flow[0].name) if flow[0].name else f"producing {flow[0].output[0]!r}"
        raise _fail(path, f"node {label} is {flow[0].op_type} (control flow), which has no "
                          "layer form; export the model for one fixed input (trace it without data-dependent "
                          "branches or loops)")
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1 or len(model.graph.output) != 1:
        raise _fail(path, f"the model has {len(inputs)} inputs and {len(model.graph.output)} outputs; "
                          "edgesparse works on single-input single-output models")
    if inputs[0].type.tensor_type.elem_type != ONNX_ELEM_FLOAT:
        raise _fail(path, f"the input {inputs[0].name!r} is not float32; edgesparse takes float image or "
                          "signal models (export the model with a float32 input)")


def _graph_input(model):
    initializers = {i.name for i in model.graph.initializer}
    return next(i for i in model.graph.input if i.name not in initializers)


def _static_shape(model, path, input_shape) -> tuple[int, ...]:
    """The input shape with a batch of 1: from the file, or from `input_shape` (per sample, in the
    file's own layout, e.g. (3, 224, 224); a leading batch of 1 is accepted)."""
    inp = _graph_input(model)
    dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
            for d in inp.type.tensor_type.shape.dim]
    if not dims:
        raise _fail(path, f"the input {inp.name!r} has no shape; export it with a fixed input shape")
    if any(d.HasField("dim_value") and d.dim_value <= 0 for d in inp.type.tensor_type.shape.dim[1:]):
        shown = tuple(d.dim_value if d.HasField("dim_value") else "?" for d in inp.type.tensor_type.shape.dim)
        raise _fail(path, f"the input {inp.name!r} has a dimension of size 0 in {shown}; a sample must "
                          "hold values: export it with its real input shape")
    if input_shape is not None:
        given = [int(d) for d in input_shape]
        if len(given) == len(dims) and given[0] == 1:
            given = given[1:]
        if len(given) != len(dims) - 1 or any(d <= 0 for d in given):
            raise _fail(path, f"input_shape {tuple(input_shape)} does not fit the input {inp.name!r} of rank "
                              f"{len(dims)}; give the per-sample shape in the file's layout, e.g. "
                              f"{tuple(d or 224 for d in dims[1:])}")
        for want, have in zip(given, dims[1:]):
            if have is not None and have != want:
                raise _fail(path, f"input_shape {tuple(given)} contradicts the file's input shape "
                                  f"{tuple(dims[1:])}; leave input_shape out or match it")
        check_sample_size(given, f"cannot import {path}")
        return (1, *given)
    if any(d is None for d in dims[1:]):
        shown = tuple(d if d is not None else "?" for d in dims[1:])
        raise _fail(path, f"the input {inp.name!r} has dynamic dimensions {shown}; give the shape with "
                          "--input-shape (per sample, in the file's layout, e.g. 3,224,224)")
    check_sample_size(dims[1:], f"cannot import {path}")
    return (1, *dims[1:])


def _fixed(model, shape: tuple[int, ...]):
    """A copy whose input has the static shape, with the intermediate shapes left to re-inference."""
    import onnx

    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    inp = _graph_input(fixed)
    inp.type.tensor_type.shape.ClearField("dim")
    for d in shape:
        inp.type.tensor_type.shape.dim.add().dim_value = int(d)
    del fixed.graph.value_info[:]
    for out in fixed.graph.output:
        out.type.tensor_type.ClearField("shape")
    if fixed.ir_version >= 4:
        # Initializers listed as inputs could be overridden, so onnxruntime would not fold them.
        initializers = {i.name for i in fixed.graph.initializer}
        keep = [i for i in fixed.graph.input if i.name not in initializers]
        del fixed.graph.input[:]
        fixed.graph.input.extend(keep)
    return fixed


def _session(model_bytes: bytes, path, level=None, save_to: Path | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = level if level is not None else ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    if save_to is not None:
        options.optimized_model_filepath = str(save_to)
    try:
        return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"],
                                    disabled_optimizers=KEEP_LAYERS)
    except Exception as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise _fail(path, f"ONNX Runtime cannot load the model ({first}); check the export "
                          "(onnx.checker.check_model) and export it again") from None


def _optimized(fixed, path):
    """The graph after onnxruntime's basic optimisations (constants and shape arithmetic folded)."""
    import onnx

    with tempfile.TemporaryDirectory(prefix="edgesparse-onnx-") as tmp:
        target = Path(tmp) / "optimized.onnx"
        _session(fixed.SerializeToString(), path, save_to=target)
        return onnx.load(str(target))


# ----------------------------------------------------------------------------- translating


# Operators that read axis 1 as channels, and operators a layout passes through unchanged.
CHANNEL_OPS = frozenset({"Conv", "ConvTranspose", "MaxPool", "AveragePool", "GlobalAveragePool",
                         "GlobalMaxPool", "BatchNormalization", "Resize", "Upsample", "Pad"})
ELEMENTWISE_OPS = frozenset({"Add", "Sub", "Mul", "Div", "Relu", "Clip", "LeakyRelu", "Sigmoid", "Tanh",
                             "HardSigmoid", "HardSwish", "Identity", "Dropout", "Elu"})


def _input_layout(graph, name: str, rank: int) -> tuple[int, ...]:
    """Channels-last Keras input when the file reads its input as channels-first (a convolution
    or pool sees it, maybe after element-wise normalisation); otherwise the file's own layout
    (tf2onnx files start by transposing or reshaping a channels-last input)."""
    from edgesparse.frontends.onnx_ops import channels_last, identity

    if rank < 3:
        return identity(rank)
    frontier, seen = {name}, set()
    for _ in range(8):
        users = [n for n in graph.node if set(n.input) & frontier and n.name not in seen]
        if any(n.op_type in CHANNEL_OPS for n in users):
            return channels_last(rank)
        seen |= {n.name for n in users}
        frontier = {o for n in users if n.op_type in ELEMENTWISE_OPS for o in n.output}
        if not frontier:
            break
    return identity(rank)


def translate(optimized, shape: tuple[int, ...], path, opset: int):
    """Optimised static-shape ONNX graph -> (tf_keras model, input layout, translator)."""
    from onnx import numpy_helper

    from edgesparse._tf import keras
    from edgesparse.frontends.onnx_ops import OPS, Translator, Value, identity

    graph = optimized.graph
    t = Translator(graph, path, opset)
    for init in graph.initializer:
        t.values[init.name] = Value(const=numpy_helper.to_array(init))
    inp = _graph_input(optimized)
    perm = _input_layout(graph, inp.name, len(shape))
    name = "".join(c if c.isalnum() or c in "_-." else "_" for c in inp.name).strip("_.-") or "input"
    x = keras.Input(shape=tuple(shape[p] for p in perm)[1:], name=name if name[0].isalpha() else f"input_{name}")
    t.names.add(x.name)
    t.values[inp.name] = Value(x, perm=perm)
    for node in graph.node:
        t.node = node
        if node.domain not in ("", "ai.onnx") or node.op_type not in OPS:
            domain = f" from domain {node.domain}" if node.domain not in ("", "ai.onnx") else ""
            raise t.fail(f"is not supported by the ONNX translator{domain}",
                         "see docs/onnx.md for the supported operators; export the model without it, "
                         "or replace that part with supported operators")
        try:
            ins = [t.values[n] if n else None for n in node.input]
        except KeyError as err:
            raise t.fail(f"reads tensor {err.args[0]!r}, which nothing before it makes") from None
        outs = OPS[node.op_type](t, ins)
        for out_name, value in zip(node.output, outs):
            if t.consumers.get(out_name, 0) != 1:
                value.dense = None        # an affine folded into its Dense would change other readers
            t.values[out_name] = value
    out = t.values[graph.output[0].name]
    if out.keras is None:
        raise _fail(path, "the model's output is a constant; export the model with its real output")
    out = t.to_layout(out, identity(out.rank))
    return keras.Model(x, out.keras, name=Path(str(path)).stem.replace(" ", "_") or "onnx_model"), perm, t


# ----------------------------------------------------------------------------- checking


def onnx_reference(fixed, path, x_onnx: np.ndarray) -> np.ndarray:
    """ONNX Runtime's outputs for each sample (the fixed model takes a batch of 1)."""
    import onnxruntime as ort

    session = _session(fixed.SerializeToString(), path, level=ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x_onnx[i:i + 1]})[0] for i in range(len(x_onnx))])


def _layout_name(perm: tuple[int, ...]) -> str:
    if len(perm) == 4:
        return "NHWC (channels-last)" if perm == (0, 2, 3, 1) else "NHWC, as in the file"
    if len(perm) == 3:
        return "NLC (channels-last)" if perm == (0, 2, 1) else "as in the file"
    return "as in the file"


# ----------------------------------------------------------------------------- entry point


def load_onnx(path: str | Path, input_shape=None, check: bool = True,
              samples: np.ndarray | None = None) -> tuple[Any, dict[str, Any]]:
    """ONNX file -> (functional tf_keras model, facts about the translation).

    input_shape: the per-sample input shape in the file's own layout (e.g. (3, 224, 224)); needed
    only when the file leaves a dimension open. samples: extra inputs for the check, in the
    translated model's layout (channels-last). check=False skips comparing with ONNX Runtime.
    """
    from edgesparse.frontends.keras import check_finite_weights
    from edgesparse.frontends.keras3 import CHECK_SAMPLES as _N, check_inputs, compare_outputs

    path = Path(path)
    model = read_onnx(path)
    _check_graph(model, path)
    opset = _opset(model)
    shape = _static_shape(model, path, input_shape)
    fixed = _fixed(model, shape)
    keras_model, perm, t = translate(_optimized(fixed, path), shape, path, opset)

    info: dict[str, Any] = {
        "format": "onnx", "container": "onnx", "keras_version": "",
        "translated": "ONNX -> tf_keras, node by node",
        "opset": opset,
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "onnx_input_shape": list(shape[1:]),
        "input_layout": _layout_name(perm),
        "layers_translated": t.layers_made,
        "check": None,
    }
    if check:
        check_finite_weights(keras_model, f"cannot import {path}")
        x = check_inputs(keras_model, _N)
        if samples is not None and len(samples):
            x = np.concatenate([x, np.asarray(samples[:CHECK_SAMPLES], np.float32).reshape((-1, *x.shape[1:]))])
        reference = onnx_reference(fixed, path, np.ascontiguousarray(x.transpose(np.argsort(perm))))
        result = compare_outputs(keras_model, x, reference)
        info["check"] = result
        if not result["passed"]:
            why = result.get("reason") or (f"max abs difference {result['max_abs_diff']:.3g} "
                                           f"> {result['tolerance']:.3g}")
            raise _fail(path, f"the tf_keras translation does not reproduce ONNX Runtime's outputs ({why}); "
                              "please report the model (this is a translator bug)")
    return keras_model, info
