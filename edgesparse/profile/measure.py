"""Measure one artifact in a child process: the code the agent and `edgesparse profile --local` share.

Two halves:
- Parent side (`run_child`, `profile_file`, `profile_local`): standard library only. It validates
  parameters, sniffs the format by content, starts `python -m edgesparse.profile.measure` with a
  wall-clock limit, and turns every way the child can die (exception, signal, hang, out of memory)
  into a `ProfileFailure` with a code. A hostile or broken model can only kill the child.
- Child side (`main`): caps its own address space with RLIMIT_AS *before* importing numpy or a
  runtime, loads the model, times it, and writes one JSON file. numpy and the runtime are imported
  only here, so the agent process never carries them.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

from edgesparse.runtime.sniff import sniff_format
from edgesparse.files import sha256_file

DEFAULTS = {
    "runs": 100,          # at least this many timed runs (100 makes p99 estimable)
    "warmup": 10,
    "min_seconds": 1.0,   # ...and keep running until this much time has passed
    "max_runs": 1_000_000,  # hard stop for tiny models with a large min_seconds
    "threads": None,      # None: the runtime's own default
    "runtime": None,      # None: litert for .tflite, onnxruntime for .onnx
    "delegate": None,     # litert: None (default XNNPACK) | "none" | an agent-allowlisted name
    "seed": 0,
    "idle_power_w": None,    # target power figures for the energy estimate when no sensor exists
    "active_power_w": None,
}
RUNTIME_FOR_FORMAT = {"tflite": "litert", "onnx": "onnxruntime"}
DEFAULT_TIME_LIMIT_S = 300.0
DEFAULT_MEMORY_LIMIT_MB = 4096
_OOM_MARKERS = ("MemoryError", "bad_alloc", "Cannot allocate memory", "failed to map segment",
                "out of memory", "Failed to allocate")


class ProfileFailure(Exception):
    """The model could not be profiled. `code` is stable API (see docs/agent-api.md)."""

    def __init__(self, code: str, message: str, detail: str | None = None):
        super().__init__(message)
        self.code, self.message, self.detail = code, message, detail

    def to_dict(self) -> dict:
        out = {"code": self.code, "message": self.message}
        if self.detail:
            out["detail"] = self.detail
        return out


def validate_params(raw: dict) -> dict:
    """Typed, range-checked parameters; raises ValueError naming the bad one."""
    unknown = set(raw) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown parameter(s): {', '.join(sorted(unknown))}; "
                         f"allowed: {', '.join(DEFAULTS)}")
    params = dict(DEFAULTS)

    def number(key, kind, low, high):
        value = raw[key]
        try:
            value = kind(value)
        except (TypeError, ValueError):
            raise ValueError(f"{key} must be a {kind.__name__}, got {value!r}") from None
        if not low <= value <= high:
            raise ValueError(f"{key} must be between {low} and {high}, got {value}")
        return value

    limits = {"runs": (int, 1, 1_000_000), "warmup": (int, 0, 10_000),
              "min_seconds": (float, 0.0, 3600.0), "max_runs": (int, 1, 10_000_000),
              "threads": (int, 1, 1024), "seed": (int, 0, 2**32 - 1),
              "idle_power_w": (float, 0.0, 10_000.0), "active_power_w": (float, 0.0, 10_000.0)}
    for key, (kind, low, high) in limits.items():
        if raw.get(key) not in (None, ""):
            params[key] = number(key, kind, low, high)
    if raw.get("runtime") not in (None, ""):
        if raw["runtime"] not in RUNTIME_FOR_FORMAT.values():
            raise ValueError(f"runtime must be litert or onnxruntime, got {raw['runtime']!r}")
        params["runtime"] = raw["runtime"]
    if raw.get("delegate") not in (None, ""):
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", str(raw["delegate"])):
            raise ValueError("delegate must be a short name (letters, digits, _ . -), not a path")
        params["delegate"] = str(raw["delegate"])
    if (params["idle_power_w"] is None) != (params["active_power_w"] is None):
        raise ValueError("give both idle_power_w and active_power_w, or neither")
    return params


def _tail(path: str, limit: int = 2000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - limit))
            return f.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""


def _child_env() -> dict:
    env = dict(os.environ)
    # The child must import this same package even when it runs from a source tree.
    package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH")) if p)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def run_child(model_path: str, params: dict, *, time_limit_s: float = DEFAULT_TIME_LIMIT_S,
              memory_limit_mb: int | None = DEFAULT_MEMORY_LIMIT_MB,
              inputs_path: str | None = None, delegate_library: str | None = None,
              work_dir: str | None = None) -> dict:
    """Run the measuring child on `model_path`; the result dict, or ProfileFailure."""
    with tempfile.TemporaryDirectory(prefix="es-child-", dir=work_dir) as tmp:
        out_path, log_path = os.path.join(tmp, "result.json"), os.path.join(tmp, "child.log")
        job = {"model": os.path.abspath(model_path), "params": params, "out": out_path,
               "inputs": os.path.abspath(inputs_path) if inputs_path else None,
               "memory_limit_mb": memory_limit_mb, "delegate_library": delegate_library}
        with open(log_path, "wb") as log:
            # The child's chatter goes to a file, not a pipe: a model that makes the runtime log
            # megabytes must not grow the agent's memory.
            proc = subprocess.Popen(
                [sys.executable, "-m", "edgesparse.profile.measure", json.dumps(job)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=tmp,
                env=_child_env(), start_new_session=True)  # own group: kill its threads/children
            try:
                returncode = proc.wait(timeout=time_limit_s)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                raise ProfileFailure("timeout", f"the model did not finish within the time limit "
                                     f"of {time_limit_s:g} s; the child was killed",
                                     _tail(log_path)) from None
        log_tail = _tail(log_path)
        result = None
        if os.path.exists(out_path):
            with open(out_path, encoding="utf-8") as f:
                result = json.load(f)
        if returncode == 0 and result and "error" not in result:
            return result
        if result and "error" in result:
            error = result["error"]
            raise ProfileFailure(error["code"], error["message"], log_tail or error.get("detail"))
        if returncode < 0:
            name = signal.Signals(-returncode).name if -returncode in signal.valid_signals() \
                else str(-returncode)
            code = "out_of_memory" if any(m in log_tail for m in _OOM_MARKERS) else "crashed"
            raise ProfileFailure(code, f"the runtime crashed on this model (child killed by "
                                 f"{name})", log_tail)
        code = "out_of_memory" if any(m in log_tail for m in _OOM_MARKERS) else "crashed"
        raise ProfileFailure(code, f"the measuring child exited with status {returncode}",
                             log_tail)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def profile_file(model_path: str, params: dict, *, sha256: str | None = None,
                 **limits) -> dict:
    """Sniff, then profile a model file in a child; adds artifact facts to the result."""
    fmt = sniff_format(model_path)
    if fmt is None:
        raise ProfileFailure("unsupported_format", "not a model: expected a TFLite flatbuffer "
                             "('TFL3' at bytes 4..8) or an ONNX ModelProto")
    runtime = params.get("runtime") or RUNTIME_FOR_FORMAT[fmt]
    if RUNTIME_FOR_FORMAT[fmt] != runtime:
        raise ProfileFailure("runtime_mismatch", f"a {fmt} model cannot run on {runtime}; "
                             f"use runtime={RUNTIME_FOR_FORMAT[fmt]}")
    params = {**params, "runtime": runtime}
    started = time.perf_counter()
    result = run_child(model_path, params, **limits)
    result.update({
        "sha256": sha256 or sha256_file(model_path),
        "artifact_bytes": os.path.getsize(model_path),
        "format": fmt,
        "wall_s": time.perf_counter() - started,
        "limits": {"time_limit_s": limits.get("time_limit_s", DEFAULT_TIME_LIMIT_S),
                   "memory_limit_mb": limits.get("memory_limit_mb", DEFAULT_MEMORY_LIMIT_MB)},
    })
    return result


def profile_local(artifact_path, *, inputs_path=None, time_limit_s: float = DEFAULT_TIME_LIMIT_S,
                  memory_limit_mb: int | None = DEFAULT_MEMORY_LIMIT_MB, **params) -> dict:
    """Profile an artifact on this machine with the agent's own child-process code.

    Parameters as for POST /v1/profile (runs, warmup, min_seconds, threads, runtime, delegate,
    seed, idle_power_w, active_power_w). Raises ProfileFailure when the model cannot be profiled.
    """
    from edgesparse.profile.device import device_info

    path = os.fspath(artifact_path)
    if not os.path.isfile(path):
        raise ProfileFailure("not_found", f"no such artifact file: {path}")
    try:
        checked = validate_params(params)
    except ValueError as exc:
        raise ProfileFailure("bad_parameter", str(exc)) from None
    result = profile_file(path, checked, time_limit_s=time_limit_s,
                          memory_limit_mb=memory_limit_mb,
                          inputs_path=os.fspath(inputs_path) if inputs_path else None)
    result["device"] = device_info()
    return result


def main(argv: list[str]) -> int:
    """Child entry point: `python -m edgesparse.profile.measure JOB_JSON`."""
    job = json.loads(argv[0])
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash must not litter core files
    if job.get("memory_limit_mb"):
        limit = int(job["memory_limit_mb"]) * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        from edgesparse.profile.runners import measure_model

        result = measure_model(job["model"], job["params"], inputs_path=job.get("inputs"),
                               delegate_library=job.get("delegate_library"))
        status = 0
    except MemoryError:
        result = {"error": {"code": "out_of_memory",
                            "message": f"the model needs more than the memory limit of "
                                       f"{job.get('memory_limit_mb')} MiB"}}
        status = 3
    except Exception as exc:  # noqa: BLE001 - any runtime failure becomes a JSON error
        message = f"{type(exc).__name__}: {exc}".strip()
        code = getattr(exc, "es_code", None) or (
            "out_of_memory" if any(m in message for m in _OOM_MARKERS) else "runtime_error")
        result = {"error": {"code": code, "message": message[:2000]}}
        status = 3
    tmp = job["out"] + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(result, f)
    os.replace(tmp, job["out"])
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
