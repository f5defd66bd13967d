"""Processes and databases the tests and benchmarks start: ports, health checks, teardown."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

PG_ADMIN_URL = os.environ.get("REGROW_TEST_PG_ADMIN_URL",
                              "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 180.0, proc: subprocess.Popen | None = None,
              log: Path | None = None) -> None:
    """Poll a URL until it answers 200; fail early if `proc` exits (showing its `log`)."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-3000:] if log else ""
            raise RuntimeError(f"{proc.args[:4]} exited {proc.returncode}:\n{tail}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} did not come up within {timeout} s")


def start_prefect_server(home: Path, timeout: float = 180.0,
                         **env: str) -> tuple[subprocess.Popen, str]:
    """`prefect server start` on a free loopback port, on its own PREFECT_HOME (the caller's
    other PREFECT_ variables dropped, `env` added), logging to ``home/server.log``; returns
    once it answers: (process, API URL). End it with `stop`."""
    import sys

    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    full = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    full.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", **env)
    with open(home / "server.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host",
                                 "127.0.0.1", "--port", str(port)], env=full, stdout=log,
                                stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/api"
    try:
        wait_http(f"{url}/health", timeout, proc=proc, log=home / "server.log")
    except BaseException:
        stop(proc)
        raise
    return proc, url


def wait_for(check, timeout: float, message, interval: float = 0.3):
    """Poll `check` until it returns something truthy (returned) or `timeout` seconds pass
    (AssertionError with `message`, or what `message()` returns)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(message() if callable(message) else message)


def stop(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM, then SIGKILL after `timeout` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def pg_database() -> Iterator[str]:
    """A new, empty PostgreSQL database on the test server, dropped afterwards; yields its URL.

    Raises:
        RuntimeError: the server is not reachable.
    """
    import sqlalchemy as sa

    name = f"regrow_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as err:
        raise RuntimeError(f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {err}") from None
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def wait_paused(home: Path, point: str, proc: subprocess.Popen, timeout: float = 900) -> None:
    """Wait until a run held by ``REGROW_TEST_PAUSE_AT`` reaches `point` (its marker file in
    `home`); fails when the run ends first or `timeout` passes."""
    marker = home / f"paused-at-{point}"
    t0 = time.monotonic()
    while not marker.exists():
        if proc.poll() is not None:
            raise AssertionError(f"run ended before {point}: {proc.communicate()}")
        assert time.monotonic() - t0 < timeout, f"never paused at {point}"
        time.sleep(0.1)
    marker.unlink()


def kill9(proc: subprocess.Popen) -> float:
    """SIGKILL `proc` and reap it; the monotonic time just after."""
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    return time.monotonic()
