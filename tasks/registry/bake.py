"""Bake period: a new champion is watched beside the one it replaced, and rolled back by
itself when it does worse.

With ``promotion.bake: {windows: N, tolerance: x}``, a promotion over an earlier champion
starts a bake. While it lasts, every scoring batch is also scored by the previous champion
(the *shadow*; its predictions go to ``shadow_predictions``, never to callers). Each drift
check whose window holds at least ``min_labels`` matured labels is one bake window: the
primary metric of both versions is computed on the same labelled rows. When the new champion
trails the shadow by more than ``tolerance`` the bake fails and the caller rolls back; after
N windows without failure the bake passes and the new champion is settled.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, cast

import sqlalchemy as sa

from regrow.configs.schema import METRICS, Bake, Config
from regrow.tasks.store.database import Store, bakes, bulk_insert, now, shadow_predictions

if TYPE_CHECKING:  # `regrow status` reads bakes: no numpy or pandas at import
    import numpy as np
    import pandas as pd

BAKING, PASSED, ROLLED_BACK, ENDED = "baking", "passed", "rolled_back", "ended"


@dataclass(frozen=True)
class BakeState:
    """One bake, as stored."""

    id: int
    model: str
    version: str
    previous_version: str
    windows: int
    windows_done: int
    tolerance: float
    min_labels: int
    state: str
    detail: str | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)


@dataclass(frozen=True)
class BakeWindow:
    """Champion and shadow on the same labelled rows of one window."""

    metric: str
    labelled_rows: int
    champion: float | None
    shadow: float | None
    shortfall: float | None  # how much worse the champion is (positive = worse)
    counted: bool            # enough labels to count as a bake window
    failed: bool             # the champion is worse beyond the tolerance

    def describe(self) -> str:
        """One sentence."""
        if not self.counted:
            return f"{self.labelled_rows} labelled rows in the window: not judged"
        return (f"{self.metric} on {self.labelled_rows} labelled rows: champion "
                f"{self.champion:.4f}, previous {self.shadow:.4f} (shortfall {self.shortfall:.4f})")


def _row(r: Any) -> BakeState:
    return BakeState(r.id, r.model, r.version, r.previous_version, r.windows, r.windows_done,
                     r.tolerance, r.min_labels, r.state, r.detail)


def start(store: Store, model: str, version: str, previous: str, bake: Bake) -> BakeState:
    """Start baking `version` against `previous`; ends any bake still open for the model."""
    with store.engine.begin() as conn:
        conn.execute(bakes.update().where(bakes.c.model == model, bakes.c.state == BAKING)
                     .values(state=ENDED, detail=f"superseded by v{version}", ended_at=now()))
        res = conn.execute(bakes.insert().values(
            model=model, version=version, previous_version=previous, windows=bake.windows,
            windows_done=0, tolerance=bake.tolerance, min_labels=bake.min_labels, state=BAKING,
            started_at=now()))
        bake_id = int(cast("sa.Row[Any]", res.inserted_primary_key)[0])  # one row per insert
        return _row(conn.execute(sa.select(bakes).where(bakes.c.id == bake_id)).one())


def active(store: Store, model: str, champion: str | None) -> BakeState | None:
    """The open bake of the current champion, if any. A bake whose version no longer serves
    (a person promoted or rolled back meanwhile) is closed as ``ended``."""
    with store.engine.begin() as conn:
        row = conn.execute(sa.select(bakes).where(bakes.c.model == model, bakes.c.state == BAKING)
                           .order_by(bakes.c.id.desc()).limit(1)).first()
        if row is None:
            return None
        if row.version != champion:
            conn.execute(bakes.update().where(bakes.c.id == row.id).values(
                state=ENDED, ended_at=now(),
                detail=f"v{row.version} stopped serving (champion is v{champion or 'none'})"))
            return None
        return _row(row)


def latest(store: Store, model: str, limit: int = 5) -> list[BakeState]:
    """The newest bakes of a model, newest first."""
    with store.engine.connect() as conn:
        return [_row(r) for r in conn.execute(sa.select(bakes).where(bakes.c.model == model)
                                              .order_by(bakes.c.id.desc()).limit(limit))]


def record_shadow(store: Store, model: str, version: str, batch_id: str, row_ids: pd.Series,
                  pred: np.ndarray, score: np.ndarray | None) -> int:
    """Store the shadow's predictions for a champion's scoring batch; returns the row count."""
    at = now()
    rows = [{"model": model, "version": version, "batch_id": batch_id, "row_id": str(row_ids.iat[i]),
             "prediction": str(pred[i]), "score": None if score is None else float(score[i]),
             "scored_at": at} for i in range(len(row_ids))]
    with store.engine.begin() as conn:
        bulk_insert(conn, shadow_predictions, rows)
    return len(rows)


def shadow_window(store: Store, model: str, version: str, window: pd.DataFrame,
                  pred_col: str, score_col: str) -> pd.DataFrame:
    """The window's rows with the shadow's prediction and score in place of the champion's
    (rows the shadow did not score are dropped)."""
    ids = window["__row_id"].astype(str).tolist()
    got: dict[str, tuple[str, float | None]] = {}
    sp = shadow_predictions.c
    with store.engine.connect() as conn:
        for i in range(0, len(ids), 5000):
            q = (sa.select(sp.row_id, sp.prediction, sp.score)
                 .where(sp.model == model, sp.version == version, sp.row_id.in_(ids[i:i + 5000]))
                 .order_by(sp.id))
            got.update({r.row_id: (r.prediction, r.score) for r in conn.execute(q)})
    keep = window[window["__row_id"].astype(str).isin(got)].copy()
    keep[pred_col] = [got[str(r)][0] for r in keep["__row_id"]]
    keep[score_col] = [got[str(r)][1] for r in keep["__row_id"]]
    return keep


def judge(config: Config, bake: BakeState, champion_value: float | None,
          shadow_value: float | None, labelled: int, metric: str) -> BakeWindow:
    """Compare champion and shadow on one window's labelled rows (the same rows for both)."""
    if labelled < bake.min_labels or champion_value is None or shadow_value is None \
            or math.isnan(champion_value) or math.isnan(shadow_value):
        return BakeWindow(metric, labelled, champion_value, shadow_value, None, False, False)
    greater = METRICS[metric][1]
    shortfall = (shadow_value - champion_value) if greater else (champion_value - shadow_value)
    return BakeWindow(metric, labelled, champion_value, shadow_value, shortfall, True,
                      shortfall > bake.tolerance)


def record_window(store: Store, bake: BakeState, window: BakeWindow) -> BakeState:
    """Count a judged window: the bake fails, passes after its last window, or goes on."""
    if not window.counted:
        return bake
    done = bake.windows_done + 1
    if window.failed:
        state, detail = ROLLED_BACK, (f"window {done}: {window.describe()} > tolerance "
                                      f"{bake.tolerance}")
    elif done >= bake.windows:
        state, detail = PASSED, f"{done} window(s) without a shortfall beyond {bake.tolerance}"
    else:
        state, detail = BAKING, f"window {done} of {bake.windows}: {window.describe()}"
    with store.engine.begin() as conn:
        conn.execute(bakes.update().where(bakes.c.id == bake.id).values(
            windows_done=done, state=state, detail=detail,
            ended_at=None if state == BAKING else now()))
    return BakeState(bake.id, bake.model, bake.version, bake.previous_version, bake.windows, done,
                     bake.tolerance, bake.min_labels, state, detail)
