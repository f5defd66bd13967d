"""Crashes leave true records: a training whose process is gone reads ``crashed`` at once and
frees its model on the same host (its lease names its pid: `tasks.store.liveness`); a retrain
request is answered before any Prefect server starts; a training killed after it moved the
champion reads "promoted, then crashed" and does not count toward the circuit breaker; a
version whose training died after registering it (MLflow gone) is reconciled by the next run
as an orphan, never promoted, and its MLflow run ends FAILED.

`regrow` runs in subprocesses against the session's Prefect server; ``REGROW_TEST_PAUSE_AT``
(flows/steps.py) holds a run at a named point to kill it there. The lease is 30 s, long on
purpose: on the same host nothing waits for it. Each case is recorded in the fault ledger
(`tests.faultlog`), with the seconds a dead training blocked its model.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.faultlog import record, tracebacks
from tests.helpers import BINARY_CONFIG, binary_frame, merge, write_case
from tests.procs import free_port, kill9, stop, wait_http, wait_paused

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

REGROW = [sys.executable, "-m", "regrow.app.cli"]
ROOT = Path(__file__).resolve().parent.parent
MODEL = "crashes"
LEASE = 30  # seconds: far above the 5 s a dead training may block its model on one host
CONFIG = merge(BINARY_CONFIG, {
    "registry": {"model_name": MODEL},
    # cooldown and budget are not under test; the breaker is read directly (rejection_streak)
    "retrain": {"cooldown": "1s", "max_trainings": 100, "circuit_breaker_after": 100},
    # champion moves under faults are under test, not whether a retrain gains: a retrain of
    # the same world passes on the comparison alone
    "gate": {"require_improvement": False}})


def env_for(home: Path, api_url: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "MLFLOW_", "REGROW_"))}
    env.update(REGROW_HOME=str(home), PYTHONPATH=str(ROOT), REGROW_LEASE_SECONDS=str(LEASE),
               REGROW_WARM="off", PREFECT_SERVER_ANALYTICS_ENABLED="false")
    if api_url:
        env["PREFECT_API_URL"] = api_url
    env.update(extra)
    return env


def regrow(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([*REGROW, *args], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([*REGROW, *args], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=900)


def open_stores(home: Path, tracking_uri: str | None = None):
    from regrow.tasks.registry.mlflow_registry import Registry
    from regrow.tasks.store.database import Store
    from regrow.tasks.store.settings import Settings

    saved = {k: os.environ.get(k) for k in ("REGROW_HOME", "MLFLOW_TRACKING_URI")}
    os.environ["REGROW_HOME"] = str(home)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        s = Settings.from_env()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return Registry(s), Store(s.database_url)


def champion(home: Path) -> str | None:
    return open_stores(home)[0].alias_version(MODEL, "champion")


def aliases_agree(home: Path) -> bool:
    """MLflow's aliases are where the newest alias_history row of each alias says."""
    reg, store = open_stores(home)
    for alias in ("champion", "challenger"):
        rows = store.alias_history(MODEL, alias)
        if reg.alias_version(MODEL, alias) != (rows[-1]["new_version"] if rows else None):
            return False
    return True


def newest_training(home: Path) -> dict:
    return open_stores(home)[1].training_runs(MODEL, 1)[0]


@pytest.fixture(scope="module")
def case(tmp_path_factory, prefect_server) -> tuple[Path, Path, str]:
    """(config, state dir, Prefect API) with champion v1 trained once for the module, and
    ``fresh.csv``: new rows of the same process (a training on them promotes)."""
    folder = tmp_path_factory.mktemp("crashes")
    cfg = write_case(folder / "case", binary_frame(), CONFIG)
    binary_frame(seed=7).to_csv(folder / "fresh.csv", index=False)
    home = folder / "home"
    out = run(["train", str(cfg)], env_for(home, prefect_server))
    assert out.returncode == 0, out.stderr
    return cfg, home, prefect_server


def fresh(cfg: Path) -> list[str]:
    return ["--set", f"data.source.path={cfg.parent.parent / 'fresh.csv'}"]


def test_a_dead_training_reads_crashed_at_once(case):
    """`status` right after kill -9 shows the training crashed -- a read that writes nothing:
    the record itself is closed by the next request or training."""
    cfg, home, api = case
    proc = regrow(["train", str(cfg), "--reason", "killed at ingest"],
                  env_for(home, api, REGROW_TEST_PAUSE_AT="ingest"))
    wait_paused(home, "ingest", proc)
    t0 = kill9(proc)
    out = run(["status", str(cfg), "--json"], env_for(home, api))
    seen = time.monotonic() - t0
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)["trainings"][0]
    record("kill -9 at ingest: status", "fault", tracebacks=tracebacks(out.stdout, out.stderr),
           bad_history=int(shown["status"] != "crashed"))
    assert shown["status"] == "crashed", shown
    assert "no heartbeat since" in shown["detail"] and "pid is gone" in shown["detail"]
    assert newest_training(home)["status"] == "running"  # status wrote nothing
    text = run(["status", str(cfg)], env_for(home, api)).stdout
    assert "crashed" in text, text
    print(f"\nFIGURE status shows a kill -9'd training crashed: {seen:.1f} s after the kill")


