"""A ready Prefect home for new state directories: a fresh ``REGROW_HOME`` starts its Prefect
server from a copy instead of migrating an empty database.

A Prefect server started on an empty home first runs every migration of its SQLite database
and registers the block types: on a 2-core machine that is about 8 s of the 14 s the first
start takes (6 s on a home that has started once). `build_template` starts a server once on a
home of its own, stops it and keeps that home, per Prefect version, in regrow's cache
(``REGROW_CACHE_DIR``, else ``$XDG_CACHE_HOME/regrow``, else ``~/.cache/regrow``); `make setup`
and the Docker image build it. `seed` copies it into a Prefect home that has no database yet.
A home that already has one is never touched, and without a template Prefect migrates as
before.

Prefect is run as a command (``python -m prefect server start``), not imported.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from regrow.tasks.store.settings import (  # noqa: F401 - CACHE_ENV: the variable it reads
    CACHE_ENV,
    Settings,
    cache_dir,
    place_copy,
)

DB_FILE = "prefect.db"
MEMO_FILE = "memo_store.toml"
KEPT = (DB_FILE, MEMO_FILE)  # the database and Prefect's record of its block types


def template_dir() -> Path | None:
    """The template home for the installed Prefect (None when Prefect is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return cache_dir() / f"prefect-home-{version('prefect')}"
    except PackageNotFoundError:
        return None


def seed(prefect_home: Path) -> bool:
    """Copy the template into `prefect_home` when that home has no database yet.

    Returns:
        True when the home was seeded; False when it had a database, no template was built,
        or the copy failed (Prefect then creates the database itself).
    """
    if (prefect_home / DB_FILE).exists():  # the common case: a stat, nothing more
        return False
    template = template_dir()
    if template is None or not (template / DB_FILE).is_file():
        return False
    if (template / MEMO_FILE).is_file():
        place_copy(template / MEMO_FILE, prefect_home / MEMO_FILE)
    return place_copy(template / DB_FILE, prefect_home / DB_FILE)


def seed_prefect_home(s: Settings) -> bool:
    """Before a Prefect server starts on regrow's Prefect home: give a home without a database
    the ready copy (`seed`). Only the home in ``PREFECT_HOME`` when it is
    ``$REGROW_HOME/prefect``, and only when ``PREFECT_API_DATABASE_CONNECTION_URL`` does not
    put the database elsewhere. Commands that start no server create no Prefect home.

    Returns:
        True when the home was seeded.
    """
    if os.environ.get("PREFECT_HOME") != str(s.prefect_home) \
            or os.environ.get("PREFECT_API_DATABASE_CONNECTION_URL"):
        return False
    return seed(s.prefect_home)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_template(timeout: float = 300.0) -> tuple[Path, float]:
    """Build the template for the installed Prefect unless it exists.

    Returns:
        (the template's folder, seconds spent: 0 when it existed).

    Raises:
        RuntimeError: Prefect is not installed, or its server did not answer within
            `timeout` seconds (its log is in the message).
    """
    import sqlite3
    import subprocess
    import tempfile
    import time

    from regrow.tasks.store.plane_state import http_ok

    target = template_dir()
    if target is None:
        raise RuntimeError("Prefect is not installed")
    if (target / DB_FILE).is_file():
        return target, 0.0
    started = time.perf_counter()
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".prefect-home-", dir=target.parent))
    try:
        port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(PREFECT_HOME=str(work), PREFECT_SERVER_ANALYTICS_ENABLED="false")
        log = work / "server.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                 "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout
            while not http_ok(f"http://127.0.0.1:{port}/api/health"):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the Prefect server for the template did not start: "
                                       + log.read_text(errors="replace")[-2000:])
                time.sleep(0.2)
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        with sqlite3.connect(work / DB_FILE) as db:  # fold the write-ahead log into the file
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        for extra in work.iterdir():
            if extra.name not in KEPT:
                shutil.rmtree(extra) if extra.is_dir() else extra.unlink()
            else:
                extra.chmod(0o644)  # readable by the service user of an image built as root
        work.chmod(0o755)
        try:
            os.replace(work, target)
        except OSError:  # built meanwhile by another process: theirs stands
            shutil.rmtree(work, ignore_errors=True)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return target, time.perf_counter() - started


def main() -> int:
    """``python -m regrow.runtime.prefect_home``: build the templates of a new home's Prefect
    and MLflow databases (run by `make setup`)."""
    from regrow.tasks.registry.mlflow_registry import build_store_template

    for what, build in (("Prefect home", build_template), ("MLflow store", build_store_template)):
        try:
            target, seconds = build()
        except RuntimeError as err:
            print(f"regrow: no {what} template ({err}); new homes migrate on first use",
                  file=sys.stderr)
            continue  # an optimisation: set-up goes on without it
        print(f"regrow: {what} template {target}"
              + (f" built in {seconds:.1f} s" if seconds else " (already built)"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
