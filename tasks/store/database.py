"""The monitoring store: regrow's own tables, through SQLAlchemy (SQLite or PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass
from typing import Any, cast

import sqlalchemy as sa

metadata = sa.MetaData()

# The schema's revision lives in its own table (named for regrow: a database shared with MLflow
# already has Alembic's default `alembic_version`). SCHEMA_REVISION is the newest migration in
# tasks/store/migrations/versions; a test keeps the two in step.
VERSION_TABLE = "regrow_schema_version"
SCHEMA_REVISION = "0002"
schema_version = sa.Table(VERSION_TABLE, sa.MetaData(),
                          sa.Column("version_num", sa.String(32), primary_key=True))

alias_history = sa.Table(
    "alias_history", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model", sa.String(255), nullable=False, index=True),
    sa.Column("alias", sa.String(64), nullable=False),
    sa.Column("old_version", sa.String(32)),
    sa.Column("new_version", sa.String(32)),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("actor", sa.String(255), nullable=False),
    sa.Column("run_id", sa.String(64)),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
)

training_runs = sa.Table(
    "training_runs", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model", sa.String(255), nullable=False, index=True),
    sa.Column("run_id", sa.String(64)),
    sa.Column("trigger", sa.String(64), nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("verdict", sa.String(32)),
    sa.Column("version", sa.String(32)),
    sa.Column("detail", sa.Text),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("ended_at", sa.DateTime(timezone=True)),
)

training_leases = sa.Table(
    "training_leases", metadata,
    sa.Column("key", sa.String(300), primary_key=True,
              doc="training:<row id>, request:<id> or aliases:<model> (a lock)"),
    sa.Column("model", sa.String(255), nullable=False),
    sa.Column("holder", sa.String(255), nullable=False, doc="host:pid of the renewing process"),
    sa.Column("renewed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_training_leases_model", "model"),
)

predictions = sa.Table(
    "predictions", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model", sa.String(255), nullable=False),
    sa.Column("version", sa.String(32), nullable=False),
    sa.Column("batch_id", sa.String(64), nullable=False),
    sa.Column("row_id", sa.String(255), nullable=False),
    sa.Column("event_time", sa.DateTime(timezone=False)),
    sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("prediction", sa.Text, nullable=False),
    sa.Column("score", sa.Float, doc="probability of the positive class, or the predicted value"),
    sa.Column("inputs", sa.Text, nullable=False, doc="the row's model inputs as JSON"),
    sa.Index("ix_predictions_model_id", "model", "id"),
    sa.Index("ix_predictions_model_row", "model", "row_id"),
)

# Since schema revision 0002 a scoring batch's rows go to one Parquet file of the prediction
# log (tasks/monitoring/predlog.py), typed, one column per input; this table indexes those files. The
# `predictions` table above keeps the rows stores logged before (inputs as JSON), still read.
prediction_batches = sa.Table(
    "prediction_batches", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model", sa.String(255), nullable=False),
    sa.Column("version", sa.String(32), nullable=False),
    sa.Column("batch_id", sa.String(64), nullable=False, unique=True),
    sa.Column("path", sa.Text, nullable=False, doc="the batch's Parquet file (a path or URI)"),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("first_event_time", sa.DateTime(timezone=False)),
    sa.Column("last_event_time", sa.DateTime(timezone=False)),
    sa.Index("ix_prediction_batches_model_id", "model", "id"),
)

labels = sa.Table(
    "labels", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model", sa.String(255), nullable=False),
    sa.Column("row_id", sa.String(255), nullable=False),
    sa.Column("label", sa.Text, nullable=False),
    sa.Column("matched", sa.Boolean, nullable=False, doc="a prediction with this id existed"),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_labels_model_row", "model", "row_id"),
    sa.Index("ix_labels_model_received", "model", "received_at"),  # a window's labels
)

drift_checks = sa.Table(
    "drift_checks", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model", sa.String(255), nullable=False, index=True),
    sa.Column("version", sa.String(32)),
    sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("window_rows", sa.Integer, nullable=False),
    sa.Column("verdict", sa.String(32), nullable=False),
    sa.Column("drifted", sa.Boolean, nullable=False),
    sa.Column("drift_share", sa.Float),
    sa.Column("drifted_columns", sa.Text),
    sa.Column("prediction_drift", sa.Boolean),
    sa.Column("performance", sa.Text),
    sa.Column("summary", sa.Text, nullable=False),
    sa.Column("report_path", sa.Text),
    sa.Column("retrain_request_id", sa.Integer),
)

retrain_requests = sa.Table(
    "retrain_requests", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model", sa.String(255), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("ref", sa.String(255)),
    sa.Column("verdict", sa.String(32), nullable=False),
    sa.Column("detail", sa.Text),
    sa.Column("state", sa.String(16), nullable=False, doc="admitted/running/done/failed or none"),
    sa.Column("run_id", sa.String(64)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True)),
    # the policy's lookups, per model
    sa.Index("ix_retrain_requests_model_state", "model", "state", "id"),
    sa.Index("ix_retrain_requests_model_verdict", "model", "verdict", "created_at"),
)

policy_locks = sa.Table(
    "policy_locks", metadata,
    sa.Column("model", sa.String(255), primary_key=True),
    sa.Column("touched_at", sa.DateTime(timezone=True)),
)

webhook_deliveries = sa.Table(
    "webhook_deliveries", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("delivery_id", sa.String(255), nullable=False, unique=True),
    sa.Column("endpoint", sa.String(64), nullable=False),
    sa.Column("model", sa.String(255)),
    sa.Column("body_sha256", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False, doc="processing or done"),
    sa.Column("status_code", sa.Integer),
    sa.Column("response", sa.Text, doc="the JSON answered, replayed for a repeated delivery"),
    sa.Column("request_id", sa.Integer, doc="the retrain request it raised, if any"),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
)

circuit_resets = sa.Table(
    "circuit_resets", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model", sa.String(255), nullable=False, index=True),
    sa.Column("actor", sa.String(255), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
)


bakes = sa.Table(
    "bakes", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model", sa.String(255), nullable=False, index=True),
    sa.Column("version", sa.String(32), nullable=False, doc="the new champion"),
    sa.Column("previous_version", sa.String(32), nullable=False, doc="scored as a shadow"),
    sa.Column("windows", sa.Integer, nullable=False),
    sa.Column("windows_done", sa.Integer, nullable=False),
    sa.Column("tolerance", sa.Float, nullable=False),
    sa.Column("min_labels", sa.Integer, nullable=False),
    sa.Column("state", sa.String(16), nullable=False, doc="baking, passed, rolled_back, ended"),
    sa.Column("detail", sa.Text),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("ended_at", sa.DateTime(timezone=True)),
)

shadow_predictions = sa.Table(
    "shadow_predictions", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model", sa.String(255), nullable=False),
    sa.Column("version", sa.String(32), nullable=False, doc="the shadow (previous champion)"),
    sa.Column("batch_id", sa.String(64), nullable=False, doc="the champion's scoring batch"),
    sa.Column("row_id", sa.String(255), nullable=False),
    sa.Column("prediction", sa.Text, nullable=False),
    sa.Column("score", sa.Float),
    sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_shadow_model_version_row", "model", "version", "row_id"),
)


def now() -> dt.datetime:
    """Current UTC time."""
    return dt.datetime.now(dt.UTC)


def iso(value: dt.datetime | None) -> str | None:
    """A stored time as ISO 8601 with its zone (SQLite hands back naive UTC values)."""
    if value is None:
        return None
    return (value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value
            ).astimezone(dt.UTC).isoformat(timespec="seconds")


_ENGINE_LOCK = threading.Lock()


def _write_lease(conn: sa.Connection, key: str, model: str, seconds: float) -> None:
    from regrow.tasks.store.liveness import this_holder

    at = now()
    values = {"model": model, "holder": this_holder()[:255],
              "renewed_at": at, "expires_at": at + dt.timedelta(seconds=seconds)}
    lease = training_leases
    if not conn.execute(lease.update().where(lease.c.key == key).values(**values)).rowcount:
        conn.execute(lease.insert().values(key=key, **values))


def bulk_insert(conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """Append many rows in one go: PostgreSQL's ``COPY ... FROM STDIN`` (psycopg 3), else a
    batched INSERT. Every row must have the same keys."""
    if not rows:
        return
    columns = list(rows[0])
    raw = getattr(conn.connection, "driver_connection", None)
    if conn.dialect.name == "postgresql" and raw is not None \
            and type(raw).__module__.startswith("psycopg"):
        names = ", ".join(f'"{c}"' for c in columns)
        with raw.cursor() as cur, cur.copy(f'COPY "{table.name}" ({names}) FROM STDIN') as copy:
            for row in rows:
                copy.write_row([row[c] for c in columns])
        return
    for i in range(0, len(rows), 20_000):
        conn.execute(table.insert(), rows[i:i + 20_000])


class StoreSchemaError(RuntimeError):
    """The monitoring store's schema is not the one this regrow uses (`regrow db upgrade`)."""


