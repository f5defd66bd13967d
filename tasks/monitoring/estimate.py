"""Performance of a binary classifier estimated without labels: confidence-based performance
estimation (CBPE).

The method is NannyML's CBPE (NannyML documentation, "Estimating Performance for Binary
Classification" / "CBPE": https://nannyml.readthedocs.io/en/stable/how_it_works/
performance_estimation.html). At registration the model's predicted probability of the
positive class is calibrated on the holdout (isotonic regression of the holdout label on the
predicted probability). On an unlabelled window each row's calibrated probability p_i is the
chance that its label is positive, so the confusion matrix has the expected entries

    TP = sum p_i * yhat_i       FP = sum (1 - p_i) * yhat_i
    FN = sum p_i * (1 - yhat_i) TN = sum (1 - p_i) * (1 - yhat_i)

from which accuracy, precision, recall and F1 follow; ROC AUC is the AUC of the model's
scores with every row counted as a positive of weight p_i and a negative of weight 1 - p_i,
and log loss its expectation the same way.

The estimate holds under covariate shift (P(x) moves, P(y|x) stays): a change of the concept
itself is invisible without labels, which is why realized performance wins whenever enough
labels have matured. Binary classification only: multiclass windows carry no per-class
probabilities in the prediction log, and regression has no probabilities to calibrate.
nannyml 0.13.1 resolves against requirements.lock without moving a pin, but brings 31 more
packages (xgboost and lightgbm with a CUDA NCCL wheel, S3/GCS clients, a usage-telemetry
client) for these few lines of arithmetic, so the method is implemented here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

ESTIMABLE = ("roc_auc", "accuracy", "precision", "recall", "f1", "log_loss")
MIN_CALIBRATION_ROWS = 50


@dataclass(frozen=True)
class Calibration:
    """A monotone map from the model's positive-class probability to the observed positive
    rate on the holdout (the fitted isotonic regression's knots; linear in between)."""

    x: list[float]
    y: list[float]
    rows: int

    def apply(self, score: np.ndarray) -> np.ndarray:
        """Calibrated probabilities for raw scores (clipped outside the holdout's range)."""
        return np.interp(np.asarray(score, dtype=float), self.x, self.y)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, stored with the version's reference meta."""
        return {"method": "isotonic", "x": self.x, "y": self.y, "rows": self.rows}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Calibration | None:
        """Rebuild from `to_dict()`; None when nothing (or another method) was stored."""
        if not data or data.get("method") != "isotonic":
            return None
        return cls([float(v) for v in data["x"]], [float(v) for v in data["y"]], int(data["rows"]))


def calibrate(score: np.ndarray, y: np.ndarray) -> Calibration | None:
    """Fit the calibration on holdout scores and 0/1 labels.

    Args:
        score: the model's predicted probability of the positive class per holdout row.
        y: 1 for the positive label, 0 otherwise.

    Returns:
        The calibration, or None when the holdout is too small (< 50 rows) or holds one class.
    """
    from sklearn.isotonic import IsotonicRegression

    score, y = np.asarray(score, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(score)
    score, y = score[keep], y[keep]
    if len(score) < MIN_CALIBRATION_ROWS or len(np.unique(y)) < 2:
        return None
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(score, y)
    return Calibration([float(v) for v in iso.X_thresholds_], [float(v) for v in iso.y_thresholds_],
                       len(score))


def calibrate_model(model: Any, X: Any, y: np.ndarray) -> Calibration | None:
    """Calibrate a fitted binary classifier on holdout rows `X` with 0/1 labels `y`; None when
    the model has no `predict_proba`."""
    if not hasattr(model, "predict_proba"):
        return None
    return calibrate(np.asarray(model.predict_proba(X))[:, 1], y)


def expected_confusion(p: np.ndarray, yhat: np.ndarray) -> tuple[float, float, float, float]:
    """(TP, FP, FN, TN) expected from calibrated probabilities `p` and 0/1 predictions."""
    p, yhat = np.asarray(p, dtype=float), np.asarray(yhat, dtype=float)
    return (float(np.sum(p * yhat)), float(np.sum((1 - p) * yhat)),
            float(np.sum(p * (1 - yhat))), float(np.sum((1 - p) * (1 - yhat))))


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else math.nan


def expected_auc(score: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC of `score` when each row is a positive with weight p and a negative with 1 - p.

    The Mann-Whitney form, which equals the area under the weighted ROC curve: each positive
    weight counts the negative weight scored strictly below it, plus half the negative weight
    tied with it. One sort of the distinct scores: a million rows take a few arrays of a
    million, not the dozen of two million a weighted ROC curve builds.
    """
    score, p = np.asarray(score, dtype=float), np.asarray(p, dtype=float)
    if p.sum() <= 0 or (1 - p).sum() <= 0:
        return math.nan
    _, group = np.unique(score, return_inverse=True)
    pos = np.bincount(group, weights=p)
    neg = np.bincount(group, weights=1 - p)
    below = np.cumsum(neg) - neg
    return float((np.dot(pos, below) + 0.5 * np.dot(pos, neg)) / (pos.sum() * neg.sum()))


def estimate_metrics(calibration: Calibration, score: np.ndarray,
                     yhat: np.ndarray) -> dict[str, float]:
    """Expected binary metrics on an unlabelled window.

    Args:
        calibration: the version's holdout calibration.
        score: the model's positive-class probability per window row.
        yhat: the model's 0/1 prediction per window row.

    Returns:
        ``{metric: expected value}`` for roc_auc, accuracy, precision, recall, f1, log_loss
        (NaN where undefined, e.g. no expected positives).
    """
    score = np.asarray(score, dtype=float)
    keep = np.isfinite(score)
    score, yhat = score[keep], np.asarray(yhat, dtype=float)[keep]
    if len(score) == 0:
        return {m: math.nan for m in ESTIMABLE}
    p = np.clip(calibration.apply(score), 0.0, 1.0)
    tp, fp, fn, tn = expected_confusion(p, yhat)
    s = np.clip(score, 1e-15, 1 - 1e-15)
    return {
        "roc_auc": expected_auc(score, p),
        "accuracy": (tp + tn) / len(p),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "log_loss": float(-np.mean(p * np.log(s) + (1 - p) * np.log(1 - s))),
    }


def realized_under(metric: str, score: np.ndarray, yhat: np.ndarray):
    """A function of 0/1 labels computing `metric` for these scores and predictions, with the
    sorting done once (ROC AUC by groups of tied scores), for many draws of the labels."""
    score, yhat = np.asarray(score, dtype=float), np.asarray(yhat, dtype=float)
    if metric == "roc_auc":
        _, group = np.unique(score, return_inverse=True)

        def auc(y: np.ndarray) -> float:
            pos = np.bincount(group, weights=y)
            neg = np.bincount(group, weights=1 - y)
            total_pos, total_neg = pos.sum(), neg.sum()
            if total_pos == 0 or total_neg == 0:
                return math.nan
            below = np.cumsum(neg) - neg
            return float(np.dot(pos, below + 0.5 * neg) / (total_pos * total_neg))
        return auc
    if metric == "log_loss":
        s = np.clip(score, 1e-15, 1 - 1e-15)
        return lambda y: float(-np.mean(y * np.log(s) + (1 - y) * np.log(1 - s)))

    def counts(y: np.ndarray) -> float:
        tp, fp = float(np.dot(y, yhat)), float(np.dot(1 - y, yhat))
        fn = float(np.dot(y, 1 - yhat))
        if metric == "accuracy":
            return float(np.mean(y == yhat))
        if metric == "precision":
            return _ratio(tp, tp + fp)
        if metric == "recall":
            return _ratio(tp, tp + fn)
        return _ratio(2 * tp, 2 * tp + fp + fn)
    return counts


def estimate_se(calibration: Calibration, score: np.ndarray, yhat: np.ndarray, metric: str,
                samples: int, seed: int) -> float | None:
    """How far the metric the window's labels will show may lie from the estimate: the
    standard deviation of the realized metric over `samples` draws of every row's label from
    its calibrated probability (a parametric bootstrap; the unknown is the labels, the rows
    are given). The calibration's own error, from its holdout, is not in it.

    Returns:
        The standard error, or None with `samples` < 2, no finite score, or fewer than two
        draws where the metric is defined.
    """
    score = np.asarray(score, dtype=float)
    keep = np.isfinite(score)
    score, yhat = score[keep], np.asarray(yhat, dtype=float)[keep]
    if samples < 2 or len(score) == 0 or metric not in ESTIMABLE:
        return None
    p = np.clip(calibration.apply(score), 0.0, 1.0)
    fn = realized_under(metric, score, yhat)
    rng = np.random.default_rng(seed)
    values = np.array([fn((rng.random(len(p)) < p).astype(float)) for _ in range(samples)])
    values = values[np.isfinite(values)]
    return float(np.std(values, ddof=1)) if len(values) >= 2 else None



def reference_calibration(task: str, model: Any, inputs: list[str], holdout: Any,
                          target: Any, proba: np.ndarray | None = None) -> dict[str, Any]:
    """The calibration a version's reference keeps (`Calibration.to_dict()`), fitted on its
    holdout rows.

    Args:
        task: ``data.task``.
        model: the fitted pipeline.
        inputs: its input columns.
        holdout: the holdout frame (inputs and the target column).
        target: the training's ``tasks.model.train.Target`` (its column, encoded 1 = positive).
        proba: the model's ``predict_proba`` on these holdout rows, when already made.

    Returns:
        The stored form, or ``{}`` for tasks other than binary, an empty holdout, or when it
        cannot be fitted (no probabilities, too few rows, one class).
    """
    if task != "binary" or holdout is None or len(holdout) == 0:
        return {}
    y = target.encode(holdout[target.column])
    if proba is not None and hasattr(model, "predict_proba"):
        fitted = calibrate(np.asarray(proba)[:, 1], y)
    else:
        fitted = calibrate_model(model, holdout[inputs], y)
    return {} if fitted is None else fitted.to_dict()
