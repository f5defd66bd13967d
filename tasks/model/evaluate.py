"""Holdout metrics for a fitted model, a bootstrap interval for the primary metric, slices."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from regrow.configs.schema import METRICS
from regrow.tasks.model.predict import predict_with_proba
from regrow.tasks.model.train import Target


@dataclass(frozen=True)
class Evaluation:
    """A model's scores on one holdout.

    Attributes:
        metrics: every metric for the task, by name (NaN when undefined on this holdout).
        primary: the primary metric's name; ci: its bootstrap 95% interval.
        slices: per column, per value: rows and the primary metric.
    """

    metrics: dict[str, float]
    primary: str
    ci: tuple[float, float] | None = None
    slices: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)

    @property
    def value(self) -> float:
        """The primary metric."""
        return self.metrics[self.primary]


@dataclass(frozen=True)
class Scored:
    """A model's predictions on a frame, row for row: labels (or values) and, for classifiers,
    class probabilities (a binary model without them: its decision function).

    The candidate's holdout is scored once (`predict`) and the result reused by the holdout
    metrics, its trusted set (`tasks.model.trusted.build`) and its reference's calibration.
    """

    pred: np.ndarray
    proba: np.ndarray | None

    def take(self, positions: np.ndarray) -> Scored:
        """The rows at `positions`."""
        return Scored(self.pred[positions], None if self.proba is None else self.proba[positions])


def predict(model: Any, X: pd.DataFrame, target: Target) -> Scored:
    """Score `X` once: predictions and probabilities (see `Scored`)."""
    both = predict_with_proba(model, X) if target.task != "regression" else None
    if both is not None:
        return Scored(*both)
    pred = np.asarray(model.predict(X))
    return Scored(pred, _proba(model, X, target) if target.task != "regression" else None)


def _proba(model: Any, X: pd.DataFrame, target: Target) -> np.ndarray | None:
    if hasattr(model, "predict_proba"):
        return np.asarray(model.predict_proba(X))
    if target.task == "binary" and hasattr(model, "decision_function"):
        return np.asarray(model.decision_function(X))
    return None


def _safe(fn, *args, **kwargs) -> float:
    try:
        return float(fn(*args, **kwargs))
    except ValueError:  # e.g. AUC with one class present
        return math.nan


def score_arrays(task: str, y: np.ndarray, pred: np.ndarray, proba: np.ndarray | None,
                 classes: list[Any] | None = None) -> dict[str, float]:
    """All metrics for a task from labels, predictions and (for classifiers) probabilities."""
    if task == "regression":
        return {
            "rmse": float(np.sqrt(skm.mean_squared_error(y, pred))),
            "mae": float(skm.mean_absolute_error(y, pred)),
            "r2": _safe(skm.r2_score, y, pred) if len(y) > 1 else math.nan,
        }
    out = {"accuracy": float(skm.accuracy_score(y, pred))}
    if task == "binary":
        p1 = None if proba is None else (proba[:, 1] if proba.ndim == 2 else proba)
        out.update(
            f1=float(skm.f1_score(y, pred, zero_division=0)),
            precision=float(skm.precision_score(y, pred, zero_division=0)),
            recall=float(skm.recall_score(y, pred, zero_division=0)),
            roc_auc=_safe(skm.roc_auc_score, y, p1) if p1 is not None else math.nan,
            log_loss=_safe(skm.log_loss, y, np.clip(proba[:, 1], 1e-15, 1 - 1e-15), labels=[0, 1])
            if proba is not None and proba.ndim == 2 else math.nan,
        )
        return out
    out["f1"] = float(skm.f1_score(y, pred, average="macro", zero_division=0))
    if proba is not None and proba.ndim == 2:
        out["roc_auc"] = _safe(skm.roc_auc_score, y, proba, multi_class="ovr", labels=classes)
        out["log_loss"] = _safe(skm.log_loss, y, proba, labels=classes)
    else:
        out["roc_auc"] = out["log_loss"] = math.nan
    return out


def _primary_only(task: str, metric: str, y, pred, proba, classes) -> float:
    return score_arrays(task, y, pred, proba, classes).get(metric, math.nan)


def _weighted_metric(task: str, metric: str, y: np.ndarray, pred: np.ndarray,
                     proba: np.ndarray | None):
    """A function of bootstrap weights (counts per row) computing one metric in O(n), or None
    when the metric has no weighted form here (then rows are resampled explicitly)."""
    if task == "regression":
        err = np.asarray(pred, dtype=float) - np.asarray(y, dtype=float)
        yf = np.asarray(y, dtype=float)

        def regression(w: np.ndarray) -> float:
            n = w.sum()
            if metric == "rmse":
                return float(np.sqrt((w * err**2).sum() / n))
            if metric == "mae":
                return float((w * np.abs(err)).sum() / n)
            mean = (w * yf).sum() / n
            sst = (w * (yf - mean) ** 2).sum()
            return 1.0 - float((w * err**2).sum() / sst) if sst > 0 else math.nan
        return regression
    if task != "binary":
        return None
    yb, pb = np.asarray(y, dtype=float), np.asarray(pred, dtype=float)
    if metric in {"accuracy", "f1", "precision", "recall"}:
        def counts(w: np.ndarray) -> float:
            tp, fp = (w * yb * pb).sum(), (w * (1 - yb) * pb).sum()
            fn = (w * yb * (1 - pb)).sum()
            if metric == "accuracy":
                return float((w * (yb == pb)).sum() / w.sum())
            if metric == "precision":
                return float(tp / (tp + fp)) if tp + fp else 0.0
            if metric == "recall":
                return float(tp / (tp + fn)) if tp + fn else 0.0
            return float(2 * tp / (2 * tp + fp + fn)) if tp else 0.0
        return counts
    if proba is None:
        return None
    p1 = proba[:, 1] if proba.ndim == 2 else proba
    if metric == "log_loss":
        pc = np.clip(p1, 1e-15, 1 - 1e-15)
        loss = -(yb * np.log(pc) + (1 - yb) * np.log(1 - pc))
        return lambda w: float((w * loss).sum() / w.sum())
    if metric != "roc_auc":
        return None
    order = np.argsort(p1, kind="mergesort")
    ys = yb[order]
    starts = np.r_[0, np.flatnonzero(np.diff(p1[order])) + 1]  # groups of tied scores

    def auc(w: np.ndarray) -> float:
        ws = w[order]
        pos, neg = np.add.reduceat(ws * ys, starts), np.add.reduceat(ws * (1 - ys), starts)
        total_pos, total_neg = pos.sum(), neg.sum()
        if total_pos == 0 or total_neg == 0:
            return math.nan
        below = np.cumsum(neg) - neg  # negatives scored strictly lower than each group
        return float((pos * (below + 0.5 * neg)).sum() / (total_pos * total_neg))
    return auc


def _resampled(task: str, metric: str, y: np.ndarray, pred: np.ndarray,
               proba: np.ndarray | None, classes: list[Any] | None):
    """A function of a resample (row positions drawn with replacement) computing the metric:
    from counts per row in one pass where the metric has a weighted form (all binary and
    regression metrics), else on the explicitly resampled rows."""
    n = len(y)
    fn = _weighted_metric(task, metric, y, pred, proba)
    if fn is not None:
        return lambda idx: fn(np.bincount(idx, minlength=n).astype(float))
    return lambda idx: _primary_only(task, metric, y[idx], pred[idx],
                                     None if proba is None else proba[idx], classes)


def bootstrap_ci(task: str, metric: str, y: np.ndarray, pred: np.ndarray,
                 proba: np.ndarray | None, classes: list[Any] | None, samples: int,
                 seed: int) -> tuple[float, float] | None:
    """Percentile 95% interval of the metric over `samples` resamples of the holdout.

    A resample is a vector of counts per row (drawn with replacement); metrics with a weighted
    form (all binary and regression metrics) are computed from the counts in one pass, the
    rest on explicitly resampled rows.
    """
    n = len(y)
    if samples <= 0 or n < 2:
        return None
    rng = np.random.default_rng(seed)
    fn = _resampled(task, metric, y, pred, proba, classes)
    values = [v for v in (fn(rng.integers(0, n, n)) for _ in range(samples)) if not math.isnan(v)]
    if not values:
        return None
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(lo), float(hi)


def z_value(confidence: float) -> float:
    """The standard normal quantile of a two-sided `confidence` interval (1.96 for 0.95)."""
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + confidence / 2)


def bootstrap_se(task: str, metric: str, y: np.ndarray, pred: np.ndarray,
                 proba: np.ndarray | None, samples: int, seed: int,
                 classes: list[Any] | None = None) -> float | None:
    """The bootstrap standard error of the metric on these rows: the standard deviation of
    the metric over `samples` resamples (row positions drawn with replacement); None with
    fewer than 2 rows or 2 defined resamples, or `samples` 0.

    A normal interval from it (value +- z * se) is steadier at a few hundred resamples than
    percentiles, whose tails rest on a handful of them.
    """
    n = len(y)
    if samples <= 1 or n < 2:
        return None
    rng = np.random.default_rng(seed)
    fn = _resampled(task, metric, y, pred, proba, classes)
    values = np.array([fn(rng.integers(0, n, n)) for _ in range(samples)], dtype=float)
    values = values[np.isfinite(values)]
    return float(np.std(values, ddof=1)) if len(values) >= 2 else None


@dataclass(frozen=True)
class Gain:
    """How much better the candidate scores than the champion on the same holdout rows
    (positive: better, in the primary metric's units whatever its direction), with a paired
    bootstrap interval: both models are scored on the same resampled rows, so what the two
    share (hard rows, easy rows) cancels and only their difference varies.

    Attributes:
        value: candidate minus champion on the holdout (sign flipped for lower-is-better).
        low, high: the `confidence` interval of the gain (normal, from the paired bootstrap's
            standard error); None when no interval could be made.
        samples: resamples drawn; rows: holdout rows.
    """

    metric: str
    value: float
    low: float | None
    high: float | None
    confidence: float
    samples: int
    rows: int

    def describe(self) -> str:
        """``gain +0.0123 (95% CI +0.0040..+0.0206, 200 paired resamples of 5000 rows)``."""
        if self.low is None or self.high is None:
            return f"gain {self.value:+.4f} (no interval)"
        return (f"gain {self.value:+.4f} ({self.confidence:.0%} CI {self.low:+.4f}.."
                f"{self.high:+.4f}, {self.samples} paired resamples of {self.rows} rows)")


def paired_gain(task: str, metric: str, y: np.ndarray, candidate: Scored, champion: Scored, *,
                samples: int, seed: int, confidence: float = 0.95,
                candidate_classes: list[Any] | None = None,
                champion_classes: list[Any] | None = None) -> Gain:
    """The candidate's gain over the champion on the same rows `y`, with the interval of a
    paired bootstrap: each resample draws row positions once and scores both models on them.

    Args:
        task, metric: ``data.task`` and the primary metric.
        y: the encoded holdout labels (or values).
        candidate, champion: each model's predictions on those rows, row for row.
        samples: resamples (0 or 1: no interval); seed: their seed.
        confidence: the interval's two-sided level.
        candidate_classes, champion_classes: multiclass: each model's class order.
    """
    sign = 1.0 if METRICS[metric][1] else -1.0
    cand_fn = _resampled(task, metric, y, candidate.pred, candidate.proba, candidate_classes)
    champ_fn = _resampled(task, metric, y, champion.pred, champion.proba, champion_classes)
    n = len(y)
    everything = np.arange(n)
    value = sign * (cand_fn(everything) - champ_fn(everything))
    if samples <= 1 or n < 2:
        return Gain(metric, float(value), None, None, confidence, 0, n)
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(samples):
        idx = rng.integers(0, n, n)
        diffs.append(sign * (cand_fn(idx) - champ_fn(idx)))
    d = np.asarray(diffs, dtype=float)
    d = d[np.isfinite(d)]
    if len(d) < 2 or math.isnan(value):
        return Gain(metric, float(value), None, None, confidence, samples, n)
    half = z_value(confidence) * float(np.std(d, ddof=1))
    return Gain(metric, float(value), float(value - half), float(value + half), confidence,
                samples, n)


def evaluate(model: Any, holdout: pd.DataFrame, target: Target, metric: str, *,
             slice_columns: Sequence[str] = (), bootstrap_samples: int = 0,
             seed: int = 0, scored: Scored | None = None) -> Evaluation:
    """Score a fitted model on the holdout (`scored`: the model's predictions on these rows,
    when they were made already).

    The model must accept the holdout's columns (a Pipeline selects its own inputs).
    """
    y = target.encode(holdout[target.column])
    if scored is None:
        scored = predict(model, holdout, target)
    pred, proba = scored.pred, scored.proba
    classes = target.classes if target.task == "multiclass" else None
    if target.task == "multiclass" and proba is not None and hasattr(model, "classes_"):
        classes = list(model.classes_)
    scores = score_arrays(target.task, y, pred, proba, classes)
    ci = bootstrap_ci(target.task, metric, y, pred, proba, classes, bootstrap_samples, seed)
    slices: dict[str, dict[str, dict[str, float]]] = {}
    for col in slice_columns:
        if col not in holdout.columns:
            continue
        per: dict[str, dict[str, float]] = {}
        for value, idx in holdout.groupby(col, dropna=False, observed=True).indices.items():
            per[str(value)] = {
                "rows": float(len(idx)),
                metric: _primary_only(target.task, metric, y[idx], pred[idx],
                                      None if proba is None else proba[idx], classes),
            }
        slices[col] = per
    return Evaluation(scores, metric, ci, slices)


def trivial_model(train: pd.DataFrame, target: Target) -> Any:
    """A model that ignores every input: the class prior (classification) or the mean of the
    training target (regression), fitted on the training part.

    Any model worth promoting must beat it; a model trained on labels that carry no signal
    does not.
    """
    from sklearn.dummy import DummyClassifier, DummyRegressor

    y = target.encode(train[target.column])
    model = DummyRegressor(strategy="mean") if target.task == "regression" \
        else DummyClassifier(strategy="prior")
    return model.fit(np.zeros((len(y), 1)), y)


def evaluate_baseline(train: pd.DataFrame, holdout: pd.DataFrame, target: Target,
                      metric: str) -> Evaluation:
    """The trivial model's scores on the holdout (see `trivial_model`)."""
    return evaluate(trivial_model(train, target), holdout, target, metric)
