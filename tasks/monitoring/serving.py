"""Online serving, apart from HTTP: the versions a service answers with, batching concurrent
requests into one predict call, and logging what it serves (with the challenger in shadow).

- **Versions** (`Follower`): each served model holds its champion, loaded, and the version it
  scores in shadow. A promotion, a rollback and a bake's own rollback are each an alias move,
  which regrow records in the monitoring store's ``alias_history`` in the same critical section
  as the move itself (`tasks.registry.governance.move_alias`). The follower reads the newest
  row id of that table for its models every ``poll_seconds`` (one indexed query, on the
  store every replica shares), and only when it changes asks MLflow where the aliases point.
  Moves made outside regrow (MLflow's UI) leave no row: MLflow's aliases are read every
  ``registry_poll_seconds`` too. A new version is loaded beside the one serving, then
  swapped in by one reference assignment; a request holds the `Version` it started with, so
  requests in flight finish on it.
- **Shadow**: the ``challenger`` alias when it names another version than the champion (a
  version waiting for a person's approval); during a bake (``challenger`` = champion), the
  previous champion the bake compares against (`tasks.registry.bake`). Its predictions go to
  ``shadow_predictions`` (`scoring.score_shadow`), never to callers, and only with the config's
  ``data.id_column`` (without one no label can join them).
- **Batching** (`Batcher`): requests wait in one queue; a single predict thread takes every
  request queued (up to ``max_rows`` rows) as one batch, one frame and one predict call per
  version. While a batch is predicted the next one gathers, so the batch grows with the load
  on its own; ``max_wait`` adds a bounded wait before a batch when it is not full.
- **Logging** (`PredictionLogger`): the predict thread only queues each batch (its requests
  as parsed and its predictions: references, no frame, no copy); the queue is bounded
  (``max_rows``; rows that do not fit are dropped and counted, never waited for). Every
  ``flush_seconds``, or once ``flush_rows`` rows wait, a thread merges what is queued into
  plain columns, one batch per model and version, and hands it through a pipe to a writing
  process of the service's own (`LogWriter`), which frames it and writes one prediction-log
  batch (`scoring.log_batch`: the file `regrow score` writes, indexed in the store), the
  shadow's predictions with it. The frames, the Parquet file, the store and the shadow's
  predict call thus never hold the serving process's GIL. A service killed with SIGKILL loses
  the rows queued since the last hand-over: at most ``flush_seconds`` of traffic (or
  ``flush_rows`` rows); the writing process still writes what it was handed, then exits
  (killed too, it loses the batch it was writing as well).

Nothing here is kept between processes: N replicas follow the champion independently.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from regrow.configs.schema import LoadedConfig
from regrow.tasks.model.imports import config_folder, import_listed
from regrow.tasks.model.predict import final_step
from regrow.tasks.monitoring import scoring
from regrow.tasks.monitoring.scoring import InputSpec, ScoringError
from regrow.tasks.registry import bake as baking
from regrow.tasks.registry.mlflow_registry import CHALLENGER, CHAMPION, Registry, load_reference
from regrow.tasks.store.database import Store, alias_history, now
from regrow.tasks.store.settings import Settings

log = logging.getLogger("regrow.serving")

class NotServing(LookupError):
    """A served model has no champion to answer with; the message says why."""


@dataclass(frozen=True, eq=False)
class Version:
    """One registered version, loaded: what a request is answered with."""

    model: str
    version: str
    estimator: Any
    spec: InputSpec
    classes: list[Any] | None  # a classifier's classes, in the order of its probabilities
    loaded_at: float = field(default_factory=time.time)

    @property
    def class_names(self) -> list[str]:
        """The classes as text (keys of the probabilities in an answer)."""
        return [str(c) for c in self.classes or []]


@dataclass(eq=False)
class Served:
    """One model of the service: its config, the champion answering and the shadow."""

    loaded: LoadedConfig
    champion: Version | None = None
    shadow: Version | None = None
    problem: str | None = "not loaded yet"  # why there is no champion (None: serving)
    swaps: int = 0

    @property
    def name(self) -> str:
        """The registered model name."""
        return self.loaded.config.registry.model_name

    def current(self) -> Version:
        """The champion a request starts with.

        Raises:
            NotServing: there is none; the message says why.
        """
        version = self.champion
        if version is None:
            raise NotServing(f"model {self.name!r} has no champion to serve: {self.problem}")
        return version

    def allowed_extra(self) -> set[str]:
        """Columns a request may carry besides the champion's inputs: the id and time columns,
        and the shadow's inputs."""
        d = self.loaded.config.data
        extra = {c for c in (d.id_column, d.time_column) if c}
        shadow = self.shadow
        return extra | set(shadow.spec.inputs) if shadow is not None else extra


