"""Webhook delivery claims in the monitoring store (tasks.policy.deliveries), on SQLite and on the real
PostgreSQL: one owner per delivery id, stored answers, conflicts, take-overs, releases, the
request an earlier attempt made, WAL tuning and the fair writer lock."""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa

from regrow.configs.schema import RetrainPolicy
from regrow.tasks.policy import retrain as policy
from regrow.tasks.policy.deliveries import Deliveries, FairLock, Settled, use_wal
from regrow.tasks.store.database import Store, webhook_deliveries
from tests.procs import pg_database

DIGEST = hashlib.sha256(b'{"model": "m"}').hexdigest()
OTHER = hashlib.sha256(b'{"model": "other"}').hexdigest()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """An empty monitoring store: a SQLite file, or a throwaway PostgreSQL database."""
    if request.param == "sqlite":
        s = Store(f"sqlite:///{tmp_path / 'regrow.db'}")
        yield s
        s.dispose()
        return
    try:
        with pg_database() as url:
            s = Store(url)
            yield s
            s.dispose()
    except RuntimeError as err:
        pytest.fail(str(err))


def test_first_claim_owns_and_a_retry_replays_the_stored_answer(store: Store):
    d = Deliveries(store, wait_seconds=0.3)
    first = d.claim("d-1", "retrain", DIGEST)
    assert first.owned and first.outcome == "owned"
    row = d.get("d-1")
    assert row is not None and (row.status, row.endpoint, row.body_sha256) == (
        "processing", "retrain", DIGEST)
    d.finish("d-1", 202, {"verdict": "admitted", "at": dt.date(2026, 1, 2)}, "m", 7)
    again = d.claim("d-1", "retrain", DIGEST)
    assert not again.owned and again.outcome == "done"
    assert (again.status_code, again.body) == (202, {"verdict": "admitted", "at": "2026-01-02"})
    row = d.get("d-1")
    assert (row.status, row.status_code, row.model, row.request_id) == ("done", 202, "m", 7)


def test_the_same_id_with_another_body_or_endpoint_is_a_conflict(store: Store):
    d = Deliveries(store, wait_seconds=0.3)
    assert d.claim("d-2", "retrain", DIGEST).owned
    body = d.claim("d-2", "retrain", OTHER)
    endpoint = d.claim("d-2", "data-arrived", DIGEST)
    assert (body.outcome, body.conflict) == ("conflict", "body")
    assert (endpoint.outcome, endpoint.conflict) == ("conflict", "endpoint")


def test_a_young_claim_is_waited_for_then_reported_busy(store: Store):
    d = Deliveries(store, wait_seconds=0.6, abandoned_after=60)
    assert d.claim("d-3", "retrain", DIGEST).owned
    t = time.monotonic()
    busy = d.claim("d-3", "retrain", DIGEST)
    assert busy.outcome == "busy" and not busy.owned
    assert time.monotonic() - t >= 0.55


def test_a_claim_answered_while_waiting_is_replayed(store: Store):
    d = Deliveries(store, wait_seconds=5, abandoned_after=60)
    assert d.claim("d-4", "retrain", DIGEST).owned
    finisher = threading.Timer(0.3, d.finish, ("d-4", 202, {"verdict": "coalesced"}, "m", None))
    finisher.start()
    got = d.claim("d-4", "retrain", DIGEST)
    finisher.join()
    assert (got.outcome, got.body) == ("done", {"verdict": "coalesced"})


def test_an_abandoned_claim_is_taken_over_once(store: Store):
    d = Deliveries(store, wait_seconds=0.3, abandoned_after=60)
    with store.engine.begin() as conn:  # what a receiver that died mid-delivery leaves
        conn.execute(webhook_deliveries.insert().values(
            delivery_id="d-5", endpoint="retrain", body_sha256=DIGEST, status="processing",
            received_at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)))
    n = 8
    start = threading.Barrier(n)

    def one(_: int) -> str:
        start.wait()
        return d.claim("d-5", "retrain", DIGEST).outcome

    with ThreadPoolExecutor(n) as pool:
        outcomes = list(pool.map(one, range(n)))
    assert outcomes.count("recovered") == 1 and outcomes.count("busy") == n - 1


def test_concurrent_claims_of_one_id_have_one_owner(store: Store):
    d = Deliveries(store, wait_seconds=0.5)
    n = 12
    start = threading.Barrier(n)

    def one(_: int) -> str:
        start.wait()
        return d.claim("d-6", "retrain", DIGEST).outcome

    with ThreadPoolExecutor(n) as pool:
        outcomes = list(pool.map(one, range(n)))
    assert outcomes.count("owned") == 1 and outcomes.count("busy") == n - 1
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(webhook_deliveries)).scalar() == 1


