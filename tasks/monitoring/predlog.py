"""The prediction log's files: one Parquet file per scoring batch, the one module that writes
and reads them (pyarrow).

Layout: ``<root>/<model>/date=<YYYY-MM-DD>/<batch id>.parquet`` (the day the batch was scored,
UTC), where `root` is ``REGROW_PREDICTIONS_URL`` -- a local directory, or any URI pyarrow's
filesystems open (``s3://bucket/prefix``, ``gs://...``) -- and by default
``$REGROW_HOME/predictions``. A file holds the batch's rows in the order scored: ``__row_id``
(text), ``__event_time`` (timestamp, empty without a time column), ``__prediction`` (text),
``__score`` (float) and each model input as its own typed column. The monitoring store indexes
the files (`tasks.store.database.prediction_batches`: model, version, path, rows, times); a file is
written before its index row, so the index never names a file that is not there.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

ROOT_ENV = "REGROW_PREDICTIONS_URL"
META = ["__row_id", "__event_time", "__prediction", "__score"]


def root(home: Path) -> str:
    """Where the log lives: ``REGROW_PREDICTIONS_URL``, else ``<home>/predictions``."""
    return os.environ.get(ROOT_ENV, "").strip() or str(home / "predictions")


def _fs(location: str) -> tuple[Any, str]:
    """(pyarrow filesystem, path inside it) for a local path or a URI."""
    from pyarrow import fs

    if "://" in location:
        return fs.FileSystem.from_uri(location)
    return fs.LocalFileSystem(), str(Path(location).resolve())


def batch_location(root_: str, model: str, batch_id: str, day: str) -> str:
    """Where one batch's file goes (model names are kept as path segments: '/' is replaced)."""
    safe = model.replace("/", "_")
    return f"{root_.rstrip('/')}/{safe}/date={day}/{batch_id}.parquet"


def write_batch(location: str, frame: pd.DataFrame) -> int:
    """Write one batch's rows (the META columns, then the inputs) to `location`; returns the
    bytes written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    filesystem, path = _fs(location)
    filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        pq.write_table(table, tmp, filesystem=filesystem, compression="zstd")
        filesystem.move(tmp, path)  # readers never see half a file
    except BaseException:
        try:  # a full disk or a kill mid-write: no half file is left behind
            filesystem.delete_file(tmp)
        except OSError:
            pass
        raise
    return filesystem.get_file_info(path).size


def read_batches(locations: list[str], columns: list[str] | None = None) -> pd.DataFrame:
    """The rows of the given batch files, in the order given, as one frame."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not locations:
        return pd.DataFrame()
    tables = []
    for location in locations:
        filesystem, path = _fs(location)
        tables.append(pq.read_table(path, filesystem=filesystem, columns=columns))
    table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 \
        else tables[0]
    del tables
    # column by column, freeing each Arrow buffer once converted: the peak stays near the
    # frame's own size instead of Arrow's copy plus pandas'
    return table.to_pandas(self_destruct=True, split_blocks=True)


def row_ids(locations: list[str]) -> set[str]:
    """Every row id in the given batch files (one column read)."""
    ids: set[str] = set()
    for location in locations:
        frame = read_batches([location], columns=["__row_id"])
        ids.update(frame["__row_id"].tolist())
    return ids


def remove(location: str) -> None:
    """Delete one batch file (missing is fine)."""
    filesystem, path = _fs(location)
    try:
        filesystem.delete_file(path)
    except FileNotFoundError:
        pass
