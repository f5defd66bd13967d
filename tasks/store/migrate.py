"""Schema migrations of the monitoring store, through Alembic (`regrow db upgrade`).

The scripts live in ``tasks/store/migrations`` (``versions/0001_baseline.py`` is the schema regrow
0.1.0 created without a version table). The revision is kept in the store's own
``regrow_schema_version`` table, so a PostgreSQL database shared with MLflow (whose table is
Alembic's default ``alembic_version``) keeps the two apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from regrow.tasks.store import database as st

SCRIPTS = Path(__file__).resolve().parent / "migrations"
BASELINE = "0001"


@dataclass(frozen=True)
class UpgradeResult:
    """What `upgrade` did to one store."""

    url: str  # password hidden
    before: str | None  # None: no version table (empty, or made by regrow 0.1.0)
    after: str
    applied: list[str] = field(default_factory=list)
    stamped_baseline: bool = False  # an unversioned store recognised as the baseline

    def describe(self) -> str:
        """One sentence for the terminal."""
        if not self.applied and not self.stamped_baseline:
            return f"{self.url}: at schema revision {self.after}, nothing to do"
        start = ("no version (regrow 0.1.0), recognised as revision "
                 f"{BASELINE}" if self.stamped_baseline else f"revision {self.before or 'none'}")
        steps = ", ".join(self.applied) or "none"
        return f"{self.url}: {start} -> {self.after}; applied {steps}"


def _config(conn: sa.Connection):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPTS))
    cfg.attributes["connection"] = conn
    return cfg


def revisions() -> list[str]:
    """Every revision the scripts know, oldest first."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(SCRIPTS))
    return [r.revision for r in reversed(list(script.walk_revisions()))]


def upgrade(url: str, target: str = "head") -> UpgradeResult:
    """Bring the store at `url` to `target` (default: the newest revision), keeping its rows.

    An empty database gets every table; a store regrow 0.1.0 made (its tables, no version table)
    is first stamped as the baseline. The revisions run in one transaction: on PostgreSQL an
    upgrade that fails changes nothing.

    Raises:
        StoreSchemaError: the database holds only some of the baseline's tables, or a revision
            this release does not know.
    """
    from alembic import command

    engine = sa.create_engine(url)
    where = engine.url.render_as_string(hide_password=True)
    try:
        before = st.schema_revision(engine)
        known = revisions()
        if before is not None and before not in known:
            raise st.StoreSchemaError(f"{where} is at schema revision {before}, which this "
                                      f"regrow does not know (it knows {', '.join(known)}): a "
                                      "newer release made it")
        stamped = False
        if before is None:
            present = st.regrow_tables(engine)
            missing = sorted(set(st.metadata.tables) - set(present)) if present else []
            if present and _baseline_missing(missing):
                raise st.StoreSchemaError(
                    f"{where} holds some regrow tables ({', '.join(present)}) but not "
                    f"{', '.join(missing)}, and no schema version: not a store regrow made; "
                    "nothing was changed")
            if present:
                with engine.begin() as conn:
                    command.stamp(_config(conn), BASELINE)
                stamped = True
        start = BASELINE if stamped else before
        with engine.begin() as conn:
            command.upgrade(_config(conn), target)
        after = st.schema_revision(engine) or ""
    finally:
        engine.dispose()
    applied = known[known.index(start) + 1:known.index(after) + 1] if start else \
        known[:known.index(after) + 1]
    return UpgradeResult(where, before, after, applied, stamped)


def _baseline_missing(missing: list[str]) -> bool:
    """Whether tables the baseline created are absent (tables added later may be)."""
    return bool(set(missing) & BASELINE_TABLES)


BASELINE_TABLES = frozenset({
    "alias_history", "bakes", "circuit_resets", "drift_checks", "labels", "policy_locks",
    "predictions", "retrain_requests", "shadow_predictions", "training_leases", "training_runs",
    "webhook_deliveries"})