def test_release_deletes_or_marks_abandoned(store: Store):
    d = Deliveries(store, wait_seconds=0.3, abandoned_after=60)
    assert d.claim("d-7", "retrain", DIGEST).owned
    d.release("d-7", request_made=False)  # nothing happened: the row goes
    assert d.get("d-7") is None
    assert d.claim("d-7", "retrain", DIGEST).outcome == "owned"
    d.release("d-7", request_made=True)  # a request was made: a retry takes over at once
    assert d.get("d-7").status == "processing"
    assert d.claim("d-7", "retrain", DIGEST).outcome == "recovered"
    d.finish("d-7", 500, {"detail": "x"}, None, None)
    d.release("d-7", request_made=True)  # an answered delivery is not released
    assert d.get("d-7").status == "done"


def test_settle_commits_with_the_claim_or_not_at_all(store: Store):
    """Work done in the claim's transaction is stored with it: answered, pending, or (when it
    raises) nothing at all, as if the delivery had not arrived."""
    d = Deliveries(store, wait_seconds=0.3, abandoned_after=60)
    rules = RetrainPolicy(cooldown="1h")
    policy.ensure_lock_row(store, "m")

    def decide(conn: sa.Connection) -> Settled:
        verdict = policy.request_retrain(store, "m", rules, kind="webhook", reason="r",
                                         ref="webhook:s-1", conn=conn)
        if verdict.admitted:
            return Settled("m", verdict.request_id, verdict=verdict.verdict)
        return Settled("m", verdict.request_id, 202, {"verdict": verdict.verdict},
                       verdict.verdict)

    pending = d.claim("s-1", "retrain", DIGEST, settle=decide)
    assert pending.outcome == "owned" and not pending.settled.answered
    row = d.get("s-1")
    assert (row.status, row.model, row.request_id) == ("processing", "m",
                                                        pending.settled.request_id)
    answered = d.claim("s-2", "retrain", DIGEST, settle=decide)
    assert answered.settled.answered and answered.settled.verdict == policy.COALESCED
    row = d.get("s-2")
    assert (row.status, row.status_code, row.request_id) == ("done", 202,
                                                              answered.settled.request_id)
    replay = d.claim("s-2", "retrain", DIGEST, settle=decide)  # not called again
    assert (replay.outcome, replay.body) == ("done", {"verdict": policy.COALESCED})

    def boom(conn: sa.Connection) -> Settled:
        decide(conn)
        raise RuntimeError("the process failed mid-delivery")

    with pytest.raises(RuntimeError):
        d.claim("s-3", "retrain", DIGEST, settle=boom)
    assert d.get("s-3") is None  # neither the claim ...
    assert len(policy.recent_requests(store, "m")) == 2  # ... nor the request it made
    assert d.claim("s-3", "retrain", DIGEST, settle=decide).settled.answered


def test_earlier_request_finds_what_an_abandoned_attempt_asked(store: Store):
    d = Deliveries(store)
    assert d.earlier_request("m", "webhook:d-8") is None
    made = policy.request_retrain(store, "m", RetrainPolicy(), kind="webhook", reason="r",
                                  ref="webhook:d-8")
    policy.request_retrain(store, "m", RetrainPolicy(), kind="webhook", reason="r",
                           ref="webhook:d-8")  # a later one with the same ref is not it
    found = d.earlier_request("m", "webhook:d-8")
    assert found is not None and found.verdict == made and found.state == "admitted"
    policy.mark_request(store, made.request_id, "running")
    assert d.earlier_request("m", "webhook:d-8").state == "running"
    assert d.earlier_request("other-model", "webhook:d-8") is None


def test_use_wal_switches_a_sqlite_file_and_leaves_others_alone(store: Store, tmp_path: Path):
    switched = use_wal(store)
    with store.engine.connect() as conn:
        if store.engine.dialect.name == "sqlite":
            assert switched
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
        else:
            assert not switched
    memory = Store("sqlite://")
    assert not use_wal(memory)
    memory.dispose()


def test_writer_lock_only_on_sqlite(store: Store):
    lock = Deliveries(store).writing()
    assert isinstance(lock, FairLock) == (store.engine.dialect.name == "sqlite")
    with lock:  # usable either way
        pass


def test_fair_lock_hands_over_in_arrival_order():
    lock = FairLock()
    order: list[int] = []
    threads = []
    lock.__enter__()
    for i in range(6):
        t = threading.Thread(target=lambda i=i: (lock.__enter__(), order.append(i),
                                                 lock.__exit__(None, None, None)))
        t.start()
        threads.append(t)
        deadline = time.monotonic() + 5
        while len(lock._waiters) < i + 1:  # this waiter queued before the next one starts
            assert time.monotonic() < deadline, "a waiter never queued"
            time.sleep(0.001)
    lock.__exit__(None, None, None)
    for t in threads:
        t.join(5)
    assert order == list(range(6))
    assert not lock._held and not lock._waiters
