"""The retrain policy on SQLite and on the real PostgreSQL: storms, coalescing, cooldown,
budget, circuit breaker."""

from __future__ import annotations

import datetime as dt
import threading

import pytest

from regrow.configs.schema import RetrainPolicy
from regrow.tasks.policy import retrain as policy
from regrow.tasks.store.database import Store
from tests.procs import pg_database

MODEL = "storm-model"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request, tmp_path):
    """An empty monitoring store on each backend."""
    if request.param == "sqlite":
        s = Store(f"sqlite:///{tmp_path / 'm.db'}")
        yield s
        s.dispose()
        return
    with pg_database() as url:
        s = Store(url)
        yield s
        s.dispose()


def ask(store: Store, pol: RetrainPolicy, at: dt.datetime | None = None, kind: str = "drift"):
    return policy.request_retrain(store, MODEL, pol, kind=kind, reason="drift seen", at=at)


def test_storm_of_100_concurrent_requests_admits_one(store: Store):
    pol = RetrainPolicy()
    verdicts: list[str] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        for _ in range(n):
            v = ask(store, pol).verdict
            with lock:
                verdicts.append(v)

    threads = [threading.Thread(target=worker, args=(10,)) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(verdicts) == 100
    assert verdicts.count(policy.ADMITTED) == 1
    assert verdicts.count(policy.COALESCED) == 99
    rows = policy.recent_requests(store, MODEL, 200)
    assert len(rows) == 100 and all(r["reason"] == "drift seen" for r in rows)


def test_coalesce_then_cooldown_then_budget(store: Store):
    pol = RetrainPolicy(cooldown="1h", max_trainings=2, budget_period="1d")
    t0 = dt.datetime(2026, 1, 1, 8, tzinfo=dt.UTC)
    first = ask(store, pol, t0)
    assert first.admitted
    policy.mark_request(store, first.request_id, "running")
    assert ask(store, pol, t0 + dt.timedelta(minutes=5)).verdict == policy.COALESCED
    policy.mark_request(store, first.request_id, "done", "run-1")
    cooling = ask(store, pol, t0 + dt.timedelta(minutes=30))
    assert cooling.verdict == policy.COOLING and "cooldown 1h" in cooling.detail
    second = ask(store, pol, t0 + dt.timedelta(minutes=61))
    assert second.admitted
    policy.mark_request(store, second.request_id, "done")
    over = ask(store, pol, t0 + dt.timedelta(hours=3))
    assert over.verdict == policy.OVER_BUDGET and "budget 2" in over.detail
    assert ask(store, pol, t0 + dt.timedelta(days=1, hours=1)).admitted  # a new period


def test_stale_in_flight_training_stops_coalescing(store: Store):
    pol = RetrainPolicy(cooldown="1m", stale_after="2h")
    t0 = dt.datetime(2026, 1, 1, 8, tzinfo=dt.UTC)
    assert ask(store, pol, t0).admitted  # never marked done: the worker died
    assert ask(store, pol, t0 + dt.timedelta(hours=1)).verdict == policy.COALESCED
    assert ask(store, pol, t0 + dt.timedelta(hours=3)).admitted


def test_circuit_opens_after_rejections_until_reset(store: Store):
    pol = RetrainPolicy(cooldown="1s", circuit_breaker_after=3, max_trainings=100)
    for _ in range(3):
        row = store.start_training(MODEL, "drift", "x")
        store.finish_training(row, status="finished", verdict="reject", version="9")
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)  # past the cooldown
    opened = ask(store, pol, later)
    assert opened.verdict == policy.CIRCUIT_OPEN
    assert "3 consecutive trainings promoted nothing" in opened.detail
    assert ask(store, pol, later, kind="manual").verdict == policy.CIRCUIT_OPEN  # every kind
    policy.reset_circuit(store, MODEL, "alice", "looked at the data, fixed upstream")
    assert ask(store, pol, later + dt.timedelta(seconds=1)).admitted


@pytest.mark.parametrize("status,verdict,cools,spends", [
    ("failed", None, False, False),     # validation failure, bad config, an error in a step
    ("crashed", None, False, False),    # the process died; detected by its lease
    ("finished", "reject", True, True),  # trained, judged, rejected by the gate
    ("finished", "promote", True, True),
    ("skipped", None, False, False),    # data and config were the champion's: trained nothing
    (policy.BAD_REQUEST, None, False, False),  # failed on its request's own override values
])
def test_what_a_finished_run_counts_for(store: Store, status, verdict, cools, spends):
    """The table in tasks/policy/retrain.py: only runs that trained cool down and spend budget."""
    row = store.start_training(MODEL, "manual", "x")
    store.finish_training(row, status=status, verdict=verdict)
    cooling = RetrainPolicy(cooldown="6h", max_trainings=100)
    answer = ask(store, cooling)
    assert (answer.verdict == policy.COOLING) is cools, answer
    budget = RetrainPolicy(cooldown="1s", max_trainings=1, budget_period="1d")
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)
    answer = ask(store, budget, later)
    assert (answer.verdict == policy.OVER_BUDGET) is spends, answer


def test_failed_admitted_request_does_not_cool_down(store: Store):
    """A request admitted and then failed (e.g. validation) leaves the door open."""
    pol = RetrainPolicy(cooldown="6h")
    first = ask(store, pol)
    assert first.admitted
    policy.mark_request(store, first.request_id, "failed")
    assert ask(store, pol).admitted


