"""The monitoring store: regrow's own tables, through SQLAlchemy (SQLite or PostgreSQL)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

metadata = sa.MetaData()

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


def now() -> dt.datetime:
    """Current UTC time."""
    return dt.datetime.now(dt.UTC)


@dataclass
class Store:
    """A handle on the monitoring database; tables are created on first use."""

    url: str
    _engine: sa.Engine | None = None

    @property
    def engine(self) -> sa.Engine:
        """The engine, created (and the schema ensured) lazily."""
        if self._engine is None:
            self._engine = sa.create_engine(self.url, pool_pre_ping=True)
            metadata.create_all(self._engine)
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

    def start_training(self, model: str, trigger: str, reason: str | None) -> int:
        """Record a training run that is starting; returns its row id."""
        with self.engine.begin() as conn:
            res = conn.execute(training_runs.insert().values(
                model=model, trigger=trigger, reason=reason, status="running", started_at=now()))
            return int(res.inserted_primary_key[0])

    def finish_training(self, row_id: int, *, status: str, run_id: str | None = None,
                        verdict: str | None = None, version: str | None = None,
                        detail: str | None = None) -> None:
        """Close a training run record."""
        with self.engine.begin() as conn:
            conn.execute(training_runs.update().where(training_runs.c.id == row_id).values(
                status=status, run_id=run_id, verdict=verdict, version=version, detail=detail,
                ended_at=now()))

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