def test_a_dead_training_frees_its_model_at_once(case):
    """While the training lives, a retrain request is answered (coalesced) without any Prefect
    server; once it is killed, the next request is admitted at once, not after the lease."""
    from regrow.configs.schema import load_config
    from regrow.tasks.policy import retrain as policy

    cfg, home, api = case
    proc = regrow(["train", str(cfg), "--reason", "killed while training"],
                  env_for(home, api, REGROW_TEST_PAUSE_AT="train"))
    wait_paused(home, "train", proc)
    # no PREFECT_API_URL: a request that trains would start a temporary server; this one waits
    t = time.monotonic()
    waiting = run(["retrain", str(cfg), "--reason", "while one trains"], env_for(home, None))
    answered = time.monotonic() - t
    assert waiting.returncode == 0 and "COALESCED" in waiting.stdout, waiting.stdout
    assert "[prefect]" not in waiting.stderr and tracebacks(waiting.stderr) == 0, waiting.stderr
    print(f"\nFIGURE a waiting retrain request answered, no Prefect server: {answered:.1f} s")
    t0 = kill9(proc)
    rules = load_config(cfg).config.retrain
    store = open_stores(home)[1]
    while True:
        answer = policy.request_retrain(store, MODEL, rules, kind="manual", reason="probe")
        if answer.admitted:
            blocked = time.monotonic() - t0
            policy.mark_request(store, answer.request_id, "failed")  # a probe, not a training
            break
        assert answer.verdict == policy.COALESCED, answer
        assert time.monotonic() - t0 < LEASE + 10, "the dead training blocks its model"
        time.sleep(0.2)
    row = newest_training(home)
    record("kill -9 while training: next request", "fault", blocked_seconds=blocked,
           bad_history=int(row["status"] != "crashed"))
    print(f"\nFIGURE kill -9 while training: next request admitted after {blocked:.1f} s "
          f"(lease {LEASE} s)")
    assert blocked < 5, blocked
    assert row["status"] == "crashed" and "pid is gone from this host" in row["detail"], row


@pytest.mark.slow
def test_a_crash_after_the_alias_move_is_promoted_then_crashed(case):
    """Killed after champion moved: the record says so (verdict and version were noted before
    the move), the champion is the gated version, and the breaker does not count it; killed
    just before the move: crashed, champion unchanged, counted."""
    from regrow.tasks.policy.lease import reap
    from regrow.tasks.policy.retrain import rejection_streak

    cfg, home, api = case
    reg, store = open_stores(home)
    streak = rejection_streak(store, MODEL)
    before = champion(home)
    proc = regrow(["train", str(cfg), "--reason", "killed before the move", *fresh(cfg)],
                  env_for(home, api, REGROW_TEST_PAUSE_AT="alias"))
    wait_paused(home, "alias", proc)
    noted = newest_training(home)
    assert noted["status"] == "running" and noted["verdict"] == "promote" and noted["version"]
    kill9(proc)
    unmoved = champion(home) == before
    out = run(["status", str(cfg), "--json"], env_for(home, api))
    early = json.loads(out.stdout)["trainings"][0]
    assert early["status"] == "crashed" and early["version"] == noted["version"], early
    assert unmoved and aliases_agree(home)
    assert rejection_streak(store, MODEL) == streak  # a read has recorded nothing yet
    reap(store, MODEL)  # what the next request or training does first
    assert rejection_streak(store, MODEL) == streak + 1  # it promoted nothing: it counts

    proc = regrow(["train", str(cfg), "--reason", "killed after the move", *fresh(cfg)],
                  env_for(home, api, REGROW_TEST_PAUSE_AT="promoted"))
    wait_paused(home, "promoted", proc)
    row = newest_training(home)
    kill9(proc)
    moved_to = champion(home)
    out = run(["status", str(cfg), "--json"], env_for(home, api))
    shown = json.loads(out.stdout)["trainings"][0]
    text = run(["status", str(cfg)], env_for(home, api)).stdout
    # the next request records it, and its training closes the dead runs (the retrain of the
    # champion's own data and config is skipped after ingest)
    closed = run(["retrain", str(cfg), "--reason", "after two crashes", *fresh(cfg)],
                 env_for(home, api))
    assert closed.returncode == 0, closed.stdout + closed.stderr
    runs = {r["id"]: r for r in store.training_runs(MODEL, 10)}
    wrong = int(moved_to != row["version"]) + int(not aliases_agree(home))
    bad = int(runs[row["id"]]["status"] != "promoted_then_crashed") \
        + int(runs[noted["id"]]["status"] != "crashed")
    record("kill -9 after the alias move", "fault", wrong_moves=wrong, bad_history=bad,
           tracebacks=tracebacks(out.stdout, out.stderr, closed.stdout, closed.stderr))
    assert moved_to == row["version"] and row["verdict"] == "promote"
    assert shown["status"] == "promoted_then_crashed", shown
    assert "promoted, then crashed" in text, text
    assert runs[row["id"]]["status"] == "promoted_then_crashed"
    assert runs[row["id"]]["detail"].startswith(f"promoted v{row['version']}, then crashed")
    assert runs[noted["id"]]["status"] == "crashed"
    assert "SKIPPED" in closed.stdout.upper(), closed.stdout
    assert rejection_streak(store, MODEL) == 0  # it promoted: the streak of failures ends
    for r in (row, noted):  # the retrain closed both MLflow runs, FAILED, with the reason
        info = reg.run_info(r["run_id"])
        assert info["status"] == "FAILED", info["status"]
        assert info["tags"]["regrow.status"] == runs[r["id"]]["status"]
    assert aliases_agree(home) and wrong == 0 and bad == 0


