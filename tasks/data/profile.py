"""A table's profile, for `regrow init`: the task its target asks for, the id and time
columns, each column's role, and expectations that hold on what was seen.

It reads a bounded sample (the first `SAMPLE_ROWS` rows, through the same readers as the
training's ingest), so profiling takes seconds on millions of rows. Everything here is plain
pandas on that sample; the YAML is written by `tasks.data.init_config`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from regrow.configs.schema import (
    ConfigError,
    DataConfig,
    FileSource,
    SqlSource,
    resolve_config_path,
)
from regrow.tasks.data import ingest
from regrow.tasks.data.features import ID_LIKE_SHARE, column_kind
from regrow.tasks.data.timecol import TimeUnitError, infer_unit, to_times

SAMPLE_ROWS = 200_000
# A whole-number target with at most this many distinct values is a class label (multiclass);
# text or booleans with more than MAX_CLASSES values are not labels a classifier should learn.
MAX_CLASSES = 20
TEXT_MAX_CLASSES = 100
# A column with at most this many distinct values (and at most 5% of the rows) gets its
# values listed as the allowed set.
ALLOWED_MAX = 20
RANGE_MARGIN = 0.1
# Leakage: one column alone explains the target this well on the sample.
LEAK_SCORE = 0.99
LEAK_ROWS = 50_000
_ID_NAME = re.compile(r"(^|[_\W])(id|key|uuid|guid)$|^id[_\W]|Id$|ID$", re.IGNORECASE)
_TIME_NAME = re.compile(r"date|time|day|year|month|epoch|timestamp|_at$|^ts$|period|week",
                        re.IGNORECASE)


class ProfileError(ValueError):
    """The table cannot be profiled as asked; the message is one sentence naming the problem."""


Source = FileSource | SqlSource


def source_from(data: str, table: str | None = None, query: str | None = None) -> Source:
    """The `data.source` for a file path or a SQLAlchemy URL (with a table or a query).

    Raises:
        ProfileError: a URL without a table or query, or a table given with a file.
    """
    if "://" in data:
        if (table is None) == (query is None):
            raise ProfileError(f"{ingest.mask_url(data)} is a database URL: name its table with "
                               "--table (or a query with --query)")
        return SqlSource(kind="sql", url=data, table=table, query=query)
    if table or query:
        raise ProfileError(f"--table and --query go with a database URL, not with the file {data}")
    return FileSource(path=data)


def read_sample(source: Source, config_path: Path,
                max_rows: int = SAMPLE_ROWS) -> tuple[pd.DataFrame, str]:
    """The first `max_rows` rows of the source and where they came from (no secrets).

    Raises:
        ProfileError: the file is missing, empty or unreadable; the database does not
            answer; the table has no rows.
    """
    try:
        if isinstance(source, SqlSource):
            url = ingest.expand_url(source.url)
            where = ingest.mask_url(url) + (f" table {source.table}" if source.table else "")
            frame = ingest.read_sql(url, source.table, source.query, source.chunksize,
                                    dict(source.params), max_rows=max_rows)
        else:
            path = resolve_config_path(source.path, config_path)
            where = str(path)
            frame = ingest._read_file(source, path, "data", max_rows=max_rows)  # noqa: SLF001
    except (ingest.IngestError, ConfigError) as err:
        raise ProfileError(str(err)) from None
    if frame.shape[1] == 0 or len(frame) == 0:
        raise ProfileError(f"{where} has no rows to profile")
    return frame, where


def infer_task(y: pd.Series, target: str) -> tuple[str, str]:
    """The task a target column asks for, and why (one sentence).

    Raises:
        ProfileError: the target is empty, has one value, or is text with too many values
            to be a class label.
    """
    present = y.dropna()
    n = present.nunique()
    if present.empty:
        raise ProfileError(f"target {target!r} has no values (every row is empty)")
    if n < 2:
        raise ProfileError(f"target {target!r} has one value ({_plain(present.iloc[0])!r}) in "
                           f"{len(present)} rows: there is nothing to learn")
    if pd.api.types.is_bool_dtype(present) or n == 2:
        return "binary", f"{target} has two values ({_shown(present)})"
    if pd.api.types.is_numeric_dtype(present):
        whole = bool((present == np.floor(present.astype(float))).all())
        if not whole:
            return "regression", f"{target} holds numbers with fractions ({n} distinct values)"
        if n <= MAX_CLASSES:
            return "multiclass", f"{target} holds {n} whole-number values ({_shown(present)})"
        return "regression", (f"{target} holds whole numbers with {n} distinct values "
                              f"(more than {MAX_CLASSES}: a quantity, not a label)")
    if n > TEXT_MAX_CLASSES:
        raise ProfileError(f"target {target!r} holds text with {n} distinct values: not a class "
                           f"label (at most {TEXT_MAX_CLASSES}) nor a number")
    return "multiclass", f"{target} holds {n} text values ({_shown(present)})"


def _shown(values: pd.Series, k: int = 5) -> str:
    uniq = sorted(values.unique().tolist(), key=str)
    return ", ".join(map(str, uniq[:k])) + (", ..." if len(uniq) > k else "")


def infer_task_of(section: Mapping[str, Any], folder: Path) -> tuple[str, str]:
    """`configs.hooks.task_inference`: the task of a config's ``data`` mapping that leaves
    out ``task``, read from a sample of its target column.

    Raises:
        ProfileError: the source cannot be read, the target is not a column of it, or it
            holds no task (`infer_task`).
    """
    src = DataConfig.model_validate({**section, "task": "regression"})
    frame, where = read_sample(src.source, folder / "config.yaml")
    if src.target not in frame.columns:
        raise ProfileError(_unknown_column("data.target", src.target, frame, where))
    return infer_task(frame[src.target], src.target)


def _unknown_column(key: str, name: str, frame: pd.DataFrame, where: str) -> str:
    cols = list(map(str, frame.columns))
    shown = ", ".join(cols[:12]) + (", ..." if len(cols) > 12 else "")
    return f"{key}: {where} has no column {name!r} (its columns: {shown})"


@dataclass(frozen=True)
class Column:
    """One column as profiled.

    Attributes:
        name: the column.
        role: target, id, time, numeric, categorical, datetime or drop.
        why: for drop, id and time: the reason in a few words.
        dtype: the expectation type (`schema.DType`) the column's values have, or None.
        nulls / distinct: counts on the sample.
        low / high: the range of a numeric column on the sample.
        values: the distinct values of a low-cardinality column, sorted, else None.
    """

    name: str
    role: str
    why: str = ""
    dtype: str | None = None
    nulls: int = 0
    distinct: int = 0
    low: float | None = None
    high: float | None = None
    values: list[Any] | None = None


@dataclass(frozen=True)
class Profile:
    """What `regrow init` learns from a sample of a table."""

    where: str
    rows: int
    complete: bool
    target: str
    task: str
    task_why: str
    id_column: str | None
    id_why: str
    time_column: str | None
    time_why: str
    columns: list[Column]
    warnings: list[str] = field(default_factory=list)

    def role(self, role: str) -> list[str]:
        """The columns of one role, in table order."""
        return [c.name for c in self.columns if c.role == role]

    def column(self, name: str) -> Column:
        """One column's profile."""
        return next(c for c in self.columns if c.name == name)