class StoreUnavailable(RuntimeError):
    """The monitoring store cannot be reached (or opened): never read as an empty store.

    The message names the store with its password masked; the driver's error is the cause.
    """


def schema_revision(engine: sa.Engine) -> str | None:
    """The store's schema revision, or None when it has no version table."""
    try:
        with engine.connect() as conn:
            return conn.execute(sa.select(schema_version.c.version_num)).scalar()
    except (sa.exc.OperationalError, sa.exc.ProgrammingError):
        return None


def regrow_tables(engine: sa.Engine) -> list[str]:
    """The regrow tables the database holds."""
    return sorted(set(sa.inspect(engine).get_table_names()) & set(metadata.tables))


def _create_schema(engine: sa.Engine, attempts: int = 3) -> None:
    """Create the tables at the newest revision and stamp it, in one transaction, so another
    process sees either no regrow tables or a stamped store; another process doing the same at
    the same time is not an error."""
    for attempt in range(attempts):
        try:
            with engine.connect() as conn:
                if engine.dialect.name == "sqlite":
                    # the sqlite3 module runs DDL outside any transaction unless one is open
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                metadata.create_all(conn)
                schema_version.create(conn, checkfirst=True)
                if not conn.execute(
                        sa.select(sa.func.count()).select_from(schema_version)).scalar():
                    conn.execute(schema_version.insert().values(version_num=SCHEMA_REVISION))
                conn.commit()
            return
        except (sa.exc.OperationalError, sa.exc.ProgrammingError, sa.exc.IntegrityError):
            if attempt == attempts - 1:
                raise


