"""Decisions that count what a retrain would gain: a drop of performance judged with an
interval from the window's own rows (realized: bootstrap; estimated: labels drawn from the
calibrated probabilities), and a gate that promotes only on a significant paired gain, whose
"no gain" verdict leaves the champion and the circuit breaker alone. Real sklearn models,
the real monitoring store, the real training flow."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pytest

from regrow.configs.schema import (
    METRICS,
    ConfigError,
    Gate,
    PerformanceRule,
    RetrainPolicy,
    parse_config,
)
from regrow.tasks.model import evaluate as ev
from regrow.tasks.model import gate as gt
from regrow.tasks.monitoring import assess as monitor
from regrow.tasks.monitoring import estimate as est
from regrow.tasks.policy import retrain as policy
from regrow.tasks.store.database import Store
from tests.helpers import BINARY_CONFIG, binary_frame, merge, write_case

REF = 0.708  # the reference (holdout) ROC AUC of the windows below


def _window(n: int, auc: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, 0/1 predictions and probabilities of a binormal scorer whose population ROC
    AUC is `auc` (20% positives)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.2).astype(int)
    s = rng.normal(size=n) + math.sqrt(2) * NormalDist().inv_cdf(auc) * y
    p = 1 / (1 + np.exp(-(s - 1.5)))
    return y, (p > 0.5).astype(int), np.column_stack([1 - p, p])


def _judged(rule: PerformanceRule, n: int, auc: float, seed: int = 1) -> monitor.Performance:
    y, pred, proba = _window(n, auc, seed)
    value = ev.score_arrays("binary", y, pred, proba)["roc_auc"]
    se = ev.bootstrap_se("binary", "roc_auc", y, pred, proba, rule.bootstrap_samples, seed)
    return monitor.judge(rule, "roc_auc", n, value, REF, se)


# ------------------------------------------------------------------ the drop and its interval

def test_a_small_drop_counts_on_a_large_window_not_on_a_small_one():
    rule = PerformanceRule()
    assert monitor.minimum(rule, "roc_auc") == (0.02, "absolute")
    large = _judged(rule, 27_000, REF - 0.035)
    assert large.drop_ci is not None and large.drop_ci[0] > 0 and large.drop > large.tolerance
    assert large.degraded and not large.severe
    # The old fixed tolerance (0.05) would not have counted it.
    assert large.drop < 0.05
    small = _judged(rule, 300, REF - 0.035)
    assert small.drop_ci is not None and small.drop_ci[0] < 0 < small.drop
    assert not small.degraded
    reason = monitor.performance_reason(small)
    assert "95% CI" in reason and "minimum 0.0200" in reason and "not significant" in reason
    # Significant but below the practical minimum: not degraded either.
    tiny = _judged(rule, 27_000, REF - 0.012)
    assert tiny.drop_ci[0] > 0 and tiny.drop < tiny.tolerance and not tiny.degraded
    assert "below the minimum" in monitor.performance_reason(tiny)


def test_a_severe_drop_asks_at_once_a_moderate_one_waits():
    cfg = parse_config(merge(BINARY_CONFIG, {"monitoring": {"persistence": {"k": 2, "n": 3}}}))
    rule = cfg.monitoring.performance
    severe = _judged(rule, 27_000, REF - 0.08)
    assert severe.degraded and severe.severe and severe.drop_ci[0] > 2 * severe.tolerance
    persistent, _, why = monitor.decide(cfg, True, False, severe, [], [])
    assert persistent and any(w.startswith("severe:") for w in why)
    moderate = _judged(rule, 27_000, REF - 0.035)
    persistent, _, why = monitor.decide(cfg, True, False, moderate, [], [])
    assert not persistent and any("not yet persistent" in w for w in why)
    assert monitor.decide(cfg, True, False, moderate, [], [True])[0]  # 2 of 3
    # severe: null turns it off.
    off = parse_config(merge(BINARY_CONFIG, {"monitoring": {"performance": {"severe": None}}}))
    again = _judged(off.monitoring.performance, 27_000, REF - 0.08)
    assert again.degraded and not again.severe
    assert not monitor.decide(off, True, False, again, [], [])[0]


def test_relative_minimum_for_errors_and_configured_tolerance():
    rule = PerformanceRule()
    assert monitor.minimum(rule, "mae") == (0.05, "relative")
    rng = np.random.default_rng(5)
    y = rng.gamma(2.0, 50.0, 2000)
    pred = y + rng.laplace(0, 91, 2000)  # MAE about 91 against a holdout MAE of 21
    value = ev.score_arrays("regression", y, pred, None)["mae"]
    se = ev.bootstrap_se("regression", "mae", y, pred, None, 200, 0)
    perf = monitor.judge(rule, "mae", 2000, value, 21.0, se)
    assert perf.tolerance_kind == "relative" and perf.drop > 3 and perf.severe
    # A tolerance given alone keeps its old meaning (absolute); a kind alone is refused.
    assert monitor.minimum(PerformanceRule(tolerance=0.05), "mae") == (0.05, "absolute")
    with pytest.raises(ValueError, match="tolerance_kind needs a tolerance"):
        PerformanceRule(tolerance_kind="relative")
    # Without resamples: the point drop against the minimum, as before.
    point = monitor.judge(PerformanceRule(bootstrap_samples=0), "roc_auc", 300, REF - 0.03,
                          REF, None)
    assert point.drop_ci is None and point.degraded


def test_the_estimate_has_its_own_interval():
    """CBPE: the interval of the estimate is the spread of the metric the window's labels
    would show if the calibration holds; it shrinks with the window and covers what the
    labels, drawn that way, do show."""
    rng = np.random.default_rng(11)
    hold_score = rng.random(5000)
    calibration = est.calibrate(hold_score, (rng.random(5000) < hold_score).astype(int))
    assert calibration is not None
    ses = {}
    for n in (500, 20_000):
        score = rng.random(n)
        yhat = (score > 0.5).astype(int)
        estimate = est.estimate_metrics(calibration, score, yhat)["roc_auc"]
        ses[n] = est.estimate_se(calibration, score, yhat, "roc_auc", 200, 3)
        realized = [ev.score_arrays("binary", (rng.random(n) < score).astype(int), yhat,
                                    np.column_stack([1 - score, score]))["roc_auc"]
                    for _ in range(40)]
        assert abs(np.std(realized) - ses[n]) < 0.35 * ses[n]
        assert abs(np.mean(realized) - estimate) < 3 * ses[n] / math.sqrt(40) + 0.01
    assert ses[500] > 4 * ses[20_000]
    rule = PerformanceRule()
    on_small = monitor.judge(rule, "roc_auc", 0, REF - 0.03, REF, ses[500], estimated=True)
    assert on_small.estimated and on_small.drop_ci is not None and not on_small.degraded
    on_large = monitor.judge(rule, "roc_auc", 0, REF - 0.03, REF, ses[20_000], estimated=True)
    assert on_large.degraded
    assert "estimated without labels" in monitor.performance_reason(on_large)


# ---------------------------------------------------------------------------------- the gate

def _models(seed: int = 0):
    from sklearn.linear_model import LogisticRegression

    frame = binary_frame(4000, seed=seed)
    cols = ["amount", "age", "score", "noise"]
    train, hold = frame.iloc[:3000], frame.iloc[3000:]
    good = LogisticRegression(max_iter=500).fit(train[cols], train["label"])
    weak = LogisticRegression(max_iter=500).fit(train[["noise", "age"]], train["label"])
    y = hold["label"].to_numpy()
    scored = {"good": ev.Scored(good.predict(hold[cols]), good.predict_proba(hold[cols])),
              "weak": ev.Scored(weak.predict(hold[["noise", "age"]]),
                                weak.predict_proba(hold[["noise", "age"]]))}
    return y, scored


def _evaluation(y, s: ev.Scored) -> ev.Evaluation:
    return ev.Evaluation(ev.score_arrays("binary", y, s.pred, s.proba), "roc_auc")


def test_paired_gate_no_gain_promote_reject():
    y, s = _models()
    gate = parse_config(merge(BINARY_CONFIG, {"gate": {"slices": [], "max_regression": 0.0}})).gate
    assert gate.require_improvement and gate.min_improvement is None
    evals = {k: _evaluation(y, v) for k, v in s.items()}

    same = ev.paired_gain("binary", "roc_auc", y, s["good"], s["good"], samples=200, seed=0)
    assert same.value == 0 and same.low == 0 and same.high == 0
    d = gt.decide(gate, evals["good"], evals["good"], "1", gain=same)
    assert d.verdict == gt.NO_GAIN and not d.passed
    assert [r.rule for r in d.rules if not r.passed] == ["min_improvement"]
    assert d.reasons[0].startswith("no gain") and "paired resamples" in d.reasons[0]

    better = ev.paired_gain("binary", "roc_auc", y, s["good"], s["weak"], samples=200, seed=0)
    assert better.low is not None and better.low > 0.05
    assert gt.decide(gate, evals["good"], evals["weak"], "1", gain=better).verdict == gt.PROMOTE

    worse = ev.paired_gain("binary", "roc_auc", y, s["weak"], s["good"], samples=200, seed=0)
    d = gt.decide(gate, evals["weak"], evals["good"], "1", gain=worse)
    assert d.verdict == gt.REJECT and "max_regression" in {r.rule for r in d.rules if not r.passed}

    # Without a paired interval the point gain decides; with require_improvement off the
    # old rules alone do (an equal candidate passes max_regression 0).
    assert gt.decide(gate, evals["good"], evals["good"], "1").verdict == gt.NO_GAIN
    loose = gate.model_copy(update={"require_improvement": False})
    assert gt.decide(loose, evals["good"], evals["good"], "1", gain=same).verdict == gt.PROMOTE
    # A first model is judged as before: no improvement rule without a champion.
    first = gt.decide(gate, evals["good"], None)
    assert first.verdict == gt.PROMOTE and "min_improvement" not in {r.rule for r in first.rules}
    # Floors still reject, whatever the gain.
    floored = gate.model_copy(update={"floors": {"roc_auc": 0.999}})
    assert gt.decide(floored, evals["good"], evals["weak"], "1", gain=better).verdict == gt.REJECT


def test_a_gain_below_the_practical_minimum_is_no_gain():
    """By default a significant gain must also clear the metric's minimum gain: 0.01 of AUC,
    2.5% of the champion's error for an MAE; 0 asks for any significant gain."""
    gate = parse_config(merge(BINARY_CONFIG, {"gate": {"slices": []}})).gate
    assert gt.minimum_gain(gate) == (0.01, "absolute")

    def verdict(g: object, low: float, champ: float, cand: float) -> str:
        gain = ev.Gain(g.primary_metric, cand - champ if METRICS[g.primary_metric][1]
                       else champ - cand, low, low + 0.02, 0.95, 200, 1000)
        evals = [ev.Evaluation({g.primary_metric: v}, g.primary_metric) for v in (cand, champ)]
        d = gt.decide(g, evals[0], evals[1], "1", gain=gain)
        return d.verdict

    assert verdict(gate, 0.004, 0.80, 0.815) == gt.NO_GAIN  # significant, but below 0.01
    assert verdict(gate, 0.012, 0.80, 0.825) == gt.PROMOTE
    any_gain = gate.model_copy(update={"min_improvement": 0.0})
    assert verdict(any_gain, 0.004, 0.80, 0.815) == gt.PROMOTE
    d = gt.decide(gate, ev.Evaluation({"roc_auc": 0.815}, "roc_auc"),
                  ev.Evaluation({"roc_auc": 0.80}, "roc_auc"), "1",
                  gain=ev.Gain("roc_auc", 0.015, 0.004, 0.026, 0.95, 200, 1000))
    assert "must be above +0.0100" in d.reasons[0]

    # an error in the data's units: a share of the champion's own value
    mae = Gate(primary_metric="mae")
    assert gt.minimum_gain(mae) == (0.025, "relative")
    assert verdict(mae, 2.0, 100.0, 96.0) == gt.NO_GAIN   # 2.0 is below 2.5% of 100
    assert verdict(mae, 3.0, 100.0, 95.0) == gt.PROMOTE
    assert verdict(mae, 0.02, 0.5, 0.45) == gt.PROMOTE    # 0.02 is above 2.5% of 0.5
    fixed = Gate(primary_metric="mae", min_improvement=0.05, min_improvement_kind="relative")
    assert verdict(fixed, 4.0, 100.0, 94.0) == gt.NO_GAIN
    with pytest.raises(ConfigError, match="gate.min_improvement_kind needs a min_improvement"):
        parse_config(merge(BINARY_CONFIG, {"gate": {"min_improvement_kind": "relative"}}))


