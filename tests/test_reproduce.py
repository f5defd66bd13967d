"""`regrow reproduce`: the demo's first version trained again, changed data, unknown runs.

One training of the demo's first version per module (the flow tests share it); each
reproduction is one more training.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml

from regrow.app.demo import CONFIG, write_demo_data
from regrow.app.reproduce_cli import resolve_run, run_reproduce
from regrow.configs.schema import overrides_block
from regrow.flows.reproduction import reproduce_flow
from regrow.flows.training import train_flow
from regrow.tasks.registry import reproduce as rp
from regrow.tasks.registry.mlflow_registry import CHALLENGER, CHAMPION, Registry
from regrow.tasks.store.database import Store
from regrow.tasks.store.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
MODEL = yaml.safe_load(CONFIG.read_text())["registry"]["model_name"]


@pytest.fixture(scope="module")
def first(prefect_harness, tmp_path_factory: pytest.TempPathFactory):
    """The demo's first version, trained as `regrow demo` does (early period through an
    override of data.source.path), in a fresh REGROW_HOME kept for the module."""
    home = tmp_path_factory.mktemp("reproduce") / "regrow-home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REGROW_HOME", str(home))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("REGROW_DATABASE_URL", raising=False)
        files = write_demo_data(Settings.from_env().home)
        outcome = train_flow(str(CONFIG), overrides={"data.source.path": str(files["early"])},
                             trigger="demo", reason="demo: early period", actor="demo")
        assert outcome.version == "1" and outcome.promoted
        yield SimpleNamespace(home=home, outcome=outcome, early=files["early"])


def _state() -> dict:
    settings = Settings.from_env()
    reg, store = Registry(settings), Store(settings.database_url)
    return {"aliases": {a: reg.alias_version(MODEL, a) for a in (CHAMPION, CHALLENGER)},
            "version2": reg.find_version(MODEL, "2"),
            "alias_history": [h["id"] for h in store.alias_history(MODEL)],
            "trainings": [t["id"] for t in store.training_runs(MODEL)]}


def test_reproduces_the_demo_first_version(first, capsys: pytest.CaptureFixture):
    before = _state()
    assert rp.plan(Registry(Settings.from_env()), first.outcome.run_id).notes == []
    assert rp.recover(Registry(Settings.from_env()), first.outcome.run_id).overrides == {
        "data.source.path": str(first.early)}
    assert run_reproduce(str(CONFIG), "1", allow_data_change=False, tolerance=1e-9,
                         as_json=True) == 0
    out = json.loads(capsys.readouterr().out)
    c = out["comparison"]
    assert out["reproduced"] and c["verdict"] == "reproduced" and out["reproduces"] == first.outcome.run_id
    assert c["metric"] == "roc_auc" and c["original"] == first.outcome.holdout["metrics"]["roc_auc"]
    assert abs(c["difference"]) <= 1e-9 and c["tolerance"] == 1e-9
    assert not out["data_changed"] and out["fingerprint_now"] == out["fingerprint_recorded"]
    assert out["overrides"] == {"data.source.path": str(first.early)} and out["seed"] == 7

    run = Registry(Settings.from_env()).run_info(out["run_id"])
    original = Registry(Settings.from_env()).run_info(first.outcome.run_id)
    assert run["status"] == "FINISHED" and run["experiment_id"] == original["experiment_id"]
    tags = run["tags"]
    assert tags["regrow.reproduces"] == first.outcome.run_id and tags["regrow.trigger"] == "reproduce"
    assert tags["regrow.reproduce.verdict"] == "reproduced"
    assert tags["regrow.config_sha256"] == original["tags"]["regrow.config_sha256"]
    assert not any(k.startswith("champion_holdout_") for k in run["metrics"])  # no gate side
    assert _state() == before  # no version 2, aliases and their history unchanged, no training row


def test_changed_data_is_refused_then_allowed(first, capsys: pytest.CaptureFixture):
    kept = first.early.read_bytes()
    pd.read_csv(first.early).iloc[:-300].to_csv(first.early, index=False)  # last 300 days gone
    try:
        with pytest.raises(rp.DataChanged) as refused:
            reproduce_flow(first.outcome.run_id)
        code = run_reproduce(first.outcome.run_id, None, allow_data_change=True, tolerance=1e-9,
                             as_json=False)
    finally:
        first.early.write_bytes(kept)
    text = capsys.readouterr().out
    assert code == 1 and "NOT REPRODUCED" in text and "CHANGED (allowed)" in text
    recorded = Registry(Settings.from_env()).run_info(first.outcome.run_id)["tags"][
        "regrow.data.fingerprint"]
    assert refused.value.recorded == recorded and refused.value.current != recorded
    assert recorded in str(refused.value) and refused.value.current in str(refused.value)
    assert f"now {refused.value.current}" in text
    original = first.outcome.holdout["metrics"]["roc_auc"]
    assert f"original {original:.12g}" in text and "difference " in text
    assert "difference 0 " not in text


def _cli(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "MLFLOW_", "REGROW_"))}
    env.update(REGROW_HOME=str(home), PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "regrow.app.cli", "reproduce", *args],
                          capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)


def test_unknown_run_or_version_is_a_clear_error(first):
    unknown = _cli("0" * 32, "--json", home=first.home)
    assert unknown.returncode == 2, unknown.stderr[-2000:]
    assert f"no MLflow run {'0' * 32!r}" in unknown.stderr and "Traceback" not in unknown.stderr
    assert json.loads(unknown.stdout)["kind"] == "ReproduceError"
    version = _cli(str(CONFIG), "--version", "99", home=first.home)
    assert version.returncode == 2 and "has no version '99'" in version.stderr
    assert "Traceback" not in version.stderr


def test_recorded_overrides_are_split_from_the_legacy_text():
    base = "registry:\n  model_name: m\n# overrides are listed below\n"
    overrides = {"split.cutoff": dt.date(2024, 6, 1), "data.source.path": "x.csv"}
    text = base + overrides_block(overrides)
    assert rp.split_recorded_text(text) == (base, overrides)  # the date stays a date
    assert rp.split_recorded_text(text, {"split.cutoff": "2024-06-01",
                                         "data.source.path": "x.csv"}) == (base, overrides)
    assert rp.split_recorded_text(base) == (base, {})
    foreign = base + "\n# overrides\noverrides: {a: 1}  # hand-written\n"
    assert rp.split_recorded_text(foreign) == (foreign, {})  # not the block regrow writes
    with pytest.raises(rp.ReproduceError, match="disagree"):
        rp.split_recorded_text(base, {"a.b": 1})


def test_masked_credentials_are_put_back_from_the_config_file(tmp_path: Path):
    """The logged config has URL passwords masked; a reproduction reads them back from the
    config file when it holds the same URL (a rotated password: the file's, and the hash
    differs), and says so when it does not."""
    from tests.helpers import BINARY_CONFIG, merge

    text = yaml.safe_dump(merge(BINARY_CONFIG, {
        "description": "mirror of postgresql://u:pw-123@db/sales"}), sort_keys=False)
    path = tmp_path / "model.yaml"
    path.write_text(text)
    loaded = rp.config_from_text(text, path)
    run = rp.RecordedRun("r1", "0", "FINISHED", str(path), loaded.recorded_text, {},
                         loaded.sha256, "1", None)
    back, notes = rp.recorded_config(run)
    assert back.text == text and back.sha256 == loaded.sha256 and notes == []
    path.write_text(text.replace("pw-123", "rotated"))
    rotated, notes = rp.recorded_config(run)
    assert "u:rotated@db" in rotated.text and any("hashes to" in n for n in notes)
    path.write_text(text.replace("postgresql://u:pw-123@db/sales", "nothing"))
    gone, notes = rp.recorded_config(run)
    assert "u:***@db" in gone.text and any("credentials masked" in n for n in notes)


def test_comparison_and_tolerance():
    assert rp.compare("rmse", 1.0, 1.0 + 5e-10).ok
    far = rp.compare("rmse", 1.0, 1.1, tolerance=0.05)
    assert not far.ok and far.difference == pytest.approx(0.1)
    assert not rp.compare("rmse", 1.0, None).ok
    with pytest.raises(rp.ReproduceError, match="tolerance"):
        rp.check_tolerance(-1.0)


def test_a_config_needs_a_version():
    with pytest.raises(rp.ReproduceError, match="add --version N"):
        resolve_run(str(CONFIG), None)
