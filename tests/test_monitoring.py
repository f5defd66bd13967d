"""Scoring, late labels, drift checks and drift-triggered retraining, end to end on a real
Prefect test server, MLflow store and Evidently."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from regrow.configs.schema import load_config, parse_config
from regrow.flows.monitoring import drift_check_flow, retrain_flow, score_flow
from regrow.flows.training import train_flow
from regrow.tasks.model.predict import ARGMAX_PREDICT, one_pass, predict_with_proba
from regrow.tasks.monitoring import assess as monitor
from regrow.tasks.monitoring import scoring
from regrow.tasks.monitoring.reference import build_reference
from regrow.tasks.policy import retrain as policy
from regrow.tasks.registry.mlflow_registry import CHAMPION, Registry, load_reference, monitoring_experiment
from regrow.tasks.store.database import Store, recent_drift_checks, training_runs
from regrow.tasks.store.settings import Settings
from tests.helpers import BINARY_CONFIG, binary_frame, merge, write_case

MONITORED = merge(BINARY_CONFIG, {
    "monitoring": {"reference_rows": 3000, "window": {"rows": 1000, "min_rows": 300},
                   "persistence": {"k": 2, "n": 3},
                   "performance": {"min_labels": 200, "tolerance": 0.05}},
    # These tests cover drift-triggered retraining; tests/test_estimate.py covers the modes.
    "retrain": {"cooldown": "1h", "circuit_breaker_after": 3, "on": "drift"},
})
MODEL = MONITORED["registry"]["model_name"]


def shifted(frame: pd.DataFrame, cols: dict[str, float]) -> pd.DataFrame:
    """Move numeric columns by the given amounts."""
    out = frame.copy()
    for c, by in cols.items():
        out[c] = out[c] + by
    return out


# ----------------------------------------------------------------- units, no orchestrator

def _spec() -> scoring.InputSpec:
    return scoring.InputSpec(["amount", "age", "score", "noise"], ["segment"], [],
                             {"segment": ["east", "north", "south"]})


@pytest.mark.parametrize(("edit", "needle"), [
    (lambda f: f.drop(columns=["age"]), "missing column(s) the model needs: ['age']"),
    (lambda f: f.assign(age="forty"), "wrong dtype in input: 'age' must be numeric"),
    (lambda f: f.iloc[:0], "no rows to score (empty input)"),
])
def test_rows_that_cannot_be_scored(edit, needle):
    with pytest.raises(scoring.ScoringError) as info:
        scoring.check_rows(_spec(), edit(binary_frame(50)))
    assert needle in str(info.value)


def test_extra_columns_and_unseen_categories_are_reported():
    frame = binary_frame(50).assign(extra=1)
    frame.loc[:4, "segment"] = "atlantis"
    extra, unseen = scoring.check_rows(_spec(), frame)
    assert "extra" in extra and "label" in extra
    assert unseen == {"segment": ["atlantis"]}


def test_labels_for_unknown_ids_are_kept_and_reported(tmp_path: Path):
    cfg = parse_config(MONITORED)
    store = Store(f"sqlite:///{tmp_path / 'm.db'}")
    with store.engine.begin() as conn:
        conn.execute(scoring.predictions.insert(), [
            {"model": MODEL, "version": "1", "batch_id": "b", "row_id": str(i),
             "event_time": None, "scored_at": scoring.now(), "prediction": "1", "score": 0.7,
             "inputs": json.dumps({"amount": 1.0})} for i in range(5)])
    res = scoring.record_labels(cfg, pd.DataFrame({"row_id": [0, 1, 99], "label": [1, 0, 1]}),
                                store)
    assert (res.received, res.matched, res.unknown_ids) == (3, 2, ["99"])
    with store.engine.connect() as conn:
        rows = conn.execute(scoring.labels.select()).all()
    assert len(rows) == 3 and sum(not r.matched for r in rows) == 1
    window = scoring.load_window(store, MODEL, rows=10)
    assert window["__label"].tolist() == ["1", "0", None, None, None]
    with pytest.raises(scoring.ScoringError, match="missing column 'label'"):
        scoring.record_labels(cfg, pd.DataFrame({"row_id": [1]}), store)


def test_labels_are_checked_and_resending_them_stores_nothing_new(tmp_path: Path):
    """Values the target cannot hold and conflicting labels for one id are refused with
    nothing stored; the same file twice stores its rows once; a changed label is recorded
    (the newest counts)."""
    cfg = parse_config(MONITORED)  # expectations.allowed.label: [0, 1]
    store = Store(f"sqlite:///{tmp_path / 'm.db'}")

    def stored() -> list[tuple[str, str]]:
        with store.engine.connect() as conn:
            return [(r.row_id, r.label) for r in conn.execute(
                scoring.labels.select().order_by(scoring.labels.c.id))]

    words = pd.DataFrame({"row_id": [1, 2, 3, 4], "label": ["1", "yes", "maybe", "yes"]})
    with pytest.raises(scoring.ScoringError, match=r"must be one of '0', '1' "
                       r"\(expectations.allowed.label\); got 'yes' \(2 rows\), 'maybe' \(1 row\)"):
        scoring.record_labels(cfg, words, store)
    both = pd.DataFrame({"row_id": [7, 7, 8], "label": [1, 0, 1]})
    with pytest.raises(scoring.ScoringError, match=r"conflicting labels for 1 id\(s\).*id '7' "
                       r"labelled '1' and '0'"):
        scoring.record_labels(cfg, both, store)
    assert stored() == []
    sent = pd.DataFrame({"row_id": range(500), "label": [i % 2 for i in range(500)]})
    first = scoring.record_labels(cfg, sent, store)
    assert (first.new, first.already, first.changed, first.received) == (500, 0, 0, 500)
    again = scoring.record_labels(cfg, sent, store)
    assert (again.new, again.already, again.changed) == (0, 500, 0)
    assert again.describe().startswith("0 new labels, 500 already recorded")
    assert len(stored()) == 500
    floats = sent.assign(label=sent["label"].astype(float))  # 1.0 is the label 1
    assert scoring.record_labels(cfg, floats, store).already == 500
    fixed = pd.DataFrame({"row_id": [0, 1, 1], "label": [1, 1, 1]})  # 0 relabelled; 1 repeated
    res = scoring.record_labels(cfg, fixed, store)
    assert (res.new, res.already, res.changed, res.repeated) == (0, 1, 1, 1)
    assert len(stored()) == 501 and stored()[-1] == ("0", "1")
    champion_classes = parse_config(merge(MONITORED, {"expectations": {"allowed": None}}))
    with pytest.raises(scoring.ScoringError, match="the classes champion v3 was trained on"):
        scoring.record_labels(champion_classes, words, store, ["0", "1"],
                              "the classes champion v3 was trained on")


def _reference_and_model(cfg, seed: int = 0):
    from regrow.tasks.model import train as tr
    frame = binary_frame(3000, seed=seed)
    parts = tr.split(cfg, frame)
    trained = tr.train(cfg, parts.train)
    from regrow.tasks.model.evaluate import evaluate

    ev = evaluate(trained.model, parts.holdout, trained.target, "roc_auc")
    return build_reference(cfg, trained, parts.train, ev.metrics), trained.model


def _window(model, frame: pd.DataFrame, labels: bool = False) -> pd.DataFrame:
    from regrow.tasks.monitoring.reference import predict_columns

    X = frame[["amount", "age", "score", "noise", "segment"]].reset_index(drop=True)
    out = X.assign(**predict_columns(model, X, "binary"))
    out["__label"] = frame["label"].astype(str).to_numpy() if labels else None
    return out


def test_assess_insufficient_data_and_shift_and_performance():
    cfg = parse_config(MONITORED)
    ref, model = _reference_and_model(cfg)
    small = monitor.assess(cfg, ref, _window(model, binary_frame(100, seed=5)), [])
    assert small.verdict == monitor.INSUFFICIENT and not small.persistent
    moved = _window(model, shifted(binary_frame(1000, seed=6), {"amount": 15.0, "age": 8.0,
                                                               "score": 1.2}))
    a = monitor.assess(cfg, ref, moved, [])
    assert a.verdict == monitor.DRIFT and sorted(a.drifted_columns) == ["age", "amount", "score"]
    assert a.prediction_drift and not a.persistent  # 1 of 3 checks so far
    assert monitor.assess(cfg, ref, moved, [True]).persistent
    # Labels flipped: the inputs look like the reference, the performance collapses.
    flipped = binary_frame(1000, seed=7)
    flipped["label"] = 1 - flipped["label"]
    p = monitor.assess(cfg, ref, _window(model, flipped, labels=True), [])
    assert p.performance.degraded and p.performance.labelled_rows == 1000
    assert p.drifted_columns == [] and p.verdict == monitor.DRIFT


def test_no_drift_control_20_windows_zero_retrains():
    """20 windows from the reference distribution at default drift settings: no alarm."""
    cfg = parse_config(MONITORED)
    ref, model = _reference_and_model(cfg)
    previous: list[bool] = []
    alarms = persistent = 0
    for i in range(20):
        a = monitor.assess(cfg, ref, _window(model, binary_frame(1000, seed=100 + i), True),
                           previous)
        previous.insert(0, a.drifted)
        alarms += a.drifted
        persistent += a.persistent
    assert persistent == 0 and alarms == 0


# ----------------------------------------------------------------- flows

@pytest.mark.usefixtures("prefect_harness")
def test_score_label_watch_retrain_end_to_end(home: Path, tmp_path: Path):
    cfg = write_case(tmp_path / "m", binary_frame(2000, seed=1), MONITORED)
    first = train_flow(str(cfg))
    assert first.champion_after == "1"
    store = Store(Settings.from_env().database_url)
    with store.engine.begin() as conn:  # the first model was trained two hours ago
        conn.execute(training_runs.update().values(
            started_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)))
    reg = Registry(Settings.from_env())
    ref = load_reference(reg, first.run_id)
    assert len(ref.frame) == 1500 and ref.performance["roc_auc"] > 0.8  # 75% of 2000 rows

    # Before any scoring: the window is empty -> insufficient data, nothing asked.
    empty = drift_check_flow(str(cfg))
    assert empty.assessment["verdict"] == "insufficient_data" and empty.retrain is None

    later = shifted(binary_frame(1000, seed=2, start="2025-01-01"), {"amount": 20.0, "age": 10.0,
                                                                     "score": 1.5})
    later["row_id"] += 10_000
    rows = tmp_path / "rows.parquet"
    later.drop(columns=["label"]).to_parquet(rows)
    res = score_flow(str(cfg), str(rows))
    assert res.rows == 1000 and res.version == "1" and "label" not in res.ignored_columns
    lab = scoring.record_labels(load_config(cfg).config, later[["row_id", "label"]], store)
    assert lab.matched == 1000

    check1 = drift_check_flow(str(cfg))
    assert check1.assessment["verdict"] == "drift" and check1.retrain is None  # 1 of 3
    assert Path(check1.report_path).exists()
    # Each check is its own run in the monitoring experiment; the champion's run stays as it was.
    assert not reg.list_artifacts(first.run_id, "drift")
    exp = reg.client.get_experiment_by_name(monitoring_experiment(MODEL))
    found = reg.client.search_runs([exp.experiment_id],
                                   f"tags.`regrow.check_id` = '{check1.check_id}'")
    assert [r.data.tags["regrow.drift.report_path"] for r in found] == [check1.report_path]
    # The next check sees the same drift: persistent -> the policy admits one retrain on new data.
    write_case(tmp_path / "m", pd.concat([binary_frame(2000, seed=1), later]).reset_index(drop=True),
               MONITORED)
    check2 = drift_check_flow(str(cfg))
    assert check2.retrain is not None and check2.retrain.verdict == policy.ADMITTED
    training = check2.retrain.training
    assert training is not None and training.decision["verdict"] in {"promote", "reject", "no_gain"}
    tags = reg.run_info(training.run_id)["tags"]
    assert tags["regrow.trigger"] == "drift"
    assert tags["regrow.trigger_ref"] == (f"retrain_request:{check2.retrain.request_id};"
                                          f"drift_check:{check2.check_id}")
    # A third drift verdict right after: the policy is cooling down; no second training.
    check3 = drift_check_flow(str(cfg)) if training.champion_after == "1" else None
    if check3 is not None:
        assert check3.retrain is None or check3.retrain.verdict == policy.COOLING
    checks = recent_drift_checks(store, MODEL)
    assert checks[-1]["verdict"] == "insufficient_data"
    assert any(c["retrain_request_id"] == check2.retrain.request_id for c in checks)
    requests = policy.recent_requests(store, MODEL)
    assert [r["verdict"] for r in requests].count(policy.ADMITTED) == 1
    assert requests[-1]["state"] == "done" and requests[-1]["run_id"] == training.run_id

    # A manual request goes through the same door.
    manual = retrain_flow(str(cfg), reason="analyst asked")
    assert manual.verdict == policy.COOLING and manual.training is None


@pytest.mark.usefixtures("prefect_harness")
def test_scoring_bad_input_loses_nothing(home: Path, tmp_path: Path):
    cfg = write_case(tmp_path / "m", binary_frame(800), MONITORED)
    from regrow.flows.monitoring import NoChampion

    with pytest.raises(NoChampion, match="no champion yet"):
        score_flow(str(cfg), str(tmp_path / "m" / "data.csv"))
    train_flow(str(cfg))
    store = Store(Settings.from_env().database_url)
    bad = binary_frame(50).drop(columns=["score"])
    bad.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(scoring.ScoringError, match=r"missing column\(s\) the model needs: \['score'\]"):
        score_flow(str(cfg), str(tmp_path / "bad.csv"))
    (tmp_path / "empty.csv").write_text("row_id,amount,age,score,noise,segment\n")
    with pytest.raises(scoring.ScoringError, match="no rows to score"):
        score_flow(str(cfg), str(tmp_path / "empty.csv"))
    with store.engine.connect() as conn:  # nothing half-written: no index row, no file
        assert conn.execute(scoring.prediction_batches.select()).first() is None
    assert not list((home / "predictions").rglob("*.parquet"))
    ok = binary_frame(40, seed=3)
    ok.loc[:2, "segment"] = "atlantis"
    ok.to_csv(tmp_path / "ok.csv", index=False)
    res = score_flow(str(cfg), str(tmp_path / "ok.csv"))
    assert res.rows == 40 and res.unseen_categories == {"segment": ["atlantis"]}
    assert Registry(Settings.from_env()).alias_version(MODEL, CHAMPION) == "1"
    assert np.isfinite(scoring.load_window(store, MODEL, rows=100)["__score"]).all()


@pytest.mark.parametrize("name", sorted(ARGMAX_PREDICT))
def test_one_pass_predictions_equal_predict(name):
    """Scoring reads predictions off predict_proba for these classifiers: it must be exactly
    what their predict returns, on binary labels of any type."""
    import importlib

    from sklearn.utils import all_estimators

    cls = dict(all_estimators(type_filter="classifier"))[name]
    frame = binary_frame(600, seed=5)
    X, y = frame[["amount", "age", "score", "noise"]], np.where(frame["label"] == 1, "yes", "no")
    kwargs = {"random_state": 0} if "random_state" in cls().get_params() else {}
    model = cls(**kwargs).fit(X, y)
    assert one_pass(model)
    cfg = parse_config(merge(BINARY_CONFIG, {"data": {"id_column": None}}))
    spec = scoring.InputSpec(["amount", "age", "score", "noise"], [], [], {})
    _, pred, score = scoring.predict(cfg, model, spec, frame)
    np.testing.assert_array_equal(pred, model.predict(X))
    np.testing.assert_array_equal(score, model.predict_proba(X)[:, 1])
    three = np.array(["a", "b", "c"])[frame["row_id"].to_numpy() % 3]  # and multiclass
    multi = cls(**kwargs).fit(X, three)
    got, proba = predict_with_proba(multi, X)
    np.testing.assert_array_equal(got, multi.predict(X))
    np.testing.assert_array_equal(proba, multi.predict_proba(X))
    assert importlib.import_module(cls.__module__)  # a scikit-learn class, as the rule needs