def test_catch_up_follows_a_large_gain_once_labels_came_on_the_new_champion():
    """`assess.catch_up`: after a promotion that gained more than the practical minimum drop,
    a check with realized performance that asks for no retrain of its own asks for one."""
    config = parse_config(merge(BINARY_CONFIG, {"gate": {"slices": []}}))
    perf = monitor.Performance("roc_auc", 500, 0.80, 0.81, 0.01, 0.02, False)
    healthy = monitor.Assessment(monitor.OK, 500, [], performance=perf)
    why = monitor.catch_up(config, healthy, "2", 0.05, 0.70)
    assert why is not None and why.startswith("catch-up: v2 gained at least +0.0500 roc_auc")
    assert monitor.catch_up(config, healthy, "2", 0.015, 0.70) is None  # below 0.02
    assert monitor.catch_up(config, healthy, "2", None, 0.70) is None  # no interval
    persistent = monitor.Assessment(monitor.OK, 500, [], performance=perf, persistent=True)
    assert monitor.catch_up(config, persistent, "2", 0.05, 0.70) is None  # asks anyway
    estimated = monitor.Assessment(monitor.OK, 500, [], performance=monitor.Performance(
        "roc_auc", 0, 0.80, 0.81, 0.01, 0.02, False, estimated=True))
    assert monitor.catch_up(config, estimated, "2", 0.05, 0.70) is None  # no new labels
    for off in ({"retrain": {"catch_up": False}}, {"promotion": {"mode": "shadow"}}):
        other = parse_config(merge(BINARY_CONFIG, {"gate": {"slices": []}, **off}))
        assert monitor.catch_up(other, healthy, "2", 0.05, 0.70) is None, off
    # a relative minimum is a share of the replaced champion's value
    relative = parse_config(merge(BINARY_CONFIG, {"gate": {"slices": []}, "monitoring": {
        "performance": {"tolerance": 0.05, "tolerance_kind": "relative"}}}))
    assert monitor.catch_up(relative, healthy, "2", 0.04, 0.70) is not None  # 5.7%
    assert monitor.catch_up(relative, healthy, "2", 0.03, 0.70) is None  # 4.3%
    assert monitor.catch_up(relative, healthy, "2", 0.01, 0.0) is not None


