"""Leases: an in-flight training, and the request executing it, prove that they are alive.

The process doing the work renews a row of ``training_leases`` from a daemon thread every
quarter of the lease (``REGROW_LEASE_SECONDS``, 45 s by default: a renewal every ~11 s).
When the process dies -- ``kill -9``, the OOM killer, a lost node -- the renewals stop; once
the lease has run out, the retrain policy (`reap_expired`, called under its per-model lock)
records the training as ``crashed`` and its request as ``failed``, each with the time of
the last heartbeat, and admits the next request. On the machine that ran it, a dead process
is known at once: the lease names its holder's host, pid and a proof of which machine and
process that was (`tasks.store.liveness`), so a process there need not wait for the lease to
run out. A training that had moved champion to its version before it died is recorded
``promoted_then_crashed``: it promoted, and the circuit breaker does not count it as a
failure. A record without a lease (written by an older version, or an event-dispatched request
not yet picked up) still falls back to ``retrain.stale_after``.

`exclusive` uses the same rows as short locks between processes (one model's alias moves).

Times come from the writers' clocks: hosts sharing one store need synchronised clocks (skew
well below the lease).
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa

from regrow.tasks.store.database import (
    Store,
    alias_history,
    retrain_requests,
    training_leases,
    training_runs,
)
from regrow.tasks.store.liveness import holder_gone, shown, this_holder

DEFAULT_SECONDS = 45.0
ENV_SECONDS = "REGROW_LEASE_SECONDS"
log = logging.getLogger("regrow.lease")


def lease_seconds() -> float:
    """The lease length from ``REGROW_LEASE_SECONDS`` (default 45).

    Raises:
        ValueError: not a number, or below 2 seconds.
    """
    raw = os.environ.get(ENV_SECONDS, "").strip()
    if not raw:
        return DEFAULT_SECONDS
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{ENV_SECONDS} must be a number of seconds, got {raw!r}") from None
    if value < 2:
        raise ValueError(f"{ENV_SECONDS} must be at least 2 seconds, got {raw!r}")
    return value


class Heartbeat:
    """Renews one lease from a daemon thread until stopped (a context manager too).

    Args:
        store: the monitoring store.
        key: ``training:<row id>`` or ``request:<id>``.
        model: the model the work belongs to (the policy reaps per model).
        seconds: the lease length; renewed every quarter of it.
    """

    def __init__(self, store: Store, key: str, model: str, seconds: float | None = None):
        self.store, self.key, self.model = store, key, model
        self.seconds = seconds or lease_seconds()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, written: bool = False) -> Heartbeat:
        """Write the lease (unless `written` already) and start renewing it.

        Raises:
            sqlalchemy.exc.SQLAlchemyError: the store cannot be reached (nothing started).
        """
        if not written:
            self.store.renew_lease(self.key, self.model, self.seconds)
        self._thread = threading.Thread(target=self._renew, name=f"regrow-lease-{self.key}",
                                        daemon=True)
        self._thread.start()
        return self

    def _renew(self) -> None:
        while not self._stop.wait(self.seconds / 4):
            try:
                self.store.renew_lease(self.key, self.model, self.seconds)
            except Exception as err:  # noqa: BLE001 - the store may be back before the lease ends
                log.warning("lease %s not renewed: %s", self.key, str(err).splitlines()[0])

    def stop(self, release: bool = True) -> None:
        """Stop renewing; with `release`, drop the lease (the work's end is recorded)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.seconds)
        if release:
            try:
                self.store.release_lease(self.key)
            except Exception as err:  # noqa: BLE001 - an expired lease of a closed record is inert
                log.warning("lease %s not released: %s", self.key, str(err).splitlines()[0])

    def __enter__(self) -> Heartbeat:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _utc(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


# A training that moved the champion to its version and died before closing its record: it
# promoted (the breaker does not count it as a failure), then crashed.
PROMOTED_CRASHED = "promoted_then_crashed"

# Run by the retrain policy for every request (and so every webhook delivery): built once.
# A model holds few leases at a time (its in-flight training and request, its alias lock).
_LEASES = sa.select(training_leases).where(training_leases.c.model == sa.bindparam("m"))


def _why(lease: sa.Row[Any], at: dt.datetime) -> str | None:
    """Why `lease`'s work is dead (its lease ran out, or its process is gone from this
    machine), or None while it may live."""
    gone = holder_gone(lease.holder)
    if not gone and _utc(lease.expires_at) >= at:
        return None
    return (f"no heartbeat since {_utc(lease.renewed_at):%Y-%m-%d %H:%M:%S} UTC from "
            f"{shown(lease.holder)}; the process died"
            + (" (its pid is gone from this host)" if gone else ""))


def dead_work(lease: sa.Row[Any], at: dt.datetime) -> str | None:
    """Why a lease row's work is dead, or None while it may live (a read -- the fleet view --
    shows such work as crashed without writing anything)."""
    return _why(lease, at)


def _promoted(conn: sa.Connection, model: str, version: str | None, since: dt.datetime) -> bool:
    """True when champion moved to `version` after `since` (the training that registered it
    promoted it before it died)."""
    if not version:
        return False
    h = alias_history.c
    return conn.execute(sa.select(h.id).where(
        h.model == model, h.alias == "champion", h.new_version == version, h.at >= since)
        .limit(1)).first() is not None


def reap_expired(conn: sa.Connection, model: str, at: dt.datetime) -> list[str]:
    """Close the work of a model whose process died: trainings ``crashed`` (or
    ``promoted_then_crashed`` when champion had moved to their version), requests ``failed``.

    Work is dead when its lease ran out, or at once when its holder ran on this machine and
    its process is gone (`tasks.store.liveness`).

    Args:
        conn: a connection inside the caller's transaction (the policy's lock).
        model: the model.
        at: now.

    Returns:
        One line per record closed, saying what died and when it was last alive.
    """
    tl, tr, rr = training_leases, training_runs, retrain_requests
    notes = []
    for lease in conn.execute(_LEASES, {"m": model}).all():
        why = _why(lease, at)
        if why is None:
            continue
        kind, _, ident = lease.key.partition(":")
        if kind == "training" and ident.isdigit():
            row = conn.execute(sa.select(tr.c.version, tr.c.started_at)
                               .where(tr.c.id == int(ident), tr.c.status == "running")).first()
            promoted = row is not None and _promoted(conn, model, row.version,
                                                     _utc(row.started_at))
            if promoted and row is not None:
                why = f"promoted v{row.version}, then crashed: {why}"
            done = conn.execute(tr.update().where(tr.c.id == int(ident), tr.c.status == "running")
                                .values(status=PROMOTED_CRASHED if promoted else "crashed",
                                        detail=why[:4000], ended_at=at)).rowcount
        elif kind == "request" and ident.isdigit():
            old = conn.execute(sa.select(rr.c.detail).where(rr.c.id == int(ident))).scalar()
            done = conn.execute(rr.update().where(rr.c.id == int(ident),
                                                  rr.c.state.in_(("admitted", "running")))
                                .values(state="failed", updated_at=at,
                                        detail=f"{old or ''}; crashed: {why}"[:4000])).rowcount
        else:
            done = 0
        if done:
            notes.append(f"{lease.key} crashed: {why}")
        conn.execute(tl.delete().where(tl.c.key == lease.key, tl.c.holder == lease.holder,
                                       tl.c.renewed_at == lease.renewed_at))
    return notes


def reap(store: Store, model: str) -> list[str]:
    """`reap_expired` in a transaction of its own (a training started outside the policy)."""
    from regrow.tasks.store.database import now

    with store.engine.begin() as conn:
        return reap_expired(conn, model, now())


def as_reaped(store: Store, model: str, trainings: list[dict[str, Any]],
              requests: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Training and request records as `reap_expired` would close them now, without writing:
    a read (``regrow status``) shows dead work as crashed (or failed) at once, before the next
    training or request records it."""
    from regrow.tasks.store.database import now

    at = now()
    with store.engine.connect() as conn:
        dead = {lease.key: why for lease in conn.execute(_LEASES, {"m": model})
                if (why := _why(lease, at)) is not None}
        if not dead:
            return trainings, requests
        shown_trainings = []
        for row in trainings:
            why = dead.get(f"training:{row['id']}")
            if row["status"] == "running" and why:
                promoted = _promoted(conn, model, row["version"], _utc(row["started_at"]))
                row = {**row, "status": PROMOTED_CRASHED if promoted else "crashed",
                       "detail": f"promoted v{row['version']}, then crashed: {why}" if promoted
                       else why}
            shown_trainings.append(row)
    shown_requests = [{**r, "state": "failed", "detail": f"{r['detail'] or ''}; crashed: {why}"}
                      if r["state"] in ("admitted", "running")
                      and (why := dead.get(f"request:{r['id']}")) else r for r in requests]
    return shown_trainings, shown_requests


class Busy(RuntimeError):
    """Another process held a lock lease for longer than we could wait."""


# The `exclusive` keys this thread (or task) holds, so that a nested ask does not wait for itself.
_HELD: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar("regrow_held_leases",
                                                                       default=frozenset())


@contextlib.contextmanager
def exclusive(store: Store, key: str, model: str, seconds: float = 30.0,
              wait: float = 120.0) -> Iterator[None]:
    """Hold a short lock between processes (a lease row), e.g. around one model's alias moves.

    Only short transactions touch the store, so the holder may write to it meanwhile; a
    holder that dies frees the lock when its lease (`seconds`) runs out. The lease row lives
    in the monitoring store, so on PostgreSQL the lock holds across machines. Re-entrant: a
    holder that asks again for the same key (a promotion that also clears the challenger)
    already has it.

    Raises:
        Busy: the lock stayed taken for `wait` seconds.
    """
    held = _HELD.get()
    if key in held:
        yield
        return
    holder = this_holder(uuid.uuid4().hex[:8])
    deadline = time.monotonic() + wait
    while not store.try_lease(key, model, holder, seconds):
        if time.monotonic() > deadline:
            raise Busy(f"{key} stayed locked for {wait:.0f} s")
        time.sleep(0.05)
    token = _HELD.set(held | {key})
    try:
        yield
    finally:
        _HELD.reset(token)
        store.release_lease(key, holder)