def _ensure_schema(engine: sa.Engine) -> None:
    """A store at this regrow's revision is used as it is (one query); an empty database gets
    the schema; anything else is an error that says to run `regrow db upgrade`.

    Raises:
        StoreSchemaError: the store was made by another release of regrow.
    """
    found = schema_revision(engine)
    if found == SCHEMA_REVISION:
        return
    where = engine.url.render_as_string(hide_password=True)
    if found is None:
        if not regrow_tables(engine):
            _create_schema(engine)
            return
        raise StoreSchemaError(
            f"the monitoring store {where} was made by regrow 0.1.0 (no schema version); this "
            f"regrow uses schema revision {SCHEMA_REVISION}: run `regrow db upgrade` (it keeps "
            "every row)")
    if found < SCHEMA_REVISION:
        raise StoreSchemaError(
            f"the monitoring store {where} is at schema revision {found}; this regrow uses "
            f"{SCHEMA_REVISION}: run `regrow db upgrade` (it keeps every row)")
    raise StoreSchemaError(
        f"the monitoring store {where} is at schema revision {found}, made by a newer regrow "
        f"(this one knows revisions up to {SCHEMA_REVISION}): use that release with it")


@dataclass
class Store:
    """A handle on the monitoring database; an empty one gets the schema on first use."""

    url: str
    _engine: sa.Engine | None = None

    @property
    def engine(self) -> sa.Engine:
        """The engine, created (and the schema ensured) lazily, once per Store."""
        if self._engine is None:
            with _ENGINE_LOCK:
                if self._engine is None:
                    sqlite = self.url.startswith("sqlite")
                    engine = sa.create_engine(
                        # a local file needs no liveness ping before each transaction
                        self.url, pool_pre_ping=not sqlite,
                        # writers queue instead of failing fast with "database is locked"
                        connect_args={"timeout": 60} if sqlite else {})
                    try:
                        _ensure_schema(engine)
                    except sa.exc.DBAPIError as err:  # no server, no file, no permission
                        engine.dispose()
                        raise StoreUnavailable(describe_unreachable(err, self.url)
                                               or str(err)) from err
                    self._engine = engine
        return self._engine

    def record_alias_move(self, model: str, alias: str, old: str | None, new: str | None,
                          reason: str, actor: str, run_id: str | None) -> None:
        """Append one alias move to the history (MLflow itself keeps none)."""
        with self.engine.begin() as conn:
            conn.execute(alias_history.insert().values(
                model=model, alias=alias, old_version=old, new_version=new, reason=reason,
                actor=actor, run_id=run_id, at=now()))

    def alias_history(self, model: str, alias: str | None = None) -> list[dict[str, Any]]:
        """Alias moves for a model, oldest first."""
        q = sa.select(alias_history).where(alias_history.c.model == model)
        if alias:
            q = q.where(alias_history.c.alias == alias)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q.order_by(alias_history.c.id))]

    def last_alias_versions(self, model: str) -> dict[str, str | None]:
        """Alias -> the version its last recorded move pointed to (None: removed)."""
        h = alias_history.c
        newest = (sa.select(sa.func.max(h.id)).where(h.model == model).group_by(h.alias)
                  .scalar_subquery())
        q = sa.select(h.alias, h.new_version).where(h.id.in_(newest))
        with self.engine.connect() as conn:
            return {alias: version for alias, version in conn.execute(q)}

    def start_training(self, model: str, trigger: str, reason: str | None,
                       run_id: str | None = None, lease_seconds: float | None = None,
                       at: dt.datetime | None = None) -> int:
        """Record a training run that is starting; returns its row id.

        With `lease_seconds`, its lease (key ``training:<row id>``) is written in the same
        transaction, so no crash can leave a running record without one. `at`: the start time
        (default now; a backtest passes its simulated event time).
        """
        with self.engine.begin() as conn:
            res = conn.execute(training_runs.insert().values(
                model=model, trigger=trigger, reason=reason, status="running", run_id=run_id,
                started_at=at or now()))
            row_id = int(cast("sa.Row[Any]", res.inserted_primary_key)[0])  # one row per insert
            if lease_seconds:
                _write_lease(conn, f"training:{row_id}", model, lease_seconds)
            return row_id

    def renew_lease(self, key: str, model: str, seconds: float) -> None:
        """Write or extend a lease: it expires `seconds` from now unless renewed again."""
        with self.engine.begin() as conn:
            _write_lease(conn, key, model, seconds)

    def release_lease(self, key: str, holder: str | None = None) -> None:
        """Drop a lease whose work ended and was recorded (only `holder`'s, when given)."""
        q = training_leases.delete().where(training_leases.c.key == key)
        if holder is not None:
            q = q.where(training_leases.c.holder == holder)
        with self.engine.begin() as conn:
            conn.execute(q)

    def try_lease(self, key: str, model: str, holder: str, seconds: float) -> bool:
        """Take a lease that is free, expired, or held by a process known to be gone (one of
        this machine's: `liveness.holder_gone`); False while someone else holds it."""
        from regrow.tasks.store.liveness import holder_gone

        lease, at = training_leases, now()
        values = {"model": model, "holder": holder[:255], "renewed_at": at,
                  "expires_at": at + dt.timedelta(seconds=seconds)}
        try:
            with self.engine.begin() as conn:
                conn.execute(lease.insert().values(key=key, **values))
            return True
        except sa.exc.IntegrityError:
            pass
        with self.engine.begin() as conn:
            if conn.execute(lease.update().where(lease.c.key == key, lease.c.expires_at < at)
                            .values(**values)).rowcount:
                return True
            current = conn.execute(sa.select(lease.c.holder).where(lease.c.key == key)).scalar()
            return current is not None and holder_gone(current) and bool(conn.execute(
                lease.update().where(lease.c.key == key, lease.c.holder == current)
                .values(**values)).rowcount)

    def note_training(self, row_id: int, *, verdict: str, version: str) -> None:
        """Record a running training's gate verdict and registered version, before any alias
        moves to it: a crash from here on leaves a record that names the version."""
        with self.engine.begin() as conn:
            conn.execute(training_runs.update().where(training_runs.c.id == row_id)
                         .values(verdict=verdict, version=version))

    def finish_training(self, row_id: int, *, status: str, run_id: str | None = None,
                        verdict: str | None = None, version: str | None = None,
                        detail: str | None = None, at: dt.datetime | None = None) -> None:
        """Close a training run record (`at`: the end time, default now). A verdict or
        version noted earlier (`note_training`) stays when none is given."""
        values: dict[str, Any] = {"status": status, "run_id": run_id, "detail": detail,
                                  "ended_at": at or now()}
        if verdict is not None:
            values["verdict"] = verdict
        if version is not None:
            values["version"] = version
        with self.engine.begin() as conn:
            conn.execute(training_runs.update().where(training_runs.c.id == row_id)
                         .values(**values))

    def training_runs(self, model: str, limit: int = 20) -> list[dict[str, Any]]:
        """The most recent training runs of a model, newest first."""
        q = (sa.select(training_runs).where(training_runs.c.model == model)
             .order_by(training_runs.c.id.desc()).limit(limit))
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def dispose(self) -> None:
        """Close pooled connections."""
        if self._engine is not None:
            self._engine.dispose()


