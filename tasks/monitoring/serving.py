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
- **Logging** (`PredictionLogger`): each batch's rows are queued (bounded: ``max_rows``; rows
  that do not fit are dropped and counted, never waited for) and written by a thread of their
  own every ``flush_seconds`` or ``flush_rows`` rows, as one prediction-log batch per model
  and version (`scoring.log_batch`: the file `regrow score` writes, indexed in the store), the
  shadow's predictions with it. A process killed with SIGKILL loses the rows queued since the
  last flush: at most ``flush_seconds`` of traffic (or ``flush_rows`` rows).

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
    return [uuid.uuid4().hex for _ in range(rows.n)]


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


def _frame(jobs: Sequence[Job]) -> pd.DataFrame:
    """The jobs' rows as one frame (columns a job lacks are empty for its rows)."""
    if len(jobs) == 1:
        return pd.DataFrame(jobs[0].rows.columns)
    names = list(dict.fromkeys(c for j in jobs for c in j.rows.columns))
    data: dict[str, list[Any]] = {}
    for name in names:
        values: list[Any] = []
        for j in jobs:
            values.extend(j.rows.columns.get(name) or [None] * j.rows.n)
        data[name] = values
    return pd.DataFrame(data)


@dataclass
class LogItem:
    """One batch's rows for the prediction log."""

    served: Served
    version: Version
    ids: list[str]
    frame: pd.DataFrame
    X: pd.DataFrame
    predictions: np.ndarray
    score: np.ndarray | None

    @property
    def rows(self) -> int:
        return len(self.ids)


def predict_jobs(jobs: Sequence[Job], logger: PredictionLogger | None = None
                 ) -> list[Answer | ScoringError]:
    """Score jobs of one version in one predict call, their rows checked as `regrow score`
    checks them (`scoring.check_rows`); a batch that fails is split so that only the requests
    at fault get the error. Queues the rows for the log."""
    served, version = jobs[0].served, jobs[0].version
    config = served.loaded.config
    frame = _frame(jobs)
    try:
        scoring.check_rows(version.spec, frame)
        X, pred, score, proba = scoring.predict_full(config, version.estimator, version.spec,
                                                     frame, probabilities=True)
    except Exception as err:  # noqa: BLE001 - reported to the request(s) at fault
        if len(jobs) > 1:
            return [out for j in jobs for out in predict_jobs([j], logger)]
        if isinstance(err, ScoringError):
            return [err]
        log.warning("%s v%s could not score a request: %s", version.model, version.version, err)
        return [ScoringError(f"the model could not score these rows: "
                             f"{type(err).__name__}: {err}")]
    ids = [i for j in jobs for i in j.ids]
    if logger is not None:
        logger.put(LogItem(served, version, ids, frame, X, pred, score))
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


class PredictionLogger:
    """Served rows written to the prediction log off the request path (see the module
    docstring). `put` never blocks on the store."""

    def __init__(self, store: Store, *, flush_seconds: float, flush_rows: int, max_rows: int,
                 log_root: str | None = None, shadow: bool = True) -> None:
        self.store, self.log_root, self.shadow = store, log_root, shadow
        self.flush_seconds, self.flush_rows, self.max_rows = flush_seconds, flush_rows, max_rows
        self.counts = LogCounts()
        self._items: list[LogItem] = []
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="regrow-predlog", daemon=True)

    def start(self) -> None:
        """Start the writing thread."""
        self._thread.start()

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
            if self.counts.queued >= self.flush_rows:
                self._cond.notify()
        return True

    def _run(self) -> None:
        while True:
            with self._cond:
                deadline = time.monotonic() + self.flush_seconds
                while not self._stopping and self.counts.queued < self.flush_rows:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                items, self._items = self._items, []
                stopping = self._stopping
            if items:
                self._write(items)
            if stopping:
                return

    def _write(self, items: list[LogItem]) -> None:
        """One log batch per model and version, then the shadow's predictions of its rows."""
        groups: dict[tuple[int, int], list[LogItem]] = {}
        for item in items:
            groups.setdefault((id(item.served), id(item.version)), []).append(item)
        for group in groups.values():
            rows = sum(i.rows for i in group)
            served, version = group[0].served, group[0].version
            config = served.loaded.config
            batch = uuid.uuid4().hex
            frame = pd.concat([i.frame for i in group], ignore_index=True) \
                if len(group) > 1 else group[0].frame
            ids = pd.Series([x for i in group for x in i.ids])
            try:
                logged = scoring.log_rows(
                    config, ids, frame,
                    pd.concat([i.X for i in group], ignore_index=True),
                    np.concatenate([i.predictions for i in group]),
                    None if group[0].score is None else
                    np.concatenate([i.score for i in group if i.score is not None]))
                scoring.log_batch(self.store, served.name, version.version, batch, now(), logged,
                                  self.log_root)
                self.counts.written += rows
            except Exception:  # noqa: BLE001 - the service keeps serving; the loss is counted
                log.exception("could not log %d served rows of %s v%s", rows, served.name,
                              version.version)
                self.counts.failed += rows
            finally:
                with self._cond:
                    self.counts.queued -= rows
            self.counts.flushes += 1
            shadow = served.shadow
            if self.shadow and shadow is not None and shadow.version != version.version \
                    and config.data.id_column:
                self._shadow(served, shadow, frame, ids, batch)

    def _shadow(self, served: Served, shadow: Version, frame: pd.DataFrame, ids: pd.Series,
                batch: str) -> None:
        config = served.loaded.config
        frame = frame.copy()
        frame[str(config.data.id_column)] = ids.to_numpy()  # the ids the rows were logged with
        try:
            self.counts.shadowed += scoring.score_shadow(config, shadow.estimator,
                                                         shadow.version, shadow.spec, frame,
                                                         self.store, batch)
        except Exception as err:  # noqa: BLE001 - the shadow never costs the champion anything
            log.warning("shadow v%s of %s could not score %d rows: %s", shadow.version,
                        served.name, len(frame), err)
            self.counts.shadow_failed += len(frame)

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued, then stop."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)


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