@pytest.fixture
def mlflow_server(case, tmp_path: Path):
    """An MLflow tracking server on the module's own store; (URL, process)."""
    _, home, _ = case
    port = free_port()
    log = tmp_path / "mlflow.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                                 f"sqlite:///{home / 'mlflow.db'}", "--default-artifact-root",
                                 (home / "mlartifacts").as_uri(), "--no-serve-artifacts",
                                 "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health", 180, proc=proc, log=log)
        yield url, proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        stop(proc)


@pytest.mark.slow
def test_mlflow_gone_after_register_leaves_an_orphan_reconciled(case, mlflow_server):
    """MLflow dies right after the version is registered: the command fails in one sentence,
    the record names the version; the next run tags it an orphan (status lists it, promote
    refuses it) and ends the dead run's MLflow run FAILED."""
    cfg, home, api = case
    url, server = mlflow_server
    before = champion(home)
    proc = regrow(["train", str(cfg), "--reason", "MLflow dies", *fresh(cfg)],
                  env_for(home, api, MLFLOW_TRACKING_URI=url, MLFLOW_HTTP_REQUEST_MAX_RETRIES="1",
                          REGROW_TEST_PAUSE_AT="registered", REGROW_TEST_PAUSE_SECONDS="4"))
    wait_paused(home, "registered", proc)
    os.killpg(server.pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 1 and tracebacks(out, err) == 0, err
    assert "error: training failed, champion unchanged: " in err and "MLflow" in err \
        and url in err, err
    failed = newest_training(home)
    assert failed["status"] == "failed" and failed["version"], failed
    orphan = failed["version"]
    reg, _ = open_stores(home)
    assert reg.run_info(failed["run_id"])["status"] == "RUNNING"  # nobody could close it
    # the next run reconciles when it starts (then it is killed: no training needed here)
    nxt = regrow(["train", str(cfg), "--reason", "after MLflow came back"],
                 env_for(home, api, REGROW_TEST_PAUSE_AT="ingest"))
    wait_paused(home, "ingest", nxt)
    kill9(nxt)
    tags = reg.version_info(MODEL, orphan).tags
    info = reg.run_info(failed["run_id"])
    status = run(["status", str(cfg), "--json"], env_for(home, api))
    listed = [o["version"] for o in json.loads(status.stdout)["orphans"]]
    refused = run(["promote", str(cfg), "--version", orphan, "--by", "ops", "--reason", "try"],
                  env_for(home, api))
    record("MLflow gone after register: orphan", "fault",
           tracebacks=tracebacks(out, err, status.stderr, refused.stderr),
           wrong_moves=int(champion(home) != before),
           bad_history=int(tags.get("regrow.orphan") != "true")
           + int(info["status"] != "FAILED") + int(orphan not in listed))
    assert tags.get("regrow.orphan") == "true" and "ended failed" in tags["regrow.orphan_reason"]
    assert info["status"] == "FAILED" and info["tags"]["regrow.status"] == "failed"
    assert orphan in listed
    assert f"ORPHAN: v{orphan}" in run(["status", str(cfg)], env_for(home, api)).stdout
    assert refused.returncode == 2 and "orphan" in refused.stderr, refused.stderr
    assert champion(home) == before and aliases_agree(home)
