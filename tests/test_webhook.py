"""The signed-webhook receiver, served by a real uvicorn process against a real Prefect server
and a SQLite monitoring store: authentication, size limits, validation, idempotency, the
one-admission guarantee under a storm, secret rotation, and the events that reach Prefect."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from regrow.app.webhook import WebhookConfigError, create_app, sign
from regrow.configs.schema import SAFE_OVERRIDES
from regrow.flows.dispatch import ADMITTED_EVENT, DATA_EVENT
from regrow.tasks.store.database import Store, retrain_requests, webhook_deliveries
from tests.helpers import BINARY_CONFIG, merge, write_case
from tests.procs import free_port, pg_database, stop

ROOT = Path(__file__).resolve().parents[1]
SECRET = "current-secret-" + "a1b2c3d4e5f6a7b8"
PREVIOUS = "previous-secret-" + "0f9e8d7c6b5a4938"
MAX_BODY = 1024 * 1024
MODELS = ["wh-admit", "wh-neg", "wh-idem", "wh-storm", "wh-rot", "wh-data", "wh-race"]


def wait_until(check: Callable[[], Any], timeout: float, what: str, every: float = 0.5) -> Any:
    """Call `check` until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


def model_config(name: str) -> dict[str, Any]:
    """A valid config for `name` (its data file need not exist: nothing trains here); it lets
    senders override split.holdout_fraction besides the default keys, and name files in its
    folder and under /data."""
    return merge(BINARY_CONFIG, {"registry": {"model_name": name},
                                 "data": {"source": {"allowed_paths": [".", "/data"]}},
                                 "retrain": {"cooldown": "1h", "circuit_breaker_after": 3},
                                 "serve": {"allowed_overrides": [*SAFE_OVERRIDES,
                                                                 "split.holdout_fraction"]}})


@dataclass
class ReceiverProcess:
    """A running receiver: its URL, the Prefect API it emits to, its store and its log."""

    url: str
    api: str
    store: Store
    log: Path
    configs: dict[str, Path]


def start_receiver(tmp: Path, api: str, configs: list[Path], *, port: int | None = None,
                   extra_args: list[str] | None = None,
                   env_extra: dict[str, str] | None = None) -> tuple[subprocess.Popen, str, Path]:
    """`python -m regrow.app.webhook` on a free loopback port; returns (process, url, log path).

    Waits until ``/healthz`` answers.
    """
    port = port or free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "REGROW_"))}
    env.update(PREFECT_API_URL=api, PREFECT_HOME=str(tmp / "prefect-client"),
               PREFECT_SERVER_ANALYTICS_ENABLED="false", REGROW_HOME=str(tmp / "home"),
               REGROW_WEBHOOK_SECRET=SECRET, REGROW_WEBHOOK_SECRET_PREVIOUS=PREVIOUS,
               MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="1")
    env.update(env_extra or {})
    log = tmp / f"receiver-{port}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "regrow.app.webhook", "--host", "127.0.0.1", "--port", str(port),
             *(extra_args or []), *map(str, configs)],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"receiver exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False
    wait_until(up, 90, "the receiver's /healthz", every=0.25)
    return proc, url, log


@pytest.fixture(scope="module")
def receiver(prefect_server: str,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReceiverProcess]:
    """One receiver for the module, serving MODELS, with current and previous secrets."""
    tmp = tmp_path_factory.mktemp("webhook")
    paths = {m: write_case(tmp / "configs" / m, None, model_config(m)) for m in MODELS}
    proc, url, log = start_receiver(tmp, prefect_server, list(paths.values()))
    store = Store(f"sqlite:///{tmp / 'home' / 'regrow.db'}")
    try:
        yield ReceiverProcess(url, prefect_server, store, log, paths)
    finally:
        stop(proc)
        store.dispose()


# ------------------------------------------------------------------------------ helpers

def body_of(model: str, reason: str = "upstream table reloaded", **extra: Any) -> bytes:
    return json.dumps({"model": model, "reason": reason, **extra}).encode()