def load_version(registry: Registry, loaded: LoadedConfig, version: str) -> Version:
    """Load one registered version with the inputs it reads (its run's drift reference, as
    `regrow score` reads them)."""
    config, name = loaded.config, loaded.config.registry.model_name
    info = registry.version_info(name, version)
    if info.run_id is None:
        raise ScoringError(f"{name} v{version} has no MLflow run: its inputs are unknown")
    spec = load_reference(registry, info.run_id).spec
    with config_folder(loaded.path.parent):
        import_listed(config)  # the model's own classes: never from the working directory
    estimator = registry.load(name, version=version)
    last = final_step(estimator)
    classes = list(last.classes_) if config.data.task != "regression" \
        and hasattr(last, "classes_") and hasattr(estimator, "predict_proba") else None
    return Version(name, version, estimator, spec, classes)


# ------------------------------------------------------------------------------ requests

@dataclass(frozen=True)
class Rows:
    """A request's rows as columns (name -> one value per row)."""

    columns: dict[str, list[Any]]
    n: int


def admit(served: Served, version: Version, rows: Rows, strict: bool = True) -> list[str]:
    """Check a request's columns against the version it will be scored with, before it joins
    a batch; returns the rows' ids (the config's id column when the request has it, else new
    ones).

    Raises:
        ScoringError: no rows, a missing column, an extra one (with `strict`: one the champion,
            the shadow and the config do not read), or a repeated id.
    """
    if rows.n == 0:
        raise ScoringError("no rows to score (empty input)")
    extra = scoring.check_columns(version.spec, list(rows.columns))
    if strict:
        unknown = [c for c in extra if c not in served.allowed_extra()]
        if unknown:
            raise ScoringError(f"input has column(s) the model does not read: {unknown}; send "
                               f"only {version.spec.inputs}"
                               + (f" (and the id column {served.loaded.config.data.id_column!r})"
                                  if served.loaded.config.data.id_column else ""))
    id_col = served.loaded.config.data.id_column
    if id_col and id_col in rows.columns:
        ids = [str(v) for v in rows.columns[id_col]]
        if len(set(ids)) != len(ids):
            seen: set[str] = set()
            twice = [i for i in ids if i in seen or seen.add(i)]  # type: ignore[func-returns-value]
            raise ScoringError(f"id column {id_col!r} has duplicated values, e.g. {twice[:3]}")
        return ids
    return new_ids(rows.n)


_ID_PREFIX = uuid.uuid4().hex[:20]  # this process's, random: ids stay unique across replicas
_ids_lock = threading.Lock()
_ids_next = 0


def new_ids(n: int) -> list[str]:
    """`n` new row ids: this process's random prefix and a counter (32 hex digits, as long as
    a UUID's; one random draw per process instead of one per row)."""
    global _ids_next
    with _ids_lock:
        start = _ids_next
        _ids_next += n
    return [f"{_ID_PREFIX}{i:012x}" for i in range(start, start + n)]


@dataclass(eq=False)
class Job:
    """One request waiting for its batch."""

    served: Served
    version: Version
    rows: Rows
    ids: list[str]
    future: asyncio.Future[Any] | None = None


@dataclass(frozen=True)
class Answer:
    """A request's predictions, from the version that made them."""

    version: Version
    ids: list[str]
    predictions: list[Any]
    probabilities: np.ndarray | None  # rows x classes, for a classifier


