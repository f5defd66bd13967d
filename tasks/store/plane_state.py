"""The local control plane's state file, as every command reads it. Standard library only.

`regrow up` (``regrow/runtime/control.py``) writes ``$REGROW_HOME/run/plane.json``: the plane's id and,
per part (``prefect``, ``mlflow``, ``serve``, ``webhook``), its pid, the pid's start time (from
``/proc/<pid>/stat``), its command line, URLs, port and log file. A pid counts as the part only
while the process with that pid has the recorded start time and command line, so a pid reused
by another program is never taken for a part (nor signalled). Linux only (reads ``/proc``);
elsewhere no part is ever alive and commands run as without a plane.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

STATE_FILE = "plane.json"


def state_path(run_dir: Path) -> Path:
    """Where the state file of the plane of a state directory's ``run/`` folder lives."""
    return run_dir / STATE_FILE


def read_state(run_dir: Path) -> dict[str, Any] | None:
    """The plane's state, or None when there is none (or it cannot be read)."""
    try:
        with open(state_path(run_dir), encoding="utf-8") as f:
            state = json.load(f)
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) and isinstance(state.get("parts"), list) else None


def write_state(run_dir: Path, state: dict[str, Any]) -> None:
    """Replace the state file atomically (readers never see half a file)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / f".{STATE_FILE}.{os.getpid()}"
    tmp.write_text(json.dumps(state, indent=2), encoding="utf-8")
    os.replace(tmp, state_path(run_dir))


def start_time(pid: int) -> int | None:
    """The start time of a live (not zombie) process, in clock ticks since boot; None if gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if not fields or fields[0] in ("Z", "X"):  # a zombie or dead task is no longer running
        return None
    try:
        return int(fields[19])  # field 22 of stat; fields[0] is field 3
    except (IndexError, ValueError):
        return None


def cmdline(pid: int) -> list[str] | None:
    """A process's command line, or None if it is gone or unreadable."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    return [a.decode(errors="replace") for a in raw.split(b"\0")[:-1]] if raw else []


def part_alive(part: dict[str, Any], check_cmdline: bool = True) -> bool:
    """Whether the recorded process of a part still runs (same pid, start time and command)."""
    pid, started = part.get("pid"), part.get("starttime")
    if not isinstance(pid, int) or pid <= 0 or start_time(pid) != started:
        return False
    if not check_cmdline:
        return True
    argv = cmdline(pid)
    return argv is not None and argv == part.get("argv")


def live_part(run_dir: Path, name: str, argv_has: str | None = None) -> dict[str, Any] | None:
    """The plane's part `name` when the plane is up and that part's process runs (and, with
    `argv_has`, its command line holds that argument); None otherwise.

    Cheap enough for every command: one JSON read and one ``/proc`` read, no HTTP call.
    """
    state = read_state(run_dir)
    if not state or not state.get("ready"):
        return None
    for part in state["parts"]:
        if isinstance(part, dict) and part.get("name") == name \
                and (argv_has is None or argv_has in (part.get("argv") or [])):
            with contextlib.suppress(Exception):
                if part_alive(part, check_cmdline=False):
                    return part
    return None


def prefect_api_url(run_dir: Path) -> str | None:
    """The API URL of the plane's Prefect server when the plane is up and that server runs."""
    part = live_part(run_dir, "prefect")
    return None if part is None else part.get("api_url")


def serving_mlflow_url(run_dir: Path, store_uri: str) -> str | None:
    """The URL of the plane's MLflow UI when the plane is up and serves the store `store_uri`
    (its command line names it); None otherwise."""
    part = live_part(run_dir, "mlflow", argv_has=store_uri)
    return None if part is None else part.get("url")


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """Whether a local HTTP endpoint answers 200 within `timeout` seconds (a part's health URL;
    commands that only read the state file never call it)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - our own http URL
            return r.status == 200
    except (OSError, ValueError, urllib.error.URLError):
        return False