def post(rx: ReceiverProcess, body: bytes, *, endpoint: str = "retrain",
         delivery: str | None = None, secret: str = SECRET, ts: int | None = None,
         headers: dict[str, str | bytes] | None = None, drop: tuple[str, ...] = (),
         signed_body: bytes | None = None, client: httpx.Client | None = None) -> httpx.Response:
    """A signed POST (override or drop headers, or sign another body, to break it)."""
    h: dict[str, Any] = sign(secret, body if signed_body is None else signed_body,
                             int(time.time()) if ts is None else ts,
                             delivery_id=delivery or uuid.uuid4().hex)
    h.update(headers or {})
    for name in drop:
        h.pop(name, None)
    send = client.post if client is not None else httpx.post
    return send(f"{rx.url}/v1/hooks/{endpoint}", content=body, headers=h, timeout=60)


def requests_of(rx: ReceiverProcess, model: str) -> list[dict[str, Any]]:
    with rx.store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(
            sa.select(retrain_requests).where(retrain_requests.c.model == model)
            .order_by(retrain_requests.c.id))]


def delivery_row(rx: ReceiverProcess, delivery_id: str) -> dict[str, Any] | None:
    with rx.store.engine.connect() as conn:
        row = conn.execute(sa.select(webhook_deliveries)
                           .where(webhook_deliveries.c.delivery_id == delivery_id)).first()
    return None if row is None else dict(row._mapping)


def events_page(api: str, name: str, model: str) -> Any:
    """The newest events (up to 50, the API's page size) of one name for one model, as stored
    by the Prefect server; ``.total`` counts them all."""
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    with SyncPrefectClient(api) as client:
        return client.read_events(EventFilter(
            event=EventNameFilter(name=[name]),
            resource=EventResourceFilter(id=[f"regrow.model.{model}"])), limit=50)


def events_of(api: str, name: str, model: str) -> list[Any]:
    """The newest events of one name for one model."""
    return list(events_page(api, name, model).events)


def event_with_id(api: str, name: str, model: str, event_id: str) -> Any:
    """Wait for one event to be stored; return it."""
    found = wait_until(lambda: [e for e in events_of(api, name, model) if str(e.id) == event_id],
                       60, f"event {name} {event_id} on the Prefect server")
    return found[0]


# ------------------------------------------------------------------------------ the tests

def test_healthz_needs_no_signature(receiver: ReceiverProcess):
    res = httpx.get(f"{receiver.url}/healthz")
    assert res.status_code == 200
    assert res.json() == {"status": "ok", "models": sorted(MODELS)}


def test_signed_request_is_admitted_and_the_event_reaches_prefect(receiver: ReceiverProcess):
    delivery = f"gh-{uuid.uuid4()}"
    res = post(receiver, body_of("wh-admit", ref="commit 1a2b3c",
                                 overrides={"split.holdout_fraction": 0.3}), delivery=delivery)
    assert res.status_code == 202, res.text
    answer = res.json()
    assert answer["delivery_id"] == delivery
    assert answer["verdict"] == "admitted" and answer["event_id"]
    (req,) = requests_of(receiver, "wh-admit")
    assert req["id"] == answer["request_id"]
    assert (req["kind"], req["ref"], req["state"]) == ("webhook", f"webhook:{delivery}", "admitted")
    assert req["reason"] == "upstream table reloaded [ref: commit 1a2b3c]"
    row = delivery_row(receiver, delivery)
    assert row is not None and (row["status"], row["status_code"]) == ("done", 202)
    assert (row["endpoint"], row["model"], row["request_id"]) == ("retrain", "wh-admit", req["id"])
    assert json.loads(row["response"]) == answer

    ev = event_with_id(receiver.api, ADMITTED_EVENT, "wh-admit", answer["event_id"])
    assert ev.resource.id == "regrow.model.wh-admit"
    assert ev.payload["request_id"] == req["id"]
    assert ev.payload["kind"] == "webhook" and ev.payload["ref"] == f"webhook:{delivery}"
    assert "config_path" not in ev.payload  # the training deployment runs the config it serves
    assert ev.payload["overrides"] == {"split.holdout_fraction": 0.3}