def _columns(jobs: Sequence[Job]) -> dict[str, list[Any]]:
    """The jobs' rows as one set of columns (columns a job lacks are empty for its rows)."""
    if len(jobs) == 1:
        return jobs[0].rows.columns
    names = list(dict.fromkeys(c for j in jobs for c in j.rows.columns))
    data: dict[str, list[Any]] = {}
    for name in names:
        values: list[Any] = []
        for j in jobs:
            values.extend(j.rows.columns.get(name) or [None] * j.rows.n)
        data[name] = values
    return data


@dataclass
class LogItem:
    """One batch's rows for the prediction log: the columns its frame was made of, its ids
    and predictions (references: nothing more is copied or framed on the predict thread;
    `merge_items` merges once per flush, the writing process frames)."""

    served: Served
    version: Version
    columns: dict[str, list[Any]]  # the columns the batch's frame was made of
    ids: list[str]
    predictions: np.ndarray
    score: np.ndarray | None

    @property
    def rows(self) -> int:
        return len(self.predictions)


def predict_jobs(jobs: Sequence[Job], logger: PredictionLogger | None = None
                 ) -> list[Answer | ScoringError]:
    """Score jobs of one version in one predict call, their rows checked as `regrow score`
    checks them (`scoring.check_rows`); a batch that fails is split so that only the requests
    at fault get the error. Queues the rows for the log."""
    served, version = jobs[0].served, jobs[0].version
    config = served.loaded.config
    columns = _columns(jobs)
    frame = pd.DataFrame(columns)
    try:
        scoring.check_rows(version.spec, frame)
        _, pred, score, proba = scoring.predict_full(config, version.estimator, version.spec,
                                                     frame, probabilities=True)
    except Exception as err:  # noqa: BLE001 - reported to the request(s) at fault
        if len(jobs) > 1:
            return [out for j in jobs for out in predict_jobs([j], logger)]
        if isinstance(err, ScoringError):
            return [err]
        log.warning("%s v%s could not score a request: %s", version.model, version.version, err)
        return [ScoringError(f"the model could not score these rows: "
                             f"{type(err).__name__}: {err}")]
    if logger is not None:
        ids = jobs[0].ids if len(jobs) == 1 else [i for j in jobs for i in j.ids]
        logger.put(LogItem(served, version, columns, ids, pred, score))
    answers: list[Answer | ScoringError] = []
    start, values = 0, pred.tolist()
    for j in jobs:
        end = start + j.rows.n
        answers.append(Answer(version, j.ids, values[start:end],
                              None if proba is None else proba[start:end]))
        start = end
    return answers


class Batcher:
    """Requests queued by the event loop, predicted in batches by one thread (see the module
    docstring). Start `run` as a task of the serving loop."""

    def __init__(self, logger: PredictionLogger | None, max_rows: int, max_wait: float,
                 on_batch: Callable[[int, int], None] | None = None) -> None:
        """
        Args:
            logger: where served rows are queued for the prediction log (None: not logged).
            max_rows: rows per batch (a larger request is one batch of its own).
            max_wait: seconds a batch that is not full waits for more requests.
            on_batch: called with (requests, rows) of every batch (metrics).
        """
        self.logger, self.max_rows, self.max_wait = logger, max_rows, max_wait
        self.on_batch = on_batch
        self._queue: deque[Job] = deque()
        self._rows = 0
        self._wake: asyncio.Event | None = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="regrow-predict")

    async def submit(self, job: Job) -> Answer | ScoringError:
        """Queue `job`; its answer once its batch is predicted."""
        loop = asyncio.get_running_loop()
        job.future = loop.create_future()
        self._queue.append(job)
        self._rows += job.rows.n
        assert self._wake is not None, "Batcher.run is not running"
        self._wake.set()
        return await job.future

    def _take(self) -> list[Job]:
        jobs: list[Job] = []
        rows = 0
        while self._queue and (not jobs or rows + self._queue[0].rows.n <= self.max_rows):
            job = self._queue.popleft()
            rows += job.rows.n
            jobs.append(job)
        self._rows -= rows
        return jobs

    def _predict(self, jobs: list[Job]) -> list[Answer | ScoringError]:
        groups: dict[int, list[Job]] = {}
        for job in jobs:
            groups.setdefault(id(job.version), []).append(job)
        out: dict[int, Answer | ScoringError] = {}
        for group in groups.values():
            for job, answer in zip(group, predict_jobs(group, self.logger), strict=True):
                out[id(job)] = answer
        return [out[id(job)] for job in jobs]

    async def run(self) -> None:
        """The batching loop (until cancelled)."""
        loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                if self.max_wait > 0 and self._rows < self.max_rows:
                    await asyncio.sleep(self.max_wait)
                jobs = self._take()
                try:
                    answers = await loop.run_in_executor(self._pool, self._predict, jobs)
                except Exception as err:  # noqa: BLE001 - the requests get the error, the loop goes on
                    log.exception("a batch failed")
                    answers = [ScoringError(f"internal error: {err}")] * len(jobs)
                for job, answer in zip(jobs, answers, strict=True):
                    if job.future is not None and not job.future.done():
                        job.future.set_result(answer)
                if self.on_batch is not None:
                    self.on_batch(len(jobs), sum(j.rows.n for j in jobs))

    def close(self) -> None:
        """Stop the predict thread."""
        self._pool.shutdown(wait=True)


