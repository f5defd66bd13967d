"""SQL ingestion and the monitoring store against the real PostgreSQL on this machine."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.helpers import BINARY_CONFIG, binary_frame, merge, write_case
from tests.procs import pg_database

pytestmark = pytest.mark.postgres

@pytest.fixture
def pg_url():
    """A new, empty database for one test, dropped afterwards."""
    try:
        with pg_database() as url:
            yield url
    except RuntimeError as err:
        pytest.fail(str(err))


def test_ingest_streams_a_postgres_table(pg_url: str, tmp_path: Path, monkeypatch):
    from configs.schema import load_config
    from tasks.ingest import ingest

    frame = binary_frame(2500)
    engine = sa.create_engine(pg_url)
    frame.to_sql("events", engine, index=False)
    engine.dispose()
    monkeypatch.setenv("REGROW_TEST_SOURCE_URL", pg_url)
    cfg = merge(BINARY_CONFIG, {"data": {"source": {
        "kind": "sql", "path": None, "url": "${REGROW_TEST_SOURCE_URL}", "table": "events",
        "chunksize": 1000}}})
    got = ingest(load_config(write_case(tmp_path, None, cfg)))
    assert got.rows == 2500
    assert "postgresql+psycopg://postgres@127.0.0.1:5432/regrow_test_" in got.source
    assert got.frame["label"].sum() == frame["label"].sum()
    q = merge(cfg, {"data": {"source": {"table": None,
                                        "query": "SELECT * FROM events WHERE segment = 'north'"}}})
    assert ingest(load_config(write_case(tmp_path, None, q))).rows == (frame.segment == "north").sum()


@pytest.mark.usefixtures("prefect_harness")
def test_training_from_postgres_with_postgres_store(pg_url: str, tmp_path: Path, home: Path,
                                                    monkeypatch):
    from flows.training import train_flow
    from tasks.store import Store

    engine = sa.create_engine(pg_url)
    binary_frame(1000).to_sql("events", engine, index=False)
    engine.dispose()
    monkeypatch.setenv("REGROW_TEST_SOURCE_URL", pg_url)
    monkeypatch.setenv("REGROW_DATABASE_URL", pg_url)
    cfg = merge(BINARY_CONFIG, {"data": {"source": {
        "kind": "sql", "path": None, "url": "${REGROW_TEST_SOURCE_URL}", "table": "events"}}})
    out = train_flow(str(write_case(tmp_path, None, cfg)))
    assert out.promoted and out.data["rows"] == 1000
    store = Store(pg_url)
    assert [h["alias"] for h in store.alias_history("test-binary")] == ["champion"]
    assert store.training_runs("test-binary")[0]["status"] == "finished"
    store.dispose()