def _oversized() -> bytes:
    return body_of("wh-neg", reason="x" * MAX_BODY)


def _chunks(data: bytes, size: int = 65536) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


# (name, body, post kwargs, status, words in the detail, recorded in webhook_deliveries)
REJECTED: list[tuple[str, Callable[[], bytes], dict[str, Any], int, str, bool]] = [
    ("wrong secret", lambda: body_of("wh-neg"), {"secret": "an-attacker-guess-000000"}, 401,
     "signature does not match", False),
    ("missing signature", lambda: body_of("wh-neg"), {"drop": ("X-Regrow-Signature",)}, 401,
     "missing X-Regrow-Signature", False),
    ("garbage signature", lambda: body_of("wh-neg"),
     {"headers": {"X-Regrow-Signature": b"sha256=zz\xe9"}}, 401, "signature does not match",
     False),
    ("missing timestamp", lambda: body_of("wh-neg"), {"drop": ("X-Regrow-Timestamp",)}, 401,
     "missing X-Regrow-Timestamp", False),
    ("timestamp not an integer", lambda: body_of("wh-neg"),
     {"headers": {"X-Regrow-Timestamp": "1.5e9"}}, 401, "unix seconds", False),
    ("stale timestamp", lambda: body_of("wh-neg"), {"ts": -301}, 401, "tolerance 300 s", False),
    ("future timestamp", lambda: body_of("wh-neg"), {"ts": +400}, 401, "tolerance 300 s", False),
    ("body changed after signing", lambda: body_of("wh-neg"),
     {"signed_body": body_of("wh-admit")}, 401,
     "signature does not match", False),
    ("oversized body", _oversized, {}, 413, "larger than 1048576 bytes", False),
    ("missing delivery id", lambda: body_of("wh-neg"), {"drop": ("X-Regrow-Delivery",)}, 400,
     "X-Regrow-Delivery is required", False),
    ("malformed JSON", lambda: b'{"model": "wh-neg", "reason": ', {}, 422, "json_invalid", True),
    ("schema: no reason, extra key", lambda: json.dumps(
        {"model": "wh-neg", "priority": "high"}).encode(), {}, 422, "extra_forbidden", True),
    ("schema: blank reason", lambda: body_of("wh-neg", reason="   "), {}, 422, "blank", True),
    ("overrides that break the config", lambda: body_of(
        "wh-neg", overrides={"split.holdout_fraction": 7}), {}, 422, "holdout_fraction", True),
    ("an override value that is not a time", lambda: body_of(
        "wh-neg", overrides={"split.cutoff": "'; DROP TABLE x; --"}), {}, 422,
     "split.cutoff: not a date or time", True),
    ("unknown model", lambda: body_of("no-such-model"), {}, 404, "unknown model", True),
]


def _send_rejected(rx: ReceiverProcess, case: tuple, delivery: str) -> httpx.Response:
    name, make, kwargs, *_ = case
    kwargs = dict(kwargs)
    if "ts" in kwargs:
        kwargs["ts"] = int(time.time()) + kwargs["ts"]
    return post(rx, make(), delivery=delivery, **kwargs)


@pytest.mark.parametrize("case", REJECTED, ids=[c[0] for c in REJECTED])
def test_rejected_delivery_raises_no_request(receiver: ReceiverProcess, case: tuple):
    _name, _make, _kwargs, status, words, recorded = case
    delivery = f"neg-{uuid.uuid4().hex}"
    res = _send_rejected(receiver, case, delivery)
    assert res.status_code == status, res.text
    assert words in json.dumps(res.json())
    assert requests_of(receiver, "wh-neg") == []
    assert requests_of(receiver, "no-such-model") == []
    row = delivery_row(receiver, delivery)
    if not recorded:  # unauthenticated (or unidentifiable) deliveries leave no trace
        assert row is None
    else:  # authenticated ones are recorded, and a retry gets the same answer
        assert row is not None and row["status_code"] == status
        again = _send_rejected(receiver, case, delivery)
        assert (again.status_code, again.json()) == (status, res.json())
        assert again.headers["X-Regrow-Replay"] == "true"