def record_drift_check(store: Store, model: str, version: str | None, assessment: Any,
                       report_path: str | None) -> int:
    """Append a drift check's typed summary; returns its id."""
    import json

    perf = assessment.performance
    with store.engine.begin() as conn:
        res = conn.execute(drift_checks.insert().values(
            model=model, version=version, checked_at=now(), window_rows=assessment.window_rows,
            verdict=assessment.verdict, drifted=assessment.drifted,
            drift_share=assessment.drift_share,
            drifted_columns=json.dumps(assessment.drifted_columns),
            prediction_drift=assessment.prediction_drift,
            performance=json.dumps(None if perf is None else perf.__dict__, default=str),
            summary=json.dumps(assessment.to_dict(), default=str), report_path=report_path))
        return int(cast("sa.Row[Any]", res.inserted_primary_key)[0])  # one row per insert


def link_drift_request(store: Store, check_id: int, request_id: int) -> None:
    """Note which retrain request a drift check raised."""
    with store.engine.begin() as conn:
        conn.execute(drift_checks.update().where(drift_checks.c.id == check_id)
                     .values(retrain_request_id=request_id))


def recent_drift_flags(store: Store, model: str, version: str, limit: int) -> list[bool]:
    """Drifted flags of a version's newest checks that had enough data, newest first."""
    q = (sa.select(drift_checks.c.drifted).where(drift_checks.c.model == model,
                                                 drift_checks.c.version == version,
                                                 drift_checks.c.verdict != "insufficient_data")
         .order_by(drift_checks.c.id.desc()).limit(limit))
    with store.engine.connect() as conn:
        return [bool(r[0]) for r in conn.execute(q)]