# ------------------------------------------------------------------------------ logging

@dataclass
class LogCounts:
    """What the prediction logger did (rows)."""

    queued: int = 0
    written: int = 0
    dropped: int = 0
    failed: int = 0
    shadowed: int = 0
    shadow_failed: int = 0
    flushes: int = 0
    hand_over_seconds: float = 0.0  # the serving process's share: merging and sending


@dataclass
class LogBatch:
    """One flush's rows of one model and version, as columns: what the writing process gets."""

    seq: int
    model: str
    version: str
    inputs: list[str]  # the version's inputs, and of those the numeric ones (read as numbers,
    numeric: list[str]  # as `scoring.predict_full` reads them for the model)
    columns: dict[str, list[Any]]
    ids: list[str]
    predictions: np.ndarray
    score: np.ndarray | None
    shadow: str | None  # the version to score in shadow, if any

    @property
    def rows(self) -> int:
        return len(self.ids)


@dataclass
class LogResult:
    """What the writing process did with one `LogBatch`."""

    seq: int
    rows: int
    written: int = 0
    shadowed: int = 0
    shadow_failed: int = 0


def merge_items(seq: int, items: Sequence[LogItem], shadow: str | None) -> LogBatch:
    """Batches of one model and version as one `LogBatch`: each column's values in the order
    they were served (a column a request lacks is empty for its rows)."""
    served, version = items[0].served, items[0].version
    names = list(dict.fromkeys(c for item in items for c in item.columns))
    columns: dict[str, list[Any]] = {n: [] for n in names}
    ids: list[str] = []
    for item in items:
        ids.extend(item.ids)
        for name, values in columns.items():
            got = item.columns.get(name)
            values.extend(got if got is not None else [None] * item.rows)
    scores = [i.score for i in items if i.score is not None]
    return LogBatch(seq, served.name, version.version, version.spec.inputs,
                    list(version.spec.numeric), columns, ids,
                    np.concatenate([i.predictions for i in items]),
                    np.concatenate(scores) if len(scores) == len(items) else None, shadow)


