"""Shared fixtures: an isolated state dir per test, one Prefect test server per session (per
worker: the suite runs on one pytest-xdist worker per core, a test file to a worker)."""

from __future__ import annotations

import os
import sys
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


# Modules whose tests start processes or servers, train through the flows or sweep statistics
# (tens of seconds each): with the `slow` tests and every test on a Prefect server, they are
# marked `heavy` and left out of `make test-fast` (`-m "not heavy"`), the quick loop.
HEAVY_MODULES = {
    "test_backtest", "test_backtest_compare", "test_backtest_live",
    "test_calibration", "test_card", "test_challenger", "test_cli", "test_cluster", "test_containers",
    "test_control", "test_docs", "test_estimate", "test_faults", "test_faults_crashes", "test_faults_inputs",
    "test_faults_outages", "test_features_flow", "test_history_races", "test_infra", "test_init",
    "test_monitoring", "test_namespace", "test_notify", "test_pages", "test_predict_server",
    "test_prefect_home",
    "test_reproduce", "test_serve", "test_warm", "test_webhook"}
SERVER_FIXTURES = {"prefect_harness", "prefect_server"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the `heavy` tests (see HEAVY_MODULES); then files with end-to-end (``slow``) tests
    first: workers take one file at a time, and a long file taken last would run alone while
    the other workers sit idle."""
    for item in items:
        if item.path.stem in HEAVY_MODULES or item.get_closest_marker("slow") \
                or SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.heavy)
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)


@pytest.fixture(scope="session")
def prefect_harness():
    """A real Prefect API (temporary SQLite database) for every flow run in the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=600):
        yield


@pytest.fixture(autouse=True, scope="module")
def _events_worker_per_module():
    """Prefect's events worker is one per process and keeps sending to the API it first met:
    a module that pointed Prefect at a server of its own (``temporary_settings``) would leave
    it sending the next module's events there. Drained and stopped after each module, the next
    emitter starts one for the API then in force."""
    yield
    worker = sys.modules.get("prefect.events.worker")
    if worker is not None:
        worker.EventsWorker.drain_all(timeout=30)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh REGROW_HOME (MLflow store, monitoring store) for one test."""
    h = tmp_path / "regrow-home"
    monkeypatch.setenv("REGROW_HOME", str(h))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("REGROW_DATABASE_URL", raising=False)
    return h


from tests.procs import start_prefect_server, stop  # noqa: E402 - after the env set-up


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory):
    """A real `prefect server start` on a free loopback port, in a temporary home.

    Yields the API URL. The scheduler loops every 2 s so cron schedules show up quickly.
    """
    proc, url = start_prefect_server(tmp_path_factory.mktemp("prefect-server"),
                                     PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="2",
                                     PREFECT_API_SERVICES_SCHEDULER_LOOP_SECONDS="2")
    try:
        yield url
    finally:
        stop(proc)
