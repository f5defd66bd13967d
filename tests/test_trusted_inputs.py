"""Trusted inputs: what comes from outside (webhook bodies, the Prefect UI form, event
parameters) chooses data only inside the limits its config states.

Paths from outside must resolve (symlinks followed) inside ``data.source.allowed_paths``; SQL
never comes from outside unless the config lists the key exactly; a query's values are bound
parameters; a SQL source is read in a read-only transaction; URLs with passwords are masked.
The webhook checks run in-process on the real receiver class (signed deliveries, a real store:
SQLite and PostgreSQL), and every refusal must be a 422 before any request is recorded."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa

from regrow.app.webhook import Receiver, sign
from regrow.configs.schema import (
    SAFE_OVERRIDES,
    OverrideRefused,
    PathRefused,
    check_external_inputs,
    check_external_path,
    load_config,
)
from regrow.tasks.data.ingest import IngestError, read_sql
from regrow.tasks.store.database import Store, retrain_requests
from tests.faultlog import record
from tests.helpers import BINARY_CONFIG, merge, write_case
from tests.procs import pg_database

SECRET = "trusted-inputs-" + "9a8b7c6d5e4f3a2b"


def _config(tmp: Path, name: str, **source: Any) -> Path:
    """A file-source config in tmp/<name>/ (its data folder tmp/<name>/data), allowing
    data.source.params.* besides the defaults."""
    folder = tmp / name
    (folder / "data").mkdir(parents=True, exist_ok=True)
    (folder / "data" / "new.csv").write_text("a,b\n1,2\n")
    cfg = merge(BINARY_CONFIG, {"registry": {"model_name": name},
                                "data": {"source": {"kind": "file", "path": "data/data.csv",
                                                    **source}},
                                "serve": {"allowed_overrides": [*SAFE_OVERRIDES,
                                                                "data.source.params.*"]}})
    return write_case(folder, None, cfg)


def _store_urls() -> Iterator[str]:
    yield "sqlite"
    yield "postgresql"


@pytest.fixture(params=list(_store_urls()))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Store, str]]:
    """The monitoring store on SQLite and on the test PostgreSQL server."""
    if request.param == "sqlite":
        s = Store(f"sqlite:///{tmp_path / 'regrow.db'}")
        try:
            yield s, "sqlite"
        finally:
            s.dispose()
        return
    with pg_database() as url:
        s = Store(url)
        try:
            yield s, "postgresql"
        finally:
            s.dispose()


def _receiver(store: Store, configs: list[Path]) -> Receiver:
    loaded = {c.config.registry.model_name: c for c in map(load_config, configs)}
    store.engine  # noqa: B018 - create the tables
    return Receiver(loaded, store, (SECRET.encode(),), max_body=1 << 20,
                    tolerance_seconds=300)


def _deliver(rx: Receiver, endpoint: str, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    body = json.dumps(payload).encode()
    headers = sign(SECRET, body, int(time.time()), delivery_id=uuid.uuid4().hex)
    answer = rx.handle(endpoint, headers, body)
    return answer.status_code, answer.body


def _requests(store: Store) -> int:
    with store.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(retrain_requests)).scalar_one()


@pytest.fixture
def prefect_api(prefect_server: str) -> Iterator[str]:
    """The session's real Prefect server as this process's API (admitted requests are sent to
    it as events)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: prefect_server}):
        yield prefect_server


