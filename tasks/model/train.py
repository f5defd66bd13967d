"""Split the data, fit one Pipeline per candidate with cross-validation, pick the best."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone, is_classifier, is_regressor
from sklearn.model_selection import GridSearchCV, KFold, StratifiedKFold, TimeSeriesSplit
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from regrow.configs.schema import ESTIMATORS, METRICS, Candidate, Config
from regrow.tasks.data.features import (
    FeatureError,
    FeatureRoles,
    FeatureSet,
    build_features,
    feature_steps,
)
from regrow.tasks.data.timecol import TimeUnitError, to_time
from regrow.tasks.model import cluster


class TrainingError(ValueError):
    """Training cannot proceed on this data or config."""


class SplitError(TrainingError):
    """The split cannot be made as configured (a cutoff that leaves a part empty, or that is
    not a time the column can be compared with)."""


@dataclass(frozen=True)
class SplitResult:
    """Training and holdout parts of the table."""

    train: pd.DataFrame
    holdout: pd.DataFrame
    method: str
    cutoff: str | None = None

    def summary(self) -> dict[str, Any]:
        """JSON-able description."""
        return {"method": self.method, "train_rows": len(self.train),
                "holdout_rows": len(self.holdout), "cutoff": self.cutoff}


def split(config: Config, frame: pd.DataFrame) -> SplitResult:
    """Time-based holdout when the config names a time column, else a seeded random split.

    Raises:
        TrainingError: a part would be empty.
    """
    s, d = config.split, config.data
    if d.time_column:
        ordered = frame.sort_values(d.time_column, kind="stable").reset_index(drop=True)
        if s.cutoff:
            cut = _cutoff(s.cutoff, d.time_unit, ordered[d.time_column], d.time_column)
            mask = ordered[d.time_column] >= cut
            train, hold = ordered[~mask], ordered[mask]
        else:
            n_hold = max(1, int(round(len(ordered) * s.holdout_fraction)))
            train, hold = ordered.iloc[:-n_hold], ordered.iloc[-n_hold:]
            cut = hold[d.time_column].iloc[0] if len(hold) else None
        result = SplitResult(train.reset_index(drop=True), hold.reset_index(drop=True), "time",
                             str(cut) if cut is not None else None)
    else:
        rng = np.random.default_rng(s.seed)
        idx = rng.permutation(len(frame))
        n_hold = max(1, int(round(len(frame) * s.holdout_fraction)))
        if s.stratify and d.task != "regression":
            from sklearn.model_selection import train_test_split

            try:
                tr, ho = train_test_split(np.arange(len(frame)), test_size=n_hold,
                                          random_state=s.seed, stratify=frame[d.target])
            except ValueError:  # a class too small to stratify: fall back to plain random
                tr, ho = idx[n_hold:], idx[:n_hold]
        else:
            tr, ho = idx[n_hold:], idx[:n_hold]
        result = SplitResult(frame.iloc[np.sort(tr)].reset_index(drop=True),
                             frame.iloc[np.sort(ho)].reset_index(drop=True), "random")
    if len(result.train) == 0 or len(result.holdout) == 0:
        raise SplitError(
            f"split: {result.method} split left {len(result.train)} training and "
            f"{len(result.holdout)} holdout rows; adjust split.cutoff or split.holdout_fraction"
        )
    return result


def _cutoff(text: str, unit: str, times: pd.Series, column: str) -> pd.Timestamp:
    """`split.cutoff` as a time comparable with the time column: a whole number read by
    `unit` like the column, anything else as the ISO date or time the config schema checked.

    Raises:
        SplitError: not a time, or a time zone on one side only.
    """
    import datetime as dt

    try:
        if text.strip().lstrip("-").isdigit():
            cut = to_time(text, unit, "split.cutoff")
        else:
            cut = pd.Timestamp(dt.datetime.fromisoformat(text.strip()))
    except (TimeUnitError, ValueError) as err:
        raise SplitError(str(err) if isinstance(err, TimeUnitError) else
                         f"split.cutoff: {text!r} is not a date or time") from None
    zoned = getattr(times.dt, "tz", None) is not None if len(times) else False
    if (cut.tzinfo is not None) != zoned:
        raise SplitError(
            f"split.cutoff: {text!r} {'has a' if cut.tzinfo is not None else 'has no'} time zone, "
            f"but data.time_column {column!r} holds times {'with' if zoned else 'without'} one; "
            "give the cutoff " + ("with a zone (e.g. +00:00)" if zoned else "without a zone"))
    return cut


@dataclass(frozen=True)
class Target:
    """How the target column becomes y: binary targets are encoded 1 = positive label."""

    column: str
    task: str
    positive_label: Any = None
    classes: list[Any] = field(default_factory=list)

    def encode(self, values: pd.Series) -> np.ndarray:
        """y for sklearn."""
        if self.task == "binary":
            return (values == self.positive_label).to_numpy(dtype=int)
        return values.to_numpy()


def resolve_target(config: Config, train: pd.DataFrame) -> Target:
    """Find the classes (and the positive label for binary) in the training rows.

    Raises:
        TrainingError: the number of classes does not fit the task.
    """
    d = config.data
    y = train[d.target]
    if d.task == "regression":
        if not pd.api.types.is_numeric_dtype(y):
            raise TrainingError(f"data.target: {d.target!r} must be numeric for regression, "
                                f"found dtype {y.dtype}")
        return Target(d.target, d.task)
    classes = sorted(y.dropna().unique().tolist(), key=lambda v: (str(type(v)), v))
    if d.task == "binary":
        if len(classes) != 2:
            raise TrainingError(f"data.target: binary task needs exactly 2 classes in the training "
                                f"rows, found {len(classes)}: {classes[:10]}")
        pos = d.positive_label if d.positive_label is not None else classes[-1]
        if pos not in classes:
            raise TrainingError(f"data.positive_label: {pos!r} is not one of the classes {classes}")
        return Target(d.target, d.task, pos, classes)
    if len(classes) < 3:
        raise TrainingError(f"data.target: multiclass task needs 3 or more classes, found {classes}")
    return Target(d.target, d.task, None, classes)


def scorer_name(metric: str, task: str) -> str:
    """The sklearn scoring string for a config metric."""
    multi = task == "multiclass"
    return {
        "roc_auc": "roc_auc_ovr" if multi else "roc_auc",
        "f1": "f1_macro" if multi else "f1",
        "precision": "precision",
        "recall": "recall",
        "accuracy": "accuracy",
        "log_loss": "neg_log_loss",
        "rmse": "neg_root_mean_squared_error",
        "mae": "neg_mean_absolute_error",
        "r2": "r2",
    }[metric]


def estimator_class(cand: Candidate, config: Config) -> type:
    """Resolve a candidate's estimator to a scikit-learn estimator class, calling nothing.

    Only scikit-learn and the modules the config lists are ever imported, and the result must
    be a class deriving from ``sklearn.base.BaseEstimator``: a function or any other callable
    named in a config is refused before it could run.

    Raises:
        ConfigError: not an allowed module, not importable, or not an estimator class.
    """
    from sklearn.base import BaseEstimator

    from regrow.tasks.model.imports import allowed_class

    where = f"candidates.estimators.{config.candidates.estimators.index(cand)}.estimator"
    path = ESTIMATORS[cand.estimator][0] if cand.estimator in ESTIMATORS else cand.estimator
    return allowed_class(config, path, where, "estimator", BaseEstimator,
                         "a scikit-learn estimator class (a class deriving from "
                         "sklearn.base.BaseEstimator)")


def check_estimators(config: Config) -> None:
    """Resolve every candidate's estimator class now (fail fast, before any run starts).

    Raises:
        ConfigError: see `estimator_class`.
    """
    for cand in config.candidates.estimators:
        estimator_class(cand, config)


def make_estimator(cand: Candidate, config: Config) -> Any:
    """Instantiate a candidate's estimator with its fixed params (seeded when it takes one).

    Raises:
        ConfigError: the import path is not an allowed estimator class (see `estimator_class`).
        TrainingError: the params are wrong, or the estimator does not fit the task.
    """
    cls = estimator_class(cand, config)
    task, seed = config.data.task, config.candidates.seed
    params = dict(cand.params)
    try:
        est = cls(**params)
    except TypeError as err:
        raise TrainingError(f"candidates.{cand.name}.params: {err}") from None
    if "random_state" in est.get_params() and "random_state" not in params:
        est.set_params(random_state=seed)
    fits = is_regressor(est) if task == "regression" else is_classifier(est)
    if not fits:
        kind = "regressor" if task == "regression" else "classifier"
        raise TrainingError(f"candidates.{cand.name}.estimator: {cls.__module__}.{cls.__name__} "
                            f"is not a {kind}, so it does not fit task {task!r}")
    return est


@dataclass(frozen=True)
class CandidateScore:
    """Cross-validated score of one candidate (in the primary metric's own units)."""

    name: str
    estimator: str
    best_params: dict[str, Any]
    cv_score: float
    cv_std: float
    fit_seconds: float


@dataclass(frozen=True)
class TrainResult:
    """The fitted winner and how every candidate scored."""

    model: Pipeline
    best: CandidateScore
    candidates: list[CandidateScore]
    roles: FeatureRoles
    target: Target
    metric: str
    backend: dict[str, Any] = field(default_factory=dict)  # where the search ran (tasks.model.cluster)


def _cv(config: Config, y: np.ndarray):
    c = config.candidates
    if config.data.time_column:
        return TimeSeriesSplit(n_splits=c.cv_folds)
    if config.data.task != "regression":
        return StratifiedKFold(n_splits=c.cv_folds, shuffle=True, random_state=c.seed)
    return KFold(n_splits=c.cv_folds, shuffle=True, random_state=c.seed)


def check_class_counts(config: Config, target: Target, y: np.ndarray) -> None:
    """Refuse, before anything is fitted, a training part whose classes cross-validation
    cannot score: a class with fewer examples than `candidates.cv_folds`, or (time-ordered
    folds) a fold whose training or validation part misses a class. Its scores would be NaN,
    and a model chosen on NaN scores is no choice.

    Raises:
        TrainingError: naming the class, its count and what to change.
    """
    if config.data.task == "regression" or len(y) == 0:
        return
    folds = config.candidates.cv_folds
    codes, counts = np.unique(y, return_counts=True)

    def label(code: Any) -> Any:
        if target.task != "binary":
            return code
        other = [c for c in target.classes if c != target.positive_label]
        return target.positive_label if code == 1 else (other[0] if other else code)

    advice = ("collect more labelled rows of that class, or lower candidates.cv_folds "
              f"(now {folds})")
    for code, n in zip(codes, counts, strict=True):
        if n < folds:
            raise TrainingError(
                f"too few examples of class {label(code)!r} for {folds}-fold cross-validation: "
                f"{n} of {len(y):,} training rows (every fold needs at least one); {advice}")
    if not config.data.time_column:
        return  # stratified folds put every class in every fold
    present = set(codes.tolist())
    for i, (fit_rows, check_rows) in enumerate(_cv(config, y).split(np.zeros(len(y)))):
        for part, rows in (("training", fit_rows), ("validation", check_rows)):
            missing = present - set(np.unique(y[rows]).tolist())
            if missing:
                code = sorted(missing)[0]
                n = int(counts[list(codes).index(code)])
                raise TrainingError(
                    f"too few examples of class {label(code)!r} for {folds}-fold "
                    f"time-ordered cross-validation: {n} of {len(y):,} training rows, none in "
                    f"the {part} part of fold {i + 1}; {advice}")


def native_threads(config: Config):
    """A context capping native (OpenMP/BLAS) threads at `candidates.threads` while fitting or
    predicting (a no-op when unset): on a small or busy machine, a tree ensemble's predict
    otherwise pays a thread-pool hand-off per tree."""
    import contextlib

    n = config.candidates.threads
    return threadpool_limits(limits=n) if n else contextlib.nullcontext()


def train(config: Config, train_frame: pd.DataFrame,
          features: FeatureSet | None = None) -> TrainResult:
    """Fit every candidate with a grid search on the training part; keep the best.

    Each candidate is one Pipeline (derived features, preprocessing, estimator) refitted
    inside every cross-validation fold. `features` is what the features step found on the
    same training part (built here when not given).

    Raises:
        TrainingError: the data or config cannot produce a model.
        FeatureError: the feature spec does not fit the data.
    """
    task, metric = config.data.task, config.gate.primary_metric
    target = resolve_target(config, train_frame)
    y = target.encode(train_frame[target.column])
    check_class_counts(config, target, y)
    features = features or build_features(config, train_frame, y)
    roles = features.roles
    X = train_frame[roles.inputs]
    sign = 1.0 if METRICS[metric][1] else -1.0  # scorers negate lower-is-better metrics
    scores: list[CandidateScore] = []
    fitted: dict[str, Pipeline] = {}
    with cluster.search_backend(config) as backend:
        for cand in config.candidates.estimators:
            score, fitted[cand.name] = _search(config, cand, features, X, y, task, metric, sign)
            scores.append(score)
    greater = METRICS[metric][1]
    best = (max if greater else min)(scores, key=lambda s: s.cv_score)
    return TrainResult(fitted[best.name], best, scores, roles, target, metric, backend)


def _search(config: Config, cand: Candidate, features: FeatureSet, X: pd.DataFrame,  # noqa: N803
            y: np.ndarray, task: str, metric: str, sign: float) -> tuple[CandidateScore, Pipeline]:
    """One candidate's grid search with cross-validation; its score and refitted pipeline
    (derived features, preprocessing and estimator, refitted inside every fold)."""
    est = make_estimator(cand, config)
    pipe = Pipeline([*feature_steps(config, features), ("model", est)])
    grid = {f"model__{k}": v for k, v in cand.grid.items()}
    # Without derived features the final refit's preprocessing is the one the features step
    # already fitted on these same rows: refit only the estimator (see `_refit`).
    reuse = features.prep is not None and not features.derived
    search = GridSearchCV(pipe, [grid] if grid else [{}], scoring=scorer_name(metric, task),
                          cv=_cv(config, y), n_jobs=cluster.n_jobs(config), refit=not reuse,
                          error_score="raise")
    t0 = time.perf_counter()
    try:
        with native_threads(config):
            search.fit(X, y)
            model = _refit(features.prep, est, search.best_params_, X, y) if reuse \
                else search.best_estimator_
    except FeatureError:
        raise
    except ValueError as err:
        raise TrainingError(f"candidates.{cand.name}: fitting failed: {err}") from None
    i = search.best_index_
    return CandidateScore(
        name=cand.name,
        estimator=ESTIMATORS.get(cand.estimator, (cand.estimator,))[0],
        best_params={k.removeprefix("model__"): v for k, v in search.best_params_.items()},
        cv_score=float(sign * search.cv_results_["mean_test_score"][i]),
        cv_std=float(search.cv_results_["std_test_score"][i]),
        fit_seconds=round(time.perf_counter() - t0, 3),
    ), model


def _refit(prep: Any, est: Any, best_params: dict[str, Any], X: pd.DataFrame,  # noqa: N803
           y: np.ndarray) -> Pipeline:
    """The Pipeline GridSearchCV's refit would make, from `prep` already fitted on `X`.

    ``Pipeline.fit`` is ``prep.fit_transform(X)`` then the estimator's fit on the result; for
    the preprocessing regrow builds (imputers, scalers, encoders) ``fit_transform`` is
    ``fit`` then ``transform``, so transforming with the fitted `prep` and fitting a clone of
    `est` with the best parameters gives the same model, without fitting `prep` again.
    """
    final = clone(est).set_params(**{k.removeprefix("model__"): v
                                      for k, v in best_params.items()})
    final.fit(prep.transform(X), y)
    return Pipeline([("prep", prep), ("model", final)])
