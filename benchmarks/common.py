"""Helpers the benchmarks share: machine facts, sizes, runtime accuracy, interleaved latency.

Latency follows DESIGN.md "Measuring": every variant of one comparison is timed in this one
process, in the same runtime with the same thread count, interleaved round by round (the start
of the rotation moves each round, so no variant always runs right after another). Each round
runs every variant for k batch-1 inferences; every inference is timed on its own with
`time.perf_counter_ns`, so the p50 is over single inferences, and the per-round medians give
the spread of a ratio between two variants measured side by side.

What one inference is: LiteRT `invoke()` with the input tensor already set (the kernel work);
ONNX Runtime `session.run` (the only call it offers, so it includes binding the input and
copying the output). Ratios are only ever taken within one runtime.
"""
from __future__ import annotations

import datetime as _dt
import gzip
import importlib.metadata
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_models"
SAMPLE_MODELS = [SAMPLES / "digits_cnn.keras", SAMPLES / "digits_mlp.keras"]
SAMPLE_DATA = SAMPLES / "digits.npz"
if str(ROOT) not in sys.path:        # run from a source tree without installing
    sys.path.insert(0, str(ROOT))

PACKAGES = ("edgesparse", "tensorflow", "tf_keras", "tensorflow-model-optimization", "ai-edge-litert",
            "onnxruntime", "onnx", "tf2onnx", "numpy")


# ----------------------------------------------------------------------------- data


def mnist1d():
    """mnist1d (procedural: 4000 train / 1000 test samples of 40 features, 10 classes), generated
    here with the package's default arguments, nothing downloaded (the `bench` extra).
    Returns (x_train, x_test, y_train, y_test)."""
    from mnist1d.data import get_dataset_args, make_dataset

    d = make_dataset(get_dataset_args())
    return (d["x"].astype(np.float32), d["x_test"].astype(np.float32),
            np.asarray(d["y"]), np.asarray(d["y_test"]))


# ----------------------------------------------------------------------------- machine


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def machine_info() -> dict:
    """CPU, cores, load, versions and date: what a reader needs to judge the numbers."""
    from edgesparse.profile.device import cpu_model

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "cpu_model": cpu_model(), "machine": platform.machine(), "cores": os.cpu_count(),
            "cores_usable": usable_cores(), "load_average_1_5_15": load_average(),
            "os": platform.platform(), "python": platform.python_version(), "versions": versions}


def machine_lines(info: dict) -> list[str]:
    v = info["versions"]
    return [f"- machine: {info['cpu_model']} ({info['machine']}), {info['cores_usable']} usable cores, "
            f"{info['os']}",
            f"- load average (1/5/15 min) at the start: {info['load_average_1_5_15']} "
            "(the machine is shared; latency is only compared within one run)",
            "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val),
            f"- date: {info['date']}"]


# ----------------------------------------------------------------------------- sizes, accuracy


def gzip_size(path: Path) -> int:
    """Bytes of `gzip -9` of the file: what a download or an OTA update costs."""
    return len(gzip.compress(Path(path).read_bytes(), compresslevel=9))


def nonzero_params(model) -> int:
    return int(sum(np.count_nonzero(w) for w in model.get_weights()))


def runtime_accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy (%) of an artifact run in its real runtime (LiteRT / ONNX Runtime)."""
    from edgesparse.runtime.artifact import open_artifact

    pred = open_artifact(path).predict(x)
    return round(float(np.mean(np.argmax(pred, -1) == np.asarray(y).reshape(-1)) * 100), 3)


def keras_accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    pred = model.predict(x, batch_size=256, verbose=0)
    return round(float(np.mean(np.argmax(pred, -1) == np.asarray(y).reshape(-1)) * 100), 3)


# ----------------------------------------------------------------------------- latency


class _Runner:
    """One artifact loaded in one runtime, its input prepared, timing one inference at a time."""

    def __init__(self, path: Path, runtime: str, threads: int, sample: np.ndarray):
        from edgesparse.runtime.tensors import quantize, TensorSpec

        self.times_ns: list[int] = []
        self.round_p50_ns: list[float] = []
        if runtime == "litert":
            from ai_edge_litert.interpreter import Interpreter

            from edgesparse.convert import quiet

            with quiet():   # XNNPACK announces itself on fd 2
                it = Interpreter(model_path=str(path), num_threads=threads)
                it.allocate_tensors()
            d = it.get_input_details()[0]
            x = sample.reshape(d["shape"]).astype(np.float32)
            if d["dtype"] in (np.int8, np.uint8):
                scale, zero = d["quantization"]
                x = quantize(x, TensorSpec("in", tuple(d["shape"]), np.dtype(d["dtype"]).name, scale, zero))
            it.set_tensor(d["index"], x)
            self.call = it.invoke
        elif runtime == "onnxruntime":
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
            sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
            i = sess.get_inputs()[0]
            shape = [d if isinstance(d, int) else 1 for d in i.shape]
            feed, outs = {i.name: sample.reshape(shape).astype(np.float32)}, [sess.get_outputs()[0].name]
            self.call = lambda: sess.run(outs, feed)
        else:
            raise ValueError(f"unknown runtime {runtime!r}")

    def block(self, k: int, keep: bool = True) -> None:
        clock, call, start = time.perf_counter_ns, self.call, len(self.times_ns)
        times = self.times_ns
        for _ in range(k):
            t0 = clock()
            call()
            times.append(clock() - t0)
        if keep:
            self.round_p50_ns.append(float(np.median(times[start:])))
        else:
            del times[start:]


@dataclass
class Latency:
    p50_us: float
    p25_us: float
    p75_us: float
    n: int
    round_p50_us: list[float] = field(repr=False, default_factory=list)

    def summary(self) -> dict:
        return {"p50_us": round(self.p50_us, 3), "p25_us": round(self.p25_us, 3),
                "p75_us": round(self.p75_us, 3), "n": self.n}


def interleaved_latency(paths: dict[str, Path], runtime: str, threads: int, sample: np.ndarray,
                        rounds: int = 40, block_ms: float = 10.0, warmup: int = 20) -> dict[str, Latency]:
    """p50 (p25-p75) of single batch-1 inferences for each artifact, variants interleaved.

    k (inferences per variant per round) is chosen once so that the first variant's block lasts
    about `block_ms`; every variant then runs the same k each round.
    """
    runners = {name: _Runner(p, runtime, threads, sample) for name, p in paths.items()}
    for r in runners.values():
        r.block(warmup, keep=False)
    first = next(iter(runners.values()))
    first.block(50)                       # the median call: a preempted call must not set k
    per_call_ns = max(first.round_p50_ns.pop(), 100.0)
    del first.times_ns[:]
    k = int(min(5000, max(5, block_ms * 1e6 / per_call_ns)))
    names = list(runners)
    for rnd in range(rounds):
        shift = rnd % len(names)
        for name in names[shift:] + names[:shift]:
            runners[name].block(k)
    out = {}
    for name, r in runners.items():
        t = np.asarray(r.times_ns, dtype=np.float64) / 1e3
        p25, p50, p75 = np.percentile(t, [25, 50, 75])
        out[name] = Latency(float(p50), float(p25), float(p75), int(t.size),
                            [v / 1e3 for v in r.round_p50_ns])
    return out


def round_ratio(a: Latency, b: Latency) -> tuple[float, float, float]:
    """Median and p25/p75 over rounds of a's round p50 divided by b's in the same round."""
    ratio = np.asarray(a.round_p50_us) / np.asarray(b.round_p50_us)
    p25, p50, p75 = np.percentile(ratio, [25, 50, 75])
    return float(p50), float(p25), float(p75)
