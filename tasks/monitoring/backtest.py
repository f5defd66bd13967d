"""A policy backtest: what regrow would have done on a model's own history.

The history (the config's source, or another file or query) is replayed in time order, window
by window. Each window is scored by the replayed champion; labels become visible when they
would have arrived (`label_delay`); then a drift check runs exactly as the scheduled one does
(`tasks.monitoring.assess.assess`, with its persistence over earlier checks), and when it asks for a
retrain the real retrain policy (`tasks.policy.retrain`) answers at the window's event time, so
cooldown, budget and circuit breaker act on simulated time. An admitted retrain validates,
trains and gates (`tasks.data.validate`, `tasks.model.train`, `tasks.model.gate`) on the rows whose labels had
arrived by then, and a passing candidate replaces the replayed champion. With
``promotion.mode: shadow`` it becomes the challenger instead: it scores the following windows
beside the champion, and each check judges it on the rows both scored whose labels had
arrived (`tasks.registry.challenger`, as the live check's judge-challenger step does, before
the check's retrain request); it takes over or is retired as the trial decides.

Nothing touches the live registry, aliases or monitoring store: models stay in memory and the
policy's records go to a throw-away SQLite store. Manual approval and bake periods are not
replayed (a passing candidate is promoted as if approved); the report says so.

Per window the report keeps the drift verdict, drifted columns, the performance the check
saw, the policy and gate verdicts, and, in hindsight (all of the window's labels), the metric
of the replayed champion and of the first champion, never retrained.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from regrow.configs.schema import METRICS, Config, LoadedConfig, parse_duration
from regrow.tasks.data import ingest as ing
from regrow.tasks.data import validate as va
from regrow.tasks.data.timecol import TimeUnitError, to_time, to_times
from regrow.tasks.model import evaluate as ev
from regrow.tasks.model import gate as gt
from regrow.tasks.model import train as tr
from regrow.tasks.model import trusted as ts
from regrow.tasks.monitoring import assess as monitor
from regrow.tasks.monitoring.reference import PRED, SCORE, Reference, build_reference
from regrow.tasks.monitoring.scoring import label_text, predict
from regrow.tasks.policy import retrain as policy
from regrow.tasks.registry import challenger as ch
from regrow.tasks.store.database import Store

NEVER = "never"
# Without a time column, windows are rows in source order, one `tick` of simulated time apart.
EPOCH = pd.Timestamp("2000-01-01")


class BacktestError(ValueError):
    """The backtest cannot run as asked; the message says which option or key and why."""


@dataclass(frozen=True)
class Options:
    """How to replay.

    Attributes:
        window: rows per window (``"1000"``) or a period of event time (``"30d"``).
        label_delay: when labels arrive: ``0`` (with the window's end), a duration after each
            row's event time (``"7d"``), a number of windows later (``"2"``), or ``never``.
        start: where the replay starts (a time; a row number without a time column); default
            the middle of the history. The first champion trains on what came before.
        train_window: what a training sees: the latest rows (``"4000"``) or period (``"1y"``)
            whose labels had arrived; default all of them.
        tick: simulated time between windows when the config has no time column.
    """

    window: str
    label_delay: str = "0"
    start: str | None = None
    train_window: str | None = None
    tick: str = "1d"


@dataclass(frozen=True)
class WindowResult:
    """One replayed window: its check, what the policy and the gate said, and, in hindsight,
    the metric of the replayed champion and of the first champion."""

    index: int
    first: str
    last: str
    rows: int
    version: str
    verdict: str
    drift_share: float | None
    drifted_columns: list[str]
    prediction_drift: bool | None
    performance: dict[str, Any] | None
    persistent: bool
    warning: bool
    reasons: list[str]
    policy: str | None = None
    policy_detail: str | None = None
    gate: str | None = None
    gate_reasons: list[str] = field(default_factory=list)
    new_version: str | None = None
    promoted: bool = False
    training_rows: int | None = None
    realized: float | None = None
    realized_first: float | None = None
    labelled_rows: int = 0
    seconds: float = 0.0
    # the first window after a promotion: the replaced champion's metric on the same rows
    replaced_version: str | None = None
    realized_replaced: float | None = None
    # ... and the new champion's paired gain over it there: value, low, high (None: no labels)
    replaced_gain: dict[str, float | None] | None = None
    # promotion.mode shadow: the challenger's trial as this window's check left it
    challenger: str | None = None
    shadow: str | None = None
    shadow_state: str | None = None  # this window's judgement: running, promoted, retired
    judged: str | None = None  # ... of this challenger
    catch_up: str | None = None  # why this check asked for a retrain of catch-up (retrain.catch_up)


@dataclass(frozen=True)
class Totals:
    """The backtest in a few numbers; the metrics are row-weighted over all replayed windows
    with a defined value."""

    windows: int
    alarms: int
    warnings: int
    requests: int
    retrains: int
    promotions: int
    rejections: int
    metric: str
    with_retraining: float | None
    without_retraining: float | None


@dataclass(frozen=True)
class BacktestReport:
    """Everything the backtest found; `to_dict()` is the JSON report."""

    model: str
    config: str
    config_sha256: str
    options: dict[str, Any]
    history_rows: int
    history_source: str
    first_champion: dict[str, Any]
    windows: list[WindowResult]
    totals: Totals
    policy: dict[str, Any]
    notes: list[str]
    seconds: float
    json_path: str | None = None
    html_path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (NaN -> None)."""
        return _clean(asdict(self))


def _clean(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, np.generic):
        return _clean(obj.item())
    if isinstance(obj, pd.Timestamp | dt.datetime):
        return obj.isoformat()
    return obj


@dataclass
class _Champion:
    """A replayed version: its model, reference and trusted set, in memory only."""

    version: str
    trained: tr.TrainResult
    reference: Reference
    trusted: ts.TrustedSet | None
    fingerprint: str
    rows: int
    holdout: dict[str, float]
    gain: ev.Gain | None = None  # its paired gain over the champion it was gated against
    gained_over: float | None = None  # ... whose holdout value there this was


def _rows_or_period(text: str, what: str) -> tuple[int | None, float | None]:
    s = str(text).strip()
    if s.isdigit():
        if int(s) < 1:
            raise BacktestError(f"{what}: {s} rows; give at least 1")
        return int(s), None
    try:
        return None, parse_duration(s)
    except ValueError:
        raise BacktestError(f"{what}: {text!r} is neither a row count (e.g. 1000) nor a period "
                            "(e.g. 30d)") from None


@dataclass(frozen=True)
class _Timeline:
    """The history in replay order with each row's event time and label arrival time."""

    frame: pd.DataFrame
    times: pd.Series
    label_at: pd.Series
    windows: list[np.ndarray]  # row positions per window
    start: pd.Timestamp
    timed: bool


def timeline(config: Config, frame: pd.DataFrame, opts: Options) -> _Timeline:
    """Order the history, cut it into windows and date every row and label.

    Raises:
        BacktestError: an option that does not fit the data (naming it).
    """
    d = config.data
    if d.target not in frame.columns:
        raise BacktestError(f"the history has no target column {d.target!r} (data.target): "
                            "a backtest needs the labels")
    timed = bool(d.time_column) and d.time_column in frame.columns
    win_rows, win_period = _rows_or_period(opts.window, "--window")
    if win_period is not None and not timed:
        raise BacktestError("--window: a period needs data.time_column; give a row count")
    if timed:
        # Read as the live commands read it (`tasks.data.ingest.parse_time`): years, epochs,
        # dates and zoned times; the model sees the parsed column, as a training does.
        col = d.time_column
        try:
            parsed = to_times(frame[col], d.time_unit, f"data.time_column: {col!r}")
        except TimeUnitError as err:
            raise BacktestError(str(err)) from None
        zone = getattr(parsed.dt, "tz", None)
        frame = frame.copy()
        frame[col] = parsed
        frame = frame[parsed.notna().to_numpy()].sort_values(col, kind="stable")
    frame = frame.reset_index(drop=True)
    n = len(frame)
    if n < 2:
        raise BacktestError(f"the history has {n} rows; nothing to replay")
    if timed:
        # Replayed (simulated) time is naive UTC, like the prediction log's event times.
        times = pd.Series(_naive_utc(frame[d.time_column]).to_numpy(), index=frame.index)
        if opts.start is None:
            start = times.iloc[n // 2]
        else:
            try:
                start = _naive_utc_one(to_time(opts.start, d.time_unit, "--start"), zone)
            except TimeUnitError as err:
                raise BacktestError(str(err)) from None
        begin = int(np.searchsorted(times.to_numpy(), np.datetime64(start), side="left"))
    else:
        if opts.start is not None and not str(opts.start).isdigit():
            raise BacktestError("--start: without data.time_column, give a row number")
        begin = n // 2 if opts.start is None else int(opts.start)
        try:
            tick = pd.Timedelta(seconds=parse_duration(opts.tick))
        except ValueError as err:
            raise BacktestError(f"--tick: {err}") from None
        # rows before the start share the first instant; each window then is one tick later
        step = win_rows or 1
        idx = np.arange(n)
        times = pd.Series(EPOCH + tick * np.maximum(0, (idx - begin) // step + 1), index=frame.index)
        start = EPOCH + tick
    if begin <= 0 or begin >= n:
        raise BacktestError(f"--start: {opts.start or 'the middle'} leaves "
                            f"{begin} rows to train the first champion and {n - begin} to replay; "
                            "both need rows")
    if win_rows is not None:
        windows = [np.arange(i, min(i + win_rows, n)) for i in range(begin, n, win_rows)]
    else:
        period = pd.Timedelta(seconds=win_period)
        k = ((times.iloc[begin:] - start) // period).to_numpy()
        pos = np.arange(begin, n)
        windows = [pos[k == j] for j in np.unique(k)]
    label_at = _label_times(opts.label_delay, times, windows, timed)
    # The delay is simulated from the start on: the first champion had its labels.
    label_at.iloc[:begin] = times.iloc[:begin]
    return _Timeline(frame, times, label_at, windows, pd.Timestamp(start), timed)


def _naive_utc(values: pd.Series) -> pd.Series:
    """Times as naive UTC (zoned ones converted; naive ones taken as they are)."""
    values = pd.to_datetime(values)
    if values.dt.tz is not None:
        values = values.dt.tz_convert("UTC").dt.tz_localize(None)
    return values.astype("datetime64[ns]")


def _naive_utc_one(t: pd.Timestamp, zone: Any) -> pd.Timestamp:
    """One time (e.g. ``--start``) on the replay's naive UTC clock: a time without a zone is
    read in the time column's zone, when it has one."""
    t = pd.Timestamp(t)
    if t.tzinfo is None and zone is not None:
        t = t.tz_localize(zone)
    return t.tz_convert("UTC").tz_localize(None) if t.tzinfo is not None else t


def _label_times(delay: str, times: pd.Series, windows: list[np.ndarray],
                 timed: bool) -> pd.Series:
    s = str(delay).strip().lower()
    never = pd.Timestamp.max
    if s == NEVER:
        return pd.Series(never, index=times.index)
    if s.isdigit():  # labels of a window arrive with the end of the window k later
        k = int(s)
        out = times.copy()
        ends = [times.iloc[w].max() for w in windows]
        for j, w in enumerate(windows):
            out.iloc[w] = ends[j + k] if j + k < len(windows) else never
        return out
    if not timed:
        raise BacktestError("--label-delay: a duration needs data.time_column; give a number of "
                            "windows (e.g. 1) or 'never'")
    try:
        return times + pd.Timedelta(seconds=parse_duration(s))
    except ValueError:
        raise BacktestError(f"--label-delay: {delay!r} is not 0, a number of windows, a duration "
                            "(e.g. 7d) or 'never'") from None


def training_rows(line: _Timeline, upto: int, at: pd.Timestamp,
                  train_window: str | None) -> pd.DataFrame:
    """The rows a training at `at` could read: rows before position `upto` whose labels had
    arrived, the latest `train_window` of them."""
    frame = line.frame.iloc[:upto]
    ready = (line.label_at.iloc[:upto] <= at).to_numpy()
    frame = frame[ready]
    if train_window is None or frame.empty:
        return frame
    rows, period = _rows_or_period(train_window, "--train-window")
    if rows is not None:
        return frame.iloc[-rows:]
    times = line.times.iloc[:upto][ready]
    return frame[(times > at - pd.Timedelta(seconds=period)).to_numpy()]


def fit(config: Config, frame: pd.DataFrame, version: str,
        champion: _Champion | None) -> tuple[gt.GateDecision | None, _Champion | None, str]:
    """Validate, split, train, evaluate and gate one replayed training, in memory.

    Returns:
        (the gate's decision, the new version, ``""``) when it trained; (None, None, why)
        when validation or training stopped it.
    """
    report = va.validate(config, frame)
    if not report.success:
        return None, None, (f"validation failed: {len(report.failed)} of "
                            f"{len(report.outcomes)} expectations not met\n"
                            + report.describe_failures())
    try:
        parts = tr.split(config, frame)
        trained = tr.train(config, parts.train)
    except (tr.TrainingError, ValueError) as err:
        return None, None, f"training failed: {err}"
    g = config.gate
    slices, seed = [s.column for s in g.slices], config.split.seed
    scored = ev.predict(trained.model, parts.holdout, trained.target)
    cand = ev.evaluate(trained.model, parts.holdout, trained.target, trained.metric,
                       bootstrap_samples=g.bootstrap_samples, scored=scored,
                       slice_columns=slices, seed=seed)
    base = ev.evaluate_baseline(parts.train, parts.holdout, trained.target, trained.metric)
    champ = check = gain = None
    if champion is not None:  # as the training flow's baselines and evaluate steps
        old = champion.trained.model
        champ_scored = ev.predict(old, parts.holdout, trained.target)
        champ = ev.evaluate(old, parts.holdout, trained.target, trained.metric,
                            scored=champ_scored, slice_columns=slices, seed=seed)
        check = ts.check(champion.trusted, old, trained.model, trained.target, trained.metric,
                         champion.version)
        gain = ev.paired_gain(
            trained.target.task, trained.metric,
            trained.target.encode(parts.holdout[trained.target.column]), scored, champ_scored,
            samples=g.bootstrap_samples, seed=seed, confidence=g.improvement_confidence,
            candidate_classes=_classes(trained.model, trained.target),
            champion_classes=_classes(old, trained.target))
    decision = gt.decide(g, cand, champ, None if champion is None else champion.version, None,
                         base, check, gain)
    ref = build_reference(config, trained, parts.train, cand.metrics, parts.holdout,
                          scored.proba)
    trusted = ts.build(config, trained.model, parts.train, parts.holdout, trained.target,
                       trained.metric, scored)
    new = _Champion(version, trained, ref, trusted, ing.fingerprint(frame), len(frame),
                    {k: float(v) for k, v in cand.metrics.items()}, gain,
                    None if champ is None else champ.value)
    return decision, new, ""


def _classes(model: Any, target: tr.Target) -> list[Any] | None:
    """A multiclass model's class order, as `tasks.model.evaluate.evaluate` finds it."""
    if target.task != "multiclass":
        return None
    return list(model.classes_) if hasattr(model, "classes_") else target.classes


def _scored(config: Config, champ: _Champion, rows: pd.DataFrame) -> pd.DataFrame:
    X, pred, score = predict(config, champ.trained.model, champ.reference.spec, rows)
    out = X.reset_index(drop=True)
    out[PRED] = pred.astype(str)
    out[SCORE] = score if score is not None else np.nan
    return out


def _labels(truth: pd.Series) -> np.ndarray:
    """Labels as the monitoring store keeps them (`scoring.record_labels`): the stored text of
    each value, and None for a missing one (a row without a label is not labelled)."""
    return np.array([None if pd.isna(v) else label_text(v) for v in truth], dtype=object)


def _hindsight(config: Config, champ: _Champion, scored: pd.DataFrame,
               truth: pd.Series) -> tuple[int, float | None]:
    w = scored.assign(__label=_labels(truth))
    return monitor.window_metric(config, champ.reference, w)


def _paired(config: Config, champ: _Champion, new: pd.DataFrame, old: pd.DataFrame,
            truth: pd.Series) -> dict[str, float | None] | None:
    """In hindsight, the gain of the champion that scored `new` over the one it replaced
    (`old`, the same rows) on the window's labelled rows: a paired bootstrap, as the gate's
    improvement rule (``gate.bootstrap_samples``, ``gate.improvement_confidence``)."""
    task, ref, labels = config.data.task, champ.reference, _labels(truth)
    y, pred, proba = monitor._labels(new.assign(__label=labels), ref, task)
    _, old_pred, old_proba = monitor._labels(old.assign(__label=labels), ref, task)
    if len(y) < 2:
        return None
    gain = ev.paired_gain(task, ref.metric, y, ev.Scored(pred, proba),
                          ev.Scored(old_pred, old_proba), samples=config.gate.bootstrap_samples,
                          seed=config.split.seed, confidence=config.gate.improvement_confidence)
    return {"value": gain.value, "low": gain.low, "high": gain.high}


class _Log:
    """The replayed prediction log: what `scoring.load_window` reads in production. Each
    window is one scoring batch, scored at the window's end (its event time)."""

    def __init__(self) -> None:
        self.parts: dict[str, list[pd.DataFrame]] = {}  # version -> its scored windows

    def add(self, scored: pd.DataFrame, version: str, at: pd.Timestamp, label_at: pd.Series,
            truth: pd.Series) -> None:
        self.parts.setdefault(version, []).append(scored.assign(
            __version=version, __scored_at=np.datetime64(at, "ns"),
            __label_at=label_at.to_numpy(), __truth=_labels(truth)))

    def window(self, config: Config, version: str, at: pd.Timestamp) -> pd.DataFrame:
        """As `scoring.load_window` would read it at `at`: the rows `version` scored within
        `monitoring.window.period` before `at`, or its latest `monitoring.window.rows`, with
        the labels that had arrived by `at`."""
        w = config.monitoring.window
        frame = pd.concat(self.parts[version], ignore_index=True)
        if w.period is not None:
            since = at - pd.Timedelta(seconds=parse_duration(w.period))
            frame = frame[frame["__scored_at"] >= since]
        if w.rows is not None:
            frame = frame.iloc[-w.rows:]
        label = pd.Series(frame["__truth"].to_numpy(), dtype=object).where(
            (frame["__label_at"] <= at).to_numpy(), None)
        return frame.drop(columns=["__truth", "__label_at"]).assign(
            __label=label.to_numpy()).reset_index(drop=True)


# a trial's state after a window, in the per-window table
TRIAL_WORDS = {ch.RUNNING: "trial", ch.PROMOTED: "in", ch.RETIRED: "out"}


class _Trial:
    """A challenger in shadow (``promotion.mode: shadow``): the rows it scored beside the
    champion, and its trial's windows, as the live judge-challenger step keeps them."""

    def __init__(self) -> None:
        self.challenger: _Champion | None = None
        self.rows: list[pd.DataFrame] = []
        self.until: pd.Timestamp | None = None
        self.windows: list[ch.WindowResult] = []

    def start(self, challenger: _Champion) -> None:
        """A passing candidate becomes the challenger (replacing any other), judged afresh."""
        self.end()
        self.challenger = challenger

    def end(self) -> None:
        self.challenger = self.until = None
        self.rows, self.windows = [], []

    def add(self, config: Config, scored: pd.DataFrame, rows: pd.DataFrame, at: pd.Timestamp,
            label_at: pd.Series, truth: pd.Series) -> None:
        """The challenger scores the batch the champion just scored (its shadow predictions)."""
        if self.challenger is None:
            return
        shadow = _scored(config, self.challenger, rows)
        self.rows.append(pd.DataFrame({
            "champion_pred": scored[PRED].to_numpy(), "champion_score": scored[SCORE].to_numpy(),
            PRED: shadow[PRED].to_numpy(), SCORE: shadow[SCORE].to_numpy(),
            "__scored_at": np.datetime64(at, "ns"), "__label_at": label_at.to_numpy(),
            "__label": _labels(truth)}))

    def judge(self, config: Config, champ: _Champion, at: pd.Timestamp) -> tuple[str, str]:
        """One window of the trial at check time `at`: (what it found, the trial's state
        after it). Rows count once, when both scored them and their labels had arrived."""
        assert self.challenger is not None
        trial, task, ref = config.promotion.shadow, config.data.task, champ.reference
        frame = pd.concat(self.rows, ignore_index=True) if self.rows else pd.DataFrame()
        if frame.empty:
            return f"v{self.challenger.version} in shadow: nothing scored yet", ch.RUNNING
        ready = (frame["__label_at"] <= at) & frame["__label"].notna()
        if self.until is not None:
            ready &= frame["__scored_at"] > self.until
        rows = frame[ready.to_numpy()]
        y, pred, proba = monitor._labels(rows, ref, task)
        champion = rows.drop(columns=[PRED, SCORE]).rename(
            columns={"champion_pred": PRED, "champion_score": SCORE})
        _, c_pred, c_proba = monitor._labels(champion, ref, task)
        result = ch.judge_window(task, ref.metric, y, ev.Scored(c_pred, c_proba),
                                 ev.Scored(pred, proba), trial, seed=config.split.seed)
        head = f"v{self.challenger.version} against v{champ.version}: {result.describe(ref.metric)}"
        if not result.counted:
            return head, ch.RUNNING
        self.windows.append(result)
        self.until = rows["__scored_at"].max()
        verdict = ch.decide(self.windows, trial, ref.metric)
        return f"{head}; {verdict.state}: {verdict.reason}", verdict.state


def _utc(t: pd.Timestamp) -> dt.datetime:
    t = pd.Timestamp(t)
    return (t.tz_convert("UTC") if t.tzinfo else t.tz_localize("UTC")).to_pydatetime()


class _Replay:
    """The replay's state: the champion, the prediction log, the drift and performance flags
    of earlier checks (as the monitoring store keeps them), and the policy's store."""

    def __init__(self, config: Config, line: _Timeline, store: Store, first: _Champion,
                 train_window: str | None) -> None:
        self.config, self.line, self.store, self.train_window = config, line, store, train_window
        self.first = self.champ = first
        self.replaced: _Champion | None = None  # the champion the last promotion replaced
        self.versions = 1
        self.log = _Log()
        self.drift_flags: dict[str, list[bool]] = {}
        self.perf_flags: list[bool] = []
        self.trial = _Trial() if config.promotion.mode == "shadow" else None
        # the champion a retrain of the checks promoted, until a later training promotes nothing
        self.promoted_by_retrain: _Champion | None = None

    def window(self, index: int, pos: np.ndarray) -> WindowResult:
        """Score one window, check it, and follow the check through policy and gate."""
        t0 = time.perf_counter()
        config, line, champ = self.config, self.line, self.champ
        rows, at = line.frame.iloc[pos], line.times.iloc[pos].max()
        truth = rows[config.data.target]
        scored = _scored(config, champ, rows)
        self.log.add(scored, champ.version, at, line.label_at.iloc[pos], truth)
        if self.trial is not None:
            self.trial.add(config, scored, rows, at, line.label_at.iloc[pos], truth)
        _, realized = _hindsight(config, champ, scored, truth)
        first_scored = scored if champ is self.first else _scored(config, self.first, rows)
        labelled, realized_first = _hindsight(config, self.first, first_scored, truth)
        replaced, self.replaced = self.replaced, None
        realized_replaced = replaced_gain = None
        if replaced is not None:
            old = first_scored if replaced is self.first else _scored(config, replaced, rows)
            realized_replaced = _hindsight(config, replaced, old, truth)[1]
            replaced_gain = _paired(config, champ, scored, old, truth)
        n = config.monitoring.persistence.n
        previous = self.drift_flags.setdefault(champ.version, [])
        a = monitor.assess(config, champ.reference, self.log.window(config, champ.version, at),
                           previous[:n], previous_performance=self.perf_flags[:n])
        if a.verdict != monitor.INSUFFICIENT:  # as the store: only judged checks count
            previous.insert(0, a.drifted)
            self.perf_flags.insert(0, bool(a.performance and a.performance.degraded))
        shadow = state = judged = None
        if self.trial is not None and self.trial.challenger is not None:
            judged = self.trial.challenger.version
            # the live check's judge-challenger step: before the retrain the check asks for
            shadow, state = self.trial.judge(config, champ, at)
            if state == ch.PROMOTED:
                self.replaced, self.champ = champ, self.trial.challenger
            if state in (ch.PROMOTED, ch.RETIRED):
                self.trial.end()
        extra: dict[str, Any] = {}
        on_trial = self.trial is not None and self.trial.challenger is not None
        if a.persistent and on_trial:  # as live: the trial under way answers the degradation
            shadow = f"{shadow}; no retrain asked while the challenger is on trial"
        else:
            catch_up = None
            if self.promoted_by_retrain is self.champ and self.champ.gain is not None:
                catch_up = monitor.catch_up(config, a, self.champ.version, self.champ.gain.low,
                                            self.champ.gained_over)
            if a.persistent or catch_up:
                extra = _retrain(config, self.store, line, int(pos[-1]) + 1, at, a,
                                 self.champ, self.versions + 1, self.train_window,
                                 reason=catch_up)
                extra["catch_up"] = catch_up
            if "gate" in extra:  # a training ran (or was skipped): catch-up follows promotions
                self.promoted_by_retrain = extra["new"] if extra.get("promoted") else None
            if extra.get("new") is not None:
                self.versions += 1
                if extra["promoted"] and self.trial is not None:
                    self.promoted_by_retrain = None
                    extra["promoted"] = False  # it becomes the challenger: champion stays
                    self.trial.start(extra["new"])
                    shadow = ("" if shadow is None else f"{shadow}; ") + (
                        f"v{extra['new'].version} in shadow against v{self.champ.version}")
                elif extra["promoted"]:
                    self.replaced, self.champ = self.champ, extra["new"]
        new = extra.get("new")
        return WindowResult(
            index, str(line.times.iloc[pos].min()), str(at), len(pos), champ.version, a.verdict,
            a.drift_share, a.drifted_columns, a.prediction_drift,
            monitor.performance_payload(a.performance), a.persistent, a.warning, a.reasons,
            extra.get("policy"), extra.get("policy_detail"), extra.get("gate"),
            extra.get("gate_reasons", []), None if new is None else new.version,
            bool(extra.get("promoted")) or state == ch.PROMOTED, extra.get("training_rows"),
            realized,
            realized_first, labelled, round(time.perf_counter() - t0, 3),
            None if replaced is None else replaced.version, realized_replaced, replaced_gain,
            None if self.trial is None or self.trial.challenger is None
            else self.trial.challenger.version, shadow, state, judged, extra.get("catch_up"))


def run(loaded: LoadedConfig, frame: pd.DataFrame, opts: Options, *, source: str = "",
        progress: Callable[[WindowResult], None] | None = None) -> BacktestReport:
    """Replay `frame` (the history) under `loaded`'s config; see the module docstring.

    Raises:
        BacktestError: options that do not fit the data, or a first champion that cannot be
            trained (naming why).
    """
    t_start = time.perf_counter()
    config = loaded.config
    line = timeline(config, frame, opts)
    model = config.registry.model_name
    notes = ["models stay in memory and policy records in a throw-away store: the live "
             "registry, aliases and monitoring store are not touched"]
    if config.promotion.mode not in ("auto", "shadow"):
        notes.append(f"promotion.mode {config.promotion.mode}: not replayed; a passing "
                     "candidate is promoted as if approved")
    if config.promotion.bake is not None:
        notes.append("promotion.bake: not replayed; a promotion settles at once")
    begin = int(line.windows[0][0])
    first_rows = training_rows(line, begin, line.start, opts.train_window)
    if first_rows.empty:
        raise BacktestError(f"no labelled rows before {line.start} to train the first champion "
                            "(--start, --label-delay)")
    decision, first, why = fit(config, first_rows, "1", None)
    if first is None or decision is None:  # both or neither
        raise BacktestError(f"the first champion could not be trained on {len(first_rows)} rows "
                            f"before {line.start}: {why}")
    first_info = {"version": "1", "rows": first.rows, "until": str(line.start),
                  "best": first.trained.best.name, "holdout": first.holdout,
                  "gate": decision.verdict, "gate_reasons": decision.reasons}
    if not decision.passed:
        notes.append(f"the first champion failed its own gate ({'; '.join(decision.reasons)}); "
                     "it is replayed anyway, as the model the history starts from")
    results: list[WindowResult] = []
    with tempfile.TemporaryDirectory(prefix="regrow-backtest-") as tmp:
        replay = _Replay(config, line, Store(f"sqlite:///{Path(tmp) / 'policy.db'}"), first,
                         opts.train_window)
        try:
            for j, pos in enumerate(line.windows):
                results.append(replay.window(j + 1, pos))
                if progress is not None:
                    progress(results[-1])
        finally:
            replay.store.dispose()
    return BacktestReport(
        model, str(loaded.path), loaded.sha256, asdict(opts), len(line.frame), source,
        first_info, results, totals(results, first.trained.metric),
        config.retrain.model_dump(), notes, round(time.perf_counter() - t_start, 2))


def _retrain(config: Config, store: Store, line: _Timeline, upto: int,
             at: pd.Timestamp, a: monitor.Assessment, champ: _Champion, version_no: int,
             train_window: str | None, reason: str | None = None) -> dict[str, Any]:
    """Ask the real policy at event time `at` (for the check's degradation, or `reason`);
    when admitted, train and gate in memory."""
    when, kind, model = _utc(at), "drift", config.registry.model_name
    answer = policy.request_retrain(store, model, config.retrain, kind=kind,
                                    reason=reason or "; ".join(a.reasons), at=when)
    out: dict[str, Any] = {"policy": answer.verdict, "policy_detail": answer.detail}
    if not answer.admitted:
        return out
    rows = training_rows(line, upto, at, train_window)
    out["training_rows"] = len(rows)
    if ing.fingerprint(rows) == champ.fingerprint:
        row = store.start_training(model, kind, "backtest", at=when)
        store.finish_training(row, status=policy.SKIPPED, detail="unchanged data", at=when)
        policy.mark_request(store, answer.request_id, "done")
        out["gate"] = "skipped"
        out["gate_reasons"] = ["data unchanged since the champion's training"]
        return out
    row = store.start_training(model, kind, "backtest", at=when)
    decision, new, why = fit(config, rows, str(version_no), champ)
    if new is None or decision is None:  # both or neither
        store.finish_training(row, status="failed", detail=why, at=when)
        policy.mark_request(store, answer.request_id, "failed")
        out["gate"] = "failed"
        out["gate_reasons"] = [why]
        return out
    store.finish_training(row, status="finished", verdict=decision.verdict,
                          version=new.version, at=when)
    policy.mark_request(store, answer.request_id, "done")
    out.update(gate=decision.verdict, gate_reasons=decision.reasons, new=new,
               promoted=decision.passed)
    return out


def totals(windows: list[WindowResult], metric: str) -> Totals:
    """Counts over the windows and the row-weighted metric with and without retraining."""

    def weighted(attr: str) -> float | None:
        pairs = [(getattr(w, attr), w.rows) for w in windows if getattr(w, attr) is not None]
        n = sum(r for _, r in pairs)
        return None if n == 0 else sum(v * r for v, r in pairs) / n

    return Totals(
        len(windows), sum(w.verdict == monitor.DRIFT for w in windows),
        sum(w.warning for w in windows), sum(w.policy is not None for w in windows),
        sum(w.new_version is not None for w in windows), sum(w.promoted for w in windows),
        sum(w.new_version is not None and w.gate != gt.PROMOTE for w in windows), metric,
        weighted("realized"),
        weighted("realized_first"))


def better(metric: str) -> str:
    """'higher' or 'lower': which way the metric improves."""
    return "higher" if METRICS[metric][1] else "lower"


def check_options(opts: Options) -> None:
    """Fail fast on options that cannot work with this config (before any data is read).

    Raises:
        BacktestError: naming the option.
    """
    _rows_or_period(opts.window, "--window")
    if opts.train_window is not None:
        _rows_or_period(opts.train_window, "--train-window")
    try:
        parse_duration(opts.tick)
    except ValueError as err:
        raise BacktestError(f"--tick: {err}") from None


def write(report: BacktestReport, directory: Path) -> BacktestReport:
    """Write the JSON and HTML reports; return the report with their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
    jpath, hpath = directory / f"backtest-{stamp}.json", directory / f"backtest-{stamp}.html"
    report = replace(report, json_path=str(jpath), html_path=str(hpath))
    jpath.write_text(json.dumps(report.to_dict(), indent=2, default=str), encoding="utf-8")
    hpath.write_text(to_html(report), encoding="utf-8")
    return report


def _fmt(v: float | None, digits: int = 4) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def table_rows(windows: list[WindowResult], metric: str) -> list[list[str]]:
    """The per-window table: a header, then one list of cells per window."""
    m = metric
    head = ["#", "until", "rows", "model", "check", "drifted", f"{m} seen", "policy", "gate",
            f"{m} replayed", f"{m} never retrained"]
    out = [head]
    for w in windows:
        p = w.performance or {}
        seen = "-" if p.get("current") is None else \
            f"{p['current']:.3f}{' est' if p.get('estimated') else ''}"
        if p.get("degraded"):
            seen += " (degraded)"
        check = w.verdict + (" persistent" if w.persistent else " catch-up" if w.catch_up
                             else " warning" if w.warning else "")
        gate = "-" if w.gate is None else w.gate + (f" v{w.new_version}" if w.new_version else "")
        if w.new_version is not None and w.challenger == w.new_version:
            gate = f"shadow v{w.new_version}"  # promotion.mode shadow: passed, now on trial
        if w.shadow_state is not None:  # the trial's judgement on this window
            step = f"v{w.judged} {TRIAL_WORDS[w.shadow_state]}"
            gate = step if gate == "-" else f"{step}; {gate}"
        out.append([str(w.index), w.last[:19], str(w.rows), f"v{w.version}", check,
                    ", ".join(w.drifted_columns[:4]) + (" ..." if len(w.drifted_columns) > 4
                                                        else "") or "-",
                    seen, w.policy or "-", gate, _fmt(w.realized), _fmt(w.realized_first)])
    return out


def summary_lines(report: BacktestReport) -> list[str]:
    """The totals as sentences."""
    t = report.totals
    gain = None if t.with_retraining is None or t.without_retraining is None else \
        t.with_retraining - t.without_retraining
    return [
        f"{t.windows} windows replayed: {t.alarms} checks saw drift or degradation, "
        f"{t.warnings} warnings (drift that asks for no retrain), {t.requests} retrain "
        f"requests, {t.retrains} trainings, {t.promotions} promotions, {t.rejections} gate "
        "rejections",
        f"{t.metric} over the replayed rows ({better(t.metric)} is better): with retraining "
        f"{_fmt(t.with_retraining)}, first champion never retrained {_fmt(t.without_retraining)}"
        + ("" if gain is None else f" (difference {gain:+.4f})"),
    ]


def to_html(report: BacktestReport) -> str:
    """A self-contained HTML page: totals, a chart of both metrics per window, the table."""
    esc = html.escape
    rows = table_rows(report.windows, report.totals.metric)
    head = "".join(f"<th>{esc(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
    t = report.totals
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>regrow backtest: {esc(report.model)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:72em}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.25em .5em;
font-size:.9em}}th{{background:#f3f3f3}}</style></head><body>
<h1>Backtest of {esc(report.model)}</h1>
<p>config <code>{esc(report.config)}</code> (sha256 {esc(report.config_sha256[:12])}),
history {report.history_rows} rows from {esc(report.history_source)};
options {esc(json.dumps(report.options))}; policy {esc(json.dumps(report.policy))};
{report.seconds} s.</p>
<ul>{''.join(f'<li>{esc(s)}</li>' for s in summary_lines(report))}
{''.join(f'<li>{esc(n)}</li>' for n in report.notes)}</ul>
<p>First champion: {esc(json.dumps(_clean(report.first_champion)))}</p>
{_svg(report)}
<table><tr>{head}</tr>{body}</table>
<p>{esc(t.metric)} "replayed" is the metric, in hindsight on all of the window's labels, of the
champion the replay had when the window was scored; "never retrained" is the first champion's
on the same rows.</p></body></html>
"""


def _svg(report: BacktestReport, width: int = 720, height: int = 240) -> str:
    series = [("replayed", "#1f77b4", [w.realized for w in report.windows]),
              ("never retrained", "#d62728", [w.realized_first for w in report.windows])]
    values = [v for _, _, s in series for v in s if v is not None]
    if len(report.windows) < 2 or not values:
        return ""
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.1 or 0.01
    lo, hi = lo - pad, hi + pad
    n = len(report.windows)

    def xy(i: int, v: float) -> str:
        x = 40 + i * (width - 60) / (n - 1)
        return f"{x:.1f},{height - 20 - (v - lo) / (hi - lo) * (height - 40):.1f}"

    lines = []
    for name, colour, s in series:
        pts = " ".join(xy(i, v) for i, v in enumerate(s) if v is not None)
        lines.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{pts}">'
                     f"<title>{name}</title></polyline>")
    marks = "".join(f'<line x1="{xy(i, lo).split(",")[0]}" x2="{xy(i, lo).split(",")[0]}" y1="10" '
                    f'y2="{height - 20}" stroke="#2ca02c" stroke-dasharray="4"/>'
                    for i, w in enumerate(report.windows) if w.promoted)
    return (f'<svg width="{width}" height="{height}" role="img" aria-label="metric per window">'
            f'<text x="40" y="12" font-size="11">{html.escape(report.totals.metric)}: blue replayed,'
            f' red never retrained, green dashed = promotion; range {lo:.3f}..{hi:.3f}</text>'
            f"{marks}{''.join(lines)}</svg>")
