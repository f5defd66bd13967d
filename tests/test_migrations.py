"""Schema migrations of the monitoring store: `regrow db upgrade` on SQLite and PostgreSQL.

The previous release (0.1.0) created its tables without a version table; its DDL is frozen in
tests/data/store-0.1.0-<dialect>.sql, so these tests do not depend on today's schema code to
build yesterday's store.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.procs import pg_database

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
AT = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)

# One row per 0.1.0 table, every column that has a value in a real store.
ROWS = {
    "alias_history": {"model": "m", "alias": "champion", "old_version": "1", "new_version": "2",
                      "reason": "gate passed", "actor": "cli", "run_id": "r2", "at": AT},
    "training_runs": {"model": "m", "run_id": "r2", "trigger": "manual", "reason": "first",
                      "status": "done", "verdict": "promote", "version": "2", "detail": "-",
                      "started_at": AT, "ended_at": AT},
    "training_leases": {"key": "aliases:m", "model": "m", "holder": "host:1", "renewed_at": AT,
                        "expires_at": AT},
    "predictions": {"model": "m", "version": "2", "batch_id": "b1", "row_id": "42",
                    "event_time": dt.datetime(2026, 1, 1), "scored_at": AT, "prediction": "1",
                    "score": 0.75, "inputs": json.dumps({"x": 1.5, "city": "Oslo"})},
    "labels": {"model": "m", "row_id": "42", "label": "1", "matched": True, "received_at": AT},
    "drift_checks": {"model": "m", "version": "2", "checked_at": AT, "window_rows": 1000,
                     "verdict": "ok", "drifted": False, "drift_share": 0.1,
                     "drifted_columns": "[]", "prediction_drift": False, "performance": "{}",
                     "summary": "no drift", "report_path": "/r.html", "retrain_request_id": 7},
    "retrain_requests": {"model": "m", "kind": "drift", "reason": "drift", "ref": "check 1",
                         "verdict": "admitted", "detail": "-", "state": "done", "run_id": "r2",
                         "created_at": AT, "updated_at": AT},
    "policy_locks": {"model": "m", "touched_at": AT},
    "webhook_deliveries": {"delivery_id": "d1", "endpoint": "retrain", "model": "m",
                           "body_sha256": "0" * 64, "status": "done", "status_code": 202,
                           "response": "{}", "request_id": 7, "received_at": AT},
    "circuit_resets": {"model": "m", "actor": "ana", "reason": "fixed labels", "at": AT},
    "bakes": {"model": "m", "version": "2", "previous_version": "1", "windows": 3,
              "windows_done": 1, "tolerance": 0.02, "min_labels": 100, "state": "baking",
              "detail": "-", "started_at": AT},
    "shadow_predictions": {"model": "m", "version": "1", "batch_id": "b1", "row_id": "42",
                           "prediction": "0", "score": 0.4, "scored_at": AT},
}


def make_release_0_1_store(url: str) -> None:
    """The store regrow 0.1.0 made, from its frozen DDL, with one row in every table."""
    engine = sa.create_engine(url)
    ddl = (DATA / f"store-0.1.0-{engine.dialect.name}.sql").read_text()
    statements = [s.strip() for s in ddl.split(";")
                  if s.strip() and not all(ln.startswith("--") for ln in s.strip().splitlines())]
    meta = sa.MetaData()
    with engine.begin() as conn:
        for stmt in statements:
            conn.exec_driver_sql("\n".join(ln for ln in stmt.splitlines()
                                           if not ln.startswith("--")))
        meta.reflect(conn)
        for table, row in ROWS.items():
            conn.execute(meta.tables[table].insert().values(**row))
    engine.dispose()


def dump(url: str) -> dict[str, list[dict]]:
    """Every row of every 0.1.0 table, comparable across a migration."""
    engine = sa.create_engine(url)
    meta = sa.MetaData()
    out = {}
    with engine.connect() as conn:
        meta.reflect(conn, only=list(ROWS))
        for name in ROWS:
            rows = conn.execute(sa.select(meta.tables[name])).mappings().all()
            out[name] = [{k: _plain(v) for k, v in r.items()} for r in rows]
    engine.dispose()
    return out


def _plain(value):
    if isinstance(value, dt.datetime):  # SQLite hands back naive UTC
        return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).astimezone(dt.UTC)
    return value


def regrow(*args: str, home: Path, url: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REGROW_", "PREFECT_"))}
    env.update(REGROW_HOME=str(home), REGROW_DATABASE_URL=url, REGROW_WARM="off",
               PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "regrow.app.cli", *args], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=300)


def _upgrade_keeps_every_row(url: str, tmp_path: Path) -> None:
    from regrow.tasks.store import database as st
    make_release_0_1_store(url)
    before = dump(url)
    assert all(len(rows) == 1 for rows in before.values())

    # Today's regrow refuses the old store with a sentence naming the command, and leaves it as is
    with pytest.raises(Exception, match="regrow db upgrade") as caught:
        st.Store(url).engine  # noqa: B018
    assert type(caught.value).__name__ == "StoreSchemaError"
    assert dump(url) == before
    status = regrow("db", "current", home=tmp_path, url=url)
    assert status.returncode == 1 and "unversioned (regrow 0.1.0)" in status.stdout, status

    done = regrow("db", "upgrade", "--json", home=tmp_path, url=url)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["before"] is None and result["stamped_baseline"] is True
    assert result["after"] == st.SCHEMA_REVISION
    from regrow.tasks.store.migrate import revisions

    assert result["applied"] == revisions()[1:]  # every revision after the baseline ran
    assert dump(url) == before  # nothing lost, nothing changed

    again = regrow("db", "upgrade", home=tmp_path, url=url)
    assert again.returncode == 0 and "nothing to do" in again.stdout
    assert regrow("db", "current", home=tmp_path, url=url).returncode == 0

    # and the store works for today's code: reads the old rows, takes new ones
    store = st.Store(url)
    assert [r["new_version"] for r in store.alias_history("m")] == ["2"]
    from regrow.tasks.monitoring.scoring import load_window

    window = load_window(store, "m", rows=10)  # predictions logged as JSON rows stay readable
    assert window[["__row_id", "__prediction", "__score", "x", "city", "__label"]].to_dict(
        "records") == [{"__row_id": "42", "__prediction": "1", "__score": 0.75, "x": 1.5,
                        "city": "Oslo", "__label": "1"}]
    store.record_alias_move("m", "champion", "2", "3", "upgraded", "cli", None)
    assert [r["new_version"] for r in store.alias_history("m")] == ["2", "3"]
    store.engine.dispose()


def _schema_matches_metadata(url: str) -> None:
    """Migrating an empty database gives exactly the tables the code declares."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from regrow.tasks.store import database as st
    from regrow.tasks.store import migrate
    result = migrate.upgrade(url)
    assert result.before is None and result.applied == migrate.revisions()
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": st.VERSION_TABLE})
        assert compare_metadata(ctx, st.metadata) == []
    engine.dispose()


