"""A drift check's decision: feature drift, prediction drift and performance (realized on
matured labels, or estimated without them), calibrated against false alarms (minimum window,
persistence, weights, tolerance); `retrain.on` says which of them may ask for a retrain."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from regrow.configs.schema import METRICS, Config, PerformanceRule
from regrow.tasks.model.evaluate import bootstrap_se, score_arrays, z_value
from regrow.tasks.monitoring import estimate as est
from regrow.tasks.monitoring.calibration import resolve_thresholds
from regrow.tasks.monitoring.reference import PRED, SCORE, Reference
from regrow.tasks.monitoring.scoring import label_text

INSUFFICIENT, OK, DRIFT = "insufficient_data", "ok", "drift"


@dataclass(frozen=True)
class Performance:
    """The primary metric of a window against the reference (holdout) value: realized on its
    labelled rows, or, with `estimated`, expected from calibrated probabilities (CBPE).
    `drop`, its interval `drop_ci` and `tolerance` (the practical minimum) are in
    `tolerance_kind` units: the metric's own (absolute) or a fraction of the reference value
    (relative). `degraded`: the drop is significant (the interval's low end above zero) and
    above the minimum; `severe`: the low end is above `severe` times the minimum."""

    metric: str
    labelled_rows: int
    current: float | None
    reference: float | None
    drop: float | None
    tolerance: float
    degraded: bool
    note: str = ""
    estimated: bool = False
    tolerance_kind: str = "absolute"
    drop_ci: tuple[float, float] | None = None
    confidence: float = 0.95
    severe: bool = False

    def describe(self) -> str:
        """``drop 0.0560 (95% CI 0.0480..0.0640) vs minimum 0.0200 (absolute)``."""
        if self.drop is None:
            return self.note
        ci = "" if self.drop_ci is None else \
            f" ({self.confidence:.0%} CI {self.drop_ci[0]:.4f}..{self.drop_ci[1]:.4f})"
        return f"drop {self.drop:.4f}{ci} vs minimum {self.tolerance:.4f} ({self.tolerance_kind})"


@dataclass(frozen=True)
class Assessment:
    """What one drift check concluded.

    Attributes:
        verdict: ``insufficient_data``, ``ok`` or ``drift``.
        reasons: why, one line per signal.
        drift_share: the (weighted, if configured) share of drifted features.
        persistent: a retrain should be requested: under ``retrain.on`` the signals that may
            ask for one showed in at least k of the last n checks (this one included), or the
            performance drop was severe (``monitoring.performance.severe``) or reached
            ``monitoring.performance.immediate``.
        warning: drift was seen, and under ``retrain.on: performance`` this check asks for no
            retrain.
        retrain_on: the ``retrain.on`` mode this check was decided under.
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
    warning: bool = False
    retrain_on: str = "drift"

    @property
    def drifted(self) -> bool:
        """True when this check saw drift."""
        return self.verdict == DRIFT

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)


def performance_payload(perf: Performance | None) -> dict[str, Any] | None:
    """The short, JSON-able form of a check's performance for events."""
    if perf is None:
        return None
    out = {k: getattr(perf, k) for k in ("metric", "current", "reference", "drop", "degraded",
                                         "estimated", "labelled_rows", "tolerance_kind",
                                         "tolerance", "severe", "confidence")}
    out["drop_ci"] = None if perf.drop_ci is None else list(perf.drop_ci)
    return out


