"""Decisions that hold on real data, through the training flow (real Prefect, real MLflow):
a chance-level candidate fails with the shipped defaults, broken labels are told from a
concept change, unchanged data is not retrained, a year column is read as years."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from regrow.flows.monitoring import retrain_flow, score_flow
from regrow.flows.training import train_flow
from regrow.tasks.monitoring.predlog import read_batches
from regrow.tasks.policy import retrain as policy
from regrow.tasks.registry.mlflow_registry import CHAMPION, Registry
from regrow.tasks.store.database import Store, prediction_batches
from regrow.tasks.store.settings import Settings
from tests.helpers import (
    BINARY_CONFIG,
    REGRESSION_CONFIG,
    binary_frame,
    merge,
    regression_frame,
    write_case,
)

pytestmark = pytest.mark.usefixtures("prefect_harness")


def shipped(base: dict, metric: str) -> dict:
    """A config that keeps every gate default: no floors, no slices, nothing tuned."""
    return merge(merge(base, {"gate": None}), {"gate": {"primary_metric": metric}})


def failed(out) -> set[str]:
    return {r["rule"] for r in out.decision["rules"] if not r["passed"]}


def rules(out) -> dict[str, dict]:
    return {r["rule"]: r for r in out.decision["rules"]}


def test_shuffled_target_is_rejected_first_and_against_a_champion(home: Path, tmp_path: Path):
    cfg = shipped(BINARY_CONFIG, "roc_auc")
    bad = write_case(tmp_path / "bad", binary_frame(1500, seed=1, shuffle_labels=True), cfg)
    first = train_flow(str(bad))
    assert first.decision["verdict"] == "reject" and not first.promoted
    assert first.champion_after is None and failed(first) == {"baseline"}
    assert "trivial model (class prior) 0.5000" in rules(first)["baseline"]["detail"]

    good = write_case(tmp_path / "good", binary_frame(1500, seed=1), cfg)
    champ = train_flow(str(good))
    assert champ.promoted and champ.version == "2"
    reg = Registry(Settings.from_env())
    assert "trusted" in reg.list_artifacts(champ.run_id)

    worse = train_flow(str(bad))
    assert worse.decision["verdict"] == "reject" and worse.champion_after == "2"
    assert {"baseline", "broken_labels"} <= failed(worse)
    broken = rules(worse)["broken_labels"]["detail"]
    assert "look broken" in broken and "on its own trusted set" in broken
    trusted = rules(worse)["trusted_set"]
    assert trusted["passed"] and trusted["measured"] is not None and "champion" in trusted["detail"]
    assert reg.alias_version("test-binary", CHAMPION) == "2"


def test_regression_with_a_shuffled_target_is_rejected(home: Path, tmp_path: Path):
    frame = regression_frame(900)
    frame["y"] = np.random.default_rng(3).permutation(frame["y"].to_numpy())
    out = train_flow(str(write_case(tmp_path / "r", frame, shipped(REGRESSION_CONFIG, "rmse"))))
    assert out.decision["verdict"] == "reject" and "baseline" in failed(out)
    assert "mean of the training target" in rules(out)["baseline"]["detail"]


def test_concept_change_is_not_taken_for_broken_labels(home: Path, tmp_path: Path):
    cfg = merge(shipped(BINARY_CONFIG, "roc_auc"), {"candidates": {"estimators": [
        {"name": "hgb", "estimator": "hist_gradient_boosting_classifier",
         "params": {"max_iter": 30}}]}})
    assert train_flow(str(write_case(tmp_path / "a", binary_frame(1000, seed=1), cfg))).promoted
    # The world changed: for two segments the relation flips, and the new labels are learnable.
    changed = binary_frame(1000, seed=2)
    flip = changed["segment"].isin(["north", "south"])
    changed.loc[flip, "label"] = 1 - changed.loc[flip, "label"]
    out = train_flow(str(write_case(tmp_path / "b", changed, cfg)))
    rule = rules(out)["broken_labels"]
    assert rule["passed"] and rule["detail"].startswith("concept change"), rule
    assert out.decision["verdict"] == "promote" and out.promoted


def test_unchanged_data_is_not_retrained(home: Path, tmp_path: Path, capsys):
    cfg = write_case(tmp_path / "m", binary_frame(1200),
                     merge(BINARY_CONFIG, {"retrain": {"cooldown": "1s", "max_trainings": 10}}))
    assert train_flow(str(cfg)).promoted
    time.sleep(1.2)
    asked = retrain_flow(str(cfg), reason="nightly", kind="schedule")
    assert asked.verdict == policy.ADMITTED and asked.training is not None
    skipped = asked.training
    assert skipped.skipped and skipped.skipped.startswith("unchanged") and not skipped.promoted
    store, reg = Store(Settings.from_env().database_url), Registry(Settings.from_env())
    record = store.training_runs("test-binary")[0]
    assert record["status"] == "skipped" and record["detail"] == skipped.skipped
    tags = reg.run_info(skipped.run_id)["tags"]
    assert tags["regrow.status"] == "skipped" and tags["regrow.skip_reason"] == skipped.skipped
    assert "regrow.validation" not in tags  # stopped right after ingest
    request = policy.recent_requests(store, "test-binary")[0]
    assert request["state"] == "done" and request["run_id"] == skipped.run_id
    assert "training skipped: unchanged" in request["detail"]
    assert reg.find_version("test-binary", "2") is None
    # Flow time of a skipped training (the training flow alone, as the policy starts it).
    t0 = time.perf_counter()
    again = train_flow(str(cfg), trigger="schedule", reason="bench", skip_unchanged=True)
    took = time.perf_counter() - t0
    with capsys.disabled():
        print(f"\nskipped training: flow body {again.seconds:.2f} s, flow run call "
              f"{took:.2f} s (load average {os.getloadavg()[0]:.1f})")
    assert again.skipped and again.seconds <= 3.0
    # A person's direct `regrow train` trains anyway; changed data is trained too.
    assert train_flow(str(cfg)).version == "2"
    write_case(tmp_path / "m", binary_frame(1200, seed=9),
               merge(BINARY_CONFIG, {"retrain": {"cooldown": "1s", "max_trainings": 10}}))
    time.sleep(1.2)
    changed = retrain_flow(str(cfg), reason="new rows", kind="webhook")
    assert changed.training is not None and not changed.training.skipped


def test_year_time_column_end_to_end(home: Path, tmp_path: Path):
    frame = binary_frame(1200).drop(columns=["ts"])
    frame["year"] = np.repeat(np.arange(1990, 2020), 40)
    cfg = merge(BINARY_CONFIG, {"data": {"time_column": "year"}, "features": {"drop": ["year"]}})
    out = train_flow(str(write_case(tmp_path / "y", frame, cfg)))
    assert (out.data["time_min"], out.data["time_max"]) == ("1990-01-01 00:00:00",
                                                            "2019-01-01 00:00:00")
    assert out.split["cutoff"] == "2012-01-01 00:00:00"
    binary_frame(30, seed=4).drop(columns=["ts"]).assign(year=2021).to_csv(
        tmp_path / "new.csv", index=False)
    score_flow(str(tmp_path / "y" / "model.yaml"), str(tmp_path / "new.csv"))
    with Store(Settings.from_env().database_url).engine.connect() as conn:
        batch = conn.execute(prediction_batches.select()).one()
    assert (str(batch.first_event_time), str(batch.last_event_time)) == (
        "2021-01-01 00:00:00", "2021-01-01 00:00:00")
    logged = read_batches([batch.path])
    assert set(logged["__event_time"]) == {pd.Timestamp("2021-01-01")}
