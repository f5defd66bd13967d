"""Scoring new rows with the champion, logging predictions, and joining late labels."""

from __future__ import annotations

import io
import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from regrow.configs.schema import Config
from regrow.tasks.data.timecol import TimeUnitError, to_times
from regrow.tasks.model.predict import predict_with_proba
from regrow.tasks.monitoring import predlog
from regrow.tasks.store.database import Store, bulk_insert, labels, now, prediction_batches, predictions
from regrow.tasks.store.settings import Settings


class ScoringError(ValueError):
    """Rows that cannot be scored; the message names the columns and the problem."""


@dataclass(frozen=True)
class ScoringResult:
    """What a scoring batch did."""

    model: str
    version: str
    batch_id: str
    rows: int
    ignored_columns: list[str] = field(default_factory=list)
    unseen_categories: dict[str, list[str]] = field(default_factory=dict)
    shadow_version: str | None = None  # the previous champion, scored too during a bake
    shadow_rows: int = 0


@dataclass(frozen=True)
class InputSpec:
    """The columns a registered version reads, with their roles (from its version tags).
    `sources` are columns read only by derived features (not drift-checked themselves)."""

    numeric: list[str]
    categorical: list[str]
    datetime: list[str]
    categories: dict[str, list[str]] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)

    @property
    def inputs(self) -> list[str]:
        """Every input column."""
        return [*self.numeric, *self.categorical, *self.datetime, *self.sources]

    def to_tags(self) -> dict[str, str]:
        """Model-version tags that carry the spec."""
        tags = {"regrow.inputs.numeric": json.dumps(self.numeric),
                "regrow.inputs.categorical": json.dumps(self.categorical),
                "regrow.inputs.datetime": json.dumps(self.datetime)}
        if self.sources:
            tags["regrow.inputs.sources"] = json.dumps(self.sources)
        return tags

    @classmethod
    def from_tags(cls, tags: dict[str, str], categories: dict[str, list[str]] | None = None) -> InputSpec:
        """Rebuild from model-version tags."""
        def get(key: str) -> list[str]:
            return json.loads(tags.get(f"regrow.inputs.{key}", "[]"))
        return cls(get("numeric"), get("categorical"), get("datetime"), categories or {},
                   get("sources"))


def check_rows(spec: InputSpec, frame: pd.DataFrame) -> tuple[list[str], dict[str, list[str]]]:
    """Check rows against a version's inputs before scoring.

    Returns:
        (extra columns that will be ignored, unseen categories per column).

    Raises:
        ScoringError: no rows, missing input columns, or non-numeric values in numeric inputs.
    """
    if frame.empty:
        raise ScoringError("no rows to score (empty input)")
    extra = check_columns(spec, list(frame.columns))
    problems = []
    for col in spec.numeric:
        s = frame[col]
        if not (pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)):
            bad = pd.to_numeric(s, errors="coerce").isna() & s.notna()
            if bad.any():
                problems.append(f"{col!r} must be numeric; e.g. {s[bad].head(3).tolist()} "
                                f"({int(bad.sum())} of {len(s)} rows)")
    if problems:
        raise ScoringError("wrong dtype in input: " + "; ".join(problems))
    unseen = {}
    for col, known in spec.categories.items():
        if col in frame.columns:
            new = sorted(set(frame[col].dropna().astype(str)) - set(known))
            if new:
                unseen[col] = new[:20]
    return extra, unseen


def check_columns(spec: InputSpec, columns: list[str]) -> list[str]:
    """The column part of `check_rows`, on names alone (no frame needed).

    Returns:
        The columns the version does not read.

    Raises:
        ScoringError: naming the input columns that are missing.
    """
    present = set(columns)
    missing = [c for c in spec.inputs if c not in present]
    if missing:
        raise ScoringError(f"input is missing column(s) the model needs: {missing}")
    needed = set(spec.inputs)
    return [c for c in columns if c not in needed]


def predict(config: Config, model, spec: InputSpec,
            frame: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray, np.ndarray | None]:
    """(model inputs, predictions, positive-class probability or predicted value)."""
    X, pred, score, _ = predict_full(config, model, spec, frame)
    return X, pred, score


