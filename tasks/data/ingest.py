"""Read the source table (CSV, Parquet or SQL) into one DataFrame, in chunks."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd

from regrow.configs.schema import (
    DataConfig,
    FileSource,
    LoadedConfig,
    SqlSource,
    mask_credentials,
)
from regrow.tasks.data.timecol import TimeUnitError, to_times


class IngestError(RuntimeError):
    """The source could not be read; the message says which source and why."""


@dataclass(frozen=True)
class IngestResult:
    """A loaded table and what identifies it.

    Attributes:
        frame: the rows, time column parsed when configured.
        fingerprint: sha256 over column names, dtypes and every cell.
        rows: number of rows.
        source: a human-readable description of where the rows came from (no secrets).
        time_min / time_max: ISO timestamps of the time column, when there is one.
    """

    frame: pd.DataFrame
    fingerprint: str
    rows: int
    source: str
    time_min: str | None = None
    time_max: str | None = None

    def summary(self) -> dict[str, object]:
        """JSON-able description without the frame."""
        return {
            "fingerprint": self.fingerprint,
            "rows": self.rows,
            "source": self.source,
            "time_min": self.time_min,
            "time_max": self.time_max,
        }


def fingerprint(frame: pd.DataFrame) -> str:
    """A content hash of a frame: same names, dtypes and values -> same hash."""
    h = hashlib.sha256()
    h.update("|".join(f"{c}:{t}" for c, t in frame.dtypes.astype(str).items()).encode())
    h.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return h.hexdigest()


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_url(url: str) -> str:
    """Expand ``${NAME}`` references from the environment.

    Raises:
        IngestError: a referenced variable is not set.
    """

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in os.environ:
            raise IngestError(f"data.source.url references ${{{name}}}, which is not set")
        return os.environ[name]

    return _ENV_REF.sub(sub, url)


def mask_url(url: str) -> str:
    """The URL with any password replaced by ***: in its user info, and in a query parameter
    named like one (``?password=``, ``&token=``; `configs.schema.mask_credentials`)."""
    return mask_credentials(re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url))


def _read_file(src: FileSource, path: Path, where: str = "data.source.path",
               max_rows: int | None = None) -> pd.DataFrame:
    """Read a CSV or Parquet file (its first `max_rows` rows when given); errors name `where`
    (the config key or option it came from)."""
    if not path.exists():
        raise IngestError(f"{where}: file not found: {path}")
    if path.is_dir():
        raise IngestError(f"{where}: {path} is a folder, not a file")
    if path.stat().st_size == 0:
        raise IngestError(f"{where}: file is empty: {path}")
    try:
        if src.resolved_format == "parquet":
            if max_rows is None:
                return pd.read_parquet(path)
            import pyarrow.parquet as pq

            batches = pq.ParquetFile(path).iter_batches(batch_size=max_rows)
            first = next(batches, None)
            return first.to_pandas() if first is not None else pd.read_parquet(path)
        chunks = pd.read_csv(path, encoding=src.encoding, chunksize=src.chunksize)
        return pd.concat(_first_rows(chunks, max_rows), ignore_index=True)
    except UnicodeDecodeError as err:
        raise IngestError(
            f"{where}: {path} is not valid {src.encoding} (byte {err.start}: "
            f"{err.reason}); set data.source.encoding to the file's encoding"
        ) from None
    except pd.errors.EmptyDataError:
        raise IngestError(f"{where}: {path} has no columns (empty CSV)") from None
    except (pd.errors.ParserError, OSError, ValueError) as err:
        raise IngestError(f"{where}: cannot read {path}: {err}") from None


def _first_rows(chunks: Iterable[pd.DataFrame], max_rows: int | None) -> list[pd.DataFrame]:
    """The chunks up to `max_rows` rows in all (every chunk when None); stops reading there."""
    out: list[pd.DataFrame] = []
    seen = 0
    for chunk in chunks:
        if max_rows is not None and seen + len(chunk) >= max_rows:
            out.append(chunk.iloc[:max_rows - seen])
            break
        out.append(chunk)
        seen += len(chunk)
    return out


def read_sql(url: str, table: str | None, query: str | None, chunksize: int,
             params: dict[str, object] | None = None,
             max_rows: int | None = None) -> pd.DataFrame:
    """Stream a table or query through SQLAlchemy in chunks (server-side cursor), in a
    read-only transaction where the database has one (PostgreSQL: ``SET TRANSACTION READ
    ONLY``; SQLite: ``PRAGMA query_only``). `params` are bound to the query's ``:name``
    placeholders by the driver, never formatted into its text.

    Raises:
        IngestError: the database is unreachable or the statement fails.
    """
    import sqlalchemy as sa

    shown = mask_url(url)
    try:
        engine = sa.create_engine(url)
    except Exception as err:  # noqa: BLE001 - bad URL, missing driver: one message for all
        raise IngestError(f"data.source.url: cannot use {shown}: {err}") from None
    stmt: sa.Executable
    if query:
        stmt = sa.text(query)
        if params:
            used = {k: v for k, v in params.items()
                    if re.search(rf"(?<![:\w]):{re.escape(k)}\b", query)}
            stmt = sa.text(query).bindparams(**used) if used else stmt
    elif table is not None:
        stmt = sa.select(sa.text("*")).select_from(sa.table(table))
    else:
        engine.dispose()
        raise IngestError("data.source: the query is empty")
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                conn = conn.execution_options(postgresql_readonly=True)
            elif engine.dialect.name == "sqlite":
                conn.exec_driver_sql("PRAGMA query_only = ON")
            conn = conn.execution_options(stream_results=True)
            chunks = _first_rows(pd.read_sql(stmt, conn, chunksize=chunksize), max_rows)
    except sa.exc.OperationalError as err:
        raise IngestError(
            f"data.source.url: cannot reach {shown}: {str(err.orig).strip().splitlines()[0]}"
        ) from None
    except sa.exc.SQLAlchemyError as err:
        first = str(getattr(err, "orig", err)).strip().splitlines()[0]
        raise IngestError(f"data.source: query failed on {shown}: {first}") from None
    finally:
        engine.dispose()
    if not chunks:
        return pd.DataFrame()
    return pd.concat(chunks, ignore_index=True)


def parse_time(frame: pd.DataFrame, column: str, unit: str = "auto") -> pd.DataFrame:
    """Parse the time column to datetime in place of the raw values, by `data.time_unit`
    (see `tasks.data.timecol`: years, epoch s / ms / ns, dates).

    Raises:
        IngestError: values that are not times, or numbers too ambiguous to read without
            `data.time_unit`.
    """
    if column not in frame.columns:
        return frame  # reported by validation as a missing column
    try:
        frame[column] = to_times(frame[column], unit, f"data.time_column: {column!r}")
    except TimeUnitError as err:
        raise IngestError(str(err)) from None
    return frame


def ingest(loaded: LoadedConfig) -> IngestResult:
    """Read the configured source.

    Raises:
        IngestError: naming the source and what went wrong.
    """
    data: DataConfig = loaded.config.data
    src = data.source
    if isinstance(src, SqlSource):
        url = expand_url(src.url)
        frame = read_sql(url, src.table, src.query, src.chunksize, dict(src.params))
        where = f"{mask_url(url)} ({'table ' + src.table if src.table else 'query'})"
    else:
        path = loaded.resolve_path(src.path)
        frame = _read_file(src, path)
        where = str(path)
    if frame.shape[1] == 0:
        raise IngestError(f"data.source: {where} has no columns")
    if data.time_column:
        frame = parse_time(frame, data.time_column, data.time_unit)
    tmin = tmax = None
    if data.time_column and data.time_column in frame.columns and len(frame):
        tmin, tmax = str(frame[data.time_column].min()), str(frame[data.time_column].max())
    return IngestResult(
        frame=frame,
        fingerprint=fingerprint(frame),
        rows=len(frame),
        source=where,
        time_min=tmin,
        time_max=tmax,
    )


def read_rows(loaded: LoadedConfig, path: str | None = None, query: str | None = None,
              option: str = "--input") -> pd.DataFrame:
    """Rows to score or labels: a CSV/Parquet file, or a query on the config's SQL source.

    Raises:
        IngestError: neither or both given, an unreadable file, a failing query, or a query
            for a config whose source is not SQL.
    """
    if (path is None) == (query is None):
        raise IngestError("give exactly one of an input file or a query")
    if path is None:  # so the query is given
        src = loaded.config.data.source
        if not isinstance(src, SqlSource):
            raise IngestError("--query needs a config whose data.source is kind: sql")
        return read_sql(expand_url(src.url), None, query, src.chunksize, dict(src.params))
    p = Path(path).expanduser().resolve()
    fmt: Literal["csv", "parquet"] = "parquet" if p.suffix.lower() in {".parquet", ".pq"} else "csv"
    frame = _read_file(FileSource(path=str(p), format=fmt), p, option)
    d = loaded.config.data
    return parse_time(frame, d.time_column, d.time_unit) if d.time_column else frame
