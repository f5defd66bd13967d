"""A drift check's decision: feature drift, prediction drift and performance on matured
labels, calibrated against false alarms (minimum window, persistence, weights, tolerance)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from configs.schema import METRICS, Config
from tasks.evaluate import score_arrays
from tasks.reference import PRED, SCORE, Reference

INSUFFICIENT, OK, DRIFT = "insufficient_data", "ok", "drift"


@dataclass(frozen=True)
class Performance:
    """The primary metric on labelled window rows against the reference (holdout) value."""

    metric: str
    labelled_rows: int
    current: float | None
    reference: float | None
    drop: float | None
    tolerance: float
    degraded: bool
    note: str = ""


@dataclass(frozen=True)
class Assessment:
    """What one drift check concluded.

    Attributes:
        verdict: ``insufficient_data``, ``ok`` or ``drift``.
        reasons: why, one line per signal.
        drift_share: the (weighted, if configured) share of drifted features.
        persistent: drift in at least k of the last n checks (this one included): a retrain
            should be requested.
    """

    verdict: str
    window_rows: int
    reasons: list[str]
    drift_share: float | None = None
    drifted_columns: list[str] = field(default_factory=list)
    prediction_drift: bool | None = None
    performance: Performance | None = None
    persistent: bool = False
    summary: dict[str, Any] | None = None
    markdown: str = ""

    @property
    def drifted(self) -> bool:
        """True when this check saw drift."""
        return self.verdict == DRIFT

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)


def _labels(window: pd.DataFrame, ref: Reference,
            task: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    lab = window[window["__label"].notna()]
    if task == "regression":
        y = pd.to_numeric(lab["__label"], errors="coerce").to_numpy(dtype=float)
        return y, pd.to_numeric(lab[PRED], errors="coerce").to_numpy(dtype=float), None
    if task == "binary":
        y = (lab["__label"].astype(str) == str(ref.positive_label)).to_numpy(dtype=int)
        pred = pd.to_numeric(lab[PRED], errors="coerce").fillna(0).to_numpy(dtype=int)
        score = lab[SCORE].to_numpy(dtype=float) if SCORE in lab else None
        proba = None if score is None else np.column_stack([1 - score, score])
        return y, pred, proba
    return lab["__label"].astype(str).to_numpy(), lab[PRED].astype(str).to_numpy(), None


def window_metric(config: Config, ref: Reference, window: pd.DataFrame) -> tuple[int, float | None]:
    """(labelled rows, the primary metric on them) for a window's predictions; None without
    labels or when the metric is undefined on them (e.g. one class only)."""
    n = int(window["__label"].notna().sum()) if "__label" in window else 0
    if n == 0:
        return 0, None
    y, pred, proba = _labels(window, ref, config.data.task)
    value = score_arrays(config.data.task, y, pred, proba).get(ref.metric, math.nan)
    return n, None if math.isnan(value) else float(value)


def performance(config: Config, ref: Reference, window: pd.DataFrame) -> Performance:
    """The primary metric on labelled rows and its drop against the reference performance."""
    rule, metric, task = config.monitoring.performance, ref.metric, config.data.task
    n = int(window["__label"].notna().sum()) if "__label" in window else 0
    reference = ref.performance.get(metric)
    if n < rule.min_labels:
        return Performance(metric, n, None, reference, None, rule.tolerance, False,
                           f"{n} labelled rows < {rule.min_labels}: not judged")
    y, pred, proba = _labels(window, ref, task)
    value = score_arrays(task, y, pred, proba).get(metric, math.nan)
    if reference is None or math.isnan(value):
        return Performance(metric, n, None if math.isnan(value) else value, reference, None,
                           rule.tolerance, False, f"{metric} not available on this window")
    drop = (reference - value) if METRICS[metric][1] else (value - reference)
    return Performance(metric, n, value, reference, drop, rule.tolerance, drop > rule.tolerance)


def _weighted_share(summary, importance: dict[str, float]) -> float:
    total = sum(importance.get(c.column, 0.0) for c in summary.columns)
    if total <= 0:
        return summary.drift_share
    return sum(importance.get(c.column, 0.0) for c in summary.columns if c.drifted) / total


def assess(config: Config, ref: Reference, window: pd.DataFrame, previous: list[bool],
           report_html: Path | None = None) -> Assessment:
    """Decide one drift check.

    `previous` are the drifted flags of earlier checks of this model, newest first; the check
    is persistent when drift shows in at least k of the last n checks including this one.
    """
    from tasks.drift import check_drift

    m = config.monitoring
    rows = len(window)
    if rows < m.window.min_rows:
        return Assessment(INSUFFICIENT, rows, [f"window has {rows} rows < "
                                               f"monitoring.window.min_rows {m.window.min_rows}"])
    spec, d = ref.spec, m.drift
    refx = ref.frame
    pred_col, pred_kind = (SCORE, "numeric") if SCORE in refx and SCORE in window and \
        config.data.task != "multiclass" else (PRED, "categorical")
    # Config thresholds are keyed by feature name, and "prediction" for the prediction column.
    thresholds = {pred_col if k == "prediction" else k: v for k, v in d.thresholds.items()
                  if k in {*spec.numeric, *spec.categorical} or k == "prediction"}
    if not d.prediction_drift:
        thresholds.pop(pred_col, None)
    summary = check_drift(
        refx, window, spec.numeric, spec.categorical,
        prediction=pred_col if d.prediction_drift else None, prediction_kind=pred_kind,
        thresholds=thresholds, numeric_method=d.numeric_method,
        numeric_threshold=d.numeric_threshold, categorical_method=d.categorical_method,
        categorical_threshold=d.categorical_threshold, drift_share=d.drift_share,
        max_rows=d.max_rows, seed=config.candidates.seed, report_html=report_html)
    share = _weighted_share(summary, ref.importance) if d.weight_by_importance and ref.importance \
        else summary.drift_share
    reasons = []
    feature_drift = share >= d.drift_share
    if feature_drift:
        reasons.append(f"feature drift: share {share:.2f} >= {d.drift_share:.2f} "
                       f"({', '.join(summary.drifted_columns)})")
    pdrift = summary.prediction_drift.drifted if summary.prediction_drift else None
    if pdrift:
        p = summary.prediction_drift
        reasons.append(f"prediction drift: {p.method} {p.score:.4f} ({p.rule})")
    perf = performance(config, ref, window)
    if perf.degraded:
        reasons.append(f"performance: {perf.metric} {perf.current:.4f} vs reference "
                       f"{perf.reference:.4f}, drop {perf.drop:.4f} > {perf.tolerance}")
    drifted = feature_drift or bool(pdrift) or perf.degraded
    if not drifted:
        reasons.append(f"no drift: share {share:.2f} < {d.drift_share:.2f}"
                       + (f"; {perf.note}" if perf.note else ""))
    recent = [drifted, *previous][: m.persistence.n]
    persistent = drifted and sum(recent) >= m.persistence.k
    if drifted and not persistent:
        reasons.append(f"not yet persistent: drift in {sum(recent)} of the last {len(recent)} "
                       f"checks, {m.persistence.k} of {m.persistence.n} needed")
    return Assessment(DRIFT if drifted else OK, rows, reasons, share, summary.drifted_columns,
                      pdrift, perf, persistent, summary.to_dict(), summary.to_markdown())