def predict_full(config: Config, model, spec: InputSpec, frame: pd.DataFrame,
                 probabilities: bool = False
                 ) -> tuple[pd.DataFrame, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """`predict`, plus every class's probability (columns in the order of the final step's
    ``classes_``) when `probabilities` is asked for a classifier that has them (else None)."""
    X = frame[spec.inputs].copy()
    for col in spec.numeric:
        X[col] = pd.to_numeric(X[col], errors="coerce")
    task, score, proba = config.data.task, None, None
    classifier = task != "regression" and hasattr(model, "predict_proba")
    both = predict_with_proba(model, X) if task == "binary" or (probabilities and classifier) \
        else None
    if both is not None:
        pred, proba = both
    else:
        pred = np.asarray(model.predict(X))
        if classifier and (task == "binary" or probabilities):
            proba = np.asarray(model.predict_proba(X))
    if task == "binary" and proba is not None:
        score = proba[:, 1]
    elif task == "regression":
        score = pred.astype(float)
    return X, pred, score, proba if probabilities else None


def score_shadow(config: Config, model, version: str, spec: InputSpec, frame: pd.DataFrame,
                 store: Store, batch_id: str) -> int:
    """Score a champion's batch with the previous champion too (bake period); the shadow's
    predictions are stored apart and never returned. Needs ``data.id_column`` to join labels;
    returns the rows scored (0 without an id column)."""
    from regrow.tasks.registry.bake import record_shadow

    d = config.data
    if not d.id_column or d.id_column not in frame.columns:
        return 0
    _, pred, score = predict(config, model, spec, frame)
    return record_shadow(store, config.registry.model_name, version, batch_id,
                         frame[d.id_column].astype(str).reset_index(drop=True), pred, score)


def score_rows(config: Config, model, version: str, spec: InputSpec, frame: pd.DataFrame,
               store: Store, log_root: str | None = None) -> ScoringResult:
    """Predict with a loaded model and append the batch to the prediction log: one Parquet file
    under `log_root` (default `tasks.monitoring.predlog.root`), indexed in the store.

    Raises:
        ScoringError: see `check_rows`; also a missing or duplicated id column.
    """
    d = config.data
    extra, unseen = check_rows(spec, frame)
    extra = [c for c in extra if c not in (d.id_column, d.time_column)]  # used, not ignored
    if d.id_column and d.id_column not in frame.columns:
        raise ScoringError(f"input is missing the id column {d.id_column!r} (data.id_column)")
    ids = row_ids(config, frame)
    X, pred, score = predict(config, model, spec, frame)
    batch, at = uuid.uuid4().hex, now()
    model = config.registry.model_name
    rows = log_rows(config, ids, frame, X, pred, score)
    log_batch(store, model, version, batch, at, rows, log_root)
    return ScoringResult(model, version, batch, len(rows), extra, unseen)


def row_ids(config: Config, frame: pd.DataFrame) -> pd.Series:
    """The rows' ids as text: the config's id column when the frame has it, else new ones.

    Raises:
        ScoringError: the id column holds a value twice.
    """
    d = config.data
    if d.id_column and d.id_column in frame.columns:
        ids = frame[d.id_column].astype(str)
        if ids.duplicated().any():
            raise ScoringError(f"id column {d.id_column!r} has duplicated values, e.g. "
                               f"{ids[ids.duplicated()].head(3).tolist()}")
        return ids
    return pd.Series([uuid.uuid4().hex for _ in range(len(frame))], index=frame.index)


def log_rows(config: Config, ids: pd.Series, frame: pd.DataFrame, X: pd.DataFrame,
             pred: np.ndarray, score: np.ndarray | None) -> pd.DataFrame:
    """The prediction log's rows for scored `frame` (`log_batch` writes them): the META
    columns, event times read from the config's time column when the frame has it, then the
    model inputs `X`."""
    d = config.data
    times = None
    if d.time_column and d.time_column in frame.columns:
        try:  # read like the training data (years, epoch units: data.time_unit)
            times = to_times(frame[d.time_column], d.time_unit)
        except TimeUnitError:  # event times are informative only: unreadable ones stay empty
            col = frame[d.time_column]
            times = None if pd.api.types.is_numeric_dtype(col) else \
                pd.to_datetime(col, errors="coerce", format="mixed")
    rows = pd.DataFrame({
        "__row_id": ids.to_numpy(dtype=object),
        "__event_time": _naive_times(times, len(frame)),
        "__prediction": pd.Series(pred).astype(str).to_numpy(dtype=object),
        "__score": np.full(len(frame), np.nan) if score is None else score.astype(float)})
    return pd.concat([rows.reset_index(drop=True), X.reset_index(drop=True)], axis=1)


def log_batch(store: Store, model: str, version: str, batch: str, at, rows: pd.DataFrame,
              log_root: str | None = None) -> str:
    """Append one batch (the META columns, then the inputs) to the prediction log: its Parquet
    file first, then its index row, so the index never names a missing file. Returns the
    file's location."""
    location = predlog.batch_location(log_root or predlog.root(Settings.from_env().home),
                                      model, batch, at.strftime("%Y-%m-%d"))
    predlog.write_batch(location, rows)
    events = rows["__event_time"].dropna()
    try:
        with store.engine.begin() as conn:
            conn.execute(prediction_batches.insert().values(
                model=model, version=version, batch_id=batch, path=location, rows=len(rows),
                scored_at=at,
                first_event_time=None if events.empty else events.min().to_pydatetime(),
                last_event_time=None if events.empty else events.max().to_pydatetime()))
    except BaseException:
        predlog.remove(location)  # no index row: the batch was not logged, leave no file
        raise
    return location


@dataclass(frozen=True)
class LabelResult:
    """What a labels upload did: labels new to the store, and changed ones, are kept (unknown
    ids too, reported); labels already recorded are not stored again."""

    received: int  # ids in the input (an id repeated with the same label counts once)
    matched: int  # of those, ids with a logged prediction
    unknown_ids: list[str]
    new: int = 0  # ids with no label before
    already: int = 0  # ids whose latest recorded label is this one: not stored again
    changed: int = 0  # ids relabelled: stored, and the newest label counts
    repeated: int = 0  # rows that repeated an id with the same label in the input

    def describe(self) -> str:
        """``500 new labels, 0 already recorded (...); 500 joined to predictions``."""
        text = (f"{self.new} new label{'s' if self.new != 1 else ''}, {self.already} already "
                "recorded")
        if self.changed:
            text += f", {self.changed} changed (the newest label counts)"
        if self.repeated:
            text += f"; {self.repeated} repeated row(s) in the input counted once"
        return text + f"; {self.matched} joined to predictions"


_WHOLE = re.compile(r"^-?\d+(\.0+)?$")


def label_text(value: Any) -> str:
    """A label as it is stored and compared: whole numbers without a decimal part (``1``,
    ``1.0`` and ``"1"`` are one label), other values as their text."""
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    text = str(value).strip()
    return str(int(float(text))) if _WHOLE.match(text) else text


def _listed(values: list[str], n: int = 10) -> str:
    shown = ", ".join(repr(v) for v in values[:n])
    return shown + (f" and {len(values) - n} more" if len(values) > n else "")


def check_label_values(config: Config, labels_: pd.Series,
                       classes: list[Any] | None = None, classes_from: str = "") -> None:
    """Refuse labels the target cannot hold: values outside ``expectations.allowed`` for the
    target (else outside `classes`, the champion's, named by `classes_from`), or, for a
    regression target, values that are not numbers.

    Raises:
        ScoringError: naming the values, how many rows hold them and what is allowed.
    """
    d = config.data
    texts = labels_.map(label_text)
    if d.task == "regression":
        bad = texts[pd.to_numeric(texts, errors="coerce").isna()]
        if len(bad):
            raise ScoringError(f"labels for {d.target!r} must be numbers (a regression target); "
                               f"got {_listed(sorted(set(bad)))} in {len(bad)} row(s); nothing "
                               "recorded")
        return
    declared = config.expectations.allowed.get(d.target)
    allowed = declared if declared is not None else classes
    if allowed is None:
        return
    known = {label_text(v) for v in allowed}
    bad = texts[~texts.isin(known)]
    if len(bad):
        counts = bad.value_counts()
        where = f"expectations.allowed.{d.target}" if declared is not None else \
            (classes_from or "the champion's classes")
        raise ScoringError(
            f"labels for {d.target!r} must be one of {_listed(sorted(known))} ({where}); got "
            + ", ".join(f"{v!r} ({n} row{'s' if n != 1 else ''})" for v, n in counts.items())
            + "; nothing recorded")


def _latest_labels(store: Store, model: str, ids: list[str]) -> dict[str, str]:
    """The latest recorded label of each of `ids` that has one."""
    latest: dict[str, str] = {}
    with store.engine.connect() as conn:
        for i in range(0, len(ids), 5000):
            part = ids[i:i + 5000]
            for rid, label in conn.execute(
                    sa.select(labels.c.row_id, labels.c.label)
                    .where(labels.c.model == model, labels.c.row_id.in_(part))
                    .order_by(labels.c.id)):
                latest[rid] = label
    return latest


def record_labels(config: Config, frame: pd.DataFrame, store: Store,
                  classes: list[Any] | None = None, classes_from: str = "") -> LabelResult:
    """Store labels that arrived later, joined to predictions by the id column.

    Checked first, nothing stored when a check fails: every label is one the target can hold
    (`check_label_values`; `classes`: the champion's, used when the config declares no
    ``expectations.allowed`` for the target), and no id carries two different labels in the
    input. Sending the same labels again stores nothing new (``already`` counts them); an id
    whose label differs from the one recorded is relabelled (``changed``; the newest counts).

    Raises:
        ScoringError: the id or target column is missing, there are no rows, a label the target
            cannot hold, or conflicting labels for one id.
    """
    d, model = config.data, config.registry.model_name
    if not d.id_column:
        raise ScoringError("labels need data.id_column in the config to join predictions")
    for col in (d.id_column, d.target):
        if col not in frame.columns:
            raise ScoringError(f"labels file is missing column {col!r}")
    frame = frame[frame[d.target].notna()]
    if frame.empty:
        raise ScoringError("no labels in the input (empty, or all targets null)")
    check_label_values(config, frame[d.target], classes, classes_from)
    given = pd.DataFrame({"id": frame[d.id_column].astype(str).to_numpy(),
                          "label": frame[d.target].map(label_text).to_numpy()})
    unique = given.drop_duplicates()
    clash = unique[unique["id"].duplicated(keep=False)]
    if len(clash):
        ids = list(dict.fromkeys(clash["id"]))
        first = clash[clash["id"] == ids[0]]["label"].tolist()
        raise ScoringError(
            f"conflicting labels for {len(ids)} id(s) in the input, e.g. id {ids[0]!r} labelled "
            f"{' and '.join(repr(v) for v in first)} (ids: {_listed(ids)}); nothing recorded: "
            "send one label per id")
    ids, values = unique["id"].tolist(), unique["label"].tolist()
    known = _logged_ids(store, model, ids)
    before = _latest_labels(store, model, ids)
    at = now()
    fresh = [(rid, v) for rid, v in zip(ids, values, strict=True) if before.get(rid) != v]
    rows = [{"model": model, "row_id": rid, "label": v, "matched": rid in known,
             "received_at": at} for rid, v in fresh]
    if rows:
        with store.engine.begin() as conn:
            bulk_insert(conn, labels, rows)
    unknown = [r for r in ids if r not in known]
    changed = sum(1 for rid, _ in fresh if rid in before)
    return LabelResult(len(ids), len(ids) - len(unknown), unknown, new=len(fresh) - changed,
                       already=len(ids) - len(fresh), changed=changed,
                       repeated=len(given) - len(unique))


def _naive_times(times: pd.Series | None, n: int) -> np.ndarray:
    """Event times as naive UTC datetime64 (NaT where unknown)."""
    if times is None:
        return np.full(n, np.datetime64("NaT"), dtype="datetime64[ns]")
    values = pd.to_datetime(pd.Series(times).reset_index(drop=True), errors="coerce")
    if values.dt.tz is not None:
        values = values.dt.tz_convert("UTC").dt.tz_localize(None)
    return values.astype("datetime64[ns]").to_numpy()


def _logged_ids(store: Store, model: str, ids: list[str]) -> set[str]:
    """Which of `ids` the model's prediction log holds (its files' id column, and the rows
    logged before the log moved to files)."""
    wanted = set(ids)
    b = prediction_batches
    with store.engine.connect() as conn:
        paths = [r.path for r in conn.execute(sa.select(b.c.path).where(b.c.model == model))]
        known: set[str] = set()
        for i in range(0, len(ids), 5000):
            part = ids[i:i + 5000]
            known |= {r[0] for r in conn.execute(sa.select(predictions.c.row_id).where(
                predictions.c.model == model, predictions.c.row_id.in_(part)))}
    return known | (predlog.row_ids(paths) & wanted)


def load_window(store: Store, model: str, *, rows: int | None = None,
                period_seconds: float | None = None, version: str | None = None) -> pd.DataFrame:
    """The current window of scored rows with their latest labels.

    Columns: the inputs, plus ``__row_id``, ``__prediction``, ``__score``, ``__scored_at``,
    ``__version`` and ``__label`` (None where no label has arrived).
    """
    import datetime as dt

    since = None if period_seconds is None else now() - dt.timedelta(seconds=period_seconds)
    b = prediction_batches
    q = sa.select(b.c.path, b.c.rows, b.c.version, b.c.scored_at).where(b.c.model == model)
    if version:
        q = q.where(b.c.version == version)
    if since is not None:
        q = q.where(b.c.scored_at >= since)
    picked, total = [], 0
    with store.engine.connect() as conn:
        for batch in conn.execute(q.order_by(b.c.id.desc())):  # newest first, until enough
            if rows is not None and total >= rows:
                break
            picked.append(batch)
            total += batch.rows
    parts = []
    if picked:
        frame = predlog.read_batches([r.path for r in reversed(picked)])
        frame["__version"] = np.repeat([r.version for r in reversed(picked)],
                                       [r.rows for r in reversed(picked)])
        frame["__scored_at"] = np.repeat(pd.to_datetime([r.scored_at for r in reversed(picked)]),
                                         [r.rows for r in reversed(picked)])
        del frame["__event_time"]  # in place: a drop would copy a million-row frame
        parts.append(frame)
    if rows is None or total < rows:  # rows logged before the log moved to files are older
        older = _legacy_window(store, model, None if rows is None else rows - total, version,
                               since)
        if not older.empty:
            parts.insert(0, older)
    if not parts:
        return pd.DataFrame()
    window = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    if rows is not None and len(window) > rows:
        window = window.iloc[len(window) - rows:].reset_index(drop=True)
    start = pd.to_datetime(window["__scored_at"], utc=True).min()
    window["__label"] = _labels_for(store, model, window["__row_id"], start.to_pydatetime())
    return window


def _labels_for(store: Store, model: str, ids: pd.Series, since) -> np.ndarray:
    """The latest label of each id (None where none arrived). A label arrives after its row
    was scored, so one range scan of the labels received since the window's first batch
    finds them all (index ``ix_labels_model_received``)."""
    lq = (sa.select(labels.c.row_id, labels.c.label)
          .where(labels.c.model == model, labels.c.received_at >= since)
          .order_by(labels.c.id))
    with store.engine.connect() as conn:
        got = pd.DataFrame(conn.execute(lq).all(), columns=["row_id", "label"])
    latest = got.drop_duplicates("row_id", keep="last").set_index("row_id")["label"]
    found = ids.map(latest)
    return found.astype(object).where(found.notna(), None).to_numpy()


def _legacy_window(store: Store, model: str, rows: int | None, version: str | None,
                   since) -> pd.DataFrame:
    """Rows logged before the prediction log moved to files (inputs as JSON), oldest first."""
    p = predictions
    q = sa.select(p.c.row_id, p.c.prediction, p.c.score, p.c.inputs, p.c.scored_at,
                  p.c.version).where(p.c.model == model)
    if version:
        q = q.where(p.c.version == version)
    if since is not None:
        q = q.where(p.c.scored_at >= since)
    q = q.order_by(p.c.id.desc())
    if rows is not None:
        q = q.limit(rows)
    with store.engine.connect() as conn:
        got = conn.execute(q).all()
    if not got:
        return pd.DataFrame()
    inputs = pd.read_json(io.StringIO("\n".join(r.inputs for r in got)), lines=True, dtype=False)
    inputs.insert(0, "__row_id", [r.row_id for r in got])
    inputs.insert(1, "__prediction", [r.prediction for r in got])
    inputs.insert(2, "__score", [r.score for r in got])
    inputs["__version"] = [r.version for r in got]
    inputs["__scored_at"] = [r.scored_at for r in got]
    return inputs.iloc[::-1].reset_index(drop=True)
