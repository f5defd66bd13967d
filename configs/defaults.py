"""What a config that leaves out `candidates` or `gate` gets, by task: the one place for
these defaults. The schema fills omitted sections from here, and `regrow init` writes the
same values (with a comment each) into the files it makes.

A linear model and a gradient-boosting model with a small grid suit any table from a few
hundred rows to millions: the linear one is the fast, stable reference, histogram gradient
boosting handles non-linear effects, missing values and large tables in one pass per tree.
"""

from __future__ import annotations

from typing import Any

# task -> its two candidates (the estimator short names are `schema.ESTIMATORS`' own).
_CANDIDATES: dict[str, list[dict[str, Any]]] = {
    "binary": [
        {"name": "linear", "estimator": "logistic_regression", "params": {"max_iter": 1000},
         "grid": {"C": [0.1, 1.0, 10.0]}},
        {"name": "boosting", "estimator": "hist_gradient_boosting_classifier",
         "params": {"max_iter": 200}, "grid": {"learning_rate": [0.05, 0.1]}},
    ],
    "regression": [
        {"name": "linear", "estimator": "ridge", "grid": {"alpha": [0.1, 1.0, 10.0]}},
        {"name": "boosting", "estimator": "hist_gradient_boosting_regressor",
         "params": {"max_iter": 200}, "grid": {"learning_rate": [0.05, 0.1]}},
    ],
}
_CANDIDATES["multiclass"] = _CANDIDATES["binary"]

# task -> the gate's primary metric: scale-free, so one regression tolerance fits every table
# (AUC for two classes; macro F1 for several, defined even when a class is rare in the
# holdout; R² for numbers, whatever the target's unit).
PRIMARY_METRIC: dict[str, str] = {"binary": "roc_auc", "multiclass": "f1", "regression": "r2"}
MAX_REGRESSION = 0.01
CV_FOLDS = 3
# Below this many rows one native (OpenMP/BLAS) thread per fit is faster than several: the
# threads' start-up and contention cost more than a small fit. `regrow init` knows the size.
ONE_THREAD_BELOW = 100_000


def default_candidates(task: str, rows: int | None = None) -> dict[str, Any]:
    """The `candidates` section a config of `task` gets when it leaves it out; with the
    table's size (`rows`, known to `regrow init`), a small table's fits also run on one
    native thread (`threads: 1`).

    Raises:
        KeyError: an unknown task.
    """
    out: dict[str, Any] = {"cv_folds": CV_FOLDS, "seed": 0}
    if rows is not None and rows < ONE_THREAD_BELOW:
        out["threads"] = 1
    out["estimators"] = [{k: (dict(v) if isinstance(v, dict) else v) for k, v in c.items()}
                         for c in _CANDIDATES[task]]
    return out


def default_gate(task: str) -> dict[str, Any]:
    """The `gate` section a config of `task` gets when it leaves it out: the primary metric,
    a small tolerance against the champion, and the trivial-baseline rule (on by default in
    the schema).

    Raises:
        KeyError: an unknown task.
    """
    return {"primary_metric": PRIMARY_METRIC[task], "max_regression": MAX_REGRESSION,
            "baseline": True}


DEFAULTED_SECTIONS = {"candidates": default_candidates, "gate": default_gate}