def recent_performance_flags(store: Store, model: str, limit: int) -> list[bool]:
    """Performance-degraded flags (realized or estimated) of a model's newest checks that had
    enough data, whatever version they judged, newest first."""
    import json

    c = drift_checks.c
    q = (sa.select(c.performance).where(c.model == model, c.verdict != "insufficient_data")
         .order_by(c.id.desc()).limit(limit))
    with store.engine.connect() as conn:
        return [bool((json.loads(r[0] or "null") or {}).get("degraded")) for r in conn.execute(q)]


def recent_drift_checks(store: Store, model: str, limit: int = 10) -> list[dict[str, Any]]:
    """The newest drift checks of a model (without the full summary)."""
    c = drift_checks.c
    q = (sa.select(c.id, c.version, c.checked_at, c.window_rows, c.verdict, c.drift_share,
                   c.drifted_columns, c.prediction_drift, c.report_path, c.retrain_request_id)
         .where(c.model == model).order_by(c.id.desc()).limit(limit))
    with store.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(q)]
    import json

    for row in rows:  # stored as JSON text: handed out as the list it is
        row["drifted_columns"] = json.loads(row["drifted_columns"] or "[]")
    return rows


def version_drift_checks(store: Store, model: str, version: str) -> list[dict[str, Any]]:
    """Every drift check of one model version, oldest first (without the full summary)."""
    c = drift_checks.c
    q = (sa.select(c.id, c.checked_at, c.window_rows, c.verdict, c.drifted, c.drift_share,
                   c.drifted_columns, c.prediction_drift, c.performance, c.report_path,
                   c.retrain_request_id)
         .where(c.model == model, c.version == version).order_by(c.id))
    with store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(q)]


def describe_unreachable(err: BaseException | None, url: str) -> str | None:
    """A one-line message when `err` (or what caused it) says the store cannot be reached.

    Args:
        err: an exception raised by a command.
        url: the monitoring store's URL (its password is not shown).

    Returns:
        The message, or None when the error is something else.
    """
    while err is not None:
        if isinstance(err, StoreUnavailable):
            return str(err)
        if isinstance(err, sa.exc.OperationalError | sa.exc.InterfaceError):
            try:
                where = sa.engine.make_url(url).render_as_string(hide_password=True)
            except sa.exc.ArgumentError:
                from regrow.tasks.data.ingest import mask_url

                where = mask_url(url)
            lines = str(getattr(err, "orig", err)).strip().splitlines()
            detail = lines[0] if lines else type(err).__name__
            low = detail.lower()
            state = ("is read-only" if "readonly" in low or "read-only" in low else
                     "cannot be written (is the disk full?)" if "disk" in low or "space" in low
                     else "cannot be opened" if "unable to open" in low else
                     "cannot be reached")
            return f"the monitoring store {where} {state}: {detail}"
        err = err.__cause__ or err.__context__
    return None
