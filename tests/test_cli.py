"""End to end through the ``regrow`` command, in subprocesses with their own state dirs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import BINARY_CONFIG, binary_frame, merge, write_case

REGROW = [sys.executable, "-m", "regrow.app.cli"]
ROOT = Path(__file__).resolve().parent.parent


def run(args: list[str], home: Path, timeout: int = 600,
        cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "MLFLOW_", "REGROW_"))}
    env.update(REGROW_HOME=str(home), PYTHONPATH=str(ROOT))
    return subprocess.run([*REGROW, *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=cwd or ROOT)


def test_help_is_cheap(tmp_path: Path):
    out = run(["--help"], tmp_path / "h")
    assert out.returncode == 0 and "train" in out.stdout and "config" in out.stdout
    probe = subprocess.run(
        [sys.executable, "-c", "import sys, regrow.app.cli as cli; cli.build_parser(); "
         "print(sorted(m for m in ('prefect','mlflow','great_expectations','sklearn','evidently')"
         " if m in sys.modules))"], capture_output=True, text=True, cwd=ROOT)
    assert probe.stdout.strip() == "[]", "the CLI imports heavy libraries before parsing"


def test_config_schema_and_check(tmp_path: Path):
    out = run(["config", "schema"], tmp_path / "h")
    assert out.returncode == 0 and "Expectations" in json.loads(out.stdout)["$defs"]
    ok = run(["config", "check", str(ROOT / "configs" / "rainfall.yaml")], tmp_path / "h")
    assert ok.returncode == 0 and ok.stdout.startswith("OK ")
    bad = write_case(tmp_path / "bad", None, merge(BINARY_CONFIG, {"gate": {"floors": {"auc": 1}}}))
    res = run(["config", "check", str(bad)], tmp_path / "h")
    assert res.returncode == 2 and "gate.floors.auc: unknown metric 'auc'" in res.stderr


@pytest.mark.slow
def test_train_end_to_end_then_bad_data(tmp_path: Path):
    """A fresh state dir: train -> champion v1; bad data -> exit 2, clear error, v1 stays."""
    home = tmp_path / "home"
    cfg = write_case(tmp_path / "m", binary_frame(1000), BINARY_CONFIG)
    out = run(["train", str(cfg), "--json", "--reason", "e2e"], home, cwd=tmp_path / "m")
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout)
    assert summary["promoted"] and summary["champion_after"] == "1"
    assert summary["decision"]["verdict"] == "promote"
    assert (home / "mlflow.db").exists() and (home / "regrow.db").exists()
    assert any((home / "mlartifacts").rglob("MLmodel"))
    assert not (tmp_path / "m" / "mlruns").exists() and not (ROOT / "mlruns").exists()

    frame = binary_frame(1000)
    frame["label"] = 1
    write_case(tmp_path / "m", frame, BINARY_CONFIG)
    bad = run(["train", str(cfg), "--set", "gate.bootstrap_samples=10"], home)
    assert bad.returncode == 2
    assert "expect_column_unique_value_count_to_be_between [label]" in bad.stderr
    assert "Traceback" not in bad.stderr
    again = run(["train", str(cfg), "--json"], home)  # JSON mode reports the failure as JSON too
    assert again.returncode == 2 and json.loads(again.stdout)["kind"] == "ValidationFailed"

    # A first training the gate refuses leaves no champion: exit 3 and one loud sentence.
    write_case(tmp_path / "m", binary_frame(1000), BINARY_CONFIG)
    refused = run(["train", str(cfg), "--set", "gate.floors.roc_auc=0.999"], tmp_path / "home2")
    assert refused.returncode == 3, refused.stderr[-3000:]
    assert "NO CHAMPION: test-binary has no champion yet" in refused.stderr

    from regrow.tasks.registry.mlflow_registry import CHAMPION, Registry
    from regrow.tasks.store.settings import Settings

    os.environ["REGROW_HOME"], saved = str(home), os.environ["REGROW_HOME"]
    try:
        assert Registry(Settings.from_env()).alias_version("test-binary", CHAMPION) == "1"
    finally:
        os.environ["REGROW_HOME"] = saved


@pytest.mark.slow
def test_score_labels_watch_status_retrain_commands(tmp_path: Path, prefect_server: str):
    """The monitoring commands end to end (against the session's Prefect server)."""
    from tests.test_monitoring import MONITORED, shifted

    home = tmp_path / "home"
    cfg = write_case(tmp_path / "m", binary_frame(1500), MONITORED)

    def cli(*args: str) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PREFECT_", "MLFLOW_", "REGROW_"))}
        env.update(REGROW_HOME=str(home), PYTHONPATH=str(ROOT), PREFECT_API_URL=prefect_server)
        return subprocess.run([*REGROW, *args], capture_output=True, text=True, env=env,
                              timeout=600, cwd=ROOT)

    assert cli("train", str(cfg)).returncode == 0
    rows = shifted(binary_frame(800, seed=9), {"amount": 25.0, "age": 12.0})
    rows["row_id"] += 5000
    rows.drop(columns=["label"]).assign(unused=1).to_csv(tmp_path / "rows.csv", index=False)
    scored = cli("score", str(cfg), "--input", str(tmp_path / "rows.csv"))
    assert scored.returncode == 0, scored.stderr
    assert "scored 800 rows" in scored.stdout and "unused" in scored.stdout
    # the id and time columns are used (joins, event times), not ignored
    assert "row_id" not in scored.stdout and "'ts'" not in scored.stdout
    labels = rows[["row_id", "label"]]
    labels = pd.concat([labels, pd.DataFrame({"row_id": [999999], "label": [1]})])
    labels.to_csv(tmp_path / "labels.csv", index=False)
    lab = cli("labels", str(cfg), "--input", str(tmp_path / "labels.csv"))
    assert lab.returncode == 0 and "800 joined" in lab.stdout and "999999" in lab.stdout
    watch = cli("watch", str(cfg), "--no-retrain", "--json")
    assert watch.returncode == 0, watch.stderr
    check = json.loads(watch.stdout)
    assert check["assessment"]["verdict"] == "drift"
    assert {"amount", "age"} <= set(check["assessment"]["drifted_columns"])
    assert Path(check["report_path"]).is_file()
    retrain = cli("retrain", str(cfg), "--reason", "analyst saw the drift", "--json")
    assert retrain.returncode == 0, retrain.stderr
    assert json.loads(retrain.stdout)["verdict"] == "cooling_down"  # trained minutes ago
    status = json.loads(cli("status", str(cfg), "--json").stdout)
    assert status["champion"] == "1" and status["drift_checks"][0]["verdict"] == "drift"
    assert status["retrain_requests"][0]["reason"] == "analyst saw the drift"
    first = status["drift_checks"][0]
    assert {"amount", "age"} <= set(first["drifted_columns"])  # a list, not JSON text
    assert first["checked_at"].endswith("+00:00")  # times carry their zone
    text = cli("status", str(cfg)).stdout
    assert "champion v1" in text and "cooling_down" in text
    bad = cli("score", str(cfg), "--input", str(tmp_path / "labels.csv"))
    assert bad.returncode == 2 and "missing column(s) the model needs" in bad.stderr
    missing = cli("score", str(cfg), "--input", str(tmp_path / "nowhere.csv"))
    assert missing.returncode == 2 and missing.stderr.startswith("error: --input: file not found")


def test_an_estimator_override_runs_no_command(tmp_path: Path):
    """The reproduction from the governance issue: `--set` of an estimator import path to
    subprocess.Popen must be a config error (exit 2, no traceback) and run nothing."""
    cfg = write_case(tmp_path / "m", binary_frame(300), BINARY_CONFIG)
    marker = tmp_path / "pwned"
    out = run(["train", str(cfg), "--set", "candidates.estimators.0.estimator=subprocess.Popen",
               "--set", f'candidates.estimators.0.params={{"args": ["touch", "{marker}"]}}',
               "--set", "candidates.estimators.0.grid={}"], tmp_path / "h")
    assert out.returncode == 2, out.stderr
    assert "'subprocess.Popen' is neither a short name nor a class from scikit-learn" in out.stderr
    assert "Traceback" not in out.stderr and not marker.exists()
    listed = write_case(tmp_path / "l", binary_frame(300), merge(BINARY_CONFIG,
                                                                  {"modules": ["subprocess"]}))
    out = run(["train", str(listed), "--set", "candidates.estimators.0.estimator=subprocess.Popen",
               "--set", f'candidates.estimators.0.params={{"args": ["touch", "{marker}"]}}',
               "--set", "candidates.estimators.0.grid={}"], tmp_path / "h")
    assert out.returncode == 2 and "is not a scikit-learn estimator class" in out.stderr
    assert "Traceback" not in out.stderr and not marker.exists()


LIGHT_PROBE = """
import sys, atexit
heavy = ("sklearn", "evidently", "great_expectations", "prefect", "mlflow")
atexit.register(lambda: print("HEAVY=" + ",".join(sorted(m for m in heavy if m in sys.modules))))
import regrow.app.cli
try:
    regrow.app.cli.main(sys.argv[1:])
except SystemExit:
    pass
"""


@pytest.mark.parametrize(("args", "allowed"), [
    (["--help"], set()),
    (["config", "check", "{cfg}"], set()),
    (["config", "schema"], set()),
    (["config", "estimators"], set()),
    (["status", "{cfg}"], {"mlflow"}),
    (["history", "{cfg}"], {"mlflow"}),
    (["card", "{cfg}"], {"mlflow"}),
    (["reproduce", "0" * 32], {"mlflow"}),  # an unknown run: refused before Prefect starts
    (["approve", "00000000-0000-0000-0000-000000000000", "--by", "x"], {"prefect"}),
    (["ps"], set()),
    (["down"], set()),
], ids=lambda v: v[0] if isinstance(v, list) else None)
def test_light_commands_import_only_what_they_use(tmp_path: Path, args, allowed):
    cfg = write_case(tmp_path / "m", binary_frame(50), BINARY_CONFIG)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "MLFLOW_", "REGROW_"))}
    env.update(REGROW_HOME=str(tmp_path / "h"), PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", LIGHT_PROBE, *[a.format(cfg=cfg) for a in args]],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("HEAVY=")][-1]
    imported = set(filter(None, line.removeprefix("HEAVY=").split(",")))
    assert imported <= allowed, f"{args[0]} imported {imported - allowed}"


def test_command_flows_run_without_prefect_heartbeats_unless_configured(prefect_harness,
                                                                       monkeypatch):
    """A command's own flow runs send no flow-run heartbeats (their end waits up to 1 s for
    the heartbeat thread); a configured frequency and the light commands keep Prefect's."""
    from prefect import flow
    from prefect.settings import get_current_settings

    from regrow.runtime.early import flow_settings

    @flow
    def frequency() -> int | None:
        return get_current_settings().flows.heartbeat_frequency

    default = frequency()
    assert default is not None
    with flow_settings("train"):
        assert frequency() is None
    with flow_settings("status"):  # runs no flow: nothing changes
        assert frequency() == default
    with flow_settings("reproduce"):  # checks its record first, without Prefect ...
        assert frequency() == default
    with flow_settings("reproduce", checked=True):  # ... then enters them at its flow call
        assert frequency() is None
    monkeypatch.setenv("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "45")
    with flow_settings("watch"):
        assert get_current_settings().flows.heartbeat_frequency == default  # env read at start
        assert frequency() == default
