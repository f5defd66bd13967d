"""Webhook deliveries in the monitoring store: claims, stored answers, take-overs.

A delivery is claimed by inserting its row in ``webhook_deliveries`` (the delivery id is
unique), so that of many attempts of one delivery -- retries, concurrent duplicates, a second
receiver process -- exactly one processes it; the others wait for its answer and replay it.
A claim whose process died while processing is taken over once it is old enough; one whose
processing failed is released at once.

On SQLite the store has one writer at a time: `Deliveries.writing` queues this process's
writers on one first-come first-served lock, and `use_wal` switches the database to
write-ahead logging. On PostgreSQL the database arbitrates alone.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa

from regrow.tasks.policy.retrain import PolicyVerdict
from regrow.tasks.store.database import Store, now, retrain_requests, webhook_deliveries

log = logging.getLogger("regrow.deliveries")

# Ours to process (fresh or taken over), or what an earlier attempt of the delivery left.
ClaimOutcome = Literal["owned", "recovered", "done", "conflict", "busy"]


@dataclass(frozen=True)
class Settled:
    """What a fresh delivery came to inside the transaction that claimed it.

    Attributes:
        model: the model the delivery named, if it named a known one.
        request_id: the retrain request it raised, if any.
        status_code: the HTTP status answered; None when the delivery is not answered yet
            (its row stays "processing" until `Deliveries.finish`).
        body: the JSON body answered (with `status_code`).
        verdict: the retrain policy's verdict, when it was asked.
    """

    model: str | None = None
    request_id: int | None = None
    status_code: int | None = None
    body: dict[str, Any] | None = None
    verdict: str | None = None

    @property
    def answered(self) -> bool:
        """True when the delivery was answered (and the answer stored) in the claim's
        transaction."""
        return self.status_code is not None


# Work done inside a claim's transaction, on its connection.
Settle = Callable[[sa.Connection], Settled]


class _Taken(Exception):
    """The delivery id is claimed already."""


@dataclass(frozen=True)
class Claim:
    """The outcome of claiming a delivery id.

    Attributes:
        outcome: ``owned`` (ours to process), ``recovered`` (ours, taken over from an attempt
            that died while processing), ``done`` (answered before: see `status_code` and
            `body`), ``conflict`` (the id was used for another delivery: see `conflict`),
            ``busy`` (another attempt is still processing it).
        status_code: the stored answer's status (``done`` only).
        body: the stored answer's JSON body (``done`` only).
        conflict: ``endpoint`` or ``body``, whichever differs from the first use of the id
            (``conflict`` only).
        settled: what `settle` came to (a fresh ``owned`` claim made with one only).
    """

    outcome: ClaimOutcome
    status_code: int | None = None
    body: dict[str, Any] | None = None
    conflict: Literal["endpoint", "body"] | None = None
    settled: Settled | None = None

    @property
    def owned(self) -> bool:
        """True when this attempt must process the delivery."""
        return self.outcome in ("owned", "recovered")


@dataclass(frozen=True)
class Delivery:
    """One row of ``webhook_deliveries``."""

    delivery_id: str
    endpoint: str
    body_sha256: str
    status: str
    received_at: dt.datetime
    model: str | None = None
    status_code: int | None = None
    response: str | None = None
    request_id: int | None = None


@dataclass(frozen=True)
class EarlierRequest:
    """The retrain request an earlier attempt of a delivery made, and its state now."""

    verdict: PolicyVerdict
    state: str


class FairLock:
    """A mutex handed to waiters in arrival order.

    `threading.Lock` lets whichever thread the scheduler wakes first take it, so under a
    burst some deliveries wait many turns while later ones go first; handing the lock over
    first-come first-served keeps the slowest answers close to the queue's length.
    """

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._waiters: deque[threading.Lock] = deque()
        self._held = False

    def __enter__(self) -> FairLock:
        with self._guard:
            if not self._held:
                self._held = True
                return self
            turn = threading.Lock()
            turn.acquire()
            self._waiters.append(turn)
        turn.acquire()  # released by the holder when it is this waiter's turn
        return self

    def __exit__(self, *exc: object) -> None:
        with self._guard:
            if self._waiters:
                self._waiters.popleft().release()  # ownership passes on; _held stays True
            else:
                self._held = False


_WD = webhook_deliveries
# Built once: every delivery runs them (see tasks/policy/retrain.py on statements built per call).
_CLAIM = _WD.insert()
_ANSWER = _WD.update().where(_WD.c.delivery_id == sa.bindparam("d")).values(
    status=sa.bindparam("status"), status_code=sa.bindparam("status_code"),
    model=sa.bindparam("model"), response=sa.bindparam("response"),
    request_id=sa.bindparam("request_id"))
_GET = sa.select(_WD).where(_WD.c.delivery_id == sa.bindparam("d"))


def _answer_values(delivery_id: str, status_code: int | None, body: dict[str, Any] | None,
                   model: str | None, request_id: int | None) -> dict[str, Any]:
    return {"d": delivery_id, "status": "processing" if status_code is None else "done",
            "status_code": status_code, "model": model, "request_id": request_id,
            # values that JSON cannot hold are stored as text
            "response": None if status_code is None else json.dumps(body, default=str)}


class Deliveries:
    """Claims and answers of webhook deliveries, safe to use from many threads."""

    def __init__(self, store: Store, *, wait_seconds: float = 5.0,
                 abandoned_after: float = 120.0) -> None:
        """
        Args:
            store: the monitoring store.
            wait_seconds: how long a repeated delivery waits for the first one to finish.
            abandoned_after: a delivery still "processing" after this many seconds is taken
                over (its process died between claiming and answering).
        """
        self.store = store
        self.wait_seconds = wait_seconds
        self.abandoned_after = abandoned_after
        # SQLite has one writer at a time and its busy handler backs off in sleeps of up to
        # 100 ms; queueing this process's writers on a (fair) lock hands over without sleeping.
        self._sqlite_lock = FairLock() if store.url.startswith("sqlite") else None

    def writing(self) -> AbstractContextManager[Any]:
        """The writer lock to hold around any write to the store (a no-op on PostgreSQL)."""
        return self._sqlite_lock if self._sqlite_lock is not None else nullcontext()

    def get(self, delivery_id: str) -> Delivery | None:
        """The stored row of a delivery, or None."""
        with self.store.engine.connect() as conn:
            row = conn.execute(_GET, {"d": delivery_id}).first()
        if row is None:
            return None
        return Delivery(**{k: v for k, v in row._mapping.items() if k != "id"})

    def claim(self, delivery_id: str, endpoint: str, digest: str,
              settle: Settle | None = None) -> Claim:
        """Claim a delivery: insert its "processing" row, or learn what an earlier attempt left.

        A row that is still processing is waited for (up to `wait_seconds`), and taken over
        when it is older than `abandoned_after`.

        Args:
            delivery_id: the sender's delivery id.
            endpoint: which endpoint it was sent to.
            digest: SHA-256 (hex) of the raw body.
            settle: processing to do in the transaction that inserts a fresh claim, after the
                insert: its `Settled` is stored on the row (as the answer, when it has one)
                and the whole commits at once -- one transaction per delivery instead of
                three. Should it raise, nothing of the delivery is stored, as if it had not
                arrived. Not called for a claim taken over (``recovered``).

        Returns:
            The `Claim`; only an ``owned`` or ``recovered`` one may be processed further, and
            an ``owned`` one whose `settled` is answered needs nothing more.
        """
        deadline = time.monotonic() + self.wait_seconds
        pause = 0.02
        row: Delivery | None = None
        while True:
            if row is None:
                try:
                    return Claim("owned", settled=self._insert(delivery_id, endpoint, digest,
                                                               settle))
                except _Taken:
                    pass
            row = self.get(delivery_id)
            if row is not None:
                if row.endpoint != endpoint or row.body_sha256 != digest:
                    return Claim("conflict",
                                 conflict="endpoint" if row.endpoint != endpoint else "body")
                if row.status == "done":
                    return Claim("done", status_code=row.status_code,
                                 body=json.loads(row.response or "null"))
                if self._take_over(delivery_id, row.received_at):
                    return Claim("recovered")
            if time.monotonic() >= deadline:
                return Claim("busy")
            if row is not None:
                time.sleep(pause)
                pause = min(pause * 2, 0.25)

    def _insert(self, delivery_id: str, endpoint: str, digest: str,
                settle: Settle | None) -> Settled | None:
        """Insert a fresh claim (then `settle` and its outcome), in one transaction.

        Raises:
            _Taken: the delivery id has a row already.
        """
        with self.writing(), self.store.engine.begin() as conn:
            try:
                conn.execute(_CLAIM, {"delivery_id": delivery_id, "endpoint": endpoint,
                                      "body_sha256": digest, "status": "processing",
                                      "received_at": now()})
            except sa.exc.IntegrityError as err:
                raise _Taken(delivery_id) from err  # leaves the block: rolled back
            if settle is None:
                return None
            settled = settle(conn)
            conn.execute(_ANSWER, _answer_values(delivery_id, settled.status_code, settled.body,
                                                 settled.model, settled.request_id))
            return settled

    def _take_over(self, delivery_id: str, received_at: dt.datetime) -> bool:
        """Claim a delivery whose first attempt died while processing (atomic; one winner)."""
        wd = webhook_deliveries
        at = received_at if received_at.tzinfo else received_at.replace(tzinfo=dt.UTC)
        cutoff = now() - dt.timedelta(seconds=self.abandoned_after)
        if at >= cutoff:
            return False
        with self.writing(), self.store.engine.begin() as conn:
            res = conn.execute(wd.update().where(
                wd.c.delivery_id == delivery_id, wd.c.status == "processing",
                wd.c.received_at == received_at).values(received_at=now()))
        if res.rowcount == 1:
            log.warning("delivery %s: taking over an attempt abandoned while processing",
                        delivery_id)
            return True
        return False

    def finish(self, delivery_id: str, status_code: int, body: dict[str, Any],
               model: str | None, request_id: int | None) -> None:
        """Store the answer of a claimed delivery; later attempts replay it.

        Args:
            delivery_id: the claimed delivery.
            status_code: the HTTP status answered.
            body: the JSON body answered (values that JSON cannot hold are stored as text).
            model: the model the delivery named, if it named a known one.
            request_id: the retrain request it raised, if any.
        """
        with self.writing(), self.store.engine.begin() as conn:
            conn.execute(_ANSWER, _answer_values(delivery_id, status_code, body, model,
                                                 request_id))

    def release(self, delivery_id: str, request_made: bool) -> None:
        """Give up a claim whose processing failed, so that a retry redoes it.

        The row is deleted when nothing happened yet, else marked abandoned (a retry takes it
        over at once and reuses the retrain request already made). Never raises: a claim
        that could not be released is taken over once `abandoned_after` passes.

        Args:
            delivery_id: the claimed delivery.
            request_made: whether processing got as far as asking the retrain policy.
        """
        wd = webhook_deliveries
        mine = (wd.c.delivery_id == delivery_id) & (wd.c.status == "processing")
        try:
            with self.writing(), self.store.engine.begin() as conn:
                if request_made:
                    conn.execute(wd.update().where(mine).values(
                        received_at=dt.datetime(1970, 1, 1, tzinfo=dt.UTC)))
                else:
                    conn.execute(wd.delete().where(mine))
        except Exception:  # noqa: BLE001 - the claim is taken over once abandoned_after passes
            log.exception("delivery %s: could not release the claim", delivery_id)

    def earlier_request(self, model: str, ref: str) -> EarlierRequest | None:
        """The retrain request an abandoned attempt of a delivery already made, if any.

        Args:
            model: the model the delivery named.
            ref: the request's ref (``webhook:<delivery id>``).

        Returns:
            Its verdict and current state, or None when the attempt made no request.
        """
        rr = retrain_requests
        with self.store.engine.connect() as conn:
            row = conn.execute(sa.select(rr).where(rr.c.model == model, rr.c.ref == ref)
                               .order_by(rr.c.id).limit(1)).first()
        if row is None:
            return None
        return EarlierRequest(PolicyVerdict(row.id, row.verdict, row.detail or ""), row.state)


def use_wal(store: Store) -> bool:
    """On SQLite, write-ahead logging with ``synchronous=NORMAL`` for the store's connections.

    In SQLite's default rollback-journal mode every commit costs several fsyncs (about 9 ms
    on the reference machine), and a delivery commits once or twice (an admitted request
    commits before its event goes, then stores the answer). In WAL mode a commit costs
    no fsync (durable across a crash of the process, not of the machine) and readers no longer
    block the writer. The journal mode is a property of the database file, so other processes
    using the same store switch to WAL as well, which SQLite supports on a local file system.

    Args:
        store: the monitoring store (its engine is created if need be).

    Returns:
        True when the pragmas were installed; False for PostgreSQL or an in-memory SQLite
        database, which are left alone.
    """
    engine = store.engine
    if engine.dialect.name != "sqlite" or engine.url.database in (None, "", ":memory:"):
        return False

    def pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
        except Exception as err:  # noqa: BLE001 - e.g. locked by another process: still usable
            log.warning("could not switch the SQLite store to WAL mode: %s", err)
        finally:
            cur.close()

    sa.event.listen(engine, "connect", pragmas)
    engine.dispose()  # the connection opened to create the tables predates the listener
    return True