def test_refused_overrides_get_a_sentence_and_raise_no_request(receiver: ReceiverProcess,
                                                                tmp_path: Path):
    pwned = tmp_path / "pwned"
    popen = {"candidates.estimators.0.estimator": "subprocess.Popen",
             "candidates.estimators.0.params": {"args": ["touch", str(pwned)]},
             "candidates.estimators.0.grid": {}}
    for overrides in (popen, {"gate.max_regression": 0.5}, {"retrain.cooldown": "1s"}):
        delivery = f"ovr-{uuid.uuid4().hex}"
        res = post(receiver, body_of("wh-neg", overrides=overrides), delivery=delivery)
        assert res.status_code == 422, res.text
        body = res.json()
        assert body["refused"] == list(overrides)
        assert body["allowed"] == [*SAFE_OVERRIDES, "split.holdout_fraction"]
        assert body["detail"].startswith("overrides refused: ")
        assert all(k in body["detail"] for k in [*overrides, *body["allowed"]])
        assert delivery_row(receiver, delivery)["status_code"] == 422
    assert requests_of(receiver, "wh-neg") == []
    assert not pwned.exists()


def test_schema_errors_name_the_fields(receiver: ReceiverProcess):
    res = post(receiver, json.dumps({"model": 7, "reason": "x", "ref": None, "extra": 1}).encode())
    assert res.status_code == 422
    locs = {tuple(e["loc"]) for e in res.json()["detail"]}
    assert {("body", "model"), ("body", "extra")} <= locs


def test_oversized_chunked_body_is_cut_off(receiver: ReceiverProcess):
    data = _oversized()
    h = sign(SECRET, data, int(time.time()), delivery_id=uuid.uuid4().hex)
    try:  # no Content-Length: the receiver counts what it reads and stops past the limit
        res = httpx.post(f"{receiver.url}/v1/hooks/retrain", content=_chunks(data), headers=h,
                         timeout=30)
    except httpx.TransportError:  # the server may close before the client finished sending
        pytest.fail("the receiver closed the connection instead of answering 413")
    assert res.status_code == 413
    assert requests_of(receiver, "wh-neg") == []


def test_rejected_deliveries_emit_no_event(receiver: ReceiverProcess):
    for case in REJECTED:
        _send_rejected(receiver, case, f"neg-{uuid.uuid4().hex}")
    # A barrier: an event this receiver emits after all of the above. Once it is stored, an
    # admitted event emitted before it would be stored too.
    res = post(receiver, json.dumps({"model": "wh-neg", "source": None}).encode(),
               endpoint="data-arrived")
    assert res.status_code == 202, res.text
    event_with_id(receiver.api, DATA_EVENT, "wh-neg", res.json()["event_id"])
    assert events_of(receiver.api, ADMITTED_EVENT, "wh-neg") == []
    assert events_of(receiver.api, ADMITTED_EVENT, "no-such-model") == []
    assert requests_of(receiver, "wh-neg") == []


