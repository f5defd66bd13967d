"""The retrain policy: the one door for every retrain request (drift, schedule, manual,
webhook, UI).

A request is answered, in this order of precedence:

- ``circuit_open``: the last N trainings promoted nothing -- the gate rejected them, or they
  failed (bad data, an error, a crash) -- (N from config), and no person has reset the
  breaker since; a ``no_gain`` training in between is skipped;
- ``coalesced``: a training of this model is already admitted or running (whatever started
  it, `regrow train` included) and alive: a training or request whose lease ran out is
  recorded as crashed/failed first (tasks/policy/lease.py), one older than ``stale_after`` is
  ignored;
- ``cooling_down``: the last training that trained (or admitted request not known to have
  failed) is younger than the cooldown;
- ``over_budget``: the model already had its maximum of trainings this period (again counting
  trainings that trained, and admitted requests not known to have failed);

What a run counts for:

| outcome | cooldown | budget | circuit breaker |
|---|---|---|---|
| promoted (or passed, waiting for approval) | yes | yes | resets the count |
| rejected by the gate | yes | yes | counts |
| ``no_gain``: no significant gain over the champion, which stays | yes | yes | skipped |
| failed before a verdict: validation, bad config, error, crash | no | no | counts |
| crashed after moving champion to its version (``promoted_then_crashed``) | yes | yes | resets the count |
| failed on its request's own overrides (``bad_request``: a missing file, an empty split) | no | no | no |
| a reproduction (`regrow reproduce`; no `training_runs` row) | no | no | no |
| skipped: data and config unchanged since the champion's training | no | no | no |

A failed run trained nothing, so it neither cools the model down nor spends its budget: the
next request (with fixed data) is admitted at once. Repeated failures still open the breaker,
so a broken upstream cannot keep starting trainings. A request whose own override values
make its training fail blocks nobody else: the webhook receiver refuses values the config
schema refuses (422) before anything is recorded, and a value that only fails on the data
(a path to a missing file) is recorded as ``bad_request``, which the breaker skips.
- ``admitted``: a training should start, carrying this request's id as provenance.

Decisions for one model are serialised through a lock row in the monitoring store (an
UPDATE takes a row lock on PostgreSQL and the write lock on SQLite), so a burst of
concurrent requests admits at most one training.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, cast, overload

import sqlalchemy as sa

from regrow.configs.schema import RetrainPolicy, parse_duration
from regrow.tasks.policy.lease import PROMOTED_CRASHED, reap_expired
from regrow.tasks.store.database import (
    Store,
    circuit_resets,
    now,
    policy_locks,
    retrain_requests,
    training_runs,
)

ADMITTED, COALESCED, COOLING, OVER_BUDGET, CIRCUIT_OPEN = (
    "admitted", "coalesced", "cooling_down", "over_budget", "circuit_open")
IN_FLIGHT = ("admitted", "running")
# What may ask the policy for a training.
REQUEST_KINDS = ("drift", "schedule", "manual", "webhook", "ui", "demo")
# What a training run may record as its trigger: a request kind, or `reproduce` -- a run of
# `regrow reproduce`, which writes no `training_runs` row and so never counts here.
TRIGGER_KINDS = (*REQUEST_KINDS, "reproduce")


@dataclass(frozen=True)
class PolicyVerdict:
    """The answer to one retrain request."""

    request_id: int
    verdict: str
    detail: str

    @property
    def admitted(self) -> bool:
        """True when a training should start for this request."""
        return self.verdict == ADMITTED


@overload
def _utc(value: dt.datetime) -> dt.datetime: ...
@overload
def _utc(value: None) -> None: ...
def _utc(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


# Gate verdicts as training records keep them: `reject` counts for the circuit breaker;
# `no_gain` (a sound candidate no better than the champion, which stays) is skipped by it.
REJECT, NO_GAIN = "reject", "no_gain"
# Training record statuses that end a run without a model that trained to a verdict.
FAILED_STATUSES = ("failed", "crashed")
# A run that stopped after ingest because data and config were the champion's: it trained
# nothing (no cooldown, no budget) and it is no failure (the circuit breaker ignores it).
SKIPPED = "skipped"
# A run that failed on a value its own request chose (an override naming a file that does not
# exist, a cutoff that leaves no rows: `flows.steps.request_at_fault`): the request was bad,
# not the model or its data, so the circuit breaker ignores it (and, having trained nothing,
# it spends no cooldown or budget).
BAD_REQUEST = "bad_request"
NOT_TRAINED = (*FAILED_STATUSES, SKIPPED, BAD_REQUEST)


class NoLockRow(Exception):
    """The model has no row in ``policy_locks`` yet: `ensure_lock_row` first."""


def ensure_lock_row(store: Store, model: str) -> None:
    """Create the model's lock row if it does not exist (a request in the caller's transaction
    needs it: `request_retrain` with `conn`)."""
    with store.engine.connect() as conn:
        if conn.execute(sa.select(policy_locks.c.model).where(policy_locks.c.model == model)).first():
            return
    try:
        with store.engine.begin() as conn:
            conn.execute(policy_locks.insert().values(model=model, touched_at=now()))
    except sa.exc.IntegrityError:
        pass  # another process created it first


# The policy answers every webhook delivery, so its statements are built once, with bound
# parameters: SQLAlchemy then reuses their cache keys and compiled forms, where statements
# built per call cost about three times as much CPU to run (see tests/bench/webhook.py).
_M: sa.BindParameter[str] = sa.bindparam("m")
_LOCK = policy_locks.update().where(policy_locks.c.model == _M).values(
    touched_at=sa.bindparam("touched"))
_LAST_RESET = sa.select(sa.func.max(circuit_resets.c.at)).where(circuit_resets.c.model == _M)
_RECENT_ENDS = (sa.select(training_runs.c.status, training_runs.c.verdict, training_runs.c.ended_at)
                .where(training_runs.c.model == _M,
                       training_runs.c.status.in_(("finished", PROMOTED_CRASHED,
                                                   *FAILED_STATUSES)))
                .order_by(training_runs.c.id.desc()).limit(200))


def _lock(conn: sa.Connection, model: str) -> None:
    if conn.execute(_LOCK, {"m": model, "touched": now()}).rowcount == 0:
        raise NoLockRow(model)


def consecutive_rejections(conn: sa.Connection, model: str) -> int:
    """Trainings that promoted nothing (gate rejections, failures, crashes) since the last
    passing training or circuit reset, whichever is later; a ``no_gain`` verdict is skipped
    (it neither counts nor resets the count)."""
    last_reset = conn.execute(_LAST_RESET, {"m": model}).scalar()
    count = 0
    for status, verdict, ended in conn.execute(_RECENT_ENDS, {"m": model}):
        if last_reset is not None and _utc(ended) and _utc(ended) <= _utc(last_reset):
            break
        if status == "finished" and verdict == NO_GAIN:
            continue  # judged sound and no better: neither a failure nor a promotion
        if status == PROMOTED_CRASHED or (status == "finished" and verdict != REJECT):
            break
        count += 1
    return count


def rejection_streak(store: Store, model: str) -> int:
    """`consecutive_rejections` in a connection of its own: how many trainings in a row
    promoted nothing (the circuit breaker opens when it reaches `circuit_breaker_after`)."""
    with store.engine.connect() as conn:
        return consecutive_rejections(conn, model)


def _decide_statements() -> dict[str, sa.Executable]:
    rr, tr = retrain_requests, training_runs
    stale: sa.BindParameter[dt.datetime] = sa.bindparam("stale")
    since: sa.BindParameter[dt.datetime] = sa.bindparam("since")
    # Cooldown and budget count trainings that trained, whatever started them, and admitted
    # requests not known to have failed; a failed run trained nothing (see the module doc).
    skipped_runs = sa.select(tr.c.run_id).where(tr.c.model == _M, tr.c.status == SKIPPED,
                                                 tr.c.run_id.is_not(None))
    req_counts = sa.and_(rr.c.model == _M, rr.c.verdict == ADMITTED, rr.c.state != "failed",
                         sa.or_(rr.c.run_id.is_(None), rr.c.run_id.not_in(skipped_runs)))
    run_counts = sa.and_(tr.c.model == _M, tr.c.status.not_in(NOT_TRAINED))
    return {
        "inflight": sa.select(rr.c.id).where(rr.c.model == _M, rr.c.state.in_(IN_FLIGHT),
                                             rr.c.created_at >= stale)
                    .order_by(rr.c.id.desc()).limit(1),
        "running": sa.select(tr.c.id, tr.c.trigger).where(
            tr.c.model == _M, tr.c.status == "running", tr.c.started_at >= stale)
            .order_by(tr.c.id.desc()).limit(1),
        "last_request": sa.select(sa.func.max(rr.c.created_at)).where(req_counts),
        "last_training": sa.select(sa.func.max(tr.c.started_at)).where(run_counts),
        "admitted": sa.select(sa.func.count()).select_from(rr).where(
            req_counts, rr.c.created_at >= since),
        "trained": sa.select(sa.func.count()).select_from(tr).where(
            run_counts, tr.c.started_at >= since),
        "insert": retrain_requests.insert(),
    }


_Q = _decide_statements()


def _decide(conn: sa.Connection, model: str, policy: RetrainPolicy, at: dt.datetime) -> tuple[str, str]:
    reap_expired(conn, model, at)  # work whose process died stops coalescing (tasks/policy/lease.py)
    rejections = consecutive_rejections(conn, model)
    if rejections >= policy.circuit_breaker_after:
        return CIRCUIT_OPEN, (f"{rejections} consecutive trainings promoted nothing (gate "
                              f"rejections or failures; limit {policy.circuit_breaker_after}); "
                              "reset with `regrow reset-circuit`")
    stale = at - dt.timedelta(seconds=parse_duration(policy.stale_after))
    inflight = conn.execute(_Q["inflight"], {"m": model, "stale": stale}).first()
    if inflight:
        return COALESCED, f"training for request #{inflight.id} is already in flight"
    running = conn.execute(_Q["running"], {"m": model, "stale": stale}).first()
    if running:
        return COALESCED, f"a {running.trigger} training of this model is running"
    last_request = conn.execute(_Q["last_request"], {"m": model}).scalar()
    last_training = conn.execute(_Q["last_training"], {"m": model}).scalar()
    starts = [_utc(t) for t in (last_request, last_training) if t is not None]
    last = max(starts) if starts else None
    cooldown = dt.timedelta(seconds=parse_duration(policy.cooldown))
    if last is not None and at - last < cooldown:
        wait = cooldown - (at - last)
        return COOLING, f"last training started {last:%Y-%m-%d %H:%M:%S}; cooldown " \
                        f"{policy.cooldown}, {int(wait.total_seconds())} s left"
    since = at - dt.timedelta(seconds=parse_duration(policy.budget_period))
    admitted = conn.execute(_Q["admitted"], {"m": model, "since": since}).scalar_one()
    trained = conn.execute(_Q["trained"], {"m": model, "since": since}).scalar_one()
    used = max(admitted, trained)
    if used >= policy.max_trainings:
        return OVER_BUDGET, f"{used} trainings in the last {policy.budget_period} " \
                            f"(budget {policy.max_trainings})"
    since_last = "no training before" if last is None else \
        f"last training started {last:%Y-%m-%d %H:%M:%S}, cooldown {policy.cooldown} passed"
    return ADMITTED, (f"{since_last}; {used + 1} of {policy.max_trainings} trainings in the last "
                      f"{policy.budget_period}")


def _record(conn: sa.Connection, model: str, policy: RetrainPolicy, *, kind: str,
            reason: str, ref: str | None = None, at: dt.datetime | None = None) -> PolicyVerdict:
    """Record and answer a request inside `conn`'s transaction, which it locks for the model.

    Raises:
        ValueError: an unknown trigger kind or an empty reason.
        NoLockRow: the model has never been asked about: `ensure_lock_row` first.
    """
    if kind not in REQUEST_KINDS:
        raise ValueError(f"unknown trigger kind {kind!r}; one of {REQUEST_KINDS}")
    if not reason.strip():
        raise ValueError("a retrain request needs a reason")
    at = at or now()
    _lock(conn, model)
    verdict, detail = _decide(conn, model, policy, at)
    res = conn.execute(_Q["insert"], {
        "model": model, "kind": kind, "reason": reason, "ref": ref, "verdict": verdict,
        "detail": detail, "state": "admitted" if verdict == ADMITTED else "none",
        "created_at": at, "updated_at": at})
    return PolicyVerdict(int(cast("sa.Row[Any]", res.inserted_primary_key)[0]), verdict, detail)


def request_retrain(store: Store, model: str, policy: RetrainPolicy, *, kind: str, reason: str,
                    ref: str | None = None, at: dt.datetime | None = None,
                    conn: sa.Connection | None = None) -> PolicyVerdict:
    """Record a retrain request and answer it (see the module docstring): the one function
    through which every request -- webhook, UI form, event, schedule, drift, command line,
    Python API, backtest -- reaches the policy.

    With `conn`, the request is recorded inside the caller's transaction (the caller commits:
    a webhook delivery records its claim, the request and its answer together); the model's
    lock row must then exist (`ensure_lock_row`). Without it, in a transaction of its own.

    Raises:
        ValueError: an unknown trigger kind or an empty reason.
        NoLockRow: with `conn`, the model has never been asked about.
    """
    if conn is not None:
        return _record(conn, model, policy, kind=kind, reason=reason, ref=ref, at=at)
    try:
        with store.engine.begin() as own:
            return _record(own, model, policy, kind=kind, reason=reason, ref=ref, at=at)
    except NoLockRow:
        ensure_lock_row(store, model)
    with store.engine.begin() as own:
        return _record(own, model, policy, kind=kind, reason=reason, ref=ref, at=at)


def mark_request(store: Store, request_id: int, state: str, run_id: str | None = None,
                 detail: str | None = None) -> None:
    """Move an admitted request to running, done or failed (`detail`: what came of it)."""
    values = {"state": state, "run_id": run_id, "updated_at": now()}
    if detail is not None:
        values["detail"] = detail
    with store.engine.begin() as conn:
        conn.execute(retrain_requests.update().where(retrain_requests.c.id == request_id)
                     .values(**values))


def request_state(store: Store, request_id: int) -> str | None:
    """The state of a retrain request (None if there is no such request)."""
    with store.engine.connect() as conn:
        return conn.execute(sa.select(retrain_requests.c.state)
                            .where(retrain_requests.c.id == request_id)).scalar()


def reset_circuit(store: Store, model: str, actor: str, reason: str) -> None:
    """A person closes the circuit breaker; rejections before now no longer count."""
    with store.engine.begin() as conn:
        conn.execute(circuit_resets.insert().values(model=model, actor=actor, reason=reason,
                                                    at=now()))


def recent_requests(store: Store, model: str, limit: int = 20) -> list[dict]:
    """The newest retrain requests of a model."""
    q = (sa.select(retrain_requests).where(retrain_requests.c.model == model)
         .order_by(retrain_requests.c.id.desc()).limit(limit))
    with store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(q)]