def test_skipped_runs_train_nothing_and_are_no_failures(store: Store):
    """Admitted requests whose training stopped after ingest (unchanged data and config):
    no cooldown, no budget, and the circuit breaker does not count them."""
    pol = RetrainPolicy(cooldown="6h", max_trainings=2, circuit_breaker_after=2)
    for _ in range(4):
        answer = ask(store, pol)
        assert answer.admitted, answer
        run_id = f"run-{answer.request_id}"
        row = store.start_training(MODEL, "drift", "x")
        store.finish_training(row, status=policy.SKIPPED, run_id=run_id, detail="unchanged")
        policy.mark_request(store, answer.request_id, "done", run_id,
                            detail="admitted; training skipped: unchanged")
    with store.engine.connect() as conn:
        assert policy.consecutive_rejections(conn, MODEL) == 0
    done = policy.recent_requests(store, MODEL)[0]
    assert done["state"] == "done" and "training skipped" in done["detail"]
    # A run that trained still cools the model down afterwards.
    store.finish_training(store.start_training(MODEL, "drift", "x"), status="finished",
                          verdict="reject")
    assert ask(store, pol).verdict == policy.COOLING


def test_failures_open_the_circuit_like_rejections(store: Store):
    pol = RetrainPolicy(cooldown="1s", circuit_breaker_after=3, max_trainings=100)
    for status, verdict in (("failed", None), ("finished", "reject"), ("crashed", None)):
        store.finish_training(store.start_training(MODEL, "drift", "x"), status=status,
                              verdict=verdict)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)
    assert ask(store, pol, later).verdict == policy.CIRCUIT_OPEN


def test_failures_on_a_requests_own_values_do_not_open_the_circuit(store: Store):
    """Three trainings that failed on their request's overrides (a missing file, a cutoff that
    leaves no rows: recorded bad_request) neither open the breaker nor break a streak."""
    pol = RetrainPolicy(cooldown="1s", circuit_breaker_after=2, max_trainings=100)
    for _ in range(3):
        store.finish_training(store.start_training(MODEL, "webhook", "x"),
                              status=policy.BAD_REQUEST, detail="the request's own overrides")
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)
    assert ask(store, pol, later).admitted
    with store.engine.connect() as conn:
        assert policy.consecutive_rejections(conn, MODEL) == 0
    store.finish_training(store.start_training(MODEL, "drift", "x"), status="failed")
    store.finish_training(store.start_training(MODEL, "webhook", "x"), status=policy.BAD_REQUEST)
    store.finish_training(store.start_training(MODEL, "drift", "x"), status="failed")
    with store.engine.connect() as conn:  # skipped over, not a break in the streak
        assert policy.consecutive_rejections(conn, MODEL) == 2


def test_which_failures_are_the_requests_own():
    from regrow.configs.schema import ConfigError
    from regrow.flows.steps import request_at_fault
    from regrow.tasks.data.ingest import IngestError
    from regrow.tasks.model.train import SplitError, TrainingError

    path = {"data.source.path": "/nowhere.csv"}
    assert request_at_fault(path, IngestError("data.source.path: file not found: /nowhere.csv")) \
        == ["data.source.path"]
    assert request_at_fault({}, IngestError("data.source.path: file not found")) == []
    query = {"data.source.query": "select 1"}
    assert request_at_fault(query, IngestError("data.source.url: cannot reach pg://h/db: "
                                               "refused")) == []  # the database, not the request
    cut = {"split.cutoff": "2030-01-01"}
    assert request_at_fault(cut, SplitError("split: time split left 600 training and 0 "
                                            "holdout rows")) == ["split.cutoff"]
    assert request_at_fault(cut, TrainingError("too few examples of class 1")) == []
    assert request_at_fault(path, ConfigError("path '/nowhere.csv' references unset ${X}")) \
        == ["data.source.path"]
    assert request_at_fault(path, RuntimeError("boom")) == []


def test_a_promotion_closes_the_count(store: Store):
    pol = RetrainPolicy(cooldown="1s", circuit_breaker_after=2)
    for verdict in ("reject", "promote", "reject"):
        row = store.start_training(MODEL, "drift", "x")
        store.finish_training(row, status="finished", verdict=verdict)
    assert ask(store, pol, dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)).admitted


def test_direct_trainings_count_for_coalescing_cooldown_and_budget(store: Store):
    pol = RetrainPolicy(cooldown="10m", max_trainings=2, budget_period="1d")
    row = store.start_training(MODEL, "manual", "regrow train by hand")
    running = ask(store, pol)
    assert running.verdict == policy.COALESCED and "manual training" in running.detail
    store.finish_training(row, status="finished", verdict="promote")
    assert ask(store, pol).verdict == policy.COOLING
    store.finish_training(store.start_training(MODEL, "manual", "again"), status="finished",
                          verdict="promote")
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    assert ask(store, pol, later).verdict == policy.OVER_BUDGET


def test_bad_requests_are_refused(store: Store):
    with pytest.raises(ValueError, match="unknown trigger kind"):
        policy.request_retrain(store, MODEL, RetrainPolicy(), kind="cosmic-ray", reason="x")
    with pytest.raises(ValueError, match="needs a reason"):
        policy.request_retrain(store, MODEL, RetrainPolicy(), kind="manual", reason="  ")
