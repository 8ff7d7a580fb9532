"""The on-device profiling agent: a small authenticated HTTP server (API v1).

    python -m edgesparse.profile.agent --token-file ~/.edgesparse-token      # or
    edgesparse agent serve --token-file ~/.edgesparse-token

Standard library only (http.server). The agent never imports numpy, TensorFlow or a runtime: every
model is loaded and timed in a child process (edgesparse.profile.measure) with a wall-clock limit
and an address-space limit, so a model that crashes or hangs the runtime kills only the child.
The API and the security model are written down in docs/agent-api.md.
"""
from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import math
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from edgesparse import __version__
from edgesparse.errors import UserError
from edgesparse.profile import device, energy, measure
from edgesparse.profile.token import read_token

API_VERSION = "v1"
CHUNK = 1 << 20
INPUTS_HEADER = "X-Inputs-Length"   # the last N body bytes are an .npz of inputs
DRAIN_LIMIT_S = 1.0                 # how long we read and discard a rejected upload


@dataclass
class AgentConfig:
    token: str
    host: str = "127.0.0.1"
    port: int = 8765
    max_upload_bytes: int = 256 * 1024 * 1024
    read_timeout_s: float = 30.0       # a socket read that waits longer ends the request
    job_time_limit_s: float = measure.DEFAULT_TIME_LIMIT_S
    memory_limit_mb: int | None = measure.DEFAULT_MEMORY_LIMIT_MB
    work_dir: str | None = None        # where uploads are written (a private dir per job)
    delegates: dict[str, str] = field(default_factory=dict)  # name -> library, operator's choice


class HTTPError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


