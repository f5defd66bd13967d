"""Predictions and class probabilities from a fitted model in one pass where that is exact."""

from __future__ import annotations

from typing import Any

import numpy as np

# scikit-learn classifiers whose `predict` is `classes_[argmax(predict_proba)]` (ties to the
# first class included), so one `predict_proba` pass gives both: half the time of two passes.
# Not SVC: its Platt-scaled probabilities can disagree with its decision function.
ARGMAX_PREDICT = frozenset({
    "HistGradientBoostingClassifier", "RandomForestClassifier", "ExtraTreesClassifier",
    "GradientBoostingClassifier", "DecisionTreeClassifier", "ExtraTreeClassifier",
    "LogisticRegression", "KNeighborsClassifier", "GaussianNB"})


def final_step(model: Any) -> Any:
    """The estimator at the end of a Pipeline (the model itself otherwise)."""
    return model.steps[-1][1] if hasattr(model, "steps") else model


def one_pass(model: Any) -> bool:
    """Whether the predictions can be read off `predict_proba` (see ARGMAX_PREDICT)."""
    est = final_step(model)
    kind = type(est)
    return kind.__module__.startswith("sklearn.") and kind.__name__ in ARGMAX_PREDICT \
        and hasattr(est, "classes_") and hasattr(model, "predict_proba")


def predict_with_proba(model: Any, X: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """(predictions, class probabilities) from one pass, or None when the model's predictions
    are not exactly the argmax of its probabilities (then call `predict` yourself)."""
    if not one_pass(model):
        return None
    proba = np.asarray(model.predict_proba(X))
    return final_step(model).classes_[proba.argmax(axis=1)], proba