class LogWriter:
    """The writing process's side: `LogBatch` in, prediction-log batch (Parquet file, index
    row) and shadow predictions out. Loads a shadow version the first time it is asked for."""

    def __init__(self, configs: dict[str, LoadedConfig], database_url: str,
                 log_root: str | None, settings: Settings) -> None:
        self.configs, self.log_root, self.settings = configs, log_root, settings
        self.store = Store(database_url)
        self._shadows: dict[tuple[str, str], Version] = {}

    def write(self, batch: LogBatch) -> LogResult:
        """Write one batch; raises what the write raised (the rows are then not logged)."""
        loaded = self.configs[batch.model]
        config = loaded.config
        frame = pd.DataFrame(batch.columns)
        X = frame[batch.inputs].copy()
        for col in batch.numeric:
            X[col] = pd.to_numeric(X[col], errors="coerce")
        ids = pd.Series(batch.ids, dtype=object)
        logged = scoring.log_rows(config, ids, frame, X, batch.predictions, batch.score)
        batch_id = uuid.uuid4().hex
        scoring.log_batch(self.store, batch.model, batch.version, batch_id, now(), logged,
                          self.log_root)
        result = LogResult(batch.seq, batch.rows, written=batch.rows)
        if batch.shadow is not None and config.data.id_column:
            frame[str(config.data.id_column)] = ids.to_numpy()  # the ids the rows were logged with
            try:
                shadow = self._shadow(loaded, batch.model, batch.shadow)
                result.shadowed = scoring.score_shadow(config, shadow.estimator, shadow.version,
                                                       shadow.spec, frame, self.store, batch_id)
            except Exception as err:  # noqa: BLE001 - the shadow never costs the champion anything
                log.warning("shadow v%s of %s could not score %d rows: %s", batch.shadow,
                            batch.model, batch.rows, err)
                result.shadow_failed = batch.rows
        return result

    def _shadow(self, loaded: LoadedConfig, model: str, version: str) -> Version:
        key = (model, version)
        if key not in self._shadows:
            from regrow.tasks.registry.mlflow_registry import Registry

            for old in [k for k in self._shadows if k[0] == model]:
                del self._shadows[old]  # one shadow per model at a time
            self._shadows[key] = load_version(Registry(self.settings), loaded, version)
        return self._shadows[key]

    def close(self) -> None:
        self.store.dispose()


