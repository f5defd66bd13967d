"""Performance estimated without labels (CBPE) and `retrain.on`: known answers on synthetic
data whose P(y|x) is known, then one drift check flow on a real Prefect test server."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from regrow.configs.schema import parse_config
from regrow.tasks.monitoring import assess as monitor
from regrow.tasks.monitoring import estimate as est
from tests.helpers import BINARY_CONFIG, merge, write_case

BASE = merge(BINARY_CONFIG, {
    "monitoring": {"reference_rows": 3000, "window": {"rows": 1000, "min_rows": 300},
                   "persistence": {"k": 2, "n": 3},
                   "performance": {"min_labels": 200, "tolerance": 0.05}},
    "retrain": {"cooldown": "1h"},
})
INPUTS = ["amount", "age", "score", "noise", "segment"]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z))


def world(n: int, seed: int, shift: dict[int, float] | None = None, scale: float = 1.0,
          concept: bool = False) -> pd.DataFrame:
    """Rows whose label is drawn from a fixed P(y|x) (a logistic model), after the covariates
    were moved (`shift`: latent column -> mean shift; `scale`: spread). `concept` reverses
    P(y|x) instead: the inputs look the same, the labels do not."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)) * scale
    for col, by in (shift or {}).items():
        x[:, col] += by
    seg = rng.choice(["north", "south", "east"], size=n)
    logit = 1.5 * x[:, 0] - 1.0 * x[:, 1] + 0.5 * x[:, 2] + np.where(seg == "north", 0.8, -0.4)
    y = (rng.random(n) < _sigmoid(-logit if concept else logit)).astype(int)
    return pd.DataFrame({
        "row_id": np.arange(n) + seed * 100_000,
        "ts": pd.date_range("2024-01-01", periods=n, freq="h"),
        "amount": x[:, 0] * 10 + 50, "age": x[:, 1] * 5 + 40, "score": x[:, 2], "noise": x[:, 3],
        "segment": seg, "label": y})


# ----------------------------------------------------------------- the estimate, pure

def _fit(seed: int = 0):
    """An under-confident (strongly regularised) logistic model and its holdout calibration."""
    from sklearn.linear_model import LogisticRegression

    train, holdout = world(4000, seed), world(4000, seed + 1)
    X = train[["amount", "age", "score", "noise"]]
    model = LogisticRegression(C=0.001, max_iter=500).fit(X, train["label"])
    hx = holdout[["amount", "age", "score", "noise"]]
    return model, est.calibrate_model(model, hx, holdout["label"].to_numpy())


def _realized(model, frame: pd.DataFrame) -> dict[str, float]:
    from regrow.tasks.model.evaluate import score_arrays

    X = frame[["amount", "age", "score", "noise"]]
    proba = model.predict_proba(X)
    return score_arrays("binary", frame["label"].to_numpy(), model.predict(X), proba)


@pytest.mark.parametrize("shift", [{}, {0: 0.8}, {0: -1.0, 1: 0.7}, {2: 1.5, 3: 2.0}])
def test_estimate_tracks_realized_metrics_under_covariate_shift(shift):
    """(1) P(x) moves, P(y|x) stays: the estimate is within 0.03 of the realized metric."""
    model, calibration = _fit()
    assert calibration is not None and calibration.rows == 4000
    window = world(6000, 7, shift)
    X = window[["amount", "age", "score", "noise"]]
    estimated = est.estimate_metrics(calibration, model.predict_proba(X)[:, 1], model.predict(X))
    realized = _realized(model, window)
    for metric in ("roc_auc", "accuracy", "f1"):
        assert abs(estimated[metric] - realized[metric]) < 0.03, (metric, estimated, realized)


def test_uncalibrated_probabilities_would_mislead():
    """The calibration matters: a model whose probabilities are squeezed towards 0.5 (right
    order, wrong confidence) misjudges accuracy raw, not once calibrated on the holdout (the
    test fails if calibration were a no-op)."""
    rng = np.random.default_rng(3)

    def rows(n):
        p = _sigmoid(rng.normal(scale=2.0, size=n))
        return 0.5 + 0.3 * (p - 0.5), (rng.random(n) < p).astype(int)

    hold_score, hold_y = rows(4000)
    calibration = est.calibrate(hold_score, hold_y)
    score, y = rows(6000)
    yhat = (score > 0.5).astype(int)
    realized = float(np.mean(yhat == y))
    identity = est.Calibration([0.0, 1.0], [0.0, 1.0], 2)
    raw = est.estimate_metrics(identity, score, yhat)["accuracy"]
    good = est.estimate_metrics(calibration, score, yhat)["accuracy"]
    assert abs(good - realized) < 0.02 < abs(raw - realized)


