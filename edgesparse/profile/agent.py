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
import io
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
DRAIN_IDLE_S = 0.2                  # ...and how long one read of it may wait

# The defaults of both front ends (`edgesparse agent serve` and `python -m ...agent`), in one place.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
DEFAULT_MAX_UPLOAD_MB = 256.0
DEFAULT_HEADER_TIMEOUT_S = 10.0     # request line + headers, in total, from the accept
DEFAULT_READ_TIMEOUT_S = 30.0       # one socket read; also the shortest body deadline
DEFAULT_MIN_UPLOAD_KIB_S = 64.0     # a body deadline grows with its size at this rate
DEFAULT_MAX_CONNECTIONS = 16        # connections handled at once; more get 503


@dataclass
class AgentConfig:
    token: str
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    max_upload_bytes: int = int(DEFAULT_MAX_UPLOAD_MB * 1024 * 1024)
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S
    read_timeout_s: float = DEFAULT_READ_TIMEOUT_S
    min_upload_bytes_per_s: float = DEFAULT_MIN_UPLOAD_KIB_S * 1024
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    job_time_limit_s: float = measure.DEFAULT_TIME_LIMIT_S
    memory_limit_mb: int | None = measure.DEFAULT_MEMORY_LIMIT_MB
    work_dir: str | None = None        # where uploads are written (a private dir per job)
    delegates: dict[str, str] = field(default_factory=dict)  # name -> library, operator's choice

    def body_deadline_s(self, length: int) -> float:
        """Time allowed for a body of `length` bytes, in total: never less than one read timeout,
        more for a big body, but never less than the minimum upload rate."""
        return max(self.read_timeout_s, length / self.min_upload_bytes_per_s)


def config_from_options(*, token_file, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                        max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
                        header_timeout: float = DEFAULT_HEADER_TIMEOUT_S,
                        read_timeout: float = DEFAULT_READ_TIMEOUT_S,
                        min_upload_rate_kb: float = DEFAULT_MIN_UPLOAD_KIB_S,
                        max_connections: int = DEFAULT_MAX_CONNECTIONS,
                        job_timeout: float = measure.DEFAULT_TIME_LIMIT_S,
                        memory_limit_mb: int = measure.DEFAULT_MEMORY_LIMIT_MB,
                        work_dir=None, allow_delegate=()) -> AgentConfig:
    """The AgentConfig for command-line options (units as the flags have them), checked."""
    positive = {"--max-upload-mb": max_upload_mb, "--header-timeout": header_timeout,
                "--read-timeout": read_timeout, "--min-upload-rate-kb": min_upload_rate_kb,
                "--max-connections": max_connections, "--job-timeout": job_timeout}
    for flag, value in positive.items():
        if not value > 0:
            raise UserError(f"{flag} must be positive, got {value}")
    if not 0 <= port <= 65535:
        raise UserError(f"--port must be a TCP port from 0 to 65535 (0: any free port), got {port}")
    if memory_limit_mb < 0:
        raise UserError(f"--memory-limit-mb must be 0 (no limit) or positive, got {memory_limit_mb}")
    # Checked here, not per job: a file or a missing folder made every job die with a traceback in
    # the agent's log and a dropped connection at the client.
    if work_dir is not None and not os.path.isdir(work_dir):
        raise UserError(f"--work-dir {work_dir} is not a folder; give an existing folder for uploads")
    if work_dir is not None and not os.access(work_dir, os.W_OK | os.X_OK):
        raise UserError(f"--work-dir {work_dir} is not writable by this user")
    return AgentConfig(
        token=read_token(token_file), host=host, port=port,
        max_upload_bytes=int(max_upload_mb * 1024 * 1024), header_timeout_s=header_timeout,
        read_timeout_s=read_timeout, min_upload_bytes_per_s=min_upload_rate_kb * 1024,
        max_connections=int(max_connections), job_time_limit_s=job_timeout,
        memory_limit_mb=memory_limit_mb or None, work_dir=os.fspath(work_dir) if work_dir else None,
        delegates=parse_delegates(list(allow_delegate or [])))


class HTTPError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


class ClientGone(Exception):
    """The client closed or reset the connection; there is nobody left to answer."""