def _dtype(s: pd.Series) -> str | None:
    if pd.api.types.is_bool_dtype(s):
        return "bool"
    if pd.api.types.is_integer_dtype(s):
        return "int"
    if pd.api.types.is_numeric_dtype(s):
        return "number"  # a float column whose next batch happens to hold whole numbers
    if pd.api.types.is_datetime64_any_dtype(s):
        return None  # time zones and units vary between readers; not worth a false alarm
    if isinstance(s.dtype, pd.CategoricalDtype):
        return "category"
    if pd.api.types.is_object_dtype(s) or pd.api.types.is_string_dtype(s):
        return "string" if s.dropna().map(type).eq(str).all() else None
    return None


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def _check_id(frame: pd.DataFrame, col: str, where: str) -> None:
    if col not in frame.columns:
        raise ProfileError(_unknown_column("--id", col, frame, where))
    s = frame[col]
    if s.isna().any():
        raise ProfileError(f"--id: column {col!r} has {int(s.isna().sum())} empty values; an id "
                           "names every row")
    dupes = int(s.duplicated().sum())
    if dupes:
        raise ProfileError(f"--id: column {col!r} is not unique: {dupes} rows repeat an id "
                           f"(e.g. {_plain(s[s.duplicated()].iloc[0])!r})")