def test_calibration_round_trip_and_refusals():
    model, calibration = _fit()
    again = est.Calibration.from_dict(json.loads(json.dumps(calibration.to_dict())))
    assert again == calibration
    assert est.Calibration.from_dict({}) is None and est.calibrate(np.ones(10), np.ones(10)) is None
    assert est.calibrate(np.linspace(0, 1, 100), np.ones(100)) is None  # one class
    e = est.estimate_metrics(calibration, np.array([]), np.array([]))
    assert all(math.isnan(v) for v in e.values())


def test_tolerance_kinds():
    assert monitor.metric_drop("roc_auc", 0.8, 0.7, "absolute") == pytest.approx(0.1)
    assert monitor.metric_drop("roc_auc", 0.8, 0.7, "relative") == pytest.approx(0.125)
    assert monitor.metric_drop("mae", 10.0, 80.0, "relative") == pytest.approx(7.0)
    assert monitor.metric_drop("mae", 10.0, 8.0, "absolute") == pytest.approx(-2.0)
    cfg = parse_config(merge(BASE, {"monitoring": {"performance": {"tolerance_kind": "relative",
                                                                   "tolerance": 0.1}}}))
    assert cfg.monitoring.performance.tolerance_kind == "relative"
    assert cfg.retrain.on == "performance"  # the default
    with pytest.raises(ValueError, match="retrain.on"):
        parse_config(merge(BASE, {"retrain": {"on": "sometimes"}}))


# ----------------------------------------------------------------- decisions, no orchestrator

@pytest.fixture(scope="module")
def trained():
    """A reference (with its holdout calibration) and the model, trained as regrow does."""
    from regrow.tasks.model import train as tr
    from regrow.tasks.model.evaluate import evaluate
    from regrow.tasks.monitoring.reference import build_reference

    cfg = parse_config(BASE)
    parts = tr.split(cfg, world(3000, 0))
    t = tr.train(cfg, parts.train)
    ev = evaluate(t.model, parts.holdout, t.target, "roc_auc")
    ref = build_reference(cfg, t, parts.train, ev.metrics)
    cal = est.reference_calibration("binary", t.model, t.roles.inputs, parts.holdout, t.target)
    assert cal["method"] == "isotonic"
    import dataclasses

    return dataclasses.replace(ref, calibration=cal), t.model


def _window(model, frame: pd.DataFrame, labels: bool) -> pd.DataFrame:
    from regrow.tasks.monitoring.reference import predict_columns

    X = frame[INPUTS].reset_index(drop=True)
    out = X.assign(**predict_columns(model, X, "binary"))
    out["__label"] = frame["label"].astype(str).to_numpy() if labels else None
    return out


def _cfg(on: str, **perf) -> object:
    return parse_config(merge(BASE, {"retrain": {"on": on},
                                     "monitoring": {"performance": perf}}))


def test_concept_change_with_matured_labels_retrains_under_performance(trained):
    """(2) Same inputs, reversed P(y|x), labels matured: realized performance collapses."""
    ref, model = trained
    window = _window(model, world(1000, 21, concept=True), labels=True)
    # With the default `severe` such a collapse asks at once; out of its reach (a factor no
    # drop reaches), persistence waits.
    severe = monitor.assess(_cfg("performance"), ref, window, [])
    assert severe.persistent and any(r.startswith("severe:") for r in severe.reasons)
    cfg = _cfg("performance", severe=1000)
    first = monitor.assess(cfg, ref, window, [])
    assert first.performance.degraded and not first.performance.estimated
    assert first.drifted_columns == [] and not first.persistent  # 1 of 2 needed so far
    # The degradation seen on the previous version still counts: persistence is per model.
    second = monitor.assess(cfg, ref, window, [], previous_performance=[True])
    assert second.persistent and not second.warning
    # A drop past `immediate` asks at once.
    now = monitor.assess(_cfg("performance", immediate=0.3, severe=1000), ref, window, [])
    assert now.persistent and any("immediate" in r for r in now.reasons)


