"""What the Prefect and MLflow pages say about each run: run names, tags and end states read
back from a real Prefect test server, the gate artifact, the version description, the dataset
input, drift checks under the monitoring experiment, the console step lines, `regrow prune`."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from regrow.tasks.registry.mlflow_registry import CHAMPION, Registry, monitoring_experiment
from regrow.tasks.store.settings import Settings
from tests.helpers import BINARY_CONFIG, binary_frame, merge, write_case

MODEL = "pages-binary"
CONFIG = merge(BINARY_CONFIG, {
    "registry": {"model_name": MODEL},
    "monitoring": {"window": {"rows": 500, "min_rows": 200}},
    "retrain": {"cooldown": "1s", "max_trainings": 50},
})
ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Story:
    """One model's runs: a promotion, a skipped retrain, a rejection, a refused retrain and a
    drift check, all in one module-wide state dir."""

    home: Path
    config: Path
    first: object
    skipped: object
    rejected: object
    refused: object
    check: object
    console: str


@pytest.fixture(scope="module")
def story(prefect_harness, tmp_path_factory: pytest.TempPathFactory) -> Story:
    from regrow.flows.monitoring import RetrainOutcome, drift_check_flow, retrain_flow, score_flow
    from regrow.flows.training import TrainingOutcome, train_flow

    base = tmp_path_factory.mktemp("pages")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REGROW_HOME", str(base / "home"))
        for var in ("MLFLOW_TRACKING_URI", "REGROW_DATABASE_URL"):
            mp.delenv(var, raising=False)
        cfg = write_case(base / "m", binary_frame(1200), CONFIG)
        binary_frame(1200, shuffle_labels=True).to_csv(base / "m" / "shuffled.csv", index=False)
        from regrow.flows import progress
        mp.setattr(progress, "_console_on", True)
        console = io.StringIO()
        with contextlib.redirect_stderr(console):
            first = train_flow(str(cfg), reason="first model")
        mp.setattr(progress, "_console_on", False)
        time.sleep(1.1)  # past the 1 s cooldown: the next request is admitted
        skipped = retrain_flow(str(cfg), "same data again")
        rejected = train_flow(str(cfg), overrides={"data.source.path": "shuffled.csv"},
                              reason="shuffled labels")
        refused = retrain_flow(str(cfg), "too soon", overrides={"retrain.cooldown": "1h"})
        rows = binary_frame(400, seed=4, start="2025-01-01").drop(columns=["label"])
        rows["row_id"] += 10_000
        rows.to_parquet(base / "rows.parquet")
        score_flow(str(cfg), str(base / "rows.parquet"))
        check = drift_check_flow(str(cfg), retrain=False)
        # Every caller still receives the typed outcome, whatever the run's state is named.
        assert isinstance(first, TrainingOutcome) and first.promoted
        assert isinstance(skipped, RetrainOutcome) and skipped.training.skipped
        assert isinstance(rejected, TrainingOutcome) and rejected.decision["verdict"] == "reject"
        assert isinstance(refused, RetrainOutcome) and refused.verdict == "cooling_down"
        yield Story(base / "home", cfg, first, skipped, rejected, refused, check,
                    console.getvalue())


@pytest.fixture
def registry(story: Story, monkeypatch: pytest.MonkeyPatch) -> Registry:
    monkeypatch.setenv("REGROW_HOME", str(story.home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("REGROW_DATABASE_URL", raising=False)
    return Registry(Settings.from_env())


def _flow_runs() -> list:
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(flow_run_filter=FlowRunFilter(
            tags=FlowRunFilterTags(all_=[f"model:{MODEL}"])))


def _artifact(key: str) -> str:
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[key])))
    assert arts, f"no artifact {key}"
    return str(max(arts, key=lambda a: a.created).data)


def test_runs_named_tagged_and_ended_for_what_they_did(story: Story):
    runs = _flow_runs()
    states: dict[str, list[str]] = {}
    for run in runs:
        states.setdefault(run.name, []).append(run.state.name)
    # Two direct trainings and the retrain's training subflow; two retrain requests.
    assert sorted(states[f"train-{MODEL}-manual"]) == ["Completed", "Rejected", "Skipped"]
    assert sorted(states[f"retrain-{MODEL}-manual"]) == ["Refused", "Skipped"]
    assert states[f"score-{MODEL}"] == ["Completed"]
    assert states[f"drift-check-{MODEL}"] == ["Completed"]
    for run in runs:
        assert f"model:{MODEL}" in run.tags
        assert any(t.startswith("trigger:") for t in run.tags), run.tags
        if run.name.startswith(("train-", "retrain-")):
            assert "trigger:manual" in run.tags
        assert run.state.is_completed()  # a named Completed state: nothing failed
    refused = next(r for r in runs if r.state.name == "Refused")
    assert "cooling_down" in refused.state.message


def test_gate_artifact_reads_as_text(story: Story):
    md = _artifact(f"gate-{MODEL}")
    assert "**verdict: reject**" in md and "Trigger: **manual** by cli -- shuffled labels" in md
    assert "at least" in md and "| floor | roc_auc |" in md
    assert not [ln for ln in md.splitlines() if ln.lstrip().startswith((">", "<"))]
    numbers = re.findall(r"\d+\.\d+", md.split("MLflow run")[0])
    assert numbers and all(len(n.split(".")[1]) <= 4 for n in numbers), numbers


def test_version_description_carries_trigger_and_gate(story: Story, registry: Registry):
    first = registry.version_info(MODEL, "1").description
    assert first.splitlines()[0] == "all rules passed"
    assert "Trigger: **manual** by cli -- first model" in first
    assert "| rule | metric | measured | threshold | result | detail |" in first
    assert "| floor | roc_auc |" in first and "at least 0.6000" in first
    rejected = registry.version_info(MODEL, story.rejected.version).description
    assert "**verdict: reject**" in rejected and "shuffled labels" in rejected


def test_training_data_is_a_dataset_input_and_runs_are_named(story: Story, registry: Registry):
    run = registry.client.get_run(story.first.run_id)
    assert run.info.run_name == f"train-{MODEL}-manual"
    (inp,) = run.inputs.dataset_inputs
    fingerprint = story.first.data["fingerprint"]
    assert inp.dataset.digest == fingerprint[:36] and inp.dataset.name == f"{MODEL}-data.csv"
    assert json.loads(inp.dataset.source)["uri"].endswith("/m/data.csv")
    profile = json.loads(inp.dataset.profile)
    assert profile["fingerprint"] == fingerprint and profile["rows"] == 1200
    assert profile["time_min"].startswith("2024-01-01")
    tags = {t.key: t.value for t in inp.tags}
    assert tags["mlflow.data.context"] == "training" and tags["regrow.rows"] == "1200"
    assert "amount" in inp.dataset.schema


def test_drift_checks_go_to_the_monitoring_experiment(story: Story, registry: Registry):
    exp = registry.client.get_experiment_by_name(monitoring_experiment(MODEL))
    assert exp is not None
    (run,) = registry.client.search_runs([exp.experiment_id])
    tags = run.data.tags
    assert run.info.run_name == f"drift-check-{story.check.check_id}"
    assert tags["regrow.model"] == MODEL and tags["regrow.version"] == "1"
    assert tags["regrow.check_id"] == str(story.check.check_id)
    assert tags["regrow.champion_run_id"] == story.first.run_id
    assert tags["regrow.drift.report_path"] == story.check.report_path
    assert run.data.metrics["window_rows"] == 400
    # The champion's training run no longer collects reports; the report is written once.
    champion_run = registry.version_info(MODEL, registry.alias_version(MODEL, CHAMPION)).run_id
    assert not registry.list_artifacts(champion_run, "drift")
    assert [Path(p).name for p in registry.list_artifacts(run.info.run_id, "drift")] == ["summary.md"]
    assert Path(story.check.report_path).is_file()
    md = _artifact(f"drift-check-{MODEL}")
    assert Path(story.check.report_path).as_uri() in md and run.info.run_id in md


def test_console_lines_tell_the_progress(story: Story):
    lines = story.console.splitlines()
    steps = [ln.split("]")[0] + "]" for ln in lines]
    for step in ("[start]", "[ingest]", "[validate]", "[split]", "[train]", "[evaluate]",
                 "[gate]", "[register]", "[promote]"):
        assert step in steps, f"{step} missing from:\n{story.console}"
    assert "[train] fitting 2 candidates on 900 rows ..." in lines
    assert any(re.fullmatch(r"\[train\] \d+\.\d s: best \w+, roc_auc 0\.\d{4} \(cv\); \w+ 0\.\d{4}",
                            ln) for ln in lines), story.console
    assert any(re.fullmatch(r"\[ingest\] \d+\.\d s: 1,200 rows, fingerprint [0-9a-f]{12}, "
                            r"2024-01-01 00:00:00 \.\. .*", ln) for ln in lines), story.console
    assert "[promote] champion none -> v1" in lines
    assert "\033[" not in story.console  # not a terminal: plain text


def test_progress_is_off_with_json_or_verbose(monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture, tmp_path: Path):
    from regrow.flows import progress
    monkeypatch.setattr(progress, "_console_on", None)
    monkeypatch.delenv(progress.ENV, raising=False)
    assert not progress.enabled()  # flows called from Python print nothing extra
    progress.from_cli("train", as_json=True, verbose=False)
    assert not progress.enabled()
    progress.say("train", "hidden")
    progress.from_cli("train", as_json=False, verbose=True)
    assert not progress.enabled()
    progress.from_cli("demo", as_json=False, verbose=False)
    assert not progress.enabled()
    monkeypatch.setenv(progress.ENV, "0")
    progress.from_cli("train", as_json=False, verbose=False)
    assert not progress.enabled()
    monkeypatch.delenv(progress.ENV)
    progress.from_cli("train", as_json=False, verbose=False,
                      runnable=progress.valid_config("no-such.yaml", None))
    assert progress.enabled() and progress.ENV not in os.environ  # the environment is untouched
    assert capsys.readouterr().err == ""  # a bad config: its error will be the only line
    cfg = write_case(tmp_path / "m", None, CONFIG)
    progress.from_cli("train", as_json=False, verbose=False,
                      runnable=progress.valid_config(str(cfg), None))
    progress.say("train", "shown")
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err.startswith("[prefect] starting the run on ") and out.err.endswith(
        " ...\n[train] shown\n")


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "MLFLOW_", "REGROW_"))}
    env.update(REGROW_HOME=str(home), PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "regrow.app.cli", *args], capture_output=True,
                          text=True, env=env, timeout=300, cwd=ROOT)


def test_prune_removes_old_reports_and_dry_run_removes_none(tmp_path: Path):
    home = tmp_path / "home"
    cfg = write_case(tmp_path / "m", None, CONFIG)
    folder = home / "reports" / MODEL
    (folder / "backtest").mkdir(parents=True)
    now = time.time()
    ages = {"drift-old.html": 40, "drift-older.html": 90, "backtest/old.json": 45,
            "drift-new.html": 2}
    for name, days in ages.items():
        path = folder / name
        path.write_bytes(b"x" * 500_000)
        os.utime(path, (now - days * 86400, now - days * 86400))
    other = home / "reports" / "another-model" / "drift-old.html"
    other.parent.mkdir(parents=True)
    other.write_text("kept")
    os.utime(other, (now - 99 * 86400, now - 99 * 86400))

    dry = _cli(home, "prune", str(cfg), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would remove 3 report file(s), 1.5 MB" in dry.stdout
    assert all((folder / n).exists() for n in ages)

    short = _cli(home, "prune", str(cfg), "--older-than", "60d", "--json")
    assert short.returncode == 0, short.stderr
    result = json.loads(short.stdout)
    assert [Path(f).name for f in result["files"]] == ["drift-older.html"]
    assert result["megabytes"] == 0.5 and result["kept"] == 3

    done = _cli(home, "prune", str(cfg))  # default: monitoring.keep_reports_days (30)
    assert done.returncode == 0 and "removed 2 report file(s), 1.0 MB" in done.stdout
    assert sorted(p.name for p in folder.rglob("*")) == ["drift-new.html"]
    assert other.exists()  # another model's reports are not this config's

    bad = _cli(home, "prune", str(cfg), "--older-than", "soon")
    assert bad.returncode == 2 and bad.stderr.startswith("error: --older-than:")
    assert "Traceback" not in bad.stderr