def _is_unique_key(s: pd.Series) -> bool:
    return (not s.isna().any() and (pd.api.types.is_integer_dtype(s) or _dtype(s) == "string")
            and not s.duplicated().any())


def _time_reading(s: pd.Series, name: str) -> str | None:
    """How a column reads as times (a few words), or None when it does not."""
    if pd.api.types.is_datetime64_any_dtype(s):
        return "datetimes"
    present = s.dropna()
    if present.empty or pd.api.types.is_bool_dtype(s):
        return None
    if pd.api.types.is_numeric_dtype(s):
        unit = infer_unit(present) if _TIME_NAME.search(name) else None
        return {"year": "calendar years", "date": "YYYYMMDD dates", "s": "epoch seconds",
                "ms": "epoch milliseconds", "ns": "epoch nanoseconds"}.get(unit or "")
    if column_kind(present) != "datetime":
        return None
    try:
        to_times(present.head(2000), "auto", name)
    except TimeUnitError:
        return None
    return "dates" if present.astype(str).str.len().max() <= 10 else "date-times"


def _leak(x: pd.Series, y: pd.Series, task: str) -> float:
    """How well `x` alone explains `y` on present pairs: 0 (not at all) .. 1 (exactly)."""
    ok = x.notna() & y.notna()
    x, y = x[ok], y[ok]
    if len(x) < 30 or x.nunique() < 2:
        return 0.0
    if pd.api.types.is_numeric_dtype(x) and not pd.api.types.is_bool_dtype(x):
        if task == "regression":
            r = pd.Series(x.astype(float)).corr(pd.Series(y.astype(float)), method="spearman")
            return 0.0 if r is None or math.isnan(r) else abs(float(r))
        groups = pd.qcut(x.rank(method="first"), q=min(50, max(2, len(x) // 20)),
                         labels=False, duplicates="drop")
    elif x.nunique() <= 50:
        groups = x.astype(str)
    else:
        return 0.0
    if task == "regression":
        means = y.groupby(groups).transform("mean")
        total = float(((y - y.mean()) ** 2).sum())
        return 0.0 if total == 0 else max(0.0, 1 - float(((y - means) ** 2).sum()) / total)
    pure = float(pd.crosstab(groups, y).max(axis=1).sum()) / len(y)
    base = float(y.value_counts(normalize=True).iloc[0])
    return 0.0 if base >= 1 else max(0.0, (pure - base) / (1 - base))


def profile_frame(frame: pd.DataFrame, target: str, *, where: str = "the table",
                  complete: bool = True, id_column: str | None = None,
                  time_column: str | None = None) -> Profile:
    """Profile a sample of a table for a target.

    Raises:
        ProfileError: an unknown target, id or time column; a target with no task; a named
            id column that is not unique; a named time column that does not read as times.
    """
    if target not in frame.columns:
        raise ProfileError(_unknown_column("--target", target, frame, where))
    task, task_why = infer_task(frame[target], target)
    if id_column is not None:
        _check_id(frame, id_column, where)
        id_why = "named"
    else:
        named = [c for c in frame.columns if c != target and _ID_NAME.search(str(c))
                 and _is_unique_key(frame[c])]
        id_column = named[0] if named else None
        id_why = "unique values, named like an id" if id_column else "none found"
    if time_column is not None:
        if time_column not in frame.columns:
            raise ProfileError(_unknown_column("--time", time_column, frame, where))
        reading = _time_reading(frame[time_column], str(time_column))
        if reading is None:
            raise ProfileError(f"--time: column {time_column!r} does not read as times (dates, "
                               "date-times, years, YYYYMMDD or epoch numbers)")
        time_why = f"named; {reading}"
    else:
        found = [(c, r) for c in frame.columns if c not in (target, id_column)
                 and (r := _time_reading(frame[c], str(c)))]
        time_column, time_why = (found[0][0], found[0][1]) if found else (None, "none found")
    columns, warnings = [], []
    n = len(frame)
    for col in frame.columns:
        s = frame[col]
        nulls, distinct = int(s.isna().sum()), int(s.nunique(dropna=True))
        role, why = _role(s, col, target, id_column, time_column, n, distinct)
        low = high = None
        values = None
        numeric = pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)
        if numeric and distinct:
            low, high = float(s.min()), float(s.max())
        kind = _dtype(s)
        if (distinct and distinct <= ALLOWED_MAX and distinct <= max(2, 0.05 * n)
                and kind in ("int", "string", "bool") and role not in ("drop", "id", "time")):
            values = sorted((_plain(v) for v in s.dropna().unique()), key=str)
        columns.append(Column(str(col), role, why, kind, nulls, distinct, low, high, values))
    sample = frame.sample(n=min(n, LEAK_ROWS), random_state=0) if n > LEAK_ROWS else frame
    for c in columns:
        if c.role in ("numeric", "categorical") and \
                (score := _leak(sample[c.name], sample[target], task)) >= LEAK_SCORE:
            warnings.append(f"column {c.name!r} alone predicts {target!r} almost perfectly "
                            f"(score {score:.3f} of 1): likely leakage, a copy or a consequence "
                            "of the target; drop it unless it is known before the target is")
    return Profile(where, n, complete, target, task, task_why, id_column, id_why, time_column,
                   time_why, columns, warnings)


def _role(s: pd.Series, col: str, target: str, id_column: str | None,
          time_column: str | None, n: int, distinct: int) -> tuple[str, str]:
    if col == target:
        return "target", ""
    if col == id_column:
        return "id", ""
    if col == time_column:
        return "time", ""
    if distinct == 0:
        return "drop", "every value empty"
    if distinct == 1:
        return "drop", f"constant ({_plain(s.dropna().iloc[0])!r})"
    if pd.api.types.is_bool_dtype(s):
        return "categorical", ""
    if pd.api.types.is_numeric_dtype(s):
        if pd.api.types.is_integer_dtype(s) and distinct == n and n > 20 and (
                s.sort_values().diff().dropna() == 1).all():
            return "drop", "a row number (consecutive unique integers)"
        return "numeric", ""
    if pd.api.types.is_datetime64_any_dtype(s) or _time_reading(s, col):
        return "datetime", ""
    if distinct > ID_LIKE_SHARE * n:
        return "drop", f"id-like text ({distinct} distinct values in {n} rows)"
    return "categorical", ""


def profile(source: Source, target: str, *, config_path: Path, id_column: str | None = None,
            time_column: str | None = None, max_rows: int = SAMPLE_ROWS) -> Profile:
    """Read a bounded sample of a source and profile it (`profile_frame`).

    Raises:
        ProfileError: see `read_sample` and `profile_frame`.
    """
    frame, where = read_sample(source, config_path, max_rows)
    return profile_frame(frame, target, where=where, complete=len(frame) < max_rows,
                         id_column=id_column, time_column=time_column)