def test_feature_shift_with_unchanged_performance(trained):
    """(3) An irrelevant input moves a lot, P(y|x) is unchanged, no labels yet: a warning
    under `performance`, a retrain under `drift` (and `any`)."""
    ref, model = trained
    shifted = world(1000, 31, {3: 3.0})
    window = _window(model, shifted, labels=False)
    patch = {"monitoring": {"drift": {"drift_share": 0.2}}}
    perf_cfg = parse_config(merge(BASE, {**patch, "retrain": {"on": "performance"}}))
    a = monitor.assess(perf_cfg, ref, window, [True, True], previous_performance=[False, False])
    assert "noise" in a.drifted_columns and a.verdict == monitor.DRIFT
    assert a.performance.estimated and not a.performance.degraded
    assert abs(a.performance.current - a.performance.reference) < 0.05
    assert not a.persistent and a.warning
    for on in ("drift", "any"):
        cfg = parse_config(merge(BASE, {**patch, "retrain": {"on": on}}))
        b = monitor.assess(cfg, ref, window, [True, True], previous_performance=[False, False])
        assert b.persistent and not b.warning, on
    # With the labels of the shifted window matured, realized performance agrees.
    labelled = monitor.assess(perf_cfg, ref, _window(model, shifted, labels=True), [True])
    assert not labelled.performance.estimated and not labelled.performance.degraded


def test_covariate_shift_that_hurts_is_caught_without_labels(trained):
    """Rows pushed where the model is unsure (logit near 0): the estimate sees the drop
    before any label matures, and the realized metric confirms it."""
    ref, model = trained
    frame = world(2000, 41, scale=0.25)
    a = monitor.assess(_cfg("performance"), ref, _window(model, frame, labels=False), [],
                       previous_performance=[True])
    realized = monitor.performance(_cfg("performance", min_labels=1), ref,
                                   _window(model, frame, labels=True))
    assert a.performance.estimated and a.performance.degraded and a.persistent
    assert realized.degraded and abs(realized.current - a.performance.current) < 0.05


def test_no_drift_control_no_retrain(trained):
    """(4) 12 windows from the training distribution, no labels: nothing is degraded, nothing
    asks for a retrain under any mode's default settings."""
    ref, model = trained
    cfg = _cfg("performance")
    previous: list[bool] = []
    perf_flags: list[bool] = []
    for i in range(12):
        a = monitor.assess(cfg, ref, _window(model, world(1000, 200 + i), labels=False), previous,
                           previous_performance=perf_flags)
        assert a.performance.estimated and not a.performance.degraded, a.reasons
        assert not a.persistent
        previous.insert(0, a.drifted)
        perf_flags.insert(0, a.performance.degraded)


def test_regression_has_no_estimate():
    from regrow.tasks.monitoring.reference import Reference
    from regrow.tasks.monitoring.scoring import InputSpec
    from tests.helpers import REGRESSION_CONFIG

    cfg = parse_config(merge(REGRESSION_CONFIG, {"monitoring": {"window": {"min_rows": 10}}}))
    ref = Reference(pd.DataFrame(), InputSpec(["f1"], [], [], {}), "rmse", {"rmse": 1.0})
    window = pd.DataFrame({"f1": [0.1] * 20, "__prediction": ["1.0"] * 20, "__score": [1.0] * 20,
                           "__label": [None] * 20})
    p = monitor.performance(cfg, ref, window, estimate=True)
    assert not p.degraded and p.current is None and "no estimate without labels" in p.note


# ----------------------------------------------------------------- one flow

