"""Child side of profiling: load a model in its runtime and time it.

Runs only inside the measuring child (`python -m edgesparse.profile.measure`), after RLIMIT_AS is
set. Imports numpy and one runtime, lazily; never TensorFlow. The artifact is opened with
edgesparse.runtime.artifact, the same loader verify and release use.

What is timed: for LiteRT, `invoke()` with the inputs set once beforehand (as TFLite's
benchmark_model does); for onnxruntime, `session.run()` (which also allocates the outputs, there
is no separate invoke). Init time is model load plus tensor allocation / session creation.
"""
from __future__ import annotations

import os
import re
import time
from array import array

import numpy as np

from edgesparse.profile import device, energy
from edgesparse.profile.stats import summarize_latencies
from edgesparse.runtime.artifact import RuntimeUnavailable, open_artifact
from edgesparse.runtime.tensors import ORT_DTYPES

IDLE_SAMPLE_S = 0.5  # idle power floor measured before the timed runs, when a sensor exists


class BadInputs(ValueError):
    """Given inputs do not fit the model."""

    es_code = "bad_inputs"


def rss_mb(field: str = "VmRSS") -> float | None:
    """This process's resident set (VmRSS) or its peak (VmHWM) in MiB, from /proc."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            match = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.MULTILINE)
    except OSError:
        match = None
    if match:
        return int(match.group(1)) / 1024.0
    if field == "VmHWM":  # not Linux: ru_maxrss is KiB on Linux, bytes on macOS
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0
    return None


def input_specs(artifact) -> list[tuple[str, tuple[int, ...], np.dtype]]:
    """(name, shape it runs with, numpy dtype) of each input; refuses tensors we cannot make."""
    specs = []
    for spec in artifact.inputs:
        if spec.dtype not in ORT_DTYPES.values():
            raise BadInputs(f"input {spec.name!r} has type {spec.dtype}, not a tensor we "
                            "can synthesize")
        specs.append((spec.name, spec.fixed_shape, np.dtype(spec.dtype)))
    return specs


def synthetic_inputs(specs, seed: int) -> tuple[list[np.ndarray], dict]:
    """Seeded inputs: floats uniform in [0, 1); integers uniform over a small or full range."""
    rng = np.random.default_rng(seed)
    arrays = []
    for _, shape, dtype in specs:
        if dtype.kind == "f":
            arrays.append(rng.random(shape, dtype=np.float64).astype(dtype))
        elif dtype.kind in "iu" and dtype.itemsize == 1:  # quantized int8/uint8 I/O
            info = np.iinfo(dtype)
            arrays.append(rng.integers(info.min, info.max, shape, endpoint=True, dtype=dtype))
        elif dtype.kind in "iu":  # indices, token ids: small non-negative values
            arrays.append(rng.integers(0, 10, shape, dtype=dtype))
        else:
            arrays.append(rng.random(shape) < 0.5)
    label = {"source": "synthetic", "seed": seed,
             "distribution": "float: uniform [0, 1); int8/uint8: uniform full range; "
                             "other ints: uniform [0, 10); bool: fair coin"}
    return arrays, label


def given_inputs(specs, inputs_path: str) -> tuple[list[np.ndarray], dict]:
    """Inputs from an .npz: by input name when every name is a key, otherwise in file order."""
    with np.load(inputs_path, allow_pickle=False) as npz:  # no pickles from the network
        keys = list(npz.files)
        names = [name for name, _, _ in specs]
        order = names if all(n in keys for n in names) else keys
        if len(order) < len(specs):
            raise BadInputs(f"the model has {len(specs)} inputs, the .npz holds {len(keys)}")
        arrays = []
        for (name, shape, dtype), key in zip(specs, order):
            array = npz[key]
            if tuple(array.shape) != shape:
                raise BadInputs(f"input {name!r}: shape {tuple(array.shape)} given, model "
                                f"wants {shape}")
            arrays.append(np.ascontiguousarray(array.astype(dtype, copy=False)))
    return arrays, {"source": "given", "keys": order[:len(specs)]}


def _import_runtime(name: str) -> None:
    """Import the runtime on its own, so its memory is not booked as the model's."""
    try:
        if name == "litert":
            import ai_edge_litert.interpreter  # noqa: F401
        else:
            import onnxruntime  # noqa: F401
    except ImportError:
        dist = "ai-edge-litert" if name == "litert" else "onnxruntime"
        raise RuntimeUnavailable(f"{dist} is not installed on this device") from None