class ProfilingAgent(ThreadingHTTPServer):
    daemon_threads = True  # a stuck client thread must not keep the process alive on shutdown

    def __init__(self, config: AgentConfig):
        self.config = config
        self.job_lock = threading.Lock()
        self.job_started = 0.0
        self.job_expected_s = 0.0
        self.jobs_done = 0
        super().__init__((config.host, config.port), AgentHandler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def retry_after_s(self) -> int:
        remaining = self.job_expected_s - (time.monotonic() - self.job_started)
        return max(1, math.ceil(remaining))


class AgentHandler(BaseHTTPRequestHandler):
    server: ProfilingAgent
    server_version = f"edgesparse-agent/{__version__}"
    protocol_version = "HTTP/1.1"  # for Expect: 100-continue; every response still closes

    def setup(self) -> None:
        # Every socket read (request line, headers, body) times out: a client that stops
        # sending ties up one thread for at most read_timeout_s, never the server.
        self.timeout = self.server.config.read_timeout_s
        super().setup()

    # -- plumbing -------------------------------------------------------------------------
    def _send_json(self, status: int, payload: dict, headers: dict | None = None) -> None:
        body = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        for key, value in (headers or {}).items():
            self.send_header(key, str(value))
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def _send_error(self, error: HTTPError, extra: dict | None = None) -> None:
        payload = {"api": API_VERSION, "error": {"code": error.code, "message": error.message}}
        payload.update(extra or {})
        self._send_json(error.status, payload, error.headers)

    def _drain_unread_body(self) -> None:
        """Read and drop what the client is still sending, briefly, so it sees our response.

        Closing a socket with unread data makes the kernel send a reset, and the client may
        then lose our 401/409/413 answer and see only 'connection reset'.
        """
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(0.2)
            deadline = time.monotonic() + DRAIN_LIMIT_S
            while time.monotonic() < deadline and self.rfile.read1(CHUNK):
                pass
        except OSError:
            pass

    def handle_expect_100(self) -> bool:
        """Refuse a bad upload before the client sends its body (curl asks for bodies > 1 MiB)."""
        try:
            self._check_token()
            if self.command == "POST":
                self._content_lengths()
                if self.server.job_lock.locked():
                    raise HTTPError(409, "busy", "another profile is running; retry later",
                                    {"Retry-After": self.server.retry_after_s()})
        except HTTPError as error:
            self._send_error(error)
            return False
        return super().handle_expect_100()

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - base class signature
        sys.stderr.write(f"[agent] {self.address_string()} {format % args}\n")

    def _check_token(self) -> None:
        header = self.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        challenge = {"WWW-Authenticate": 'Bearer realm="edgesparse-agent"'}
        if scheme.lower() != "bearer" or not given.strip():
            raise HTTPError(401, "missing_token", "send 'Authorization: Bearer <token>'",
                            challenge)
        expected = self.server.config.token.encode("utf-8")
        if not hmac.compare_digest(given.strip().encode("utf-8"), expected):
            raise HTTPError(401, "bad_token", "wrong token", challenge)

    def _route(self) -> tuple[str, dict]:
        parts = urlsplit(self.path)
        return parts.path.rstrip("/") or "/", dict(parse_qsl(parts.query, keep_blank_values=True))

    # -- endpoints ------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        path, _ = self._route()
        try:
            self._check_token()
            if path != f"/{API_VERSION}/device":
                raise HTTPError(404, "not_found", f"no endpoint GET {path}; see /v1/device")
            self._send_json(200, self._device_payload())
        except HTTPError as error:
            self._send_error(error)

    def _device_payload(self) -> dict:
        config = self.server.config
        info = device.device_info()
        info.update({
            "api": API_VERSION,
            "agent_version": __version__,
            "power_sensors": [s.describe() for s in energy.discover_sensors()],
            "delegates": sorted(config.delegates),
            "limits": {"max_upload_bytes": config.max_upload_bytes,
                       "job_time_limit_s": config.job_time_limit_s,
                       "memory_limit_mb": config.memory_limit_mb,
                       "read_timeout_s": config.read_timeout_s},
            "busy": self.server.job_lock.locked(),
        })
        return info

    def do_POST(self) -> None:  # noqa: N802
        path, query = self._route()
        body_read = False
        try:
            self._check_token()
            if path != f"/{API_VERSION}/profile":
                raise HTTPError(404, "not_found", f"no endpoint POST {path}; see /v1/profile")
            try:
                params = measure.validate_params(query)
            except ValueError as exc:
                raise HTTPError(400, "bad_parameter", str(exc)) from None
            length, inputs_length = self._content_lengths()
            if not self.server.job_lock.acquire(blocking=False):
                raise HTTPError(409, "busy", "another profile is running; retry later",
                                {"Retry-After": self.server.retry_after_s()})
            try:
                self.server.job_started = time.monotonic()
                self.server.job_expected_s = params["min_seconds"] + 5.0
                body_read = True
                status, payload = self._profile(params, length, inputs_length)
            finally:
                self.server.jobs_done += 1
                self.server.job_lock.release()
            # Answer only after the lock is free: a client that sends its next job as soon as
            # it has this answer must not be told the agent is busy.
            try:
                self._send_json(status, payload)
            except (BrokenPipeError, ConnectionResetError):
                self.log_message("client went away before the result (HTTP %d) was sent", status)
        except HTTPError as error:
            if not body_read:
                self._send_error(error)
                self._drain_unread_body()
            else:
                self._send_error(error)

    def _content_lengths(self) -> tuple[int, int]:
        if self.headers.get("Transfer-Encoding"):
            raise HTTPError(411, "length_required", "send the artifact with a Content-Length, "
                            "not chunked")
        try:
            length = int(self.headers["Content-Length"])
            inputs_length = int(self.headers.get(INPUTS_HEADER, 0))
        except (TypeError, ValueError):
            raise HTTPError(411, "length_required", "a numeric Content-Length is required") \
                from None
        limit = self.server.config.max_upload_bytes
        if length > limit:  # decided from the header, before a byte of the body is read
            raise HTTPError(413, "too_large", f"upload of {length} bytes is over this agent's "
                            f"limit of {limit} bytes (--max-upload-mb)")
        if length <= 0 or not 0 <= inputs_length < length:
            raise HTTPError(400, "bad_length", f"Content-Length must be positive and larger "
                            f"than {INPUTS_HEADER}")
        return length, inputs_length

    def _receive(self, job_dir: str, length: int, inputs_length: int) -> tuple[str, str, str]:
        """Stream the body to files in the job's private dir; (model path, inputs path, sha256)."""
        model_path = os.path.join(job_dir, "model.bin")
        inputs_path = os.path.join(job_dir, "inputs.npz")
        digest = hashlib.sha256()
        targets = [(model_path, length - inputs_length, digest), (inputs_path, inputs_length,
                                                                   None)]
        for path, remaining, hasher in targets:
            with open(path, "wb") as out:
                while remaining > 0:
                    try:
                        block = self.rfile.read(min(CHUNK, remaining))
                    except (socket.timeout, TimeoutError):
                        raise HTTPError(408, "upload_timeout", "the request body stopped "
                                        f"arriving for {self.server.config.read_timeout_s:g} s")
                    if not block:
                        raise HTTPError(400, "incomplete_body", "the connection closed before "
                                        "Content-Length bytes arrived")
                    out.write(block)
                    if hasher:
                        hasher.update(block)
                    remaining -= len(block)
        return model_path, (inputs_path if inputs_length else None), digest.hexdigest()

    def _profile(self, params: dict, length: int, inputs_length: int) -> tuple[int, dict]:
        config = self.server.config
        job_dir = tempfile.mkdtemp(prefix="es-job-", dir=config.work_dir)  # mode 0700
        try:
            model_path, inputs_path, sha256 = self._receive(job_dir, length, inputs_length)
            fmt = measure.sniff_format(model_path)
            if fmt is None:
                raise HTTPError(415, "unsupported_format", "not a model: expected a TFLite "
                                "flatbuffer ('TFL3' at bytes 4..8) or an ONNX ModelProto")
            delegate_library = None
            if fmt == "tflite" and params["delegate"] not in (None, "none"):
                if params["delegate"] not in config.delegates:
                    raise HTTPError(400, "bad_parameter", f"delegate {params['delegate']!r} is "
                                    f"not allowlisted on this agent; allowlisted: "
                                    f"{sorted(config.delegates) or 'none'}")
                delegate_library = config.delegates[params["delegate"]]
            try:
                result = measure.profile_file(
                    model_path, params, sha256=sha256, time_limit_s=config.job_time_limit_s,
                    memory_limit_mb=config.memory_limit_mb, inputs_path=inputs_path,
                    delegate_library=delegate_library, work_dir=job_dir)
            except measure.ProfileFailure as failure:
                return 422, {"api": API_VERSION, "sha256": sha256, "format": fmt,
                             "error": failure.to_dict()}
            result["device"] = device.device_info()
            return 200, result
        finally:
            shutil.rmtree(job_dir, ignore_errors=True)


def serve(config: AgentConfig, ready=None) -> None:
    """Run the agent until interrupted. `ready(server)` is called once it is listening."""
    try:
        server = ProfilingAgent(config)
    except OSError as exc:
        raise UserError(f"cannot listen on {config.host}:{config.port} ({exc.strerror}); "
                        "pick another --port or --host") from None
    print(f"edgesparse agent {__version__} listening on {server.url} (API {API_VERSION})",
          flush=True)
    if config.host not in ("127.0.0.1", "::1", "localhost"):
        print("warning: listening beyond loopback over plain HTTP: the token and the models "
              "travel unencrypted; prefer an SSH tunnel or a trusted network", flush=True)
    if ready:
        ready(server)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def parse_delegates(pairs: list[str]) -> dict[str, str]:
    delegates = {}
    for pair in pairs:
        name, sep, library = pair.partition("=")
        if not sep or not name or not library:
            raise UserError(f"--allow-delegate wants NAME=LIBRARY, got {pair!r}")
        delegates[name] = library
    return delegates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgesparse.profile.agent",
                                     description="edgesparse on-device profiling agent")
    parser.add_argument("--token-file", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--max-upload-mb", type=float, default=256)
    parser.add_argument("--read-timeout", type=float, default=30.0)
    parser.add_argument("--job-timeout", type=float, default=measure.DEFAULT_TIME_LIMIT_S)
    parser.add_argument("--memory-limit-mb", type=int, default=measure.DEFAULT_MEMORY_LIMIT_MB,
                        help="address-space limit of the measuring child; 0 = none")
    parser.add_argument("--work-dir", default=None)
    parser.add_argument("--allow-delegate", action="append", default=[], metavar="NAME=LIBRARY")
    args = parser.parse_args(argv)
    try:
        config = AgentConfig(
            token=read_token(args.token_file), host=args.host, port=args.port,
            max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
            read_timeout_s=args.read_timeout, job_time_limit_s=args.job_timeout,
            memory_limit_mb=args.memory_limit_mb or None, work_dir=args.work_dir,
            delegates=parse_delegates(args.allow_delegate))
        serve(config)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