@pytest.mark.usefixtures("prefect_harness")
def test_drift_check_flow_warns_under_performance_and_retrains_under_drift(home: Path,
                                                                          tmp_path: Path):
    from regrow.flows.monitoring import drift_check_flow, drift_payload, score_flow
    from regrow.flows.training import train_flow
    from regrow.tasks.policy import retrain as policy
    from regrow.tasks.registry.mlflow_registry import Registry, load_reference
    from regrow.tasks.store.database import Store, recent_drift_checks
    from regrow.tasks.store.settings import Settings

    cfg_dict = merge(BASE, {"monitoring": {"drift": {"drift_share": 0.2}}})
    cfg = write_case(tmp_path / "m", world(2000, 1), cfg_dict)
    first = train_flow(str(cfg))
    assert first.champion_after == "1"
    ref = load_reference(Registry(Settings.from_env()), first.run_id)
    assert ref.calibration["method"] == "isotonic"  # stored with the reference meta

    later = world(1000, 2, {3: 3.0})  # an irrelevant input moves; no labels arrive
    rows = tmp_path / "rows.parquet"
    later.drop(columns=["label"]).to_parquet(rows)
    score_flow(str(cfg), str(rows))
    checks = [drift_check_flow(str(cfg)) for _ in range(2)]
    for c in checks:
        a = c.assessment
        assert a["verdict"] == "drift" and a["warning"] and not a["persistent"]
        assert a["performance"]["estimated"] and c.retrain is None
    store = Store(Settings.from_env().database_url)
    assert policy.recent_requests(store, cfg_dict["registry"]["model_name"]) == []
    recorded = json.loads(store.engine.connect().exec_driver_sql(
        "SELECT summary FROM drift_checks ORDER BY id DESC").first()[0])
    assert recorded["warning"] is True and recorded["retrain_on"] == "performance"
    a = monitor.Assessment(**{**checks[0].assessment, "performance": None})
    assert drift_payload(1, "1", a)["warning"] is True

    # The same window under `drift`: drift persists (3 of 3) and a retrain is asked; the
    # policy answers (cooling down: the champion was trained a minute ago).
    asked = drift_check_flow(str(cfg), overrides={"retrain.on": "drift"}, retrain=True)
    assert asked.assessment["persistent"] and not asked.assessment["warning"]
    assert asked.retrain is not None and asked.retrain.verdict == policy.COOLING
    requests = policy.recent_requests(store, cfg_dict["registry"]["model_name"])
    assert [r["kind"] for r in requests] == ["drift"]
    assert len(recent_drift_checks(store, cfg_dict["registry"]["model_name"])) == 3


def test_expected_auc_equals_the_weighted_roc_auc_with_ties():
    """The one-sort form gives scikit-learn's weighted ROC AUC on the doubled rows."""
    from sklearn.metrics import roc_auc_score

    from regrow.tasks.monitoring.estimate import expected_auc

    rng = np.random.default_rng(3)
    for n, levels in ((50, 7), (5000, 40), (20000, None)):
        score = rng.random(n) if levels is None else rng.integers(0, levels, n) / levels
        p = np.clip(score + rng.normal(scale=0.3, size=n), 0, 1)
        y = np.concatenate([np.ones(n), np.zeros(n)])
        want = roc_auc_score(y, np.concatenate([score, score]),
                             sample_weight=np.concatenate([p, 1 - p]))
        assert expected_auc(score, p) == pytest.approx(want, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("estimator", [
    {"name": "hgb", "estimator": "hist_gradient_boosting_classifier", "params": {"max_iter": 30}},
    {"name": "svc", "estimator": "sklearn.svm.SVC", "params": {"probability": True}}])
def test_holdout_scored_once_gives_what_scoring_again_gives(estimator):
    """The candidate's holdout predictions, made once, give the same holdout metrics, trusted
    set and reference calibration as predicting again in each (a one-pass classifier and one
    whose probabilities are a separate pass)."""
    from regrow.tasks.model import evaluate as ev
    from regrow.tasks.model import train as tr
    from regrow.tasks.model import trusted as ts
    cfg = parse_config(merge(BASE, {"candidates": {"estimators": [estimator]},
                                    "gate": {"trusted_rows": 500}}))
    parts = tr.split(cfg, world(3000, 1))
    t = tr.train(cfg, parts.train)
    scored = ev.predict(t.model, parts.holdout, t.target)
    assert len(scored.pred) == len(parts.holdout) and scored.proba.shape == (len(parts.holdout), 2)
    again = ev.evaluate(t.model, parts.holdout, t.target, "roc_auc", bootstrap_samples=50)
    once = ev.evaluate(t.model, parts.holdout, t.target, "roc_auc", bootstrap_samples=50,
                       scored=scored)
    assert once == again
    old = ts.build(cfg, t.model, parts.train, parts.holdout, t.target, "roc_auc")
    new = ts.build(cfg, t.model, parts.train, parts.holdout, t.target, "roc_auc", scored)
    expected = parts.holdout.sample(n=500, random_state=cfg.split.seed).reset_index(drop=True)
    pd.testing.assert_frame_equal(new.frame, expected)
    pd.testing.assert_frame_equal(old.frame, expected)
    assert new.meta == old.meta and 0.5 < new.meta["score"] <= 1.0
    cal = est.reference_calibration("binary", t.model, t.roles.inputs, parts.holdout, t.target)
    assert est.reference_calibration("binary", t.model, t.roles.inputs, parts.holdout,
                                     t.target, scored.proba) == cal
    assert cal["method"] == "isotonic"