class DeadlineReader(io.RawIOBase):
    """The connection's socket, read under the agent's one deadline policy.

    A per-read timeout alone restarts with every byte, so a client that drips a byte at a time
    would hold its thread forever. Here every read waits at most `idle_s` *and* all reads of the
    current phase (request line + headers, then the body) end at one total deadline.
    """

    def __init__(self, sock: socket.socket, idle_s: float):
        self._sock, self._idle_s = sock, idle_s
        self.phase, self.deadline, self.seconds = "", math.inf, math.inf

    def start(self, phase: str, seconds: float, idle_s: float | None = None) -> None:
        self.phase, self.seconds, self.deadline = phase, seconds, time.monotonic() + seconds
        if idle_s is not None:
            self._idle_s = idle_s

    def expired(self) -> bool:
        return time.monotonic() >= self.deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        remaining = self.deadline - time.monotonic()
        if remaining > 0:
            self._sock.settimeout(min(self._idle_s, remaining))
            try:
                return self._sock.recv_into(buffer)
            except TimeoutError:
                if not self.expired():
                    raise  # this read waited idle_s: the socket's own "timed out"
        raise TimeoutError(f"{self.phase} took longer than {self.seconds:g} s")


class ProfilingAgent(ThreadingHTTPServer):
    daemon_threads = True  # a stuck client thread must not keep the process alive on shutdown

    def __init__(self, config: AgentConfig):
        self.config = config
        self.job_lock = threading.Lock()
        self.job_started = 0.0
        self.job_expected_s = 0.0
        # One thread per connection, but never more than max_connections of them.
        self.connection_slots = threading.BoundedSemaphore(config.max_connections)
        super().__init__((config.host, config.port), AgentHandler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def retry_after_s(self) -> int:
        """Seconds until the running job is expected to end; never past its time limit."""
        limit = self.config.job_time_limit_s
        remaining = min(self.job_expected_s, limit) - (time.monotonic() - self.job_started)
        return max(1, min(math.ceil(limit), math.ceil(remaining)))

    def process_request(self, request, client_address) -> None:
        if not self.connection_slots.acquire(blocking=False):
            self._refuse_overloaded(request, client_address)
            return
        try:
            super().process_request(request, client_address)  # starts the connection's thread
        except BaseException:
            self.connection_slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.connection_slots.release()

    def _refuse_overloaded(self, request: socket.socket, client_address) -> None:
        """503 and close, at once, on the accepting thread (so without a thread of its own)."""
        body = json.dumps({"api": API_VERSION, "error": {
            "code": "overloaded", "message": f"{self.config.max_connections} connections are "
            "open (--max-connections); retry shortly"}}).encode("utf-8")
        head = ("HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n")
        try:
            request.setblocking(False)  # a few hundred bytes fit an empty send buffer
            try:
                request.recv(CHUNK)  # drop what already arrived, so close() does not send RST
            except BlockingIOError:
                pass
            request.send(head.encode("ascii") + body)
        except OSError:
            pass
        sys.stderr.write(f"[agent] {client_address[0]} refused with 503: "
                         f"{self.config.max_connections} connections open\n")
        self.shutdown_request(request)


class AgentHandler(BaseHTTPRequestHandler):
    server: ProfilingAgent
    server_version = f"edgesparse-agent/{__version__}"
    protocol_version = "HTTP/1.1"  # for Expect: 100-continue; every response still closes

    def setup(self) -> None:
        config = self.server.config
        self.timeout = config.read_timeout_s  # also bounds each write to a client that stops reading
        super().setup()
        self.rfile.close()  # the stdlib's reader: replaced by one under the deadline policy
        self.reader = DeadlineReader(self.connection, config.read_timeout_s)
        self.reader.start("request line and headers", config.header_timeout_s)
        self.rfile = io.BufferedReader(self.reader)

    def handle(self) -> None:
        try:
            super().handle()
        except ClientGone as gone:
            self.log_message("client went away: %s", gone)
        except ConnectionError as exc:
            self.log_message("client went away (%s)", exc.strerror or type(exc).__name__)
        except Exception as exc:     # a bug or a broken host: one log line and a JSON 500, not a
            first = (str(exc).strip().splitlines() or [""])[0][:200]   # traceback and a dropped connection
            self.log_message("internal error: %s: %s", type(exc).__name__, first)
            if not getattr(self, "_answered", False):
                try:
                    self._send_error(HTTPError(500, "internal", f"the agent failed: {type(exc).__name__}: "
                                               f"{first}; see the agent's log"))
                except OSError:
                    pass

    # -- plumbing -------------------------------------------------------------------------
    def _send_json(self, status: int, payload: dict, headers: dict | None = None) -> None:
        body = json.dumps(payload).encode("utf-8")
        # The reads left the socket's timeout at whatever remained of their deadline.
        self.connection.settimeout(self.server.config.read_timeout_s)
        self._answered = True
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        for key, value in (headers or {}).items():
            self.send_header(key, str(value))
        self.end_headers()
        if self.command != "HEAD":  # a HEAD answer has headers only
            self.wfile.write(body)
        self.close_connection = True

    def _send_error(self, error: HTTPError, extra: dict | None = None) -> None:
        payload = {"api": API_VERSION, "error": {"code": error.code, "message": error.message}}
        payload.update(extra or {})
        self._send_json(error.status, payload, error.headers)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The stdlib's own refusals (bad request line, headers too long, unknown method), as JSON.

        The stdlib answers a method without a do_* handler with 501; for this API it is a 405.
        """
        if code == 501:
            error = HTTPError(405, "method_not_allowed", f"method {self.command} is not supported: "
                              f"use GET /{API_VERSION}/device or POST /{API_VERSION}/profile",
                              {"Allow": "GET, POST"})
        else:
            error = HTTPError(code, "bad_request", message or "malformed request")
        self._send_error(error)
        self._drain_unread_body()

    def _drain_unread_body(self) -> None:
        """Read and drop what the client is still sending, briefly, so it sees our response.

        Closing a socket with unread data makes the kernel send a reset, and the client may
        then lose our 401/409/413 answer and see only 'connection reset'.
        """
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            self.reader.start("drain", DRAIN_LIMIT_S, idle_s=DRAIN_IDLE_S)
            while self.rfile.read1(CHUNK):
                pass
        except OSError:  # includes the drain's own timeouts
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
                       "read_timeout_s": config.read_timeout_s,
                       "header_timeout_s": config.header_timeout_s,
                       "min_upload_bytes_per_s": config.min_upload_bytes_per_s,
                       "max_connections": config.max_connections},
            "busy": self.server.job_lock.locked(),
        })
        return info

    def do_POST(self) -> None:  # noqa: N802
        path, query = self._route()
        config = self.server.config
        try:
            self._check_token()
            if path != f"/{API_VERSION}/profile":
                raise HTTPError(404, "not_found", f"no endpoint POST {path}; see /v1/profile")
            try:
                params = measure.validate_params(query)
            except ValueError as exc:
                raise HTTPError(400, "bad_parameter", str(exc)) from None
            length, inputs_length = self._content_lengths()
        except HTTPError as error:
            self._send_error(error)
            self._drain_unread_body()
            return
        job_dir = tempfile.mkdtemp(prefix="es-job-", dir=config.work_dir)  # mode 0700
        try:
            try:
                self.reader.start("body", config.body_deadline_s(length))
                upload = self._receive(job_dir, length, inputs_length)
            except HTTPError as error:  # the body is still arriving: drain so 408 is seen
                self._send_error(error)
                self._drain_unread_body()
                return
            # Only now, with the whole body on disk, may the job take the one-job lock: a slow
            # upload holds its own connection, never everyone else's profiles.
            try:
                status, payload = self._profile(params, *upload)
            except HTTPError as error:
                self._send_error(error)
                return
        finally:
            shutil.rmtree(job_dir, ignore_errors=True)
        # Answer only after the lock is free: a client that sends its next job as soon as
        # it has this answer must not be told the agent is busy.
        try:
            self._send_json(status, payload)
        except ConnectionError:
            self.log_message("client went away before the result (HTTP %d) was sent", status)

    def _length_header(self, name: str, required: bool) -> int:
        """A length header as ASCII digits only: `+10`, `1_0`, `0x10` or ` 10` are no lengths.

        (int() would read all of those as numbers; a proxy in front may read them otherwise,
        which is how request smuggling starts.)
        """
        values = self.headers.get_all(name) or []
        if not values:
            if required:
                raise HTTPError(411, "length_required", "a Content-Length is required")
            return 0
        if len(values) > 1:
            raise HTTPError(400, "bad_length", f"{name} is given {len(values)} times; send it once")
        value = values[0]
        if not (value.isascii() and value.isdigit()) or len(value) > 20:
            raise HTTPError(400, "bad_length", f"{name} must be a decimal number of bytes (digits "
                            f"only), got {value!r}")
        return int(value)

    def _content_lengths(self) -> tuple[int, int]:
        if self.headers.get("Transfer-Encoding"):
            raise HTTPError(411, "length_required", "send the artifact with a Content-Length, "
                            "not chunked")
        length = self._length_header("Content-Length", required=True)
        inputs_length = self._length_header(INPUTS_HEADER, required=False)
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
        received = 0
        for path, remaining, hasher in targets:
            with open(path, "wb") as out:
                while remaining > 0:
                    try:
                        block = self.rfile.read1(min(CHUNK, remaining))
                    except TimeoutError:
                        raise HTTPError(408, "upload_timeout", self._upload_timeout_message(
                            received, length)) from None
                    except ConnectionError as exc:
                        raise ClientGone(f"{exc.strerror or type(exc).__name__} after {received} "
                                         f"of {length} body bytes") from None
                    if not block:
                        raise ClientGone(f"closed the connection after {received} of {length} "
                                         "body bytes")
                    out.write(block)
                    if hasher:
                        hasher.update(block)
                    remaining -= len(block)
                    received += len(block)
        return model_path, (inputs_path if inputs_length else None), digest.hexdigest()

    def _upload_timeout_message(self, received: int, length: int) -> str:
        config = self.server.config
        if self.reader.expired():
            return (f"the body was not complete after {self.reader.seconds:g} s ({received} of "
                    f"{length} bytes): this agent needs at least "
                    f"{config.min_upload_bytes_per_s / 1024:g} KiB/s (--min-upload-rate-kb)")
        return (f"the request body stopped arriving for {config.read_timeout_s:g} s "
                f"({received} of {length} bytes)")

    def _profile(self, params: dict, model_path: str, inputs_path: str | None,
                 sha256: str) -> tuple[int, dict]:
        config = self.server.config
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
        if not self.server.job_lock.acquire(blocking=False):
            raise HTTPError(409, "busy", "another profile is running; retry later",
                            {"Retry-After": self.server.retry_after_s()})
        try:
            self.server.job_started = time.monotonic()
            self.server.job_expected_s = min(params["min_seconds"] + 5.0, config.job_time_limit_s)
            result = measure.profile_file(
                model_path, params, sha256=sha256, time_limit_s=config.job_time_limit_s,
                memory_limit_mb=config.memory_limit_mb, inputs_path=inputs_path,
                delegate_library=delegate_library, work_dir=os.path.dirname(model_path))
        except measure.ProfileFailure as failure:
            return 422, {"api": API_VERSION, "sha256": sha256, "format": fmt,
                         "error": failure.to_dict()}
        finally:
            self.server.job_lock.release()
        result["device"] = device.device_info()
        return 200, result


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
        if "/" in library and not os.path.isfile(library):   # a bare name is for dlopen's search path
            raise UserError(f"--allow-delegate {name}: the library {library} does not exist; give the "
                            "path of the delegate's .so, or its bare name if it is on the library path")
        delegates[name] = library
    return delegates


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m edgesparse.profile.agent",
                                     description="edgesparse on-device profiling agent "
                                     "(the same as `edgesparse agent serve`)")
    parser.add_argument("--token-file", required=True)
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB)
    parser.add_argument("--header-timeout", type=float, default=DEFAULT_HEADER_TIMEOUT_S)
    parser.add_argument("--read-timeout", type=float, default=DEFAULT_READ_TIMEOUT_S)
    parser.add_argument("--min-upload-rate-kb", type=float, default=DEFAULT_MIN_UPLOAD_KIB_S)
    parser.add_argument("--max-connections", type=int, default=DEFAULT_MAX_CONNECTIONS)
    parser.add_argument("--job-timeout", type=float, default=measure.DEFAULT_TIME_LIMIT_S)
    parser.add_argument("--memory-limit-mb", type=int, default=measure.DEFAULT_MEMORY_LIMIT_MB,
                        help="address-space limit of the measuring child; 0 = none")
    parser.add_argument("--work-dir", default=None)
    parser.add_argument("--allow-delegate", action="append", default=[], metavar="NAME=LIBRARY")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = argument_parser().parse_args(argv)
    try:
        serve(config_from_options(**vars(args)))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