def _writer_main(inbox: Any, outbox: Any, configs: dict[str, LoadedConfig], database_url: str,
                 log_root: str | None, settings: Settings) -> None:
    """The writing process: one `LogBatch` at a time until the service closes the pipe (or
    dies: what was received is still written). Signals meant for the service (Ctrl+C to the
    process group) do not cut it short."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    writer = LogWriter(configs, database_url, log_root, settings)
    try:
        while True:
            try:
                batch = inbox.recv()
            except (EOFError, OSError):
                break
            if batch is None:
                break
            try:
                result = writer.write(batch)
            except Exception:  # noqa: BLE001 - the service keeps serving; the loss is counted
                log.exception("could not log %d served rows of %s v%s", batch.rows, batch.model,
                              batch.version)
                result = LogResult(batch.seq, batch.rows)
            try:
                outbox.send(result)
            except OSError:
                pass  # the service is gone: keep writing what was received
    finally:
        writer.close()


class PredictionLogger:
    """Served rows written to the prediction log off the request path (see the module
    docstring). `put` never blocks on the store.

    The service's process only queues each batch (references, no copy), and every flush
    merges the queued batches into plain columns and hands them to a writing process of its
    own (`LogWriter`): the frames, the Parquet file, the index row and the shadow's scoring
    run there, without competing with the event loop and the predict thread for the GIL."""

    def __init__(self, store: Store, *, flush_seconds: float, flush_rows: int, max_rows: int,
                 configs: dict[str, LoadedConfig], settings: Settings,
                 log_root: str | None = None, shadow: bool = True) -> None:
        self.store, self.log_root, self.shadow = store, log_root, shadow
        self.configs, self.settings = configs, settings
        self.flush_seconds, self.flush_rows, self.max_rows = flush_seconds, flush_rows, max_rows
        self.counts = LogCounts()
        self._items: list[LogItem] = []
        self._pending = 0  # rows queued, not yet handed over
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="regrow-predlog", daemon=True)
        self._seq = 0
        self._sent: dict[int, int] = {}  # rows handed to the writing process, not yet written
        self._proc: Any = None
        self._inbox: Any = None
        self._reader: threading.Thread | None = None

    def start(self) -> None:
        """Start the writing process and the thread that feeds it."""
        self._spawn()
        self._thread.start()

    def _spawn(self) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")  # never fork a process with threads
        inbox_r, inbox_w = ctx.Pipe(duplex=False)
        outbox_r, outbox_w = ctx.Pipe(duplex=False)
        url = self.store.engine.url.render_as_string(hide_password=False)
        self._proc = ctx.Process(target=_writer_main, name="regrow-predlog-writer",
                                 args=(inbox_r, outbox_w, self.configs, url, self.log_root,
                                       self.settings))
        self._proc.start()
        inbox_r.close()
        outbox_w.close()
        if self._inbox is not None:
            self._inbox.close()  # the pipe of a writer that died
        self._inbox = inbox_w
        self._reader = threading.Thread(target=self._read, args=(outbox_r,),
                                        name="regrow-predlog-results", daemon=True)
        self._reader.start()

    @property
    def writer_pid(self) -> int | None:
        """The writing process's id (None before `start`)."""
        return None if self._proc is None else self._proc.pid

    @property
    def depth(self) -> int:
        """Rows waiting to be written."""
        return self.counts.queued

    def put(self, item: LogItem) -> bool:
        """Queue one batch's rows; False when the queue is full (the rows are dropped and
        counted)."""
        with self._cond:
            if self.counts.queued + item.rows > self.max_rows:
                self.counts.dropped += item.rows
                return False
            self._items.append(item)
            self.counts.queued += item.rows
            self._pending += item.rows
            if self._pending >= self.flush_rows:
                self._cond.notify()
        return True

    def _run(self) -> None:
        while True:
            with self._cond:
                deadline = time.monotonic() + self.flush_seconds
                while not self._stopping and self._pending < self.flush_rows:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                items, self._items, self._pending = self._items, [], 0
                stopping = self._stopping
            if items:
                self._hand_over(items)
            if stopping:
                return

    def _hand_over(self, items: list[LogItem]) -> None:
        """One `LogBatch` per model and version to the writing process."""
        groups: dict[tuple[int, int], list[LogItem]] = {}
        for item in items:
            groups.setdefault((id(item.served), id(item.version)), []).append(item)
        for group in groups.values():
            started = time.perf_counter()
            served, version = group[0].served, group[0].version
            shadow = served.shadow
            wanted = shadow.version if self.shadow and shadow is not None \
                and shadow.version != version.version else None
            self._seq += 1
            batch = merge_items(self._seq, group, wanted)
            try:
                if self._proc is None or not self._proc.is_alive():
                    self._lost("the writing process ended before writing them")
                    self._spawn()
            except Exception as err:  # noqa: BLE001 - tried again at the next hand-over
                log.error("could not start the prediction log's writing process: %s", err)
            with self._cond:
                self._sent[batch.seq] = batch.rows
            try:
                self._inbox.send(batch)
            except Exception as err:  # noqa: BLE001 - the service keeps serving; the loss is counted
                log.error("could not hand %d served rows of %s v%s to the log writer: %s",
                          batch.rows, served.name, version.version, err)
                self._done(LogResult(batch.seq, batch.rows))
            self.counts.hand_over_seconds += time.perf_counter() - started

    def _lost(self, why: str) -> None:
        """Rows handed to a writing process that died unwritten: failed."""
        with self._cond:
            lost = dict(self._sent)
        if lost and self._proc is not None:
            log.error("%d served rows were not logged: %s", sum(lost.values()), why)
        for seq, rows in lost.items():
            self._done(LogResult(seq, rows))

    def _done(self, result: LogResult) -> None:
        with self._cond:
            if self._sent.pop(result.seq, None) is None:
                return
            c = self.counts
            c.queued -= result.rows
            c.written += result.written
            c.failed += result.rows - result.written
            c.shadowed += result.shadowed
            c.shadow_failed += result.shadow_failed
            c.flushes += 1
            self._cond.notify_all()

    def _read(self, outbox: Any) -> None:
        while True:
            try:
                result = outbox.recv()
            except (EOFError, OSError):
                return
            self._done(result)

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued, then stop."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._proc is None:
            return
        try:
            self._inbox.send(None)
        except OSError:
            pass
        self._proc.join(timeout)
        if self._reader is not None:
            self._reader.join(5)
        self._lost("the writing process ended before writing them")
        self._inbox.close()