def test_paired_interval_is_narrower_than_unpaired():
    """Pairing cancels what both models share: the gain of two close models has a far
    narrower interval than the two holdout intervals would suggest."""
    y, s = _models(seed=3)
    noisy = ev.Scored(s["good"].pred, np.clip(s["good"].proba + np.random.default_rng(0).normal(
        0, 0.02, s["good"].proba.shape), 0, 1))
    gain = ev.paired_gain("binary", "roc_auc", y, noisy, s["good"], samples=300, seed=1)
    se = ev.bootstrap_se("binary", "roc_auc", y, s["good"].pred, s["good"].proba, 300, 1)
    assert gain.low is not None and gain.high is not None and se is not None
    assert (gain.high - gain.low) / 2 < 0.5 * 1.96 * math.sqrt(2) * se


# ------------------------------------------------------------------ the policy and the flow

@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(f"sqlite:///{tmp_path / 'policy.db'}")
    yield s
    s.dispose()


def test_no_gain_neither_counts_nor_resets_the_breaker(store: Store):
    model, pol = "m", RetrainPolicy(cooldown="1s", circuit_breaker_after=3, max_trainings=100)
    for verdict in ("no_gain", "no_gain", "no_gain"):
        store.finish_training(store.start_training(model, "drift", "x"), status="finished",
                              verdict=verdict)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)
    assert policy.rejection_streak(store, model) == 0
    assert policy.request_retrain(store, model, pol, kind="drift", reason="r", at=later).admitted
    for verdict in ("reject", "no_gain", "reject", "no_gain", "reject"):
        store.finish_training(store.start_training(model, "drift", "x"), status="finished",
                              verdict=verdict)
    assert policy.rejection_streak(store, model) == 3
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=2)
    answer = policy.request_retrain(store, model, pol, kind="drift", reason="r", at=later)
    assert answer.verdict == policy.CIRCUIT_OPEN


