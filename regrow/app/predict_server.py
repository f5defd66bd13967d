"""The prediction service (``regrow predict-server``): the champion online, following every
alias move, logging what it serves, scoring the challenger in shadow.

Routes (every one needs ``Authorization: Bearer <token>`` when ``REGROW_PREDICT_TOKEN`` is
set; without a token the service binds loopback only):

- ``POST /invocations`` -- MLflow's scoring protocol, as ``mlflow models serve`` speaks it: a
  JSON object with one of ``dataframe_split`` (``{"columns": [...], "data": [[...], ...]}``),
  ``dataframe_records`` (``[{column: value}, ...]``), ``instances`` or ``inputs`` (records, or
  ``{column: [values]}``), or a CSV body (``Content-Type: text/csv``); answers
  ``{"predictions": [...]}``. It serves the only model, or ``--default-model`` of several.
- ``POST /v1/models/<name>/invocations`` -- the same for one named model.
- ``POST /v1/models/<name>/predict`` -- the same bodies; answers each row's id (the config's
  ``data.id_column`` when the request has it, else a new one, logged with the row so that
  `regrow labels` can join it), prediction and, for a classifier, every class's probability,
  with the version that answered: ``{"model", "version", "predictions": [{"id",
  "prediction", "probabilities"}]}``.
- ``GET /ping``, ``/health`` -- 200 when every served model has its champion loaded, else 503
  naming the ones without (a readiness probe); ``GET /version`` -- regrow's version and the
  version each model serves; ``GET /metrics`` -- Prometheus' text format.

Every answer to a prediction names its model and version in the headers ``X-Regrow-Model``
and ``X-Regrow-Version``. Errors are ``{"error_code", "message"}`` (MLflow's shape): 400 a
body that is not one of the formats (415 a content type other than JSON or CSV), 401 no or a
wrong token, 404 an unknown model, 413 a body over ``--max-body``, 422 rows the model cannot
score (a missing, extra or mistyped column, a repeated id: the checks of `regrow score`,
naming the column), 503 a model with no champion.

How it is built, and why (measured: ``python -m tests.bench serving``): uvicorn with uvloop
and httptools, plain Starlette routes (no FastAPI body models), orjson for bodies, one
process by default. The rows are kept as Python lists until a batch is made, so a request
costs no pandas work of its own; concurrent requests are predicted together by one thread
(`tasks.monitoring.serving`: batching, logging, following the champion).
"""

from __future__ import annotations

import hmac
import io
import ipaddress
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the command line builds its parser from here: nothing heavy at import
    from starlette.applications import Starlette

    from regrow.configs.schema import LoadedConfig
    from regrow.tasks.monitoring import serving
    from regrow.tasks.store.settings import Settings

log = logging.getLogger("regrow.predict")

DEFAULT_PORT = 8790
TOKEN_ENV = "REGROW_PREDICT_TOKEN"
OPTIONS_ENV = "REGROW_PREDICT_SERVER"  # the options, for worker processes (--workers > 1)
MODEL_HEADER, VERSION_HEADER = "X-Regrow-Model", "X-Regrow-Version"
MAX_BODY = 16 * 1024 * 1024  # about 50,000 rows of ten columns as JSON
FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")  # MLflow's


class ServiceConfigError(ValueError):
    """The service cannot start as asked; the message says why."""


class BadRequest(ValueError):
    """A body that is none of the scoring protocol's formats."""


class Unsupported(BadRequest):
    """A content type the protocol does not know (415)."""


# ------------------------------------------------------------------------------ the protocol

