"""Open an exported artifact in its real runtime: the one loader for verify, release and profiling.

- `.tflite`: `ai_edge_litert.interpreter.Interpreter` (tf.lite.Interpreter is deprecated, trap 8).
- `.onnx`:   `onnxruntime.InferenceSession` (CPU provider unless another is asked for).

`open_artifact(path, threads, io)` gives an `Artifact` with its input/output specs (as the
runtime reports them) and `run(arrays) -> arrays`, one invocation:

- io="float": callers give float32 and get float32 back; int8/uint8 inputs are quantized with the
  input tensor's scale and zero point, outputs dequantized with the output's, so an int8 artifact
  compares with the Keras model directly (the verify pass).
- io="raw": tensors in the model's own dtypes, an int8 output stays int8 (release test data is
  compared exactly).

`predict(x)` runs float samples one at a time (artifacts have a fixed batch of 1, trap 6).
`prepared(arrays)` sets the inputs once and returns the bare invocation (for LiteRT `invoke()`
without reading the outputs back, as TFLite's benchmark_model does), which is what profiling
times. Agent-safe: numpy and the runtime only, imported lazily; never TensorFlow.
"""
from __future__ import annotations

import contextlib
import importlib.metadata
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np

from edgesparse.convert import quiet as capture_fd2   # standard library only
from edgesparse.runtime.tensors import ORT_DTYPES, TensorSpec, to_float_output, to_model_input

RUNTIME_NAMES = {"tflite": "LiteRT", "onnx": "ONNX Runtime"}


class RuntimeUnavailable(RuntimeError):
    """The runtime (or the execution provider) the artifact needs is not installed here."""

    es_code = "runtime_unavailable"   # the profiling child's error code (docs/agent-api.md)


def artifact_format(path: str | Path) -> str:
    """'tflite' or 'onnx' from the file suffix (runtime.sniff judges by content instead)."""
    fmt = Path(path).suffix.lstrip(".")
    if fmt not in RUNTIME_NAMES:
        raise ValueError(f"{Path(path).name}: unknown artifact format; expected .tflite or .onnx")
    return fmt