def _open(model_path: str, params: dict, delegate_library: str | None):
    # The child's fd 2 is its log, and the log is how a crash is explained: keep it (quiet=False).
    return open_artifact(model_path, params["threads"], io="raw", delegate=params["delegate"],
                         fmt="tflite" if params["runtime"] == "litert" else "onnx",
                         delegate_library=delegate_library, quiet=False)


def measure_model(model_path: str, params: dict, *, inputs_path: str | None = None,
                  delegate_library: str | None = None) -> dict:
    """Load, warm up and time a model; the profile result (without artifact facts)."""
    rss_start = rss_mb()
    started = time.perf_counter()
    _import_runtime(params["runtime"])
    import_s = time.perf_counter() - started
    rss_runtime = rss_mb()
    started = time.perf_counter()
    artifact = _open(model_path, params, delegate_library)
    init_s = time.perf_counter() - started
    rss_loaded = rss_mb()

    specs = input_specs(artifact)
    if inputs_path:
        arrays, input_label = given_inputs(specs, inputs_path)
    else:
        arrays, input_label = synthetic_inputs(specs, params["seed"])
    input_label["tensors"] = [{"name": n, "shape": list(s), "dtype": str(d)} for n, s, d in specs]
    invoke = artifact.prepared(arrays)

    t = time.perf_counter()
    invoke()
    first_s = time.perf_counter() - t
    for _ in range(params["warmup"]):
        invoke()

    sensors = energy.discover_sensors()
    meter = energy.EnergyMeter(sensors[0]) if sensors else None
    idle_w = None
    if meter:
        meter.start()
        time.sleep(IDLE_SAMPLE_S)
        idle_j, idle_s = meter.stop()
        idle_w = idle_j / idle_s if idle_s > 0 else None
    cpu_before = device.cpu_snapshot()

    latencies = array("d")  # 8 bytes a run, so a million runs stay small
    runs, min_seconds, max_runs = params["runs"], params["min_seconds"], params["max_runs"]
    clock = time.perf_counter
    if meter:
        meter.start()
    loop_start = clock()
    while len(latencies) < max_runs and (len(latencies) < runs
                                         or clock() - loop_start < min_seconds):
        t = clock()
        invoke()
        latencies.append(clock() - t)
    energy_reading = meter.stop() if meter else None
    cpu_after = device.cpu_snapshot()

    timing = summarize_latencies(latencies)
    timing.update({"runtime_import_ms": import_s * 1000.0, "init_ms": init_s * 1000.0, "first_inference_ms": first_s * 1000.0,
                   "warmup_runs": params["warmup"]})
    if energy_reading:
        joules, seconds = energy_reading
        energy_block = energy.measured_energy(joules, seconds, len(latencies), sensors[0], idle_w)
    elif params.get("active_power_w") is not None:
        here = device.cpu_model() or "this machine"
        energy_block = energy.estimated_energy(
            timing["p50_ms"] or timing["mean_ms"], params["active_power_w"], params["idle_power_w"],
            latency_from=f"the p50 measured here, on {here}, not on the target unless this is it")
    else:
        energy_block = energy.unavailable_energy(
            "no readable power sensor here and no target power figures were given")

    peak = rss_mb("VmHWM")
    return {
        "api": "v1",
        "runtime": {"name": params["runtime"], "version": artifact.version,
                    "threads": params["threads"], "delegate": artifact.delegate},
        "inputs": input_label,
        "timing": timing,
        "memory": {
            "rss_before_runtime_mb": rss_start,
            "runtime_import_added_mb": _diff(rss_runtime, rss_start),
            "model_load_added_mb": _diff(rss_loaded, rss_runtime),
            "peak_rss_mb": peak,
            "scope": "the measuring child process",
        },
        "cpu": {"before": cpu_before, "after": cpu_after},
        "energy": energy_block,
        "child_pid": os.getpid(),
    }


def _diff(after: float | None, before: float | None) -> float | None:
    return after - before if after is not None and before is not None else None