def test_same_delivery_twice_gets_the_first_answer(receiver: ReceiverProcess):
    delivery = str(uuid.uuid4())
    body = body_of("wh-idem")
    first = post(receiver, body, delivery=delivery)
    time.sleep(1.1)  # a sender's retry is signed afresh, with a later timestamp
    second = post(receiver, body, delivery=delivery)
    assert first.status_code == second.status_code == 202
    assert first.json() == second.json() and first.json()["verdict"] == "admitted"
    assert "X-Regrow-Replay" not in first.headers and second.headers["X-Regrow-Replay"] == "true"
    assert len(requests_of(receiver, "wh-idem")) == 1
    # the same id with another body is a sender bug, not a retry
    other = post(receiver, body_of("wh-idem", reason="something else"), delivery=delivery)
    assert other.status_code == 409 and "different body" in other.json()["detail"]
    other = post(receiver, json.dumps({"model": "wh-idem"}).encode(), endpoint="data-arrived",
                 delivery=delivery)
    assert other.status_code == 409 and "different endpoint" in other.json()["detail"]
    assert len(requests_of(receiver, "wh-idem")) == 1
    # a new delivery for the same model is a new request, coalesced with the first
    third = post(receiver, body)
    assert third.status_code == 202 and third.json()["verdict"] == "coalesced"
    assert third.json()["event_id"] is None
    assert len(requests_of(receiver, "wh-idem")) == 2


def test_50_concurrent_deliveries_admit_exactly_one(receiver: ReceiverProcess):
    n = 50
    start = threading.Barrier(n)
    body = body_of("wh-storm", reason="storm")

    def one(i: int) -> httpx.Response:
        start.wait()
        return post(receiver, body, delivery=f"storm-{i}-{uuid.uuid4().hex[:8]}", client=client)

    with httpx.Client(limits=httpx.Limits(max_connections=n)) as client, \
            ThreadPoolExecutor(n) as pool:
        responses = list(pool.map(one, range(n)))
    assert [r.status_code for r in responses] == [202] * n, [r.text for r in responses[:3]]
    verdicts = [r.json()["verdict"] for r in responses]
    assert verdicts.count("admitted") == 1 and verdicts.count("coalesced") == n - 1
    rows = requests_of(receiver, "wh-storm")
    assert len(rows) == n and sum(r["verdict"] == "admitted" for r in rows) == 1
    admitted = next(r.json() for r in responses if r.json()["verdict"] == "admitted")
    event_with_id(receiver.api, ADMITTED_EVENT, "wh-storm", admitted["event_id"])
    assert events_page(receiver.api, ADMITTED_EVENT, "wh-storm").total == 1


def test_concurrent_retries_of_one_delivery_make_one_request(receiver: ReceiverProcess):
    n = 12
    delivery = f"race-{uuid.uuid4().hex}"
    body = body_of("wh-race")
    start = threading.Barrier(n)

    def one(_: int) -> httpx.Response:
        start.wait()
        return post(receiver, body, delivery=delivery)

    with ThreadPoolExecutor(n) as pool:
        responses = list(pool.map(one, range(n)))
    assert {r.status_code for r in responses} == {202}
    assert len({json.dumps(r.json(), sort_keys=True) for r in responses}) == 1
    assert sum("X-Regrow-Replay" not in r.headers for r in responses) == 1
    assert len(requests_of(receiver, "wh-race")) == 1


def _abandoned_claim(rx: ReceiverProcess, delivery: str, body: bytes) -> None:
    """What a receiver that died between claiming a delivery and answering it leaves."""
    import datetime as dt

    with rx.store.engine.begin() as conn:
        conn.execute(webhook_deliveries.insert().values(
            delivery_id=delivery, endpoint="retrain", body_sha256=hashlib.sha256(body).hexdigest(),
            status="processing", received_at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)))


