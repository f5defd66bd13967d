"""Features that carry nothing: empty (every value missing) or constant in the training data.

Great Expectations checks what the config declares; a feature column that arrives all empty
passes every expectation that is not about it, the model learns to ignore it, the gate sees
nothing wrong, and every drift check afterwards fails on it. So before training, each feature
column is compared with what the champion was trained on (its ``features.json`` column table):

- empty now, and not empty for the champion: the run stops;
- constant now (one value in every row that has one), and not constant for the champion: the
  run stops;
- no record of the champion's (no champion yet, or trained before features.json was kept):
  an empty column that the config declares as a feature stops the run all the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from regrow.configs.schema import Config
from regrow.tasks.data.features import FeatureError


class DegenerateFeature(FeatureError):
    """A feature column that is empty or constant in the training data; the message says which,
    compared with the champion's, and what to do."""


@dataclass(frozen=True)
class ColumnState:
    """One column's emptiness and spread."""

    rows: int
    missing_share: float
    distinct: int | None  # non-missing distinct values (None: not recorded)
    example: Any = None  # the one value of a constant column

    @property
    def empty(self) -> bool:
        return self.rows > 0 and self.missing_share >= 1.0

    @property
    def constant(self) -> bool:
        return not self.empty and self.distinct == 1


def state_of(values: pd.Series) -> ColumnState:
    """A column's state in a frame."""
    present = values.dropna()
    distinct = int(present.nunique()) if len(present) else 0
    return ColumnState(len(values), 1.0 - len(present) / len(values) if len(values) else 0.0,
                       distinct, present.iloc[0] if distinct == 1 else None)


def recorded_states(features_json: Any) -> dict[str, ColumnState]:
    """The champion's raw feature columns from its ``features.json`` column table (statistics
    on its training part): numeric columns are constant when min == max, categorical ones
    when they had one distinct value."""
    if not isinstance(features_json, dict):
        return {}
    rows = int(features_json.get("rows") or 0)
    out: dict[str, ColumnState] = {}
    for row in features_json.get("table") or []:
        if not isinstance(row, dict) or row.get("transform") != "as is":
            continue
        distinct = row.get("distinct")
        if distinct is None and row.get("min") is not None:
            distinct = 1 if row.get("min") == row.get("max") else 2
        out[str(row.get("column"))] = ColumnState(rows, float(row.get("missing_share") or 0.0),
                                                  distinct)
    return out


def _roles(config: Config, features_json: Any) -> dict[str, str]:
    """Feature column -> the config key that lists it (or where the champion had it)."""
    f = config.features
    roles = {c: f"features.{role}" for role in ("numeric", "categorical", "datetime")
             for c in getattr(f, role)}
    if isinstance(features_json, dict):
        for role in ("numeric", "categorical", "datetime"):
            for c in features_json.get(role) or []:
                roles.setdefault(str(c), f"the champion's {role} inputs")
    return roles


def check(config: Config, frame: pd.DataFrame, champion: str | None,
          features_json: Any = None) -> list[str]:
    """Stop on a feature that is empty or constant in `frame` where the champion's was not.

    Args:
        config: the run's config.
        frame: the training data (all rows, before the split).
        champion: the champion's version, when there is one.
        features_json: the champion's ``features.json`` (None: no record).

    Returns:
        Notes on columns that are empty or constant and were so for the champion too.

    Raises:
        DegenerateFeature: one sentence per column, naming it, its state, the champion's and
            what to change.
    """
    recorded = recorded_states(features_json)
    declared = set(config.feature_columns_listed())
    problems, notes = [], []
    for col, where in _roles(config, features_json).items():
        if col not in frame.columns or col == config.data.target:
            continue  # a missing column is validation's to report
        now, before = state_of(frame[col]), recorded.get(col)
        who = f"champion v{champion}" if champion else "the champion"
        fix = (f"fix the data, or take {col!r} out of {where} to train without it"
               if where.startswith("features.") else
               f"fix the data, or list the features without {col!r} to train without it")
        if now.empty:
            if before is not None and not before.empty:
                problems.append(f"feature {col!r} is empty in the training data: all "
                                f"{now.rows:,} values are missing, where {who} was trained with "
                                f"{before.missing_share:.1%} missing; {fix}")
            elif before is None and col in declared:
                problems.append(f"feature {col!r} ({where}) is empty in the training data: all "
                                f"{now.rows:,} values are missing; {fix}")
            elif before is not None:
                notes.append(f"feature {col!r} is empty, as it was for {who}")
        elif now.constant:
            if before is not None and not before.constant and not before.empty:
                seen = f"{before.distinct} distinct values" if before.distinct and \
                    before.distinct > 1 else "more than one value"
                problems.append(f"feature {col!r} holds one value ({now.example!r}) in every "
                                f"row of the training data that has one, where {who} saw "
                                f"{seen}; {fix}")
            elif before is not None:
                notes.append(f"feature {col!r} is constant, as it was for {who}")
    if problems:
        raise DegenerateFeature("training stopped before fitting: " + "; ".join(problems))
    return notes
