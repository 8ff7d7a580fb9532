"""A throwaway PostgreSQL server for the distributed-search tests.

`throwaway_cluster()` runs initdb in a fresh temporary directory, starts the server on a free port
on 127.0.0.1 (no Unix socket outside that directory, no other address), yields its URL, then stops
the server and removes the directory. `.ci/run` installs Debian's postgresql so the binaries are
there on a fresh machine; a test that needs the server skips only when the binaries are absent
and EDGESPARSE_REQUIRE_POSTGRES is unset (CI sets it, so there it fails instead).

initdb and postgres refuse to run as root, and CI runs as root: then the cluster runs as the
`postgres` system user (created by the Debian package) through runuser.
"""
from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def _bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def available() -> bool:
    return all(_bin(n) for n in ("initdb", "pg_ctl"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_user(argv: list[str]) -> tuple[list[str], str | None]:
    """(command, user) that runs argv as a non-root user when we are root."""
    if os.geteuid() != 0:
        return argv, None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise RuntimeError("running as root and there is no 'postgres' user to run the server as; "
                           "install Debian's postgresql package") from None
    return ["runuser", "-u", "postgres", "--", *argv], "postgres"


@contextlib.contextmanager
def throwaway_cluster(timeout_s: float = 30.0):
    """Yield a postgresql:// URL of a fresh, empty server; everything is removed afterwards."""
    initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
    if not (initdb and pg_ctl):
        raise RuntimeError("PostgreSQL is not installed (initdb/pg_ctl not found)")
    root = Path(tempfile.mkdtemp(prefix="edgesparse-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    _, user = _as_user([])
    if user:
        info = pwd.getpwnam(user)
        for p in (root, sock):
            os.chown(p, info.pw_uid, info.pw_gid)
    password = "edgesparse-test"
    pwfile = root / "pw"
    pwfile.write_text(password)
    if user:
        os.chown(pwfile, pwd.getpwnam(user).pw_uid, -1)
    port = _free_port()
    log = root / "server.log"
    started = False
    try:
        cmd, _ = _as_user([initdb, "-D", str(data), "-U", "edgesparse", "--pwfile", str(pwfile),
                           "-A", "scram-sha-256", "--no-sync", "-E", "UTF8"])
        subprocess.run(cmd, check=True, capture_output=True, timeout=timeout_s * 2)
        opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {sock} -c fsync=off"
        cmd, _ = _as_user([pg_ctl, "-D", str(data), "-o", opts, "-l", str(log), "-w",
                           "-t", str(int(timeout_s)), "start"])
        subprocess.run(cmd, check=True, capture_output=True, timeout=timeout_s * 2)
        started = True
        url = f"postgresql://edgesparse:{password}@127.0.0.1:{port}/postgres"
        _wait_ready(port, timeout_s)
        yield url
    finally:
        if started:
            cmd, _ = _as_user([pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"])
            subprocess.run(cmd, capture_output=True, timeout=timeout_s)
        shutil.rmtree(root, ignore_errors=True)


def _wait_ready(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.1)
    raise RuntimeError(f"PostgreSQL did not accept connections on 127.0.0.1:{port}")