def test_webhook_refuses_data_from_outside_the_limits(
        store: tuple[Store, str], tmp_path: Path, prefect_api: str) -> None:
    """Paths outside the allowed folders (absolute, ../, a symlink pointing out), a table or
    query override, and a data-arrived query: each a 422 naming the rule, no request recorded.
    A path inside the folder and a bound parameter carrying quotes are admitted."""
    s, backend = store
    cfg = _config(tmp_path, "ti-file")
    sql_folder = tmp_path / "ti-sql"
    sql = merge(BINARY_CONFIG, {"registry": {"model_name": "ti-sql"},
                                "serve": {"allowed_overrides": [*SAFE_OVERRIDES,
                                                                "data.source.params.*"]}})
    sql["data"] = {**sql["data"], "source": {
        "kind": "sql", "url": "sqlite:///x.db", "params": {"segment": "a"},
        "query": "select * from t where segment = :segment"}}
    sql_cfg = write_case(sql_folder, None, sql)
    outside = tmp_path / "secret.csv"
    outside.write_text("a\n1\n")
    (tmp_path / "ti-file" / "data" / "link.csv").symlink_to(outside)
    rx = _receiver(s, [cfg, sql_cfg])

    refused = {
        "absolute path outside": ("retrain", "ti-file",
                                  {"data.source.path": "/etc/hostname"}, "allowed_paths"),
        "../ traversal": ("retrain", "ti-file",
                          {"data.source.path": "data/../../secret.csv"}, "allowed_paths"),
        "symlink pointing out": ("retrain", "ti-file",
                                 {"data.source.path": "data/link.csv"}, "allowed_paths"),
        "table override": ("retrain", "ti-sql", {"data.source.table": "users"},
                           "exact key"),
        "query override": ("retrain", "ti-sql", {"data.source.query": "delete from t"},
                           "exact key"),
        "limits override": ("retrain", "ti-file", {"data.source.allowed_paths": ["/"]},
                            "never allowed"),
    }
    for case, (endpoint, model, overrides, rule) in refused.items():
        before = _requests(s)
        status, body = _deliver(rx, endpoint, {"model": model, "reason": case,
                                               "overrides": overrides})
        assert status == 422, (case, body)
        assert rule in json.dumps(body), (case, body)
        assert _requests(s) == before, case
        record(f"webhook {case}", "bad_input", backend=backend)

    for case, source in {"data-arrived path outside": {"path": str(outside)},
                         "data-arrived symlink out": {"path": "data/link.csv"},
                         "data-arrived query": {"query": "drop table t"}}.items():
        status, body = _deliver(rx, "data-arrived", {"model": "ti-file", "source": source})
        assert status == 422, (case, body)
        assert body["refused"] == [f"source.{next(iter(source))}"], body
        record(f"webhook {case}", "bad_input", backend=backend)
    assert _requests(s) == 0

    status, body = _deliver(rx, "data-arrived", {"model": "ti-file",
                                                 "source": {"path": "data/new.csv"}})
    assert status == 202, body
    status, body = _deliver(rx, "retrain", {"model": "ti-file", "reason": "inside",
                                            "overrides": {"data.source.path": "data/new.csv"}})
    assert status == 202, body
    assert _requests(s) == 1
    # a value with quotes is a bound parameter's value: admitted, never SQL
    status, body = _deliver(rx, "retrain", {
        "model": "ti-sql", "reason": "injection",
        "overrides": {"data.source.params.segment": "a' or '1'='1"}})
    assert status == 202, body
    record("webhook injection through params", "bad_input", backend=backend)