def parse_rows(body: bytes, content_type: str = "application/json") -> serving.Rows:
    """A scoring-protocol body as columns.

    Raises:
        BadRequest: naming what is wrong with the body.
    """
    from regrow.tasks.monitoring import serving

    ctype = content_type.split(";")[0].strip().lower()
    if ctype == "text/csv":
        import pandas as pd

        try:
            frame = pd.read_csv(io.BytesIO(body))
        except (ValueError, UnicodeDecodeError) as err:
            raise BadRequest(f"the CSV body cannot be read: {err}") from None
        return serving.Rows({str(c): frame[c].tolist() for c in frame.columns}, len(frame))
    if ctype not in ("application/json", ""):
        raise Unsupported(f"content type {ctype!r} is not accepted: send application/json "
                          "(or text/csv)")
    import orjson

    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise BadRequest(f"the body is not valid JSON: {err}") from None
    keys = [k for k in FORMATS if k in doc] if isinstance(doc, dict) else []
    if len(keys) != 1 or set(doc) - {*FORMATS, "params"}:
        raise BadRequest("the body must be a JSON object with exactly one of "
                         f"{', '.join(FORMATS)} (and optionally params)")
    key, value = keys[0], doc[keys[0]]
    if key == "dataframe_split":
        return _split(value)
    if isinstance(value, list):
        return _records(value, key)
    if isinstance(value, dict) and key != "dataframe_records":
        return _columns(value, key)
    raise BadRequest(f"{key} must be a list of records"
                     + ("" if key == "dataframe_records" else " or an object of columns"))


def _split(value: Any) -> serving.Rows:
    from regrow.tasks.monitoring import serving

    if not isinstance(value, dict) or not isinstance(value.get("columns"), list) \
            or not isinstance(value.get("data"), list):
        raise BadRequest('dataframe_split must be {"columns": [...], "data": [[...], ...]}')
    names = [str(c) for c in value["columns"]]
    data = value["data"]
    width = len(names)
    for i, row in enumerate(data):
        if not isinstance(row, list) or len(row) != width:
            raise BadRequest(f"dataframe_split: row {i} must be a list of {width} values "
                             f"(one per column)")
    cols = [list(c) for c in zip(*data, strict=True)] if data else [[] for _ in names]
    return serving.Rows(dict(zip(names, cols, strict=True)), len(data))


def _records(value: list[Any], key: str) -> serving.Rows:
    from regrow.tasks.monitoring import serving

    for i, rec in enumerate(value):
        if not isinstance(rec, dict):
            raise BadRequest(f"{key}: record {i} must be an object of column: value")
    names = list(dict.fromkeys(k for rec in value for k in rec))
    return serving.Rows({n: [rec.get(n) for rec in value] for n in names}, len(value))


def _columns(value: dict[str, Any], key: str) -> serving.Rows:
    from regrow.tasks.monitoring import serving

    lengths = {len(v) if isinstance(v, list) else 1 for v in value.values()}
    if len(lengths) > 1:
        raise BadRequest(f"{key}: every column must hold as many values")
    n = lengths.pop() if lengths else 0
    return serving.Rows({k: v if isinstance(v, list) else [v] for k, v in value.items()}, n)


# ------------------------------------------------------------------------------ options

@dataclass
class Options:
    """How the service runs (what `run` and the worker processes are given)."""

    configs: list[str]
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    default_model: str | None = None
    max_body: int = MAX_BODY
    batch_rows: int = 4096          # rows per predict call (a request is never split)
    batch_wait: float = 0.0         # s a batch that is not full waits for more requests
    log_predictions: bool = True
    flush_seconds: float = 2.0      # the log is written at least this often: a kill -9 loses
    flush_rows: int = 5000          # at most this much traffic (or this many rows)
    queue_rows: int = 200_000       # rows waiting to be logged; more are dropped, counted
    shadow: bool = True
    poll_seconds: float = 1.0       # the store's alias history, for every model at once
    registry_poll_seconds: float = 30.0  # MLflow's aliases: moves made outside regrow
    strict_columns: bool = True
    workers: int = 1
    log_level: str = "info"
    access_log: bool = False

    def check(self) -> None:
        """Raises ServiceConfigError for values out of range."""
        positive = {"max_body": self.max_body, "batch_rows": self.batch_rows,
                    "flush_seconds": self.flush_seconds, "flush_rows": self.flush_rows,
                    "queue_rows": self.queue_rows, "poll_seconds": self.poll_seconds,
                    "registry_poll_seconds": self.registry_poll_seconds, "workers": self.workers}
        bad = [k for k, v in positive.items() if not v > 0]
        if bad or self.batch_wait < 0 or self.batch_wait > 1:
            raise ServiceConfigError(f"{', '.join(bad) or 'batch_wait'} must be positive "
                                     "(batch_wait: 0 to 1 s)")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def token_from_env(host: str) -> str | None:
    """The token every request must carry (``REGROW_PREDICT_TOKEN``), or None.

    Raises:
        ServiceConfigError: no token and a host other than loopback, or a token under 16
            characters.
    """
    token = os.environ.get(TOKEN_ENV, "").strip() or None
    if token is None and not _loopback(host):
        raise ServiceConfigError(f"refusing to listen on {host} without a token: set "
                                 f"{TOKEN_ENV} (every request must then send "
                                 "'Authorization: Bearer <token>'), or bind 127.0.0.1")
    if token is not None and len(token) < 16:
        raise ServiceConfigError(f"{TOKEN_ENV} must be at least 16 characters")
    return token


