"""The training flow on a real Prefect test server and a real MLflow store."""

from __future__ import annotations

from pathlib import Path

import pytest

from regrow.flows.training import train_flow
from regrow.tasks.registry.mlflow_registry import CHALLENGER, CHAMPION, Registry
from regrow.tasks.store.database import Store
from regrow.tasks.store.settings import Settings
from tests.helpers import (
    BINARY_CONFIG,
    REGRESSION_CONFIG,
    binary_frame,
    regression_frame,
    write_case,
)

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _registry() -> Registry:
    return Registry(Settings.from_env())


def test_binary_trains_registers_and_records(home: Path, tmp_path: Path):
    cfg = write_case(tmp_path / "m", binary_frame(1200), BINARY_CONFIG)
    out = train_flow(str(cfg), reason="first model")
    assert out.promoted and out.version == "1" and out.champion_after == "1"
    reg = _registry()
    assert reg.alias_version("test-binary", CHAMPION) == "1"
    assert reg.alias_version("test-binary", CHALLENGER) is None  # promoted: nothing waits
    run = reg.run_info(out.run_id)
    assert run["status"] == "FINISHED"
    tags = run["tags"]
    assert tags["regrow.trigger"] == "manual" and tags["regrow.trigger_reason"] == "first model"
    assert len(tags["regrow.config_sha256"]) == 64 and len(tags["regrow.data.fingerprint"]) == 64
    assert tags["regrow.data.rows"] == "1200" and tags["regrow.seed"] == "1"
    assert tags["regrow.data.time_min"].startswith("2024-01-01")
    assert tags["regrow.version"] and tags["regrow.gate.verdict"] == "promote"
    assert run["metrics"]["holdout_roc_auc"] > 0.8
    arts = set(reg.list_artifacts(out.run_id))
    assert {"gate", "validation", "config", "candidates.json", "features.json", "features.md"} <= arts
    assert run["metrics"]["features_model_inputs"] == 7  # 4 numeric + 3 one-hot segments
    model = reg.load("test-binary", alias=CHAMPION)
    assert set(model.predict(binary_frame(30, seed=5))) <= {0, 1}
    history = Store(Settings.from_env().database_url).alias_history("test-binary")
    assert [(h["alias"], h["old_version"], h["new_version"]) for h in history] == [
        (CHAMPION, None, "1")]
    assert history[-1]["run_id"] == out.run_id and "gate passed" in history[-1]["reason"]


def test_regression_trains_and_registers(home: Path, tmp_path: Path):
    cfg = write_case(tmp_path / "r", regression_frame(900), REGRESSION_CONFIG)
    out = train_flow(str(cfg))
    assert out.promoted and out.metric == "rmse"
    assert out.holdout["metrics"]["r2"] > 0.8
    assert out.split["method"] == "random"
    model = _registry().load("test-regression", alias=CHAMPION)
    assert len(model.predict(regression_frame(10, seed=3))) == 10


def test_gate_rejects_worse_and_promotes_better(home: Path, tmp_path: Path):
    good = write_case(tmp_path / "good", binary_frame(1500, seed=1), BINARY_CONFIG)
    first = train_flow(str(good))
    assert first.champion_after == "1"
    # Same rows, labels shuffled: a model that learned nothing must not replace the champion.
    bad = write_case(tmp_path / "bad", binary_frame(1500, seed=1, shuffle_labels=True), BINARY_CONFIG)
    worse = train_flow(str(bad))
    assert worse.decision["verdict"] == "reject" and not worse.promoted
    assert worse.version == "2" and worse.champion_after == "1"
    failed = {r["rule"] for r in worse.decision["rules"] if not r["passed"]}
    assert "floor" in failed or "max_regression" in failed
    reg = _registry()
    assert reg.alias_version("test-binary", CHAMPION) == "1"
    assert reg.alias_version("test-binary", CHALLENGER) is None  # rejected: never challenger
    # A short noisy history, then plenty of clean data: the champion is scored on the same
    # holdout and loses by more than the gate's minimum gain.
    noisy = write_case(tmp_path / "n1", binary_frame(300, seed=2, noise=4.0), BINARY_CONFIG)
    home2_first = train_flow(str(noisy), overrides={"registry.model_name": "cmp"})
    clean = write_case(tmp_path / "n2", binary_frame(1500, seed=2, noise=0.2), BINARY_CONFIG)
    better = train_flow(str(clean), overrides={"registry.model_name": "cmp"})
    assert better.champion_holdout is not None
    assert better.holdout["metrics"]["roc_auc"] > better.champion_holdout["metrics"]["roc_auc"]
    assert better.promoted and better.champion_before == home2_first.version
    assert reg.alias_version("cmp", CHAMPION) == better.version


def test_validation_failure_stops_before_training(home: Path, tmp_path: Path):
    frame = binary_frame(600)
    frame.loc[:4, "age"] = -5.0
    cfg = write_case(tmp_path / "v", frame, BINARY_CONFIG)
    from regrow.flows.steps import ValidationFailed

    with pytest.raises(ValidationFailed) as info:
        train_flow(str(cfg))
    assert "expect_column_values_to_be_between [age]: 5 unexpected" in str(info.value)
    reg = _registry()
    exp = reg.client.get_experiment_by_name("regrow/test-binary")
    (run,) = reg.client.search_runs([exp.experiment_id])
    assert run.info.status == "FAILED" and run.data.tags["regrow.validation"] == "failed"
    assert "validation/report.md" in reg.list_artifacts(run.info.run_id, "validation")
    assert "best_candidate" not in run.data.params  # training never ran
    assert reg.alias_version("test-binary", CHAMPION) is None
    runs = Store(Settings.from_env().database_url).training_runs("test-binary")
    assert runs[0]["status"] == "failed" and "validation failed" in runs[0]["detail"]


def test_validation_artifact_reaches_prefect(home: Path, tmp_path: Path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    frame = binary_frame(600)
    frame.loc[:2, "label"] = 9
    cfg = write_case(tmp_path / "a", frame, BINARY_CONFIG)
    with pytest.raises(Exception, match="validation failed"):
        train_flow(str(cfg))
    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=["validation-test-binary"])))
    assert any("expect_column_values_to_be_in_set" in str(a.data) for a in arts)
