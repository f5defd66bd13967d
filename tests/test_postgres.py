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
    from regrow.configs.schema import load_config
    from regrow.tasks.data.ingest import ingest

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
    from regrow.flows.training import train_flow
    from regrow.tasks.store.database import Store

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


def test_labels_and_prediction_index_on_postgres(pg_url: str, tmp_path: Path, monkeypatch):
    """Labels go in with COPY; the prediction log's batches are indexed in PostgreSQL and a
    window reads them back with their labels."""
    import numpy as np
    import pandas as pd

    from regrow.configs.schema import parse_config
    from regrow.tasks.monitoring import scoring
    from regrow.tasks.store.database import Store, labels

    monkeypatch.setenv("REGROW_HOME", str(tmp_path / "home"))
    cfg = parse_config(BINARY_CONFIG)
    store = Store(pg_url)
    spec = scoring.InputSpec(["amount", "age", "score", "noise"], ["segment"], [], {})

    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    frame = binary_frame(3000)
    model = Pipeline([("prep", ColumnTransformer([("n", "passthrough", spec.numeric),
                                                  ("c", OneHotEncoder(), spec.categorical)])),
                      ("m", LogisticRegression(max_iter=300))]).fit(frame[spec.inputs],
                                                                   frame["label"])
    res = scoring.score_rows(cfg, model, "1", spec, frame.drop(columns=["label"]), store)
    assert res.rows == 3000
    got = scoring.record_labels(cfg, frame[["row_id", "label"]].assign(
        row_id=lambda f: f.row_id.where(f.row_id < 2500, f.row_id + 10**6)), store)
    assert (got.received, got.matched, len(got.unknown_ids)) == (3000, 2500, 500)
    with store.engine.connect() as conn:
        stored = pd.read_sql(sa.select(labels.c.row_id, labels.c.label, labels.c.matched), conn)
    assert len(stored) == 3000 and stored["matched"].sum() == 2500
    window = scoring.load_window(store, cfg.registry.model_name, rows=1000)
    assert window["__row_id"].tolist() == [str(i) for i in range(2000, 3000)]
    expect = frame.set_index("row_id").loc[range(2000, 3000), "label"].astype(str)
    labelled = window["__label"].notna().to_numpy()
    assert labelled.sum() == 500  # ids 2000-2499 kept theirs; 2500-2999 were sent as unknown
    assert (window.loc[labelled, "__label"].to_numpy() == expect.to_numpy()[labelled]).all()
    np.testing.assert_allclose(window["amount"].to_numpy(), frame["amount"].iloc[2000:].to_numpy())
