"""Shared fixtures: an isolated state dir per test, one Prefect test server per session."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Before anything imports prefect: the session's Prefect home and quiet settings.
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="regrow-tests-"))
os.environ["PREFECT_HOME"] = str(_SESSION_DIR / "prefect")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ["REGROW_HOME"] = str(_SESSION_DIR / "home")
for _var in ("MLFLOW_TRACKING_URI", "REGROW_DATABASE_URL", "PREFECT_API_URL"):
    os.environ.pop(_var, None)


@pytest.fixture(scope="session")
def prefect_harness():
    """A real Prefect API (temporary SQLite database) for every flow run in the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh REGROW_HOME (MLflow store, monitoring store) for one test."""
    h = tmp_path / "regrow-home"
    monkeypatch.setenv("REGROW_HOME", str(h))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("REGROW_DATABASE_URL", raising=False)
    return h