# ------------------------------------------------------------------------------ the app

def _index(configs: Sequence[LoadedConfig]) -> dict[str, LoadedConfig]:
    out: dict[str, LoadedConfig] = {}
    for loaded in configs:
        name = loaded.config.registry.model_name
        if name in out and out[name].path != loaded.path:
            raise ServiceConfigError(f"model {name!r} is named by two configs: {out[name].path} "
                                     f"and {loaded.path}")
        out[name] = loaded
    if not out:
        raise ServiceConfigError("the prediction service needs at least one config")
    return out


class Metrics:
    """The service's Prometheus metrics (a registry of its own)."""

    def __init__(self, models: Sequence[serving.Served], logger: serving.PredictionLogger | None,
                 follower: serving.Follower) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = r = CollectorRegistry()
        self.requests = Counter("regrow_serving_requests", "Prediction requests answered, by "
                                "model, route and status code", ["model", "route", "status"],
                                registry=r)
        self.latency = Histogram("regrow_serving_request_seconds", "Seconds from a prediction "
                                 "request's body read to its answer", ["model"], registry=r,
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5))
        self.batch_rows = Histogram("regrow_serving_batch_rows", "Rows per predict call",
                                    registry=r, buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512,
                                                         1024, 4096))
        self.batch_requests = Histogram("regrow_serving_batch_requests", "Requests per predict "
                                        "call", registry=r,
                                        buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        r.register(_State(models, logger, follower))

    def batch(self, requests: int, rows: int) -> None:
        """One predict call (the batcher's callback)."""
        self.batch_requests.observe(requests)
        self.batch_rows.observe(rows)


class _State:
    """Metrics read from the service's state at scrape time."""

    def __init__(self, models: Sequence[serving.Served], logger: serving.PredictionLogger | None,
                 follower: serving.Follower) -> None:
        self.models, self.logger, self.follower = models, logger, follower

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        v = GaugeMetricFamily("regrow_serving_version", "1 for each version answering "
                              "(role champion) or scored in shadow (role shadow)",
                              labels=["model", "role", "version"])
        swaps = CounterMetricFamily("regrow_serving_swaps", "Champion changes followed since "
                                    "start", labels=["model"])
        for m in self.models:
            for role, have in (("champion", m.champion), ("shadow", m.shadow)):
                if have is not None:
                    v.add_metric([m.name, role, have.version], 1)
            swaps.add_metric([m.name], m.swaps)
        yield v
        yield swaps
        yield GaugeMetricFamily("regrow_serving_follow_ok", "1 when the last look at the "
                                "aliases succeeded", value=float(self.follower.problem is None))
        if self.logger is None:
            return
        c = self.logger.counts
        yield GaugeMetricFamily("regrow_serving_log_queue_rows", "Served rows waiting to be "
                                "written to the prediction log", value=c.queued)
        for name, help_, value in (
                ("written_rows", "Served rows written to the prediction log", c.written),
                ("dropped_rows", "Served rows dropped: the log's queue was full", c.dropped),
                ("failed_rows", "Served rows whose write failed", c.failed),
                ("shadow_rows", "Rows scored by the shadow version", c.shadowed),
                ("shadow_failed_rows", "Rows the shadow version could not score",
                 c.shadow_failed),
                ("hand_over_seconds", "Seconds this process spent handing served rows to its "
                 "log writer (merging and sending; the writing is another process's)",
                 c.hand_over_seconds)):
            yield CounterMetricFamily(f"regrow_serving_log_{name}", help_, value=value)


def _error(status: int, code: str, message: str, **headers: str) -> Any:
    import orjson
    from starlette.responses import Response

    return Response(orjson.dumps({"error_code": code, "message": message}), status_code=status,
                    media_type="application/json", headers=headers or None)


class _TooLarge(Exception):
    pass


async def _read_bounded(request: Any, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise _TooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(configs: Sequence[LoadedConfig], options: Options,
               settings: Settings | None = None, token: str | None = None) -> Starlette:
    """Build the service's ASGI app (`run` serves it with uvicorn).

    Raises:
        ServiceConfigError: no config, two configs for one model, a default model not served,
            or an option out of range.
    """
    import orjson
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import Response

    from regrow.tasks.monitoring import serving
    from regrow.tasks.monitoring.scoring import ScoringError
    from regrow.tasks.registry.mlflow_registry import Registry
    from regrow.tasks.store.database import Store
    from regrow.tasks.store.settings import Settings

    options.check()
    index = _index(configs)
    if options.default_model is not None and options.default_model not in index:
        raise ServiceConfigError(f"--default-model {options.default_model!r} is not among the "
                                 f"served models {sorted(index)}")
    default = options.default_model or (next(iter(index)) if len(index) == 1 else None)
    settings = settings or Settings.from_env()
    store = Store(settings.database_url)
    registry = Registry(settings)
    models = {name: serving.Served(loaded) for name, loaded in index.items()}
    logger = serving.PredictionLogger(
        store, flush_seconds=options.flush_seconds, flush_rows=options.flush_rows,
        max_rows=options.queue_rows, configs=dict(index), settings=settings,
        shadow=options.shadow) if options.log_predictions else None
    follower = serving.Follower(list(models.values()), registry, store,
                                poll_seconds=options.poll_seconds,
                                registry_poll_seconds=options.registry_poll_seconds)
    metrics = Metrics(list(models.values()), logger, follower)
    batcher = serving.Batcher(logger, options.batch_rows, options.batch_wait, metrics.batch)
    expected = f"Bearer {token}".encode() if token else None

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app: Starlette):
        store.engine  # noqa: B018 - connect (and make the tables of a new store) now
        try:
            await run_in_threadpool(follower.check, True)
        except Exception as err:  # noqa: BLE001 - served as 503 until the follower succeeds
            log.warning("not every champion could be loaded at start: %s", err)
        follower.start()
        if logger is not None:
            logger.start()
        import asyncio  # here, not at import: `regrow --help` builds this command's parser

        task = asyncio.create_task(batcher.run())
        import gc

        gc.collect()
        gc.freeze()  # the long-lived imports and models stay out of every collection
        log.info("serving %s on the monitoring store %s (prediction log %s)",
                 {m.name: m.champion.version if m.champion else None for m in models.values()},
                 store.engine.url.render_as_string(hide_password=True),
                 "on" if logger else "off")
        yield
        task.cancel()
        follower.stop()
        await run_in_threadpool(batcher.close)
        if logger is not None:
            await run_in_threadpool(logger.close)  # what is queued is written before exit
        store.dispose()

    def denied(request: Request) -> Any:
        if expected is None:
            return None
        given = request.headers.get("authorization", "").encode()
        if hmac.compare_digest(given, expected):
            return None
        return _error(401, "UNAUTHENTICATED", "a token is required: send "
                      "'Authorization: Bearer <token>' (the service's REGROW_PREDICT_TOKEN)",
                      **{"WWW-Authenticate": "Bearer"})

    async def predict(request: Request, name: str | None, detailed: bool, route: str) -> Any:
        started = time.perf_counter()
        if (no := denied(request)) is not None:
            return no
        if name is None:
            metrics.requests.labels("-", route, "404").inc()
            return _error(404, "RESOURCE_DOES_NOT_EXIST", "this service serves several models "
                          f"({', '.join(sorted(models))}): post to /v1/models/<name>/"
                          "invocations, or start it with --default-model")
        served = models.get(name)
        if served is None:
            metrics.requests.labels("-", route, "404").inc()
            return _error(404, "RESOURCE_DOES_NOT_EXIST", f"unknown model {name!r}; this "
                          f"service serves {sorted(models)}")
        try:
            body = await _read_bounded(request, options.max_body)
        except _TooLarge:
            metrics.requests.labels(name, route, "413").inc()
            return _error(413, "REQUEST_TOO_LARGE", f"body larger than {options.max_body} "
                          "bytes; send fewer rows per request")
        try:
            version = served.current()
        except serving.NotServing as err:
            metrics.requests.labels(name, route, "503").inc()
            return _error(503, "NOT_SERVING", str(err), **{"Retry-After": "5"})
        try:
            rows = parse_rows(body, request.headers.get("content-type", "application/json"))
            ids = serving.admit(served, version, rows, options.strict_columns)
        except BadRequest as err:
            status = 415 if isinstance(err, Unsupported) else 400
            metrics.requests.labels(name, route, str(status)).inc()
            return _error(status, "BAD_REQUEST", str(err))
        except ScoringError as err:
            metrics.requests.labels(name, route, "422").inc()
            return _error(422, "INVALID_INPUT", str(err), **{VERSION_HEADER: version.version})
        answer = await batcher.submit(serving.Job(served, version, rows, ids))
        headers = {MODEL_HEADER: name, VERSION_HEADER: version.version}
        if isinstance(answer, ScoringError):
            metrics.requests.labels(name, route, "422").inc()
            return _error(422, "INVALID_INPUT", str(answer), **headers)
        if detailed:
            classes = version.class_names
            proba = answer.probabilities
            out = [{"id": i, "prediction": p} for i, p in zip(answer.ids, answer.predictions,
                                                              strict=True)]
            if proba is not None and classes:
                for row, probs in zip(out, proba.tolist(), strict=True):
                    row["probabilities"] = dict(zip(classes, probs, strict=True))
            payload = orjson.dumps({"model": name, "version": version.version,
                                    "predictions": out})
        else:
            payload = orjson.dumps({"predictions": answer.predictions})
        metrics.requests.labels(name, route, "200").inc()
        metrics.latency.labels(name).observe(time.perf_counter() - started)
        return Response(payload, media_type="application/json", headers=headers)

    async def invocations(request: Request) -> Any:
        """MLflow's scoring protocol for the default model."""
        return await predict(request, default, False, "invocations")

    async def model_invocations(request: Request) -> Any:
        """MLflow's scoring protocol for one named model."""
        return await predict(request, request.path_params["name"], False, "invocations")

    async def model_predict(request: Request) -> Any:
        """Predictions with ids, probabilities and the version."""
        return await predict(request, request.path_params["name"], True, "predict")

    def _json(obj: Any, status: int = 200) -> Any:
        return Response(orjson.dumps(obj), status_code=status, media_type="application/json")

    async def health(request: Request) -> Any:
        """Ready when every model has its champion loaded."""
        if (no := denied(request)) is not None:
            return no
        state = {m.name: {"version": m.champion.version if m.champion else None,
                          "shadow": m.shadow.version if m.shadow else None,
                          **({"problem": m.problem} if m.champion is None else {})}
                 for m in models.values()}
        ready = all(m.champion is not None for m in models.values())
        return _json({"status": "ok" if ready else "not serving", "models": state,
                      **({"follow_problem": follower.problem} if follower.problem else {})},
                     200 if ready else 503)

    async def version_route(request: Request) -> Any:
        """regrow's version and each model's."""
        if (no := denied(request)) is not None:
            return no
        from importlib.metadata import version

        return _json({"regrow": version("regrow"), "models": {
            m.name: m.champion.version if m.champion else None for m in models.values()}})

    async def metrics_route(request: Request) -> Any:
        """Prometheus' text format."""
        if (no := denied(request)) is not None:
            return no
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app = Starlette(lifespan=lifespan)
    app.add_route("/invocations", invocations, methods=["POST"])
    app.add_route("/v1/models/{name}/invocations", model_invocations, methods=["POST"])
    app.add_route("/v1/models/{name}/predict", model_predict, methods=["POST"])
    for path in ("/ping", "/health"):
        app.add_route(path, health, methods=["GET"])
    app.add_route("/version", version_route, methods=["GET"])
    app.add_route("/metrics", metrics_route, methods=["GET"])
    app.state.models, app.state.logger, app.state.follower = models, logger, follower
    return app


def _configs(paths: Sequence[str]) -> list[LoadedConfig]:
    from regrow.configs.folders import load_configs

    return load_configs(paths)


def app_from_env() -> Starlette:
    """The app of one worker process (`run` with ``workers > 1``): options from
    ``REGROW_PREDICT_SERVER``."""
    options = Options(**json.loads(os.environ[OPTIONS_ENV]))
    return create_app(_configs(options.configs), options, token=token_from_env(options.host))


def run(options: Options) -> None:
    """Serve until interrupted.

    Raises:
        ServiceConfigError: see `create_app` and `token_from_env`.
        configs.schema.ConfigError: a config that does not load.
    """
    import uvicorn

    options.check()
    token = token_from_env(options.host)
    loaded = _configs(options.configs)
    logging.getLogger("regrow").setLevel(options.log_level.upper())
    if not logging.getLogger("regrow").handlers and not logging.getLogger().handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    common: dict[str, Any] = dict(host=options.host, port=options.port, loop="auto",
                                  http="auto", log_level=options.log_level,
                                  access_log=options.access_log, server_header=False,
                                  proxy_headers=False, timeout_keep_alive=5)
    if options.workers == 1:
        uvicorn.run(create_app(loaded, options, token=token), **common)
        return
    _index(loaded)  # refuse a bad set of configs here, not in every worker
    os.environ[OPTIONS_ENV] = json.dumps(asdict(options))
    uvicorn.run(f"{__name__}:app_from_env", factory=True, workers=options.workers, **common)


def add_arguments(p: Any) -> None:
    """The command's options (``regrow predict-server`` and ``python -m``)."""
    d = Options(configs=[])
    p.add_argument("configs", nargs="+", metavar="CONFIG", help="config files or folders of "
                   "them: one model each")
    p.add_argument("--host", default=d.host, help="address to bind (another than loopback "
                   f"needs {TOKEN_ENV})")
    p.add_argument("--port", type=int, default=d.port)
    p.add_argument("--default-model", help="the model /invocations serves when there are several")
    p.add_argument("--workers", type=int, default=d.workers, help="processes (each loads the "
                   "models and follows the champion by itself)")
    p.add_argument("--max-body", type=int, default=d.max_body, help="largest body in bytes (413)")
    p.add_argument("--batch-rows", type=int, default=d.batch_rows,
                   help="rows per predict call (a larger request is one call)")
    p.add_argument("--batch-wait", type=float, default=d.batch_wait, help="seconds a batch "
                   "that is not full waits for more requests (default 0: a batch is whatever "
                   "queued while the previous one was predicted)")
    p.add_argument("--no-log", dest="log_predictions", action="store_false",
                   help="do not write served rows to the prediction log")
    p.add_argument("--flush-seconds", type=float, default=d.flush_seconds,
                   help="prediction log: write at least this often (what a kill -9 may lose)")
    p.add_argument("--flush-rows", type=int, default=d.flush_rows,
                   help="prediction log: write once this many rows wait")
    p.add_argument("--queue-rows", type=int, default=d.queue_rows,
                   help="prediction log: rows that may wait; more are dropped and counted")
    p.add_argument("--no-shadow", dest="shadow", action="store_false",
                   help="do not score the challenger in shadow")
    p.add_argument("--poll-seconds", type=float, default=d.poll_seconds,
                   help="how often the store's alias history is read")
    p.add_argument("--registry-poll-seconds", type=float, default=d.registry_poll_seconds,
                   help="how often MLflow's aliases are read (moves made outside regrow)")
    p.add_argument("--allow-extra-columns", dest="strict_columns", action="store_false",
                   help="ignore columns the model does not read instead of answering 422")
    p.add_argument("--log-level", default=d.log_level)
    p.add_argument("--access-log", action="store_true", help="one log line per request")


def options_from(args: Any) -> Options:
    """`Options` from parsed arguments (`add_arguments`)."""
    return Options(**{k: getattr(args, k) for k in Options.__dataclass_fields__
                      if hasattr(args, k)})


def main(argv: list[str] | None = None) -> int:
    """``python -m regrow.app.predict_server CONFIG...`` (the same as ``regrow
    predict-server``)."""
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="python -m regrow.app.predict_server",
                                description=(__doc__ or "").split("\n")[0])
    add_arguments(p)
    args = p.parse_args(argv)
    from regrow.configs.schema import ConfigError
    from regrow.tasks.store.settings import configure_process_env

    configure_process_env(verbose=True)
    try:
        run(options_from(args))
    except (ConfigError, ServiceConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
