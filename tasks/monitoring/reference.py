"""The drift reference of a model version: a seeded sample of its training rows, with the
version's own predictions on them, its input spec and its holdout performance."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from regrow.configs.schema import Config
from regrow.tasks.model.predict import predict_with_proba
from regrow.tasks.model.train import TrainResult
from regrow.tasks.monitoring.calibration import calibrate
from regrow.tasks.monitoring.estimate import reference_calibration
from regrow.tasks.monitoring.scoring import InputSpec

PRED, SCORE = "__prediction", "__score"


@dataclass(frozen=True)
class Reference:
    """What a drift check compares the current window against."""

    frame: pd.DataFrame
    spec: InputSpec
    metric: str
    performance: dict[str, float]
    importance: dict[str, float] = field(default_factory=dict)
    positive_label: Any = None
    # Holdout calibration of a binary classifier's probabilities (tasks.monitoring.estimate), for
    # estimating performance without labels; empty when none was fitted.
    calibration: dict[str, Any] = field(default_factory=dict)
    # `tasks.monitoring.calibration.Calibration.to_dict()`: drift thresholds calibrated on this reference
    # (None: fixed thresholds mode, or a reference stored before calibration existed).
    drift_thresholds: dict[str, Any] | None = None

    def meta(self) -> dict[str, Any]:
        """JSON-able description (everything but the frame)."""
        return {"numeric": self.spec.numeric, "categorical": self.spec.categorical,
                "datetime": self.spec.datetime, "categories": self.spec.categories,
                "sources": self.spec.sources,
                "metric": self.metric, "performance": self.performance,
                "importance": self.importance, "positive_label": self.positive_label,
                "calibration": self.calibration, "rows": len(self.frame),
                "drift_calibration": self.drift_thresholds}

    @classmethod
    def from_parts(cls, frame: pd.DataFrame, meta: dict[str, Any]) -> Reference:
        """Rebuild from the stored frame and `meta()`."""
        spec = InputSpec(meta["numeric"], meta["categorical"], meta["datetime"],
                         meta.get("categories", {}), meta.get("sources") or [])
        return cls(frame, spec, meta["metric"], meta["performance"], meta.get("importance", {}),
                   meta.get("positive_label"), meta.get("calibration") or {},
                   meta.get("drift_calibration"))


def known_categories(model: Any, categorical: list[str]) -> dict[str, list[str]]:
    """Categories the fitted one-hot encoder learned, per input column."""
    try:
        enc = model.named_steps["prep"].named_transformers_["categorical"].named_steps["onehot"]
    except (KeyError, AttributeError):
        return {}
    return {col: [str(c) for c in cats] for col, cats in zip(categorical, enc.categories_,
                                                             strict=False)}


def predict_columns(model: Any, X: pd.DataFrame, task: str) -> dict[str, np.ndarray]:
    """The prediction columns a reference or window carries."""
    both = predict_with_proba(model, X) if task == "binary" else None
    if both is not None:
        return {PRED: np.asarray(both[0]).astype(str), SCORE: both[1][:, 1]}
    pred = np.asarray(model.predict(X))
    out = {PRED: pred.astype(str)}
    if task == "binary" and hasattr(model, "predict_proba"):
        out[SCORE] = np.asarray(model.predict_proba(X))[:, 1]
    elif task == "regression":
        out[SCORE] = pred.astype(float)
    return out


def importance(model: Any, X: pd.DataFrame, y: np.ndarray, seed: int) -> dict[str, float]:
    """Permutation importance per raw input column on up to 2,000 rows (negatives -> 0)."""
    from sklearn.inspection import permutation_importance

    n = min(len(X), 2000)
    idx = np.random.default_rng(seed).choice(len(X), n, replace=False)
    res = permutation_importance(model, X.iloc[idx], y[idx], n_repeats=3, random_state=seed)
    return {c: max(0.0, float(v)) for c, v in zip(X.columns, res.importances_mean, strict=True)}


def build_reference(config: Config, trained: TrainResult, train_rows: pd.DataFrame,
                    holdout_metrics: dict[str, float],
                    holdout: pd.DataFrame | None = None,
                    holdout_proba: np.ndarray | None = None) -> Reference:
    """Sample the training rows (seeded, at most `monitoring.reference_rows`) and score them;
    with `holdout`, also calibrate a binary classifier's probabilities on it (`tasks.monitoring.estimate`),
    for estimating performance without labels (`holdout_proba`: the model's probabilities on
    those rows, when already made)."""
    m = config.monitoring
    n = min(len(train_rows), m.reference_rows)
    sample = train_rows.sample(n=n, random_state=config.candidates.seed) if n < len(train_rows) \
        else train_rows
    X = sample[trained.roles.inputs].reset_index(drop=True)
    frame = X.assign(**predict_columns(trained.model, X, config.data.task))
    frame[config.data.target] = sample[config.data.target].to_numpy()
    roles = trained.roles
    spec = InputSpec(roles.numeric, roles.categorical, roles.datetime,
                     known_categories(trained.model, roles.categorical), roles.sources)
    imp = {}
    if m.drift.weight_by_importance:
        imp = importance(trained.model, X, trained.target.encode(sample[config.data.target]),
                         config.candidates.seed)
    perf = {k: float(v) for k, v in holdout_metrics.items() if v == v}  # drop NaN
    cal = calibrate_reference(config, frame, spec) if m.drift.thresholds_mode == "calibrated" \
        else None
    calibration = {} if holdout is None else reference_calibration(
        config.data.task, trained.model, roles.inputs, holdout, trained.target, holdout_proba)
    return Reference(frame, spec, trained.metric, perf, imp, trained.target.positive_label,
                     calibration, drift_thresholds=cal)


def prediction_column(columns: Any, task: str) -> tuple[str, str]:
    """(column, kind) of the prediction a drift check compares: the score (probability of the
    positive class, or the regression value) when there is one, else the predicted label."""
    if SCORE in columns and task != "multiclass":
        return SCORE, "numeric"
    return PRED, "categorical"


def calibrate_reference(config: Config, frame: pd.DataFrame, spec: InputSpec) -> dict[str, Any]:
    """Drift thresholds calibrated on the reference frame for every column the drift check
    compares (see `tasks.monitoring.calibration`), as a JSON-able dict for the reference's meta.

    The window size is `monitoring.window.rows`; for a `period` window, `window.min_rows`
    (the smallest window judged; longer windows rescale at check time).
    """
    m, d = config.monitoring, config.monitoring.drift
    kinds = {c: "numeric" for c in spec.numeric} | {c: "categorical" for c in spec.categorical}
    if d.prediction_drift:
        col, kind = prediction_column(frame.columns, config.data.task)
        kinds[col] = kind
    rows, basis = (m.window.rows, "monitoring.window.rows") if m.window.rows is not None \
        else (m.window.min_rows, "monitoring.window.min_rows (period window)")
    cal = calibrate(frame, kinds, {"numeric": d.numeric_method,
                                   "categorical": d.categorical_method},
                    window_rows=rows, alpha=d.alpha, min_effect=d.min_effect,
                    max_rows=d.max_rows, seed=config.candidates.seed, window_basis=basis)
    return cal.to_dict()


def dumps_meta(ref: Reference) -> str:
    """The reference's metadata as JSON text."""
    return json.dumps(ref.meta(), indent=2, default=str)