def test_a_claim_abandoned_mid_delivery_is_taken_over(receiver: ReceiverProcess):
    # died before asking the policy: the retry is processed as new
    body = body_of("wh-race", reason="after a crash")
    fresh = f"crash-{uuid.uuid4().hex}"
    _abandoned_claim(receiver, fresh, body)
    res = post(receiver, body, delivery=fresh)
    assert res.status_code == 202 and res.json()["verdict"] in {"admitted", "coalesced"}
    assert delivery_row(receiver, fresh)["status"] == "done"
    # died after asking the policy: the request it made is reused, not made twice
    asked = f"crash-{uuid.uuid4().hex}"
    _abandoned_claim(receiver, asked, body)
    with receiver.store.engine.begin() as conn:
        conn.execute(retrain_requests.insert().values(
            model="wh-race", kind="webhook", reason="after a crash", ref=f"webhook:{asked}",
            verdict="coalesced", detail="training for request #1 is already in flight",
            state="none", created_at=sa.func.now()))
    before = len(requests_of(receiver, "wh-race"))
    res = post(receiver, body, delivery=asked)
    assert res.status_code == 202, res.text
    assert res.json()["verdict"] == "coalesced" and "already in flight" in res.json()["detail"]
    assert len(requests_of(receiver, "wh-race")) == before
    # a claim that is still young is not taken over: the sender is told to come back
    young = f"busy-{uuid.uuid4().hex}"
    with receiver.store.engine.begin() as conn:
        conn.execute(webhook_deliveries.insert().values(
            delivery_id=young, endpoint="retrain", body_sha256=hashlib.sha256(body).hexdigest(),
            status="processing", received_at=sa.func.now()))
    t = time.monotonic()
    res = post(receiver, body, delivery=young)
    assert res.status_code == 409 and "still being processed" in res.json()["detail"]
    assert time.monotonic() - t >= 4.5  # it waited for the first attempt to finish


def test_previous_secret_is_accepted_during_rotation(receiver: ReceiverProcess):
    res = post(receiver, body_of("wh-rot"), secret=PREVIOUS)
    assert res.status_code == 202 and res.json()["verdict"] == "admitted", res.text
    assert post(receiver, body_of("wh-rot"), secret="retired-secret-00000000").status_code == 401
    assert len(requests_of(receiver, "wh-rot")) == 1


def test_data_arrived_emits_an_event_for_the_model(receiver: ReceiverProcess):
    delivery = f"data-{uuid.uuid4().hex}"
    res = post(receiver, json.dumps({"model": "wh-data", "source": {"path": "/data/new.csv"},
                                     "note": "nightly drop"}).encode(),
               endpoint="data-arrived", delivery=delivery)
    assert res.status_code == 202, res.text
    answer = res.json()
    assert answer["event"] == DATA_EVENT and answer["model"] == "wh-data"
    ev = event_with_id(receiver.api, DATA_EVENT, "wh-data", answer["event_id"])
    assert ev.payload["input_path"] == "/data/new.csv" and ev.payload["query"] is None
    assert ev.payload["source"] == {"path": "/data/new.csv"}
    assert ev.payload["delivery_id"] == delivery and ev.payload["note"] == "nightly drop"
    assert "config_path" not in ev.payload  # the deployments run the configs they serve
    assert requests_of(receiver, "wh-data") == []  # data arriving is not a retrain request
    query = post(receiver, json.dumps({"model": "wh-data", "source": {
        "query": "select * from t where day = current_date"}}).encode(), endpoint="data-arrived")
    assert query.status_code == 422 and query.json()["refused"] == ["source.query"], query.text
    outside = post(receiver, json.dumps({"model": "wh-data", "source": {
        "path": "/etc/hostname"}}).encode(), endpoint="data-arrived")
    assert outside.status_code == 422 and "allowed_paths" in outside.text, outside.text
    both = post(receiver, json.dumps({"model": "wh-data", "source": {
        "path": "a.csv", "query": "select 1"}}).encode(), endpoint="data-arrived")
    assert both.status_code == 422


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_signature_matches_the_readme_shell_recipe():
    body, ts = '{"model":"wh-admit","reason":"upstream table reloaded"}', 1767225600
    out = subprocess.run(
        ["sh", "-c", 'printf "%s.%s" "$TS" "$BODY" | openssl dgst -sha256 -hmac "$SECRET" '
                     "| sed 's/^.* //'"],
        env={**os.environ, "TS": str(ts), "BODY": body, "SECRET": SECRET},
        capture_output=True, text=True, check=True).stdout.strip()
    assert sign(SECRET, body.encode(), ts)["X-Regrow-Signature"] == f"sha256={out}"