@pytest.mark.usefixtures("prefect_harness")
def test_a_retrain_that_gains_nothing_changes_nothing(home: Path, tmp_path: Path):
    from regrow.flows.training import train_flow
    from regrow.tasks.registry.mlflow_registry import CHAMPION, Registry
    from regrow.tasks.store.settings import Settings

    cfg = write_case(tmp_path / "m", binary_frame(1500, seed=1), BINARY_CONFIG)
    first = train_flow(str(cfg))
    assert first.promoted and first.version == "1"
    again = train_flow(str(cfg))  # the same data and config: the same model, nothing to gain
    assert again.decision["verdict"] == "no_gain" and not again.promoted
    assert again.champion_after == "1" and again.version == "2"
    rule = next(r for r in again.decision["rules"] if r["rule"] == "min_improvement")
    assert not rule["passed"] and "gain +0.0000" in rule["detail"]
    settings = Settings.from_env()
    assert Registry(settings).alias_version("test-binary", CHAMPION) == "1"
    store = Store(settings.database_url)
    assert store.training_runs("test-binary")[0]["verdict"] == "no_gain"
    assert policy.rejection_streak(store, "test-binary") == 0
    # A clearly better candidate (the champion trained on a tenth of the signal) promotes.
    weak = binary_frame(1500, seed=1, noise=6.0)
    weak_cfg = write_case(tmp_path / "w", weak, merge(BINARY_CONFIG, {
        "registry": {"model_name": "test-weak"}}))
    assert train_flow(str(weak_cfg)).promoted
    write_case(tmp_path / "w", binary_frame(1500, seed=1),
               merge(BINARY_CONFIG, {"registry": {"model_name": "test-weak"}}))
    better = train_flow(str(weak_cfg))
    assert better.decision["verdict"] == "promote" and better.promoted


