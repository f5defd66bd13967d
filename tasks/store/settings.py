"""Where regrow keeps its state. Read from the environment when called, never at import."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    """Resolved locations of every store regrow writes to.

    Attributes:
        home: the state directory (``REGROW_HOME``, default ``~/.regrow``).
        tracking_uri: MLflow tracking + registry store (``MLFLOW_TRACKING_URI``).
        artifact_root: where MLflow artifacts go when the tracking store is local.
        database_url: the monitoring store (``REGROW_DATABASE_URL``).
        reports_dir: HTML/JSON reports.
        prefect_home: Prefect's home for local (ephemeral) runs.
        run_dir: pid files, logs and state of the local control plane (`regrow up`).
    """

    home: Path
    tracking_uri: str
    artifact_root: Path
    database_url: str
    reports_dir: Path
    prefect_home: Path

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @classmethod
    def from_env(cls) -> Settings:
        """Build settings from the environment, creating the state directory."""
        home = Path(os.environ.get("REGROW_HOME") or Path.home() / ".regrow").expanduser()
        home = home.resolve()
        home.mkdir(parents=True, exist_ok=True)
        tracking = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home / 'mlflow.db'}"
        database = os.environ.get("REGROW_DATABASE_URL") or f"sqlite:///{home / 'regrow.db'}"
        return cls(
            home=home,
            tracking_uri=tracking,
            artifact_root=home / "mlartifacts",
            database_url=database,
            reports_dir=home / "reports",
            prefect_home=home / "prefect",
        )


CACHE_ENV = "REGROW_CACHE_DIR"


def cache_dir() -> Path:
    """Where regrow keeps what it can rebuild (``REGROW_CACHE_DIR``, else the user cache)."""
    explicit = os.environ.get(CACHE_ENV, "").strip()
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or str(Path.home() / ".cache")
    return Path(base) / "regrow"


def place_copy(source: Path, target: Path, edit=None) -> bool:
    """Copy `source` to `target` unless `target` exists. The copy is made (and `edit`ed, when
    given a function of its path) under a temporary name, then hard-linked in: no reader
    sees half a file, and a file another process placed meanwhile stands.

    Returns:
        True when this call placed the file; False when it existed or the copy failed.
    Raises:
        whatever `edit` raises besides OSError (the temporary copy is removed).
    """
    import contextlib
    import shutil

    if target.exists():
        return False
    partial = target.with_name(f".{target.name}.{os.getpid()}.copying")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, partial)
        if edit is not None:
            edit(partial)
        os.link(partial, target)
    except OSError:
        return False
    finally:
        with contextlib.suppress(OSError):
            partial.unlink()
    return True


def configure_process_env(verbose: bool = False) -> Settings:
    """Point Prefect and MLflow at the state directory before either is imported.

    Values already set in the environment win, so a Prefect server (``PREFECT_API_URL``) or
    an MLflow server (``MLFLOW_TRACKING_URI``) is used as soon as it is configured. While the
    local control plane (`regrow up`) runs, its Prefect server is the default
    ``PREFECT_API_URL`` (no temporary server is started). Unless
    `verbose`, library log lines stay off the console (they still reach the Prefect API): the
    command prints its own summary and its own error message.
    """
    s = Settings.from_env()
    if not os.environ.get("PREFECT_API_URL"):
        from regrow.tasks.store.plane_state import prefect_api_url

        api = prefect_api_url(s.run_dir)  # a JSON read and a /proc read: no HTTP call
        if api:
            os.environ["PREFECT_API_URL"] = api
    os.environ.setdefault("PREFECT_HOME", str(s.prefect_home))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # A fresh Prefect home runs its migrations on first start: give a busy machine time.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")  # what run logs the Prefect UI gets
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    # MLflow's defaults retry an unreachable tracking server for about 4 minutes (7 retries,
    # backoff factor 2, 120 s timeout); a command should give up within seconds and say so.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    if not verbose:
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
    return s


TRAIN_NICE_ENV = "REGROW_TRAIN_NICE"
DEFAULT_TRAIN_NICE = 10


class SettingError(ValueError):
    """An environment setting regrow reads holds a value it cannot use."""


def train_nice() -> int:
    """The CPU priority trainings run at: ``REGROW_TRAIN_NICE``, a nice value 0-19 (default 10;
    0 leaves the process as it is).

    Raises:
        SettingError: the value is not a whole number from 0 to 19.
    """
    raw = os.environ.get(TRAIN_NICE_ENV, "").strip() or str(DEFAULT_TRAIN_NICE)
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not 0 <= value <= 19:
        raise SettingError(f"{TRAIN_NICE_ENV}={raw!r}: expected a nice value, a whole number "
                           "from 0 (normal priority) to 19 (lowest)")
    return value


def lower_priority_for_training() -> int:
    """Let the work a training does (fitting, scoring, logging) yield the CPU to latency-bound
    parts on the same machine: the webhook receiver, the Prefect and MLflow servers, a person's
    commands. Raises this thread's nice value to `train_nice` (never lowers it: a process
    already nicer stays so); threads started from here (native thread pools) inherit it.
    On an idle machine it changes nothing. Returns the nice value now in effect.

    Raises:
        SettingError: ``REGROW_TRAIN_NICE`` is not a nice value.
    """
    target = train_nice()
    if not hasattr(os, "getpriority"):  # not a POSIX system
        return 0
    current = os.getpriority(os.PRIO_PROCESS, 0)
    if target > current:
        os.setpriority(os.PRIO_PROCESS, 0, target)
        return target
    return current