def test_scripts_and_code_agree_on_the_newest_revision():
    from regrow.tasks.store import database as st
    from regrow.tasks.store import migrate
    known = migrate.revisions()
    assert known[0] == migrate.BASELINE and known[-1] == st.SCHEMA_REVISION
    assert migrate.BASELINE_TABLES == set(ROWS)


def test_sqlite_upgrade_from_release_0_1_keeps_every_row(tmp_path: Path):
    _upgrade_keeps_every_row(f"sqlite:///{tmp_path / 'regrow.db'}", tmp_path)


def test_sqlite_migrations_build_the_declared_schema(tmp_path: Path):
    _schema_matches_metadata(f"sqlite:///{tmp_path / 'fresh.db'}")


def test_fresh_store_is_created_at_the_newest_revision(tmp_path: Path):
    from regrow.tasks.store import database as st
    url = f"sqlite:///{tmp_path / 'new.db'}"
    engine = st.Store(url).engine
    assert st.schema_revision(engine) == st.SCHEMA_REVISION
    assert st.regrow_tables(engine) == sorted(st.metadata.tables)


def _mid_creation_is_invisible(url: str) -> None:
    """While one process creates a fresh store, another sees no regrow table (so it waits to
    create them itself) rather than tables without a version (which it must refuse)."""
    from regrow.tasks.store import database as st
    seen: list[tuple[str | None, list[str]]] = []
    other = sa.create_engine(url, connect_args={"timeout": 0} if "sqlite" in url else {})

    def look(*_: object, **__: object) -> None:
        seen.append((st.schema_revision(other), st.regrow_tables(other)))

    table = st.metadata.tables["labels"]
    sa.event.listen(table, "after_create", look)
    try:
        engine = st.Store(url).engine
    finally:
        sa.event.remove(table, "after_create", look)
    assert seen == [(None, [])]  # the hook ran once, mid-creation, and saw nothing
    assert st.schema_revision(other) == st.SCHEMA_REVISION
    assert st.regrow_tables(other) == sorted(st.metadata.tables)
    other.dispose()
    engine.dispose()


def test_a_store_being_created_is_never_seen_half_made(tmp_path: Path):
    _mid_creation_is_invisible(f"sqlite:///{tmp_path / 'racing.db'}")


@pytest.mark.postgres
def test_a_postgres_store_being_created_is_never_seen_half_made():
    with pg_database() as url:
        _mid_creation_is_invisible(url)


def test_a_partial_or_newer_store_is_refused_untouched(tmp_path: Path):
    from regrow.tasks.store import database as st
    from regrow.tasks.store import migrate
    from regrow.tasks.store.database import StoreSchemaError

    partial = f"sqlite:///{tmp_path / 'partial.db'}"
    engine = sa.create_engine(partial)
    st.metadata.tables["labels"].create(engine)
    with pytest.raises(StoreSchemaError, match="not a store regrow made"):
        migrate.upgrade(partial)
    assert st.regrow_tables(engine) == ["labels"] and st.schema_revision(engine) is None
    engine.dispose()

    newer = f"sqlite:///{tmp_path / 'newer.db'}"
    engine = st.Store(newer).engine
    with engine.begin() as conn:
        conn.execute(st.schema_version.update().values(version_num="9999"))
    with pytest.raises(StoreSchemaError, match="newer regrow"):
        st.Store(newer).engine  # noqa: B018
    with pytest.raises(StoreSchemaError, match="does not know"):
        migrate.upgrade(newer)
    assert st.schema_revision(engine) == "9999"
    engine.dispose()


def test_a_command_on_an_old_store_says_what_to_run(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'regrow.db'}"
    make_release_0_1_store(url)
    out = regrow("status", str(ROOT / "configs" / "rainfall.yaml"), home=tmp_path, url=url)
    assert out.returncode == 1
    assert out.stderr.strip().startswith("error: the monitoring store")
    assert "run `regrow db upgrade`" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.postgres
def test_postgres_upgrade_from_release_0_1_keeps_every_row(tmp_path: Path):
    with pg_database() as url:
        _upgrade_keeps_every_row(url, tmp_path)


@pytest.mark.postgres
def test_postgres_migrations_build_the_declared_schema():
    with pg_database() as url:
        _schema_matches_metadata(url)