def test_paths_resolve_inside_allowed_folders(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """allowed_paths: relative to the config's folder, ${VAR} expanded; the default is the
    folder of data.source.path; a SQL source allows no files from outside by default."""
    shared = tmp_path / "shared"
    shared.mkdir()
    monkeypatch.setenv("TI_SHARED", str(shared))
    loaded = load_config(_config(tmp_path, "ti-paths", allowed_paths=["${TI_SHARED}", "extra"]))
    assert check_external_path(loaded, str(shared / "x.csv"), "input_path") == shared / "x.csv"
    assert check_external_path(loaded, "extra/y.csv", "k") == tmp_path / "ti-paths/extra/y.csv"
    with pytest.raises(PathRefused, match="data.source.allowed_paths"):
        check_external_path(loaded, "data/new.csv", "input_path")  # not listed any more
    default = load_config(_config(tmp_path, "ti-default"))
    check_external_inputs(default, {"data.source.path": "data/new.csv"})
    with pytest.raises(PathRefused, match="outside the folders"):
        check_external_inputs(default, {"data.source.path": "../ti-paths/data/new.csv"})
    with pytest.raises(OverrideRefused, match="never allowed from outside"):
        check_external_inputs(default, {"data.source": {"kind": "sql"}})
    record("path outside allowed_paths (config check)", "bad_input")


def _served_score_refuses(loaded: Any, input_path: str | None, query: str | None) -> str:
    from regrow.configs.schema import ConfigError
    from regrow.flows.serve import _outside_input

    class _Env:
        pass

    env = _Env()
    env.loaded = loaded  # type: ignore[attr-defined]
    with pytest.raises(ConfigError) as info:
        _outside_input(env, input_path, query)
    return str(info.value)


def test_served_runs_refuse_outside_inputs(tmp_path: Path) -> None:
    """A served scoring / data-arrived run: input_path outside the folders and any query are
    refused in one sentence; a path inside is resolved."""
    from regrow.flows.serve import _outside_input

    loaded = load_config(_config(tmp_path, "ti-served"))
    msg = _served_score_refuses(loaded, "/etc/hostname", None)
    assert "input_path" in msg and "allowed_paths" in msg and "\n" not in msg
    msg = _served_score_refuses(loaded, None, "select * from pg_shadow")
    assert "SQL never comes from outside" in msg
    record("served input_path outside", "bad_input")
    record("served query from outside", "bad_input")

    class _Env:
        pass

    env = _Env()
    env.loaded = loaded  # type: ignore[attr-defined]
    assert _outside_input(env, "data/new.csv", None) == str(tmp_path / "ti-served/data/new.csv")


def test_sql_params_are_bound_and_reads_are_read_only() -> None:
    """On the real PostgreSQL: a parameter value with quotes matches nothing (bound, not
    executed), and a query that writes fails as read-only."""
    with pg_database() as url:
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.execute(sa.text("create table t (segment text, x int)"))
            conn.execute(sa.text("insert into t values ('a', 1), ('b', 2)"))
            conn.execute(sa.text("create sequence s"))
            conn.execute(sa.text(
                "create function wipe(seg text) returns int language plpgsql as $$ "
                "begin delete from t where segment = seg; return 1; end $$"))
        engine.dispose()
        q = "select * from t where segment = :segment"
        assert read_sql(url, None, q, 100, {"segment": "a"})["x"].tolist() == [1]
        assert read_sql(url, None, q, 100, {"segment": "a' or '1'='1"}).empty
        with pytest.raises(IngestError, match="read-only"):
            read_sql(url, None, "select nextval('s')", 100)
        with pytest.raises(IngestError, match="read-only"):
            read_sql(url, None, "select wipe(:segment)", 100, {"segment": "a"})
        record("sql write through query (postgresql)", "bad_input", backend="postgresql")
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            assert conn.execute(sa.text("select count(*) from t")).scalar_one() == 2
        engine.dispose()


def test_sqlite_reads_are_query_only(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'd.db'}"
    pd.DataFrame({"segment": ["a"], "x": [1]}).to_sql("t", sa.create_engine(url), index=False)
    with pytest.raises(IngestError, match="readonly|read-only|query_only|attempt to write"):
        read_sql(url, None, "delete from t returning *", 100)
    assert len(read_sql(url, "t", None, 100)) == 1


def test_source_urls_with_passwords_are_masked(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The source an ingest reports (the MLflow tag regrow.data.source, the dataset source and
    the run's log line) never carries the URL's password: a real read from PostgreSQL (trust
    authentication ignores the password)."""
    from regrow.tasks.data.ingest import ingest, mask_url

    shown = mask_url("postgresql+psycopg://reader:s3cr3t@db:5432/x?password=also")
    assert "s3cr3t" not in shown and "also" not in shown
    with pg_database() as url:
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.execute(sa.text("create table t (label int, x int)"))
            conn.execute(sa.text("insert into t values (0, 1), (1, 2)"))
        engine.dispose()
        secret_url = url.replace("postgres@", "postgres:pa55w0rd-xyz@", 1)
        assert "pa55w0rd-xyz" in secret_url
        monkeypatch.setenv("TI_SOURCE_URL", secret_url)
        cfg = merge(BINARY_CONFIG, {"registry": {"model_name": "ti-mask"}})
        cfg["data"] = {**cfg["data"], "source": {
            "kind": "sql", "url": "${TI_SOURCE_URL}", "query": "select * from t"}}
        result = ingest(load_config(write_case(tmp_path / "mask", None, cfg)))
        assert result.rows == 2
        assert "pa55w0rd-xyz" not in json.dumps(result.summary()), result.summary()
        assert "***" in result.source and os.path.basename(result.source)