def _labels(window: pd.DataFrame, ref: Reference,
            task: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    lab = window[window["__label"].notna()]
    if task == "regression":
        y = pd.to_numeric(lab["__label"], errors="coerce").to_numpy(dtype=float)
        return y, pd.to_numeric(lab[PRED], errors="coerce").to_numpy(dtype=float), None
    if task == "binary":
        # labels and predictions as the store keeps them (`scoring.label_text`: 1, 1.0 and "1"
        # are one label; text classes stay text), against the positive class the same way
        positive = label_text(ref.positive_label)
        y = (lab["__label"].map(label_text) == positive).to_numpy(dtype=int)
        pred = (lab[PRED].map(label_text) == positive).to_numpy(dtype=int)
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


def metric_drop(metric: str, reference: float, value: float, kind: str) -> float:
    """How much worse `value` is than `reference` (positive = worse): in the metric's units
    (``absolute``) or as a fraction of the reference's magnitude (``relative``)."""
    drop = (reference - value) if METRICS[metric][1] else (value - reference)
    return in_kind(drop, reference, kind)


def in_kind(amount: float, reference: float, kind: str) -> float:
    """`amount` in the metric's units (``absolute``) or as a fraction of `reference`'s
    magnitude (``relative``; against a zero reference, any positive amount is all of it)."""
    if kind == "relative":
        return amount / abs(reference) if reference else (math.inf if amount > 0 else 0.0)
    return amount


# The practical minimum drop of each primary metric when `performance.tolerance` is left out:
# (value, kind). Bounded scores lose absolute points (two AUC points is a difference a person
# acts on, whatever the base rate); losses and errors are in the data's own units, so they
# lose a share of the reference. docs/concepts/drift.md gives the cases that chose them.
PRACTICAL_MINIMUM: dict[str, tuple[float, str]] = {
    "roc_auc": (0.02, "absolute"), "accuracy": (0.02, "absolute"), "f1": (0.02, "absolute"),
    "precision": (0.02, "absolute"), "recall": (0.02, "absolute"), "r2": (0.02, "absolute"),
    "log_loss": (0.05, "relative"), "rmse": (0.05, "relative"), "mae": (0.05, "relative"),
}
assert set(PRACTICAL_MINIMUM) == set(METRICS)


def minimum(rule: PerformanceRule, metric: str) -> tuple[float, str]:
    """(practical minimum drop, its kind) for `metric` under `rule`: the configured tolerance
    (absolute unless tolerance_kind says otherwise), or the metric's default."""
    if rule.tolerance is not None:
        return rule.tolerance, rule.tolerance_kind or "absolute"
    return PRACTICAL_MINIMUM[metric]


def catch_up(config: Config, a: Assessment, version: str, gain_low: float | None,
             replaced_value: float | None) -> str | None:
    """Why this check asks for one more retrain (``retrain.catch_up``), or None.

    The caller knows that the model's last training was a retrain a drift check asked for and
    that it promoted `version`, the champion checked here; `gain_low` is the low end of that
    version's paired gain over the champion it replaced on its holdout, `replaced_value` that
    champion's value there. A gain that large says the data had moved under the old champion,
    and the new one's training (and holdout) straddled the move: rows since may gain more. So
    a check that asks for no retrain of its own, on a window with realized performance (newer
    labelled rows to train on), asks once more while the gain clears the practical minimum
    drop (`minimum`). Not under ``promotion.mode: shadow``, whose champions come from trials.
    """
    perf = a.performance
    if not config.retrain.catch_up or config.promotion.mode == "shadow" or a.persistent \
            or perf is None or perf.estimated or perf.current is None or gain_low is None \
            or replaced_value is None:
        return None  # under shadow a trial on live windows already follows a retrain up
    value, kind = minimum(config.monitoring.performance, perf.metric)
    gained = in_kind(gain_low, replaced_value, kind)
    if not gained > value:
        return None
    share = "" if kind == "absolute" or not replaced_value else \
        f" ({gained:.1%} of its {replaced_value:.4f})"
    return (f"catch-up: v{version} gained at least {gain_low:+.4f}{share} {perf.metric} over "
            f"the champion it replaced (the low end of its paired interval on its holdout), "
            f"above the minimum {value:g} ({kind}); its training straddled the change, and "
            "the rows labelled since may gain more")


def drop_interval(metric: str, reference: float, value: float, se: float | None, kind: str,
                  confidence: float) -> tuple[float, tuple[float, float] | None]:
    """(drop, its two-sided `confidence` interval) for a window scoring `value` with standard
    error `se` against a fixed `reference` (the version's holdout value); no interval without
    `se`. The drop is linear in the value, so the interval is the value's normal interval
    carried through `metric_drop`."""
    drop = metric_drop(metric, reference, value, kind)
    if se is None or not math.isfinite(se) or not math.isfinite(drop):
        return drop, None
    half = z_value(confidence) * se
    a = metric_drop(metric, reference, value - half, kind)
    b = metric_drop(metric, reference, value + half, kind)
    return drop, (min(a, b), max(a, b))


def judge(rule: PerformanceRule, metric: str, labelled: int, value: float,
          reference: float | None, se: float | None, estimated: bool = False) -> Performance:
    """The decision on one window's metric: pure, so a backtest can replay it.

    Args:
        rule: ``monitoring.performance``.
        metric: the primary metric; labelled: the window's labelled rows.
        value: the metric on the window (realized, or estimated); NaN when undefined.
        reference: the version's holdout value (None: not known).
        se: the standard error of `value` (`tasks.model.evaluate.bootstrap_se` or
            `tasks.monitoring.estimate.estimate_se`); None: judged on the point drop.
        estimated: `value` is a CBPE estimate.

    Returns:
        The `Performance`: degraded when the drop is significant (its interval's low end
        above zero) and above the practical minimum (`minimum`); severe when the low end (the
        point drop, without an interval) is above ``rule.severe`` times the minimum.
    """
    tol, kind = minimum(rule, metric)
    if reference is None or math.isnan(value):
        return Performance(metric, labelled, None if math.isnan(value) else value, reference,
                           None, tol, False, f"{metric} not available on this window",
                           estimated, kind, confidence=rule.confidence)
    drop, ci = drop_interval(metric, reference, value, se, kind, rule.confidence)
    low = drop if ci is None else ci[0]
    degraded = drop > tol and low > 0
    severe = degraded and rule.severe is not None and low > rule.severe * tol
    return Performance(metric, labelled, value, reference, drop, tol, degraded, "", estimated,
                       kind, ci, rule.confidence, severe)


def performance(config: Config, ref: Reference, window: pd.DataFrame,
                estimate: bool = False) -> Performance:
    """The primary metric and its drop against the reference performance: realized on labelled
    rows when at least `performance.min_labels` have matured (interval: a bootstrap of those
    rows); otherwise, with `estimate` (and `performance.estimate`), estimated without labels
    for a binary classifier (interval: labels drawn from the calibrated probabilities)."""
    rule, metric, task = config.monitoring.performance, ref.metric, config.data.task
    n = int(window["__label"].notna().sum()) if "__label" in window else 0
    reference = ref.performance.get(metric)
    if n < rule.min_labels:
        if estimate and rule.estimate:
            return estimated_performance(config, ref, window, n)
        tol, kind = minimum(rule, metric)
        return Performance(metric, n, None, reference, None, tol, False,
                           f"{n} labelled rows < {rule.min_labels}: not judged",
                           tolerance_kind=kind, confidence=rule.confidence)
    y, pred, proba = _labels(window, ref, task)
    value = score_arrays(task, y, pred, proba).get(metric, math.nan)
    se = None if math.isnan(value) else bootstrap_se(
        task, metric, y, pred, proba, rule.bootstrap_samples, config.candidates.seed)
    return judge(rule, metric, n, value, reference, se)


def estimated_performance(config: Config, ref: Reference, window: pd.DataFrame,
                          labelled: int) -> Performance:
    """The primary metric estimated without labels (`tasks.monitoring.estimate`, CBPE) on every window
    row; not judged (with a note saying why) where no estimate exists."""
    rule, metric, task = config.monitoring.performance, ref.metric, config.data.task
    reference = ref.performance.get(metric)
    short = f"{labelled} labelled rows < {rule.min_labels}"
    tol, kind = minimum(rule, metric)

    def unjudged(why: str) -> Performance:
        return Performance(metric, labelled, None, reference, None, tol, False,
                           f"{short}; {why}: not judged", tolerance_kind=kind,
                           confidence=rule.confidence)

    if task != "binary":
        return unjudged(f"no estimate without labels for {task}")
    calibration = est.Calibration.from_dict(ref.calibration)
    if calibration is None:
        return unjudged("no calibration stored with this version")
    if metric not in est.ESTIMABLE or SCORE not in window:
        return unjudged(f"{metric} cannot be estimated")
    yhat = pd.to_numeric(window[PRED], errors="coerce").fillna(0).to_numpy(dtype=int)
    score = window[SCORE].to_numpy(dtype=float)
    value = est.estimate_metrics(calibration, score, yhat)[metric]
    se = None if math.isnan(value) else est.estimate_se(
        calibration, score, yhat, metric, rule.bootstrap_samples, config.candidates.seed)
    return judge(rule, metric, labelled, value, reference, se, estimated=True)


def performance_reason(perf: Performance) -> str:
    """One line for a judged window: the metric against the reference, the drop with its
    interval, the minimum, and what came of it."""
    how = " (estimated without labels)" if perf.estimated else ""
    head = (f"performance{how}: {perf.metric} {perf.current:.4f} vs reference "
            f"{perf.reference:.4f}" if perf.current is not None and perf.reference is not None
            else f"performance{how}: {perf.metric}")
    if perf.drop is None:
        return f"{head}; {perf.note}" if perf.note else head
    if perf.degraded:
        verdict = "significant and above the minimum: degraded" + (
            "; severe" if perf.severe else "")
    elif perf.drop <= 0:
        verdict = "no drop"
    elif perf.drop <= perf.tolerance:
        verdict = "below the minimum"
    else:
        verdict = f"not significant on {perf.labelled_rows:,} " + (
            "rows" if perf.estimated else "labelled rows")
    return f"{head}, {perf.describe()}: {verdict}"


def _weighted_share(summary, importance: dict[str, float]) -> float:
    total = sum(importance.get(c.column, 0.0) for c in summary.columns)
    if total <= 0:
        return summary.drift_share
    return sum(importance.get(c.column, 0.0) for c in summary.columns if c.drifted) / total


def assess(config: Config, ref: Reference, window: pd.DataFrame, previous: list[bool],
           report_html: Path | None = None,
           previous_performance: list[bool] | None = None) -> Assessment:
    """Decide one drift check.

    `previous` are the drifted flags of earlier checks of this version, newest first;
    `previous_performance` the performance-degraded flags of earlier checks of this model,
    whatever version served, newest first. See `decide` for when the check is persistent.
    """
    from regrow.tasks.monitoring.drift import check_drift

    m = config.monitoring
    rows = len(window)
    if rows < m.window.min_rows:
        return Assessment(INSUFFICIENT, rows, [f"window has {rows} rows < "
                                               f"monitoring.window.min_rows {m.window.min_rows}"])
    spec, d = ref.spec, m.drift
    refx = ref.frame
    pred_kind: Literal["numeric", "categorical"]
    pred_col, pred_kind = (SCORE, "numeric") if SCORE in refx and SCORE in window and \
        config.data.task != "multiclass" else (PRED, "categorical")
    # Config thresholds are keyed by feature name, and "prediction" for the prediction column.
    thresholds = {pred_col if k == "prediction" else k: v for k, v in d.thresholds.items()
                  if k in {*spec.numeric, *spec.categorical} or k == "prediction"}
    if not d.prediction_drift:
        thresholds.pop(pred_col, None)
    checked = {c: "numeric" for c in spec.numeric} | {c: "categorical" for c in spec.categorical}
    if d.prediction_drift:
        checked[pred_col] = pred_kind
    thresholds, threshold_notes = resolve_thresholds(
        d.thresholds_mode, ref.drift_thresholds, thresholds, checked,
        {"numeric": d.numeric_method, "categorical": d.categorical_method},
        min(rows, d.max_rows), d.min_effect, d.alpha)
    summary = check_drift(
        refx, window, spec.numeric, spec.categorical,
        prediction=pred_col if d.prediction_drift else None, prediction_kind=pred_kind,
        thresholds=thresholds, numeric_method=d.numeric_method,
        numeric_threshold=d.numeric_threshold, categorical_method=d.categorical_method,
        categorical_threshold=d.categorical_threshold, drift_share=d.drift_share,
        max_rows=d.max_rows, seed=config.candidates.seed, report_html=report_html)
    summary = replace(summary, notes=[*threshold_notes, *summary.notes])
    share = _weighted_share(summary, ref.importance) if d.weight_by_importance and ref.importance \
        else summary.drift_share
    reasons = []
    feature_drift = share >= d.drift_share
    if feature_drift:
        reasons.append(f"feature drift: share {share:.2f} >= {d.drift_share:.2f} "
                       f"({', '.join(summary.drifted_columns)})")
    pdrift = summary.prediction_drift.drifted if summary.prediction_drift else None
    p = summary.prediction_drift
    if pdrift and p is not None:  # pdrift is only set when there is a prediction_drift
        reasons.append(f"prediction drift: {p.method} {p.score:.4f} ({p.rule})")
    mode = config.retrain.on
    # Under `drift` the check behaves as it always did: realized performance only.
    perf = performance(config, ref, window, estimate=mode != "drift")
    if perf.current is not None:
        reasons.append(performance_reason(perf))
    drift_seen = feature_drift or bool(pdrift)
    drifted = drift_seen or perf.degraded
    if not drifted:
        reasons.append(f"no drift: share {share:.2f} < {d.drift_share:.2f}"
                       + (f"; {perf.note}" if perf.note else ""))
    persistent, warning, why = decide(config, drifted, drift_seen, perf, previous,
                                      previous_performance or [])
    reasons += why
    return Assessment(DRIFT if drifted else OK, rows, reasons, share, summary.drifted_columns,
                      pdrift, perf, persistent, summary.to_dict(), summary.to_markdown(),
                      warning, mode)


def decide(config: Config, drifted: bool, drift_seen: bool, perf: Performance,
           previous: list[bool], previous_performance: list[bool]) -> tuple[bool, bool, list[str]]:
    """Whether a check asks for a retrain under `retrain.on`, and whether it is a warning.

    - drift signals (feature or prediction drift, and under ``drift`` a realized performance
      drop) persist per version: k of the last n checks of this version (`previous`);
    - performance degradation persists per model (`previous_performance`, any version), so a
      degradation is not forgotten because a retrain or rollback changed the version; a
      severe drop (`Performance.severe`) or a point drop of at least `performance.immediate`
      asks at once.

    Returns:
        (persistent, warning, extra reasons).
    """
    m, mode = config.monitoring, config.retrain.on
    k, n = m.persistence.k, m.persistence.n
    rule = m.performance
    point = (perf.degraded and rule.immediate is not None and perf.drop is not None
             and perf.drop >= rule.immediate)
    immediate = point or perf.severe
    drift_recent = [drifted, *previous][:n]
    drift_persistent = drifted and (sum(drift_recent) >= k or immediate)
    perf_recent = [perf.degraded, *previous_performance][:n]
    perf_persistent = perf.degraded and (sum(perf_recent) >= k or immediate)
    persistent = {"drift": drift_persistent, "performance": perf_persistent,
                  "any": drift_persistent or perf_persistent}[mode]
    warning = mode == "performance" and drift_seen and not persistent
    why = []
    if immediate and persistent:
        if perf.severe and rule.severe is not None:
            low = perf.drop if perf.drop_ci is None else perf.drop_ci[0]
            why.append(f"severe: the drop's {'interval starts at' if perf.drop_ci else 'point is'}"
                       f" {low:.4f}, above performance.severe {rule.severe:g} x the minimum "
                       f"{perf.tolerance:.4f}: retrain asked without waiting for persistence")
        else:
            why.append(f"drop {perf.drop:.4f} >= performance.immediate {rule.immediate}: "
                       "retrain asked without waiting for persistence")
    elif mode != "drift" and perf.degraded and not perf_persistent:
        why.append(f"performance not yet persistent: degraded in {sum(perf_recent)} of the last "
                   f"{len(perf_recent)} checks of the model, {k} of {n} needed")
    if mode != "performance" and drifted and not drift_persistent and not persistent:
        why.append(f"not yet persistent: drift in {sum(drift_recent)} of the last "
                   f"{len(drift_recent)} checks, {k} of {n} needed")
    if warning:
        why.append("warning: drift asks for no retrain under retrain.on: performance "
                   "(only a persistent performance degradation does)")
    return persistent, warning, why