def test_the_secret_is_never_logged_nor_returned(receiver: ReceiverProcess):
    text = receiver.log.read_text()
    assert "401" in text or "signature does not match" in text  # the log did see rejections
    assert SECRET not in text and PREVIOUS not in text
    with receiver.store.engine.connect() as conn:
        stored = " ".join(r[0] or "" for r in
                          conn.execute(sa.select(webhook_deliveries.c.response)))
    assert stored and SECRET not in stored and PREVIOUS not in stored


@pytest.mark.postgres
def test_storm_on_postgresql_admits_exactly_one(prefect_server: str, tmp_path: Path):
    try:
        with pg_database() as url:
            _storm_on(url, prefect_server, tmp_path)
    except RuntimeError as err:
        if "not reachable" in str(err):
            pytest.fail(str(err))
        raise


def _storm_on(url: str, prefect_server: str, tmp_path: Path) -> None:
    cfg = write_case(tmp_path / "pg", None, model_config("wh-pg"))
    proc, rx_url, log = start_receiver(tmp_path, prefect_server, [cfg],
                                       env_extra={"REGROW_DATABASE_URL": url})
    rx = ReceiverProcess(rx_url, prefect_server, Store(url), log, {"wh-pg": cfg})
    try:
        n = 50
        start = threading.Barrier(n)
        body = body_of("wh-pg", reason="storm on postgres")
        repeated = "pg-repeated-delivery"

        def one(i: int) -> httpx.Response:
            start.wait()  # ten of them are the same delivery, sent concurrently
            return post(rx, body, delivery=repeated if i < 10 else f"pg-{i}", client=client)

        with httpx.Client(limits=httpx.Limits(max_connections=n)) as client, \
                ThreadPoolExecutor(n) as pool:
            responses = list(pool.map(one, range(n)))
        assert [r.status_code for r in responses] == [202] * n
        assert len({json.dumps(r.json(), sort_keys=True) for r in responses[:10]}) == 1
        rows = requests_of(rx, "wh-pg")
        assert len(rows) == n - 9 and sum(r["verdict"] == "admitted" for r in rows) == 1
        with rx.store.engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(webhook_deliveries)
                                ).scalar() == n - 9
    finally:
        stop(proc)
        rx.store.dispose()


# ------------------------------------------------------------------------------ refusing to start

def test_refuses_to_start_without_a_usable_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from regrow.configs.schema import load_config

    loaded = load_config(write_case(tmp_path, None, model_config("wh-cfg")))
    monkeypatch.delenv("REGROW_WEBHOOK_SECRET", raising=False)
    monkeypatch.delenv("REGROW_WEBHOOK_SECRET_PREVIOUS", raising=False)
    with pytest.raises(WebhookConfigError, match="no webhook secret: set REGROW_WEBHOOK_SECRET"):
        create_app([loaded])
    with pytest.raises(WebhookConfigError, match="shorter than 16"):
        create_app([loaded], secrets=["hunter2"])
    twin = load_config(write_case(tmp_path / "twin", None, model_config("wh-cfg")))
    with pytest.raises(WebhookConfigError, match="named by two configs"):
        create_app([loaded, twin], secrets=[SECRET])


def test_refuses_to_start_without_a_prefect_api(tmp_path: Path):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from regrow.configs.schema import load_config

    loaded = load_config(write_case(tmp_path, None, model_config("wh-cfg")))
    with temporary_settings(restore_defaults={PREFECT_API_URL}), \
            pytest.raises(WebhookConfigError, match="PREFECT_API_URL is not set"):
        create_app({"wh-cfg": loaded}, secrets=[SECRET])


def test_command_line_reports_a_missing_secret(tmp_path: Path):
    cfg = write_case(tmp_path, None, model_config("wh-cfg"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGROW_WEBHOOK")}
    env["REGROW_HOME"] = str(tmp_path / "home")
    res = subprocess.run([sys.executable, "-m", "regrow.app.webhook", str(cfg)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert "no webhook secret" in res.stderr