def test_window_labels_match_the_positive_class_however_it_is_typed():
    """A float target (1.0), text classes and integer ones read the same window the same way:
    labels and predictions are compared as the store keeps them."""
    import pandas as pd

    from regrow.tasks.monitoring.reference import Reference
    from regrow.tasks.monitoring.scoring import InputSpec

    cfg = parse_config(merge(BINARY_CONFIG, {"gate": {"primary_metric": "accuracy"}}))
    truth = [1, 0, 1, 1, 0, 0, 1, 0]
    guess = [1, 0, 0, 1, 0, 1, 1, 0]  # 6 of 8 right
    score = [0.9, 0.2, 0.4, 0.8, 0.1, 0.6, 0.7, 0.3]
    cases = [(1.0, "1", "0"), (1, "1", "0"), ("1", "1.0", "0.0"), ("yes", "yes", "no")]
    for positive, pos, neg in cases:
        window = pd.DataFrame({"__label": [pos if t else neg for t in truth],
                               "__prediction": [pos if g else neg for g in guess],
                               "__score": score})
        ref = Reference(frame=pd.DataFrame(), spec=InputSpec([], [], []), metric="accuracy",
                        performance={"accuracy": 0.9}, positive_label=positive)
        n, value = monitor.window_metric(cfg, ref, window)
        assert (n, value) == (8, 0.75), positive
        ref = Reference(frame=pd.DataFrame(), spec=InputSpec([], [], []), metric="roc_auc",
                        performance={"roc_auc": 0.9}, positive_label=positive)
        assert monitor.window_metric(cfg, ref, window)[1] == 0.9375, positive