class Artifact:
    """An artifact loaded in its runtime. `handle` is the Interpreter or InferenceSession."""

    def __init__(self, path: Path, fmt: str, io: str, handle: Any, delegate: str,
                 inputs: list[TensorSpec], outputs: list[TensorSpec],
                 bind: Callable[[list[np.ndarray]], Callable[[], None]],
                 fetch: Callable[[], list[np.ndarray]]):
        self.path, self.format, self.io, self.handle, self.delegate = path, fmt, io, handle, delegate
        self.inputs, self.outputs = inputs, outputs
        self._bind, self._fetch = bind, fetch

    @property
    def runtime(self) -> str:
        return RUNTIME_NAMES[self.format]

    @property
    def version(self) -> str:
        if self.format == "tflite":
            return importlib.metadata.version("ai-edge-litert")
        import onnxruntime

        return onnxruntime.__version__

    def prepared(self, arrays: list[np.ndarray]) -> Callable[[], None]:
        """Set these (raw) inputs once; the returned call runs the model and nothing else."""
        if len(arrays) != len(self.inputs):
            raise ValueError(f"the model takes {len(self.inputs)} inputs, got {len(arrays)}")
        return self._bind(arrays)

    def run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """One invocation: raw tensors in and out, or float in and out (io="float")."""
        if self.io == "float":
            if len(arrays) != len(self.inputs):
                raise ValueError(f"the model takes {len(self.inputs)} inputs, got {len(arrays)}")
            arrays = [to_model_input(a, s) for a, s in zip(arrays, self.inputs)]
        self.prepared(list(arrays))()
        ys = self._fetch()
        return ys if self.io == "raw" else [to_float_output(y, s) for y, s in zip(ys, self.outputs)]

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Float samples (N, ...) -> the first output for each, float32 (N, ...), one run each."""
        if self.io != "float":
            raise ValueError("predict takes float samples; open the artifact with io='float'")
        if len(self.inputs) != 1:
            raise ValueError(f"{self.path.name} has {len(self.inputs)} inputs; "
                             "only single-input models are supported")
        x = np.asarray(x, dtype=np.float32)
        if len(x) == 0:
            return np.zeros((0,) + tuple(self.outputs[0].fixed_shape[1:]), dtype=np.float32)
        ys = [self.run([sample])[0] for sample in x]
        return np.stack([y.reshape(y.shape[1:]) if y.shape[:1] == (1,) else y for y in ys])


def open_artifact(path: str | Path, threads: int | None = None,
                  io: Literal["float", "raw"] = "float", delegate: str | None = None, *,
                  fmt: str | None = None, delegate_library: str | None = None,
                  quiet: bool = True) -> Artifact:
    """Load `path` in its runtime.

    threads: None is the runtime's own default. delegate: for LiteRT None (XNNPACK), "none"
    (builtin kernels only) or a name whose library is `delegate_library`; for ONNX Runtime an
    execution provider (default CPUExecutionProvider). quiet: keep LiteRT's fd-2 announcements
    off the terminal (the profiling child keeps them: its log is how a crash is explained).
    """
    if io not in ("float", "raw"):
        raise ValueError(f"io must be 'float' or 'raw', got {io!r}")
    path = Path(path)
    fmt = fmt or artifact_format(path)
    if fmt == "tflite":
        return _open_tflite(path, threads, io, delegate, delegate_library, quiet)
    if fmt == "onnx":
        return _open_onnx(path, threads, io, delegate)
    raise ValueError(f"unknown artifact format {fmt!r} for {path}; expected .tflite or .onnx")


def _tflite_spec(d: dict[str, Any]) -> TensorSpec:
    scale, zero = d.get("quantization", (0.0, 0))
    quantized = float(scale) != 0.0
    return TensorSpec(d["name"], tuple(int(v) for v in d["shape"]), np.dtype(d["dtype"]).name,
                      float(scale) if quantized else None, int(zero) if quantized else None)


def _open_tflite(path: Path, threads, io, delegate, delegate_library, quiet) -> Artifact:
    try:
        from ai_edge_litert import interpreter as litert
    except ImportError:
        raise RuntimeUnavailable("ai-edge-litert is not installed on this device") from None
    kwargs: dict[str, Any] = {"model_path": str(path), "num_threads": threads}
    if delegate == "none":   # plain builtin kernels, XNNPACK off
        kwargs["experimental_op_resolver_type"] = litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    elif delegate_library:   # an external delegate (the agent operator allowlists it by name)
        kwargs["experimental_delegates"] = [litert.load_delegate(delegate_library)]
    with capture_fd2() if quiet else contextlib.nullcontext():   # XNNPACK announces itself on fd 2
        it = litert.Interpreter(**kwargs)
        for d in it.get_input_details():
            signature = d.get("shape_signature", d["shape"])
            if any(s < 0 for s in signature):   # a dynamic batch from the converter: run it as 1
                it.resize_tensor_input(d["index"], [1 if s < 0 else int(s) for s in signature])
        it.allocate_tensors()
    ins, outs = it.get_input_details(), it.get_output_details()

    def bind(arrays: list[np.ndarray]) -> Callable[[], None]:
        for d, a in zip(ins, arrays):
            it.set_tensor(d["index"], a)
        return it.invoke

    def fetch() -> list[np.ndarray]:
        return [it.get_tensor(d["index"]).copy() for d in outs]

    return Artifact(path, "tflite", io, it, delegate or "default (XNNPACK)",
                    [_tflite_spec(d) for d in ins], [_tflite_spec(d) for d in outs], bind, fetch)


def _open_onnx(path: Path, threads, io, delegate) -> Artifact:
    try:
        import onnxruntime as ort
    except ImportError:
        raise RuntimeUnavailable("onnxruntime is not installed on this device") from None
    provider = delegate or "CPUExecutionProvider"
    if provider not in ort.get_available_providers():
        raise RuntimeUnavailable(f"execution provider {provider!r} is not available here; "
                                 f"available: {', '.join(ort.get_available_providers())}")
    options = ort.SessionOptions()
    options.log_severity_level = 3            # errors only: ORT warns about unused initializers
    options.intra_op_num_threads = threads or 0   # 0: onnxruntime's default
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # x86 without VNNI (SSE4.1/AVX2/AVX-512F) runs u8s8 int8 products with pairwise 16-bit sums
    # that saturate (onnxruntime PR 12088): the test suite's digits MLP verified 1.4 points low in
    # int8 ONNX on an AVX2 EPYC (stop 27; the same test passed on the earlier AVX-512 hosts).
    # Promoting to 16 bits keeps the artifact 8-bit for the device (ARM does not saturate) and the
    # host's verification honest; it applies only to x86 without VNNI, and on the suite's tiny
    # int8 CNN/MLP it measured 0.98x/0.92x the default's latency there, not slower.
    options.add_session_config_entry("session.x64quantprecision", "1")
    session = ort.InferenceSession(str(path), sess_options=options, providers=[provider])

    def spec(v) -> TensorSpec:
        return TensorSpec(v.name, tuple(d if isinstance(d, int) else str(d) for d in v.shape),
                          ORT_DTYPES.get(v.type, v.type))

    ins, outs = [spec(v) for v in session.get_inputs()], [spec(v) for v in session.get_outputs()]

    last: list[np.ndarray] = []

    def bind(arrays: list[np.ndarray]) -> Callable[[], None]:
        feed = {s.name: a for s, a in zip(ins, arrays)}

        def invoke() -> None:   # session.run also allocates the outputs: there is no bare invoke
            last[:] = session.run(None, feed)
        return invoke

    def fetch() -> list[np.ndarray]:
        return [np.asarray(y) for y in last]

    return Artifact(path, "onnx", io, session, provider, ins, outs, bind, fetch)
