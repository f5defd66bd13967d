"""The signed-webhook receiver: a small FastAPI service in front of the retrain policy.

Prefect's own inbound webhooks are Cloud-only, so upstream systems call this instead:

- ``POST /v1/hooks/retrain`` -- ``{"model", "reason", "ref", "overrides"}``: the request goes
  through `tasks.policy.retrain.request_retrain` (kind ``webhook``); when admitted, the event
  ``regrow.retrain.admitted`` is emitted for the training deployment's trigger.
- ``POST /v1/hooks/data-arrived`` -- ``{"model", "source", "note"}``: the event
  ``regrow.data.arrived`` is emitted for the scoring / drift-check deployments.
- ``GET /healthz`` -- liveness and the models this receiver knows (no authentication).

Every POST is checked in this order: body size (413), signature and timestamp (401), delivery
id (400), then -- once the delivery is claimed -- JSON and schema (422), model (404).

Signature: ``X-Regrow-Signature: sha256=<hex>`` where ``<hex>`` is
HMAC-SHA256(secret, ``f"{timestamp}."`` + raw body) and ``X-Regrow-Timestamp`` is the unix
time in seconds, within ``tolerance_seconds`` of the receiver's clock either way. Two secrets
may be active at once (``REGROW_WEBHOOK_SECRET`` and, while rotating,
``REGROW_WEBHOOK_SECRET_PREVIOUS``). `sign` builds the headers.

Idempotency: ``X-Regrow-Delivery`` names the delivery. An authenticated delivery is claimed by
inserting its row in ``webhook_deliveries`` (unique delivery id) before anything else
happens; a repeated id gets the first answer again (status and body, plus the header
``X-Regrow-Replay: true``) and raises no second retrain request. Deliveries that fail
authentication are not recorded: their id is not trusted, and recording it would let anyone
reserve the id of a delivery the real sender has yet to make.

Events are emitted through Prefect's events client, which needs a Prefect API
(``PREFECT_API_URL``); without one Prefect would start a throw-away server inside this
process, so the receiver refuses to start. Emission is asynchronous: the event id in an
answer means the event was queued for the server, which the client reconnects to and resends
unconfirmed events on its own. An admitted request whose event cannot even be queued is
marked failed and answered 503 (stored like any answer: send a new delivery once Prefect is
back).

Slow and stalled senders: uvicorn bounds nothing between accepting a connection and the end of
a request (a client trickling its headers a byte at a time, or stopping halfway through its
body, held a connection and a worker slot for as long as it liked: 60 such connections stayed
open 23 s, a stalled body was never answered). The receiver therefore runs uvicorn with its own
HTTP protocol class (`guarded_protocol`, a subclass of the protocol uvicorn picks) and bounds:

- **headers**: a request's line and headers must arrive within ``header_timeout`` (5 s) of the
  connection being made (or of the previous response on a kept-alive connection), and hold at
  most ``MAX_HEAD_BYTES``; otherwise the connection is closed (with a 408 or 431 when some of a
  request had arrived). uvicorn has no such timeout: ``timeout_keep_alive`` runs only between
  requests and is reset by every byte, and ``h11_max_incomplete_event_size`` bounds size, not
  time, and only under h11 (httptools, which uvicorn picks when installed, has neither). A
  protocol subclass is the one place that sees a connection before any request exists; an
  ASGI middleware starts only once the headers are complete. Running the app under another
  server (hypercorn has such timeouts) is not an option: it is not in the lock.
- **body**: the whole body must arrive within ``body_timeout`` (10 s) of the headers,
  enforced where the app reads it (`asyncio.timeout` around `_read_bounded`): 408 with
  ``Connection: close``. 10 s carries the 1 MiB body limit at about 1 Mbit/s; webhook senders
  are servers, not phones.
- **connections**: at most ``max_connections`` (100) open at once; one more is answered 503 and
  closed at once, and uvicorn's ``limit_concurrency`` (one above it) bounds requests in flight
  too. 100 is twice the largest burst the tests send (50 concurrent deliveries), and each open
  connection costs a worker-thread slot only while its delivery is processed.
- idle kept-alive connections close after ``timeout_keep_alive`` (5 s, uvicorn's default,
  set explicitly).

The store work (claims, stored answers, take-overs, SQLite tuning and the writer lock) lives in
`tasks.policy.deliveries`; signing and verification in `tasks.policy.signing`. This module holds the HTTP
side: routes, bodies, status codes and messages.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from regrow.configs.schema import LoadedConfig
from regrow.flows import dispatch
from regrow.flows import events as notify
from regrow.tasks.policy import retrain as policy
from regrow.tasks.policy.deliveries import Claim, Deliveries, Settled
from regrow.tasks.policy.retrain import PolicyVerdict
from regrow.tasks.policy.signing import (  # noqa: F401 - re-exported: senders import them from here
    DELIVERY_HEADER,
    MIN_SECRET_LENGTH,
    PREVIOUS_SECRET_ENV,
    SECRET_ENV,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookConfigError,
    secrets_from_env,
    sign,
    signature,
    usable_secrets,
    verify,
)

if TYPE_CHECKING:
    from fastapi import FastAPI

    from regrow.tasks.store.database import Store
    from regrow.tasks.store.settings import Settings

log = logging.getLogger("regrow.webhook")

REPLAY_HEADER = "X-Regrow-Replay"
DEFAULT_PORT = 8787
HEADER_TIMEOUT = 5.0  # seconds for a request's line and headers (see the module docstring)
BODY_TIMEOUT = 10.0  # seconds for its body, once the headers are in
MAX_CONNECTIONS = 100  # open at once
MAX_HEAD_BYTES = 64 * 1024  # request line and headers
KEEP_ALIVE = 5  # seconds an idle kept-alive connection stays open

RETRAIN_ENDPOINT = "retrain"
DATA_ENDPOINT = "data-arrived"

# Short enough that "webhook:<id>" fits the 255-character ref column of retrain_requests.
_DELIVERY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}$")

# ------------------------------------------------------------------------------ bodies

class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetrainBody(_Body):
    """``POST /v1/hooks/retrain``: ask for a retrain through the policy."""

    model: str = Field(min_length=1, max_length=255, description="config.registry.model_name")
    reason: str = Field(min_length=1, max_length=2000, description="Why (recorded).")
    ref: str | None = Field(default=None, max_length=255,
                            description="The sender's own reference (commit, job id, ...).")
    overrides: dict[str, Any] = Field(default_factory=dict,
                                      description="Config keys to override for this training.")

    @field_validator("reason")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("reason must not be blank")
        return value


class PathSource(_Body):
    """New rows in a CSV or Parquet file (a path on the workers' file system)."""

    path: str = Field(min_length=1, max_length=4096)


class QuerySource(_Body):
    """New rows behind a query on the config's SQL source."""

    query: str = Field(min_length=1, max_length=20_000)


class DataArrivedBody(_Body):
    """``POST /v1/hooks/data-arrived``: new rows for a model."""

    model: str = Field(min_length=1, max_length=255)
    source: PathSource | QuerySource | None = None
    note: str | None = Field(default=None, max_length=2000)


# ------------------------------------------------------------------------------ answers

@dataclass(frozen=True)
class Answer:
    """What the receiver answers: status code, JSON body, extra headers."""

    status_code: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def _err(status: int, detail: Any, **extra: Any) -> Answer:
    return Answer(status, {"detail": detail, **extra})


class _TooLarge(Exception):
    pass


def _field_errors(err: ValidationError) -> list[dict[str, Any]]:
    """Pydantic errors as FastAPI-style ``{"loc", "msg", "type"}`` (inputs not echoed)."""
    return [{"loc": ["body", *e["loc"]], "msg": e["msg"], "type": e["type"]}
            for e in err.errors(include_url=False)]


# ------------------------------------------------------------------------------ receiver

class Receiver:
    """Verification, idempotency and dispatch, independent of the web framework.

    Every method is safe to call from many threads: the database does the arbitration
    (unique delivery id in `tasks.policy.deliveries`, the policy's per-model lock row).
    """

    def __init__(self, configs: dict[str, LoadedConfig], store: Store, secrets: tuple[bytes, ...],
                 *, max_body: int, tolerance_seconds: int, wait_seconds: float = 5.0,
                 abandoned_after: float = 120.0) -> None:
        """
        Args:
            configs: model name -> loaded config.
            store: the monitoring store (retrain requests, webhook deliveries).
            secrets: accepted HMAC secrets, current first.
            max_body: largest body accepted, in bytes.
            tolerance_seconds: largest allowed distance between the timestamp and now.
            wait_seconds: how long a repeated delivery waits for the first one to finish.
            abandoned_after: a delivery still "processing" after this many seconds is
                taken over (its process died between claiming and answering).
        """
        self.configs = configs
        self.store = store
        self._secrets = secrets
        self.max_body = max_body
        self.tolerance = tolerance_seconds
        self.deliveries = Deliveries(store, wait_seconds=wait_seconds,
                                     abandoned_after=abandoned_after)
        for model in configs:  # the policy's lock rows, which a delivery's transaction needs
            policy.ensure_lock_row(store, model)

    # -- authentication ---------------------------------------------------------------

    def authenticate(self, headers: Mapping[str, str], body: bytes,
                     now: float | None = None) -> Answer | None:
        """Check signature and timestamp.

        Returns:
            None when the delivery is authentic, else the 401 answer.
        """
        problem = verify(self._secrets, headers.get(TIMESTAMP_HEADER) or "",
                         headers.get(SIGNATURE_HEADER) or "", body,
                         tolerance_seconds=self.tolerance, now=now)
        return None if problem is None else _err(401, problem)

    @staticmethod
    def _claimed_already(delivery_id: str, claim: Claim) -> Answer:
        """The answer to an attempt that could not claim its delivery."""
        if claim.outcome == "done":
            assert claim.status_code is not None and claim.body is not None
            return Answer(claim.status_code, claim.body, {REPLAY_HEADER: "true"})
        if claim.outcome == "conflict":
            return _err(409, f"delivery id {delivery_id!r} was already used with a different "
                             f"{claim.conflict}; use a new delivery id for a new delivery",
                        delivery_id=delivery_id)
        return _err(409, "this delivery is still being processed; retry later",
                    delivery_id=delivery_id)

    # -- the endpoints ---------------------------------------------------------------

    def handle(self, endpoint: str, headers: Mapping[str, str], body: bytes,
               client: str = "?") -> Answer:
        """Authenticate, claim, validate and process one delivery.

        A fresh delivery is claimed, processed and answered in one transaction of the store
        (`Deliveries.claim` with a `settle`); only an admitted retrain request commits first,
        then emits its event and stores the answer.

        Args:
            endpoint: ``retrain`` or ``data-arrived``.
            headers: the request headers (case-insensitive mapping).
            body: the raw body, already bounded by `max_body`.
            client: the peer address, for the log.

        Returns:
            The answer to send (also stored for replays once the delivery is claimed).
        """
        denied = self.authenticate(headers, body)
        if denied is not None:
            log.warning("%s from %s: 401 %s (delivery header %r)", endpoint, client,
                        denied.body["detail"], (headers.get(DELIVERY_HEADER) or "")[:80])
            return denied
        delivery_id = (headers.get(DELIVERY_HEADER) or "").strip()
        if not _DELIVERY_ID.match(delivery_id):
            return _err(400, f"{DELIVERY_HEADER} is required: 1-128 characters of letters, digits "
                             "and . _ : - (a UUID is fine), unique per delivery")
        retrain = endpoint == RETRAIN_ENDPOINT
        progress: dict[str, Any] = {}  # filled as side effects happen
        req: Any  # the endpoint's body when bad is None (else None, or the body of a 404)
        try:
            req, bad = self._retrain_body(body) if retrain else self._data_body(body)
            settle = (partial(self._settle_retrain, delivery_id, req, progress) if retrain else
                      partial(self._settle_data, delivery_id, req)) if bad is None else \
                partial(_settled_with, bad, getattr(req, "model", None))
            claim = self.deliveries.claim(delivery_id, endpoint, hashlib.sha256(body).hexdigest(),
                                          settle)
        except Exception:
            log.exception("%s %s: failed", endpoint, delivery_id)  # nothing was stored
            return _err(500, "internal error; retry with the same delivery id",
                        delivery_id=delivery_id)
        answer: Answer | None
        if not claim.owned:
            answer = self._claimed_already(delivery_id, claim)
            log.info("%s %s: repeated delivery, answered %s", endpoint, delivery_id,
                     answer.status_code)
            return answer
        settled = claim.settled
        if settled is not None and settled.answered:
            assert settled.status_code is not None and settled.body is not None
            answer = Answer(settled.status_code, settled.body)
            if settled.verdict is not None:
                notify.circuit_refused(self.store, req.model, self.configs[req.model].config.retrain,
                                       settled.verdict, "webhook")
        else:  # admitted (its event is yet to go), or taken over from an attempt that died
            answer = self._process_claimed(endpoint, delivery_id, body, req, progress)
            if answer is None:
                return _err(500, "internal error; retry with the same delivery id",
                            delivery_id=delivery_id)
        log.info("%s %s: %s %s", endpoint, delivery_id, answer.status_code,
                 answer.body.get("verdict") or answer.body.get("event_id") or answer.body)
        return answer

    def _process_claimed(self, endpoint: str, delivery_id: str, body: bytes, req: Any,
                         progress: dict[str, Any]) -> Answer | None:
        """The rest of a delivery claimed but not answered in the claim's transaction: an
        admitted request's event (its verdict in `progress`), or a delivery taken over from an
        attempt that died (`req`: the body as parsed before the claim).

        Returns:
            The answer, stored; None when processing failed (the claim is released).
        """
        try:
            if "verdict" in progress:  # admitted in the claim's transaction
                verdict = progress["verdict"]
                progress.update(model=req.model, request_id=verdict.request_id)
                answer = self._after_verdict(delivery_id, req, verdict, "admitted")
            elif endpoint == RETRAIN_ENDPOINT:
                answer = self._retrain_recovered(delivery_id, body, progress)
            else:  # a recovered data-arrived delivery emits again: delivery is at least once
                req, bad = self._data_body(body)
                progress["model"] = getattr(req, "model", None)
                answer = bad or self._emit_data(delivery_id, req)
        except Exception:
            log.exception("%s %s: failed", endpoint, delivery_id)
            self.deliveries.release(delivery_id, request_made="request_id" in progress)
            return None
        try:
            self.deliveries.finish(delivery_id, answer.status_code, answer.body,
                                   progress.get("model"), progress.get("request_id"))
        except Exception:  # noqa: BLE001 - the answer stands; the claim is taken over later
            log.exception("%s %s: could not record the answer", endpoint, delivery_id)
        return answer

    def _parse(self, cls: type[RetrainBody | DataArrivedBody], body: bytes) -> tuple[Any, Answer | None]:
        """The body as `cls`, or the 422 / 404 answer (the parsed body is returned with a 404,
        so that its model is known)."""
        try:
            parsed = cls.model_validate_json(body)
        except ValidationError as err:
            return None, _err(422, _field_errors(err))
        if parsed.model not in self.configs:
            return parsed, _err(404, f"unknown model {parsed.model!r}; this receiver serves "
                                     f"{sorted(self.configs)}")
        return parsed, None

    def _retrain_body(self, body: bytes) -> tuple[RetrainBody | None, Answer | None]:
        """A retrain body, its model known and its overrides allowed, or the 4xx answer."""
        req, bad = self._parse(RetrainBody, body)
        if bad is None and req.overrides:
            bad = self._check_overrides(self.configs[req.model], req.overrides)
        return req, bad

    def _data_body(self, body: bytes) -> tuple[DataArrivedBody | None, Answer | None]:
        """A data-arrived body, its model known and its source one the config allows from
        outside (a path inside data.source.allowed_paths; never a query), or the 4xx answer."""
        req, bad = self._parse(DataArrivedBody, body)
        if bad is None and req.source is not None:
            bad = _check_source(self.configs[req.model], req.source)
        return req, bad

    @staticmethod
    def _check_overrides(loaded: LoadedConfig, overrides: dict[str, Any]) -> Answer | None:
        """Only keys the config allows from outside, with values the config schema accepts
        (the check `--set` gets): a 422 now, before anything is recorded, not a training that
        fails later and counts toward the circuit breaker.

        Returns:
            None when the overrides may be used; else the 422 answer: for refused keys, a
            sentence naming them and the allowed ones (also as ``refused`` and ``allowed``);
            for refused values, one error per problem, its ``loc`` ending in the override key
            and its ``msg`` naming the key and the problem.
        """
        from regrow.configs.schema import (
            OverrideInvalid,
            OverrideRefused,
            PathRefused,
            check_external_inputs,
            check_override_values,
        )

        try:
            check_external_inputs(loaded, overrides)
        except OverrideRefused as err:
            return _err(422, str(err), refused=err.refused, allowed=err.allowed)
        except PathRefused as err:
            return _err(422, str(err), refused=[err.where], rule="data.source.allowed_paths")
        try:
            check_override_values(loaded.config, overrides)
        except OverrideInvalid as err:
            return _err(422, [{"loc": ["body", "overrides", *([key] if key else [])],
                               "msg": text, "type": "override_invalid"}
                              for key, text in err.problems])
        return None

    @staticmethod
    def _reason(req: RetrainBody) -> str:
        return req.reason.strip() + (f" [ref: {req.ref}]" if req.ref else "")

    def _settle_retrain(self, delivery_id: str, req: RetrainBody, progress: dict[str, Any],
                        conn: Any) -> Settled:
        """Ask the policy inside the claim's transaction; answered at once unless admitted
        (the verdict is kept in `progress` for the event, which goes after the commit)."""
        verdict = policy.request_retrain(self.store, req.model,
                                         self.configs[req.model].config.retrain, kind="webhook",
                                         reason=self._reason(req), ref=f"webhook:{delivery_id}",
                                         conn=conn)  # a refusal is announced after the commit (`handle`)
        if verdict.admitted:  # see _after_verdict
            progress["verdict"] = verdict
            return Settled(req.model, verdict.request_id, verdict=verdict.verdict)
        answer = self._verdict_answer(delivery_id, verdict, verdict.detail)
        return Settled(req.model, verdict.request_id, answer.status_code, answer.body,
                       verdict.verdict)

    def _settle_data(self, delivery_id: str, req: DataArrivedBody, conn: Any) -> Settled:
        """Emit the data event inside the claim's transaction (queued, not yet sent: a
        claim that fails to commit is answered 500, and the sender's retry emits again)."""
        answer = self._emit_data(delivery_id, req)
        return Settled(req.model, None, answer.status_code, answer.body)

    def _retrain_recovered(self, delivery_id: str, body: bytes,
                           progress: dict[str, Any]) -> Answer:
        """A retrain delivery taken over from an attempt that died: its request, if it made
        one, is reused."""
        req, bad = self._retrain_body(body)
        progress["model"] = getattr(req, "model", None)
        if bad is not None:
            return bad
        if req is None:  # parsed whenever it gives no answer; what req.model would raise
            raise AttributeError("a retrain body neither parsed nor answered")
        earlier = self.deliveries.earlier_request(req.model, f"webhook:{delivery_id}")
        if earlier is not None:
            verdict, state = earlier.verdict, earlier.state
        else:
            with self.deliveries.writing():
                verdict = notify.request_retrain(self.store, req.model,
                                                 self.configs[req.model].config.retrain,
                                                 kind="webhook", reason=self._reason(req),
                                                 ref=f"webhook:{delivery_id}")
            state = "admitted" if verdict.admitted else "none"
        progress["request_id"] = verdict.request_id
        return self._after_verdict(delivery_id, req, verdict, state)

    @staticmethod
    def _verdict_answer(delivery_id: str, verdict: PolicyVerdict, detail: str,
                        status: int = 202, event_id: str | None = None) -> Answer:
        return Answer(status, {"delivery_id": delivery_id, "request_id": verdict.request_id,
                               "verdict": verdict.verdict, "detail": detail,
                               "event_id": event_id})

    def _after_verdict(self, delivery_id: str, req: RetrainBody, verdict: PolicyVerdict,
                       state: str) -> Answer:
        """The answer to a policy verdict; an admitted request (still ``admitted``) emits the
        event for the training deployment first."""
        if not verdict.admitted:
            return self._verdict_answer(delivery_id, verdict, verdict.detail)
        if state != "admitted":
            return self._verdict_answer(delivery_id, verdict, f"{verdict.detail} (an earlier "
                                        f"attempt of this delivery; the training is {state})")
        loaded, ref = self.configs[req.model], f"webhook:{delivery_id}"
        event_id = None
        try:  # the event names no file: the training deployment runs the config it serves
            event_id = dispatch.emit_admitted(
                req.model, verdict.request_id, "webhook", self._reason(req), ref=ref,
                overrides={**loaded.overrides, **req.overrides})
        except Exception:  # noqa: BLE001 - answered below
            log.exception("delivery %s: emitting %s failed", delivery_id,
                          dispatch.ADMITTED_EVENT)
        if event_id is not None:
            return self._verdict_answer(delivery_id, verdict, verdict.detail, event_id=event_id)
        with self.deliveries.writing():
            policy.mark_request(self.store, verdict.request_id, "failed")
        return self._verdict_answer(
            delivery_id, verdict, status=503,
            detail=(f"admitted, but the {dispatch.ADMITTED_EVENT} event could not be emitted "
                    "(is the Prefect API reachable?); the request was marked failed: send a "
                    "new delivery once Prefect is back"))

    def _emit_data(self, delivery_id: str, req: DataArrivedBody) -> Answer:
        """The ``regrow.data.arrived`` event for the model's scoring / drift-check
        deployments."""
        source = req.source.model_dump() if req.source is not None else None
        event_id = dispatch.emit(dispatch.DATA_EVENT, req.model, {
            "source": source,  # no config file: the deployments run the configs they serve
            # flat copies for deployment triggers: "{{ event.payload.input_path }}"
            "input_path": getattr(req.source, "path", None),
            "query": getattr(req.source, "query", None),
            "note": req.note or "", "delivery_id": delivery_id, "ref": f"webhook:{delivery_id}"})
        if event_id is None:
            return _err(503, f"the {dispatch.DATA_EVENT} event could not be emitted (is the "
                             "Prefect API reachable?)", delivery_id=delivery_id)
        return Answer(202, {"delivery_id": delivery_id, "model": req.model,
                            "event": dispatch.DATA_EVENT, "event_id": event_id})


def _check_source(loaded: LoadedConfig, source: PathSource | QuerySource) -> Answer | None:
    """None when a data-arrived source may come from outside; else its 422: a path outside
    data.source.allowed_paths, or a query (SQL never comes from outside a config)."""
    from regrow.configs.schema import PathRefused, check_external_path

    if isinstance(source, QuerySource):
        return _err(422, "source.query refused: SQL never comes from outside; name a file "
                         "inside data.source.allowed_paths, or let the config's own query "
                         "read the new rows", refused=["source.query"], rule="sql_from_outside")
    try:
        check_external_path(loaded, source.path, "source.path")
    except PathRefused as err:
        return _err(422, str(err), refused=["source.path"], rule="data.source.allowed_paths")
    return None


def _settled_with(answer: Answer, model: str | None, conn: Any) -> Settled:
    """A delivery refused on its body (422, 404), answered in its claim's transaction."""
    return Settled(model, None, answer.status_code, answer.body)


# ------------------------------------------------------------------------------ the app

def _index(configs: list[LoadedConfig] | dict[str, LoadedConfig]) -> dict[str, LoadedConfig]:
    items = list(configs.values()) if isinstance(configs, dict) else list(configs)
    if not items:
        raise WebhookConfigError("the webhook receiver needs at least one config")
    out: dict[str, LoadedConfig] = {}
    for loaded in items:
        name = loaded.config.registry.model_name
        if name in out and out[name].path != loaded.path:
            raise WebhookConfigError(f"model {name!r} is named by two configs: {out[name].path} "
                                     f"and {loaded.path}")
        out[name] = loaded
    return out


def _require_prefect_api() -> None:
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        raise WebhookConfigError(
            "PREFECT_API_URL is not set: the receiver hands admitted requests to the training "
            "deployment by Prefect event, which needs a running Prefect server "
            "(e.g. PREFECT_API_URL=http://127.0.0.1:4200/api)")


def _raw_answer(status: str, detail: str) -> bytes:
    """A whole HTTP/1.1 answer that closes the connection (for the protocol layer, where no
    request exists to answer through the app)."""
    import json

    body = json.dumps({"detail": detail}).encode()
    return (f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body


def guarded_protocol(header_timeout: float = HEADER_TIMEOUT,
                     max_connections: int = MAX_CONNECTIONS,
                     max_head_bytes: int = MAX_HEAD_BYTES) -> type:
    """uvicorn's HTTP protocol class (httptools when installed, else h11) with a deadline for
    each request's line and headers, a cap on their size and a cap on open connections (see
    the module docstring). Pass it as ``uvicorn.run(http=...)``."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    too_many = _raw_answer("503 Service Unavailable", f"more than {max_connections} open "
                           "connections; retry later")
    too_slow = _raw_answer("408 Request Timeout", f"request headers not received within "
                           f"{header_timeout:g} s")
    too_big = _raw_answer("431 Request Header Fields Too Large", f"request headers larger "
                          f"than {max_head_bytes} bytes")

    class GuardedHTTP(AutoHTTPProtocol):  # type: ignore[valid-type, misc]
        _deadline: asyncio.TimerHandle | None = None
        _waiting: Any = None  # the request cycle in place when the deadline was armed
        _head_bytes = 0

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                log.warning("connection refused: more than %d open", max_connections)
                transport.write(too_many)
                transport.close()
                return
            self._arm()

        def _arm(self) -> None:
            self._disarm()
            self._waiting, self._head_bytes = self.cycle, 0
            self._deadline = self.loop.call_later(header_timeout, self._expired)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expired(self) -> None:
            self._deadline = None
            if self.transport.is_closing() or self.cycle is not self._waiting:
                return
            if (self.cycle is not None and not self.cycle.response_complete) or \
                    getattr(self, "pipeline", None):
                return  # a request is being answered; re-armed when its response is complete
            log.warning("closing a connection that sent no complete request headers within "
                        "%g s (%d bytes)", header_timeout, self._head_bytes)
            if self._head_bytes:
                self.transport.write(too_slow)
            self.transport.close()

        def data_received(self, data: bytes) -> None:
            waiting = self._deadline is not None
            if waiting:
                self._head_bytes += len(data)
            super().data_received(data)
            if not waiting or self.transport.is_closing():
                return
            if self.cycle is not self._waiting:  # a request's headers are complete
                self._disarm()
            elif self._head_bytes > max_head_bytes:
                self._disarm()
                self.transport.write(too_big)
                self.transport.close()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()  # the next request's headers get the same deadline

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return GuardedHTTP


class _TooSlow(Exception):
    pass


async def _read_timed(request: Any, limit: int, seconds: float) -> bytes:
    """`_read_bounded` within `seconds`.

    Raises:
        _TooLarge: see `_read_bounded`.
        _TooSlow: the body did not arrive in time.
    """
    try:
        async with asyncio.timeout(seconds):
            return await _read_bounded(request, limit)
    except TimeoutError:
        raise _TooSlow from None


async def _read_bounded(request: Any, limit: int) -> bytes:
    """The request body, refusing (without reading on) anything over `limit` bytes.

    Raises:
        _TooLarge: Content-Length or the bytes actually received exceed `limit`.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise _TooLarge
    buf = bytearray()
    async for chunk in request.stream():
        buf += chunk
        if len(buf) > limit:
            raise _TooLarge
    return bytes(buf)


def create_app(configs: list[LoadedConfig] | dict[str, LoadedConfig],
               settings: Settings | None = None, secrets: list[str] | None = None,
               max_body: int = 1024 * 1024, tolerance_seconds: int = 300,
               body_timeout: float = BODY_TIMEOUT) -> FastAPI:
    """Build the receiver's FastAPI app.

    Args:
        configs: the models served, known by ``config.registry.model_name`` (a dict's keys
            are not used).
        settings: where the monitoring store is (default: from the environment).
        secrets: accepted HMAC secrets (default: ``REGROW_WEBHOOK_SECRET`` and
            ``REGROW_WEBHOOK_SECRET_PREVIOUS``). Never logged nor returned.
        max_body: largest request body accepted, in bytes (413 above).
        tolerance_seconds: largest accepted distance of ``X-Regrow-Timestamp`` from now.
        body_timeout: seconds a body may take to arrive (408 after).

    Returns:
        The app; serve it with uvicorn and `guarded_protocol` (see `run`).

    Raises:
        WebhookConfigError: no secret (or one under 16 characters), no configs, two configs
            for one model, or no Prefect API configured.
    """
    from contextlib import asynccontextmanager

    from fastapi import FastAPI
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    from regrow.tasks.policy.deliveries import use_wal
    from regrow.tasks.store.database import Store
    from regrow.tasks.store.settings import Settings

    models = _index(configs)
    keys = usable_secrets(secrets)
    if max_body < 1 or tolerance_seconds < 1 or not body_timeout > 0:
        raise WebhookConfigError("max_body, tolerance_seconds and body_timeout must be positive")
    _require_prefect_api()
    settings = settings or Settings.from_env()
    store = Store(settings.database_url)
    store.engine  # noqa: B018 - connect and create the tables now, not on the first delivery
    use_wal(store)
    receiver = Receiver(models, store, keys, max_body=max_body,
                        tolerance_seconds=tolerance_seconds)
    import prefect.events  # noqa: F401 - pay the import before the first request, not during it

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        from prefect.events.worker import EventsWorker

        await run_in_threadpool(EventsWorker.instance)  # connect to the events stream now
        # Everything imported so far (Prefect, SQLAlchemy, FastAPI: ~140k objects) lives as long
        # as the process; left to the collector, each full collection walks it all, holding
        # every thread for ~100 ms. Freezing exempts it; new objects are collected as usual.
        gc.collect()
        gc.freeze()
        log.info("webhook receiver for %s; monitoring store %s", sorted(models),
                 store.engine.url.render_as_string(hide_password=True))
        yield
        # queued events reach the server before the process goes
        await run_in_threadpool(lambda: EventsWorker.drain_all(timeout=10))
        store.dispose()

    app = FastAPI(title="regrow webhook receiver", version="1", lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.receiver = receiver

    def respond(answer: Answer) -> JSONResponse:
        return JSONResponse(answer.body, status_code=answer.status_code, headers=answer.headers)

    async def deliver(endpoint: str, request: Request) -> JSONResponse:
        try:
            body = await _read_timed(request, max_body, body_timeout)
        except _TooLarge:
            return respond(_err(413, f"body larger than {max_body} bytes"))
        except _TooSlow:
            log.warning("%s from %s: 408, body not received within %g s", endpoint,
                        request.client.host if request.client else "?", body_timeout)
            return respond(Answer(408, {"detail": f"body not received within {body_timeout:g} "
                                        "s"}, {"Connection": "close"}))
        client = request.client.host if request.client else "?"
        return respond(await run_in_threadpool(receiver.handle, endpoint, request.headers, body,
                                               client))

    async def retrain(request: Request) -> JSONResponse:
        """Ask for a retrain through the policy (signed; see the module docstring)."""
        return await deliver(RETRAIN_ENDPOINT, request)

    async def data_arrived(request: Request) -> JSONResponse:
        """Announce new rows for a model (signed)."""
        return await deliver(DATA_ENDPOINT, request)

    async def healthz(request: Request) -> JSONResponse:
        """Liveness and the models served (no authentication)."""
        return JSONResponse({"status": "ok", "models": sorted(models)})

    # Plain Starlette routes: the handlers read and check the raw body themselves (the
    # signature covers the exact bytes), so FastAPI's body parsing stays out of the way.
    app.add_route("/v1/hooks/retrain", retrain, methods=["POST"])
    app.add_route("/v1/hooks/data-arrived", data_arrived, methods=["POST"])
    app.add_route("/healthz", healthz, methods=["GET"])
    return app


def run(configs: Iterable[LoadedConfig | str | Path], host: str = "127.0.0.1",
        port: int = DEFAULT_PORT, *, settings: Settings | None = None,
        secrets: list[str] | None = None, max_body: int = 1024 * 1024,
        tolerance_seconds: int = 300, log_level: str = "info", access_log: bool = True,
        header_timeout: float = HEADER_TIMEOUT, body_timeout: float = BODY_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS) -> None:
    """Serve the receiver with uvicorn until interrupted.

    Args:
        configs: loaded configs or paths to config files.
        host: the address to bind (loopback by default; ``0.0.0.0`` in a container).
        port: the TCP port.
        settings, secrets, max_body, tolerance_seconds: as for `create_app`.
        log_level: uvicorn's log level.
        access_log: log one line per request.
        header_timeout, body_timeout, max_connections: see the module docstring.

    Raises:
        WebhookConfigError: see `create_app`.
        configs.schema.ConfigError: a config path that does not load.
    """
    import uvicorn

    from regrow.configs.schema import load_config

    loaded = [c if isinstance(c, LoadedConfig) else load_config(c) for c in configs]
    if not header_timeout > 0 or max_connections < 1:
        raise WebhookConfigError("header_timeout and max_connections must be positive")
    app = create_app(loaded, settings, secrets, max_body, tolerance_seconds, body_timeout)
    logging.getLogger("regrow").setLevel(log_level.upper())
    if not logging.getLogger("regrow").handlers and not logging.getLogger().handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=access_log,
                server_header=False, proxy_headers=False,
                http=guarded_protocol(header_timeout, max_connections),
                limit_concurrency=max_connections + 1, timeout_keep_alive=KEEP_ALIVE)


def main(argv: list[str] | None = None) -> int:
    """``python -m regrow.app.webhook [--host H] [--port P] CONFIG...`` (the same as
    ``regrow webhook``)."""
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="python -m regrow.app.webhook", description=__doc__.split("\n")[0])
    p.add_argument("configs", nargs="+")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument("--max-body", type=int, default=1024 * 1024, help="bytes (413 above)")
    p.add_argument("--tolerance", type=int, default=300, help="timestamp tolerance, seconds")
    p.add_argument("--log-level", default="info")
    p.add_argument("--no-access-log", action="store_true")
    p.add_argument("--header-timeout", type=float, default=HEADER_TIMEOUT,
                   help="seconds for a request's headers (the connection is closed after)")
    p.add_argument("--body-timeout", type=float, default=BODY_TIMEOUT,
                   help="seconds for a request's body (408 after)")
    p.add_argument("--max-connections", type=int, default=MAX_CONNECTIONS,
                   help="open connections at once (503 above)")
    args = p.parse_args(argv)
    from regrow.configs.schema import ConfigError
    from regrow.tasks.store.settings import configure_process_env

    configure_process_env(verbose=True)
    try:
        run(args.configs, args.host, args.port, max_body=args.max_body,
            tolerance_seconds=args.tolerance, log_level=args.log_level,
            access_log=not args.no_access_log, header_timeout=args.header_timeout,
            body_timeout=args.body_timeout, max_connections=args.max_connections)
    except (ConfigError, WebhookConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