# ------------------------------------------------------------------------------ following

class Follower:
    """Keeps each served model's champion and shadow where the aliases point (see the module
    docstring)."""

    def __init__(self, models: Sequence[Served], registry: Registry, store: Store, *,
                 poll_seconds: float, registry_poll_seconds: float,
                 on_swap: Callable[[Served, Version | None, Version], None] | None = None) -> None:
        self.models = list(models)
        self.registry, self.store = registry, store
        self.poll_seconds, self.registry_poll_seconds = poll_seconds, registry_poll_seconds
        self.on_swap = on_swap
        self.mark: int | None = None  # the newest alias move seen
        self.checked_at = 0.0  # monotonic time of the last look at MLflow's aliases
        self.problem: str | None = None  # the last failure to read the store or MLflow
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="regrow-follow", daemon=True)

    def newest_move(self) -> int | None:
        """The id of the newest alias move recorded for any served model (one query)."""
        h = alias_history.c
        with self.store.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.max(h.id)).where(
                h.model.in_([m.name for m in self.models]))).scalar()

    def check(self, force: bool = False) -> bool:
        """Look once: the store's newest move, and MLflow when it changed (or when the
        registry poll is due, or `force`). Returns True when MLflow was read."""
        mark = self.newest_move()
        due = time.monotonic() - self.checked_at >= self.registry_poll_seconds
        if not (force or due or mark != self.mark):
            return False
        failed = []
        for served in self.models:
            try:
                self.refresh(served)
            except Exception as err:  # noqa: BLE001 - one model's trouble is not the others'
                failed.append(f"{served.name}: {err}")
                if served.champion is None:
                    served.problem = f"its champion could not be loaded: {err}"
        if failed:  # looked at again on the next poll
            raise RuntimeError("; ".join(failed))
        self.mark, self.checked_at = mark, time.monotonic()
        return True

    def refresh(self, served: Served) -> None:
        """Read `served`'s aliases and load what changed (the champion first)."""
        aliases = self.registry.aliases(served.name)
        champion, challenger = aliases.get(CHAMPION), aliases.get(CHALLENGER)
        if champion is None:
            served.champion, served.shadow = None, None
            served.problem = ("no version is the champion yet; train one (`regrow train`) or "
                              "promote one (`regrow promote`)")
            return
        before = served.champion
        if before is None or before.version != champion:
            new = self._get(served, champion)
            served.champion, served.problem = new, None  # the swap: one reference
            served.swaps += before is not None
            log.info("%s: serving v%s (was %s)", served.name, champion,
                     f"v{before.version}" if before else "none")
            if self.on_swap is not None:
                self.on_swap(served, before, new)
        wanted = self._shadow_version(served, champion, challenger)
        if wanted is None:
            served.shadow = None
        elif served.shadow is None or served.shadow.version != wanted:
            served.shadow = self._get(served, wanted)
            log.info("%s: v%s scored in shadow", served.name, wanted)

    def _shadow_version(self, served: Served, champion: str, challenger: str | None) -> str | None:
        if challenger is not None and challenger != champion:
            return challenger  # waits for approval
        if challenger == champion:  # baking: judged against the champion it replaced
            open_ = [b for b in baking.latest(self.store, served.name, 1)
                     if b.state == baking.BAKING and b.version == champion]
            return open_[0].previous_version if open_ else None
        return None

    def _get(self, served: Served, version: str) -> Version:
        for have in (served.champion, served.shadow):  # a rollback to the shadow: no reload
            if have is not None and have.version == version:
                return have
        return load_version(self.registry, served.loaded, version)

    def _run(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.check()
                self.problem = None
            except Exception as err:  # noqa: BLE001 - keep serving what is loaded; say why
                if self.problem != str(err):
                    log.warning("could not follow the aliases: %s", err)
                self.problem = str(err)

    def start(self) -> None:
        """Follow in a thread of its own."""
        self._thread.start()

    def stop(self) -> None:
        """Stop following."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
