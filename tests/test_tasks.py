"""Unit tests of the plain task functions (no orchestrator)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from regrow.configs.schema import load_config, parse_config
from regrow.tasks.data import ingest as ing
from regrow.tasks.data import validate as va
from regrow.tasks.data.features import resolve_roles
from regrow.tasks.model import evaluate as ev
from regrow.tasks.model import gate as gt
from regrow.tasks.model import train as tr
from tests.helpers import BINARY_CONFIG, REGRESSION_CONFIG, binary_frame, merge, write_case


def test_ingest_csv_parses_time_and_fingerprints(tmp_path: Path):
    frame = binary_frame(300)
    loaded = load_config(write_case(tmp_path, frame, BINARY_CONFIG))
    got = ing.ingest(loaded)
    assert got.rows == 300
    assert pd.api.types.is_datetime64_any_dtype(got.frame["ts"])
    assert got.time_min == "2024-01-01 00:00:00"
    assert got.fingerprint == ing.ingest(loaded).fingerprint
    frame.loc[5, "amount"] += 1.0
    write_case(tmp_path, frame, BINARY_CONFIG)
    assert ing.ingest(loaded).fingerprint != got.fingerprint


def test_ingest_parquet_reads_same_rows(tmp_path: Path):
    from tests.helpers import regression_frame

    frame = regression_frame(200)
    loaded = load_config(write_case(tmp_path, frame, REGRESSION_CONFIG))
    got = ing.ingest(loaded)
    pd.testing.assert_frame_equal(got.frame, frame)


def test_ingest_sql_sqlite(tmp_path: Path):
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path / 'src.db'}"
    binary_frame(400).to_sql("events", sa.create_engine(url), index=False)
    cfg = merge(BINARY_CONFIG, {"data": {"source": {"kind": "sql", "url": url, "table": "events",
                                                    "path": None, "chunksize": 150}}})
    got = ing.ingest(load_config(write_case(tmp_path, None, cfg)))
    assert got.rows == 400 and "events" in got.source
    q = merge(cfg, {"data": {"source": {"table": None, "query": "SELECT * FROM events WHERE row_id < 50"}}})
    assert ing.ingest(load_config(write_case(tmp_path, None, q))).rows == 50


def test_mask_and_expand_url(monkeypatch):
    assert ing.mask_url("postgresql+psycopg://u:secret@h/db") == "postgresql+psycopg://u:***@h/db"
    monkeypatch.setenv("DB_PASS", "pw")
    assert ing.expand_url("postgresql://u:${DB_PASS}@h/db") == "postgresql://u:pw@h/db"
    monkeypatch.delenv("DB_PASS")
    with pytest.raises(ing.IngestError, match=r"\$\{DB_PASS\}"):
        ing.expand_url("postgresql://u:${DB_PASS}@h/db")


def test_validation_reports_each_failure_with_examples():
    cfg = parse_config(BINARY_CONFIG)
    frame = binary_frame(300)
    frame.loc[:9, "age"] = 500.0
    frame.loc[3, "label"] = 7
    report = va.validate(cfg, frame)
    assert not report.success
    failed = {(o.expectation, o.column): o for o in report.failed}
    age = failed[("expect_column_values_to_be_between", "age")]
    assert age.unexpected_count == 10 and 500.0 in age.examples
    assert ("expect_column_values_to_be_in_set", "label") in failed
    assert len(report.failed) == 2
    md = report.to_markdown()
    assert "expect_column_values_to_be_between" in md and "| age |" in md


def test_validation_passes_clean_data_and_implicit_rules():
    cfg = parse_config(BINARY_CONFIG)
    assert va.validate(cfg, binary_frame(300)).success
    specs = va.expectation_specs(cfg, list(binary_frame(5).columns))
    names = [n for n, _ in specs]
    assert ("expect_column_to_exist", {"column": "label"}) in specs
    assert "expect_column_unique_value_count_to_be_between" in names
    typed = {kw["column"]: kw["type_list"] for n, kw in specs
             if n == "expect_column_values_to_be_in_type_list"}
    assert "float64" in typed["score"] and "int64" in typed["score"]  # numeric feature: number


def test_custom_expectation_by_name():
    cfg = parse_config(merge(BINARY_CONFIG, {"expectations": {"custom": [
        {"type": "expect_column_mean_to_be_between",
         "kwargs": {"column": "amount", "min_value": 1000, "max_value": 2000}}]}}))
    report = va.validate(cfg, binary_frame(200))
    assert [o.expectation for o in report.failed] == ["expect_column_mean_to_be_between"]
    bad = parse_config(merge(BINARY_CONFIG, {"expectations": {"custom": [
        {"type": "expect_the_moon", "kwargs": {}}]}}))
    with pytest.raises(ValueError, match="expect_the_moon"):
        va.validate(bad, binary_frame(50))


def test_time_split_keeps_order_and_cutoff():
    cfg = parse_config(BINARY_CONFIG)
    frame = binary_frame(400).sample(frac=1, random_state=0)
    parts = tr.split(cfg, frame)
    assert parts.method == "time" and len(parts.holdout) == 100
    assert parts.train["ts"].max() < parts.holdout["ts"].min()
    cut = parse_config(merge(BINARY_CONFIG, {"split": {"cutoff": "2024-01-10"}}))
    parts = tr.split(cut, frame)
    assert (parts.holdout["ts"] >= pd.Timestamp("2024-01-10")).all()
    late = parse_config(merge(BINARY_CONFIG, {"split": {"cutoff": "2030-01-01"}}))
    with pytest.raises(tr.TrainingError, match="0 holdout rows"):
        tr.split(late, frame)


def test_random_split_is_seeded_and_stratified():
    cfg = parse_config(merge(BINARY_CONFIG, {"data": {"time_column": None}}))
    frame = binary_frame(400)
    a, b = tr.split(cfg, frame), tr.split(cfg, frame)
    pd.testing.assert_frame_equal(a.holdout, b.holdout)
    assert abs(a.holdout["label"].mean() - frame["label"].mean()) < 0.03


def test_roles_inference_skips_id_like_text():
    cfg = parse_config(merge(BINARY_CONFIG, {"features": {"numeric": [], "categorical": [],
                                                          "infer": True}}))
    frame = binary_frame(200).assign(comment=[f"text {i}" for i in range(200)])
    roles = resolve_roles(cfg, frame)
    assert set(roles.numeric) == {"amount", "age", "score", "noise"}
    assert roles.categorical == ["segment"] and "comment" not in roles.inputs
    assert any("comment" in n for n in roles.notes)


def test_train_picks_best_and_pipeline_handles_unseen_categories():
    cfg = parse_config(BINARY_CONFIG)
    frame = binary_frame(800)
    result = tr.train(cfg, frame)
    assert {c.name for c in result.candidates} == {"logreg", "tree"}
    assert result.best.cv_score == max(c.cv_score for c in result.candidates)
    unseen = frame.head(20).assign(segment="atlantis")
    assert len(result.model.predict(unseen)) == 20


def test_binary_string_labels_use_positive_label():
    frame = binary_frame(600)
    frame["label"] = np.where(frame["label"] == 1, "yes", "no")
    cfg = parse_config(merge(BINARY_CONFIG, {"expectations": {"allowed": {"label": ["yes", "no"]}}}))
    target = tr.resolve_target(cfg, frame)
    assert target.positive_label == "yes"
    assert target.encode(frame["label"]).sum() == (frame["label"] == "yes").sum()


def test_single_class_is_refused():
    frame = binary_frame(300).assign(label=1)
    with pytest.raises(tr.TrainingError, match="exactly 2 classes"):
        tr.resolve_target(parse_config(BINARY_CONFIG), frame)


def test_evaluate_metrics_and_ci():
    cfg = parse_config(BINARY_CONFIG)
    frame = binary_frame(1000)
    parts = tr.split(cfg, frame)
    result = tr.train(cfg, parts.train)
    e = ev.evaluate(result.model, parts.holdout, result.target, "roc_auc",
                    slice_columns=["segment"], bootstrap_samples=100, seed=0)
    assert 0.8 < e.value <= 1.0
    assert e.ci[0] <= e.value <= e.ci[1]
    assert set(e.slices["segment"]) == {"north", "south", "east"}
    assert sum(s["rows"] for s in e.slices["segment"].values()) == len(parts.holdout)


def test_regression_metrics_match_definitions():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    pred = np.array([1.5, 2.0, 2.0, 4.0])
    m = ev.score_arrays("regression", y, pred, None)
    assert math.isclose(m["mae"], 0.375)
    assert math.isclose(m["rmse"], math.sqrt((0.25 + 0 + 1 + 0) / 4))


def _eval(v: float, metric: str = "roc_auc", slices=None) -> ev.Evaluation:
    return ev.Evaluation({metric: v, "f1": 0.7, "r2": 0.9}, metric, None, slices or {})


def test_gate_rules():
    gate = parse_config(merge(BINARY_CONFIG, {"gate": {"min_improvement": 0.01, "slices": []}})).gate
    first = gt.decide(gate, _eval(0.80), None)
    assert first.passed and first.rules[-1].detail == "no champion yet"
    worse = gt.decide(gate, _eval(0.75), _eval(0.80), "3")
    assert not worse.passed
    assert {r.rule for r in worse.rules if not r.passed} == {"max_regression", "min_improvement"}
    small = gt.decide(gate, _eval(0.805), _eval(0.80), "3")
    assert not small.passed and [r.rule for r in small.rules if not r.passed] == ["min_improvement"]
    better = gt.decide(gate, _eval(0.85), _eval(0.80), "3")
    assert better.passed
    floor = gt.decide(gate, _eval(0.55), None)
    assert not floor.passed and "floor" in floor.reasons[0]
    broken = gt.decide(gate, _eval(0.9), None, "3", champion_error="KeyError: x")
    assert not broken.passed


def test_gate_lower_is_better_and_slices():
    gate = parse_config(REGRESSION_CONFIG).gate
    assert gt.decide(gate, _eval(1.0, "rmse"), _eval(1.04, "rmse"), "1").passed
    assert not gt.decide(gate, _eval(1.10, "rmse"), _eval(1.0, "rmse"), "1").passed
    sgate = parse_config(BINARY_CONFIG).gate
    slices = {"segment": {"north": {"rows": 50.0, "roc_auc": 0.9},
                          "south": {"rows": 50.0, "roc_auc": 0.5},
                          "east": {"rows": 5.0, "roc_auc": 0.1}}}
    d = gt.decide(sgate, _eval(0.8, slices=slices), None)
    results = {r.rule: r.passed for r in d.rules}
    assert results["slice:segment=north"] and not results["slice:segment=south"]
    assert results["slice:segment=east"]  # too few rows: reported, not enforced
    assert not d.passed


@pytest.mark.parametrize("metric", ["roc_auc", "f1", "accuracy", "precision", "recall",
                                    "log_loss"])
def test_weighted_bootstrap_metrics_match_sklearn_on_resamples(metric):
    rng = np.random.default_rng(3)
    n = 400
    y = rng.integers(0, 2, n)
    p1 = np.round(np.clip(y * 0.3 + rng.random(n) * 0.7, 0, 1), 2)  # rounded: many ties
    proba = np.column_stack([1 - p1, p1])
    pred = (p1 > 0.5).astype(int)
    fn = ev._weighted_metric("binary", metric, y, pred, proba)
    for _ in range(5):
        idx = rng.integers(0, n, n)
        expected = ev.score_arrays("binary", y[idx], pred[idx], proba[idx])[metric]
        assert math.isclose(fn(np.bincount(idx, minlength=n).astype(float)), expected,
                            rel_tol=1e-9, abs_tol=1e-12)


@pytest.mark.parametrize("metric", ["rmse", "mae", "r2"])
def test_weighted_bootstrap_regression_matches(metric):
    rng = np.random.default_rng(4)
    y = rng.normal(size=300)
    pred = y + rng.normal(scale=0.5, size=300)
    fn = ev._weighted_metric("regression", metric, y, pred, None)
    idx = rng.integers(0, 300, 300)
    expected = ev.score_arrays("regression", y[idx], pred[idx], None)[metric]
    assert math.isclose(fn(np.bincount(idx, minlength=300).astype(float)), expected,
                        rel_tol=1e-9)
