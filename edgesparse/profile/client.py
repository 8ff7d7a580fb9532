"""Host side of the agent API: device_info() and profile_remote() over HTTP (stdlib http.client).

Every failure becomes an `AgentError` (a UserError) whose one-line message names the agent, what
went wrong and what to do; `.status` and `.code` carry the HTTP status and the API error code.
"""
from __future__ import annotations

import http.client
import json
import os
import socket
import time
from typing import Iterator
from urllib.parse import urlencode, urlsplit

from edgesparse.errors import UserError
from edgesparse.profile.token import read_token  # noqa: F401 - the one token reader, re-exported

INPUTS_HEADER = "X-Inputs-Length"
DEFAULT_PROFILE_TIMEOUT_S = 900.0  # the agent's own job limit (300 s) plus upload time
CHUNK = 1 << 20


class AgentError(UserError):
    def __init__(self, message: str, status: int | None = None, code: str | None = None,
                 payload: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.payload = status, code, payload or {}


def _split_url(url: str) -> tuple[str, str, int | None, str]:
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError(f"agent URL {url!r} is not http://HOST:PORT")
    return parts.scheme, parts.hostname, parts.port, parts.path.rstrip("/")


def _request(url: str, token: str, method: str, path: str, *, body=None,
             headers: dict | None = None, timeout: float = 30.0) -> tuple[int, dict, dict]:
    scheme, host, port, prefix = _split_url(url)
    cls = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
    conn = cls(host, port, timeout=timeout)
    all_headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    all_headers.update(headers or {})
    try:
        try:
            conn.request(method, prefix + path, body=body, headers=all_headers)
        except (BrokenPipeError, ConnectionResetError):
            # The agent answered early (401/409/413) and closed while we were still uploading:
            # its answer may still be readable.
            pass
        response = conn.getresponse()
        raw = response.read()
        status, response_headers = response.status, dict(response.getheaders())
    except (ConnectionRefusedError, socket.gaierror) as exc:
        raise AgentError(f"cannot reach agent at {url} ({exc.strerror or exc}); check the URL "
                         "and that `edgesparse agent serve` is running there") from None
    except (TimeoutError, socket.timeout):
        raise AgentError(f"agent at {url} did not answer within {timeout:g} s; is it reachable "
                         "and not stuck behind a firewall?") from None
    except (OSError, http.client.HTTPException) as exc:
        raise AgentError(f"connection to agent at {url} failed ({exc}); check the URL, the "
                         "network and the agent's log") from None
    finally:
        conn.close()
    try:
        payload = json.loads(raw) if raw else {}
    except ValueError:
        raise AgentError(f"{url} answered with something that is not JSON (HTTP {status}); "
                         "is it an edgesparse agent?", status) from None
    return status, response_headers, payload


def _raise_for(url: str, status: int, headers: dict, payload: dict) -> None:
    error = payload.get("error") or {}
    code, message = error.get("code"), error.get("message", "")
    hint = {
        401: "check --token-file: it must hold the token the agent was started with",
        408: "the upload stalled or was slower than the agent's --min-upload-rate-kb; check the "
             "network",
        409: f"it is busy with another profile; retry in {headers.get('Retry-After', '?')} s",
        413: "raise the agent's --max-upload-mb or shrink the artifact",
        415: "send a .tflite or .onnx artifact",
        503: "it has --max-connections connections open; retry shortly",
    }.get(status, "see the agent's log")
    raise AgentError(f"agent at {url} refused (HTTP {status} {code}): {message}; {hint}",
                     status, code, payload)


def device_info(url: str, token: str, *, timeout: float = 30.0) -> dict:
    """GET /v1/device: CPU, cores, memory, OS, runtimes, power sensors, limits."""
    status, headers, payload = _request(url, token, "GET", "/v1/device", timeout=timeout)
    if status != 200:
        _raise_for(url, status, headers, payload)
    return payload


def _body(paths: list[str]) -> Iterator[bytes]:
    for path in paths:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(CHUNK), b""):
                yield block


def profile_remote(url: str, token: str, artifact_path, *, inputs_path=None,
                   timeout: float = DEFAULT_PROFILE_TIMEOUT_S, busy_retries: int = 0,
                   **params) -> dict:
    """POST /v1/profile: upload the artifact, return the agent's JSON result.

    params: runs, warmup, min_seconds, threads, runtime, delegate, seed, idle_power_w,
    active_power_w (None values are left out). inputs_path: an .npz of inputs (else synthetic).
    busy_retries: how many times to wait out a 409 (Retry-After) before giving up.
    A model the agent could not profile raises AgentError with status 422 and its code.
    """
    artifact = os.fspath(artifact_path)
    if not os.path.isfile(artifact):
        raise UserError(f"no such artifact: {artifact}")
    files = [artifact] + ([os.fspath(inputs_path)] if inputs_path else [])
    inputs_length = os.path.getsize(files[1]) if inputs_path else 0
    query = urlencode({k: v for k, v in params.items() if v is not None})
    headers = {"Content-Type": "application/octet-stream",
               "Content-Length": str(sum(os.path.getsize(p) for p in files))}
    if inputs_length:
        headers[INPUTS_HEADER] = str(inputs_length)
    for attempt in range(busy_retries + 1):
        status, response_headers, payload = _request(
            url, token, "POST", "/v1/profile" + (f"?{query}" if query else ""),
            body=_body(files), headers=headers, timeout=timeout)
        if status == 409 and attempt < busy_retries:
            time.sleep(float(response_headers.get("Retry-After", 5)))
            continue
        break
    if status == 422:
        error = payload.get("error", {})
        raise AgentError(f"agent at {url} could not profile {os.path.basename(artifact)} "
                         f"({error.get('code')}): {error.get('message')}",
                         status, error.get("code"), payload)
    if status != 200:
        _raise_for(url, status, response_headers, payload)
    payload["agent"] = url
    return payload
