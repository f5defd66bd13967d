"""`regrow deploy`: the deployments `serve` serves, on a Prefect work pool, run by a process
worker started elsewhere (a real `prefect server`, a real `prefect worker`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import BINARY_CONFIG, binary_frame, merge

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _env(server: str | None, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "REGROW_", "MLFLOW_"))}
    env.update(REGROW_HOME=str(home), PYTHONPATH=str(ROOT), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    if server:
        env["PREFECT_API_URL"] = server
    return env


def _run(args: list[str], env: dict[str, str], cwd: Path = ROOT, timeout: int = 600):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=timeout)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of two configs (models deploy-a and deploy-b) and their data."""
    root = tmp_path_factory.mktemp("deploy")
    folder = root / "configs"
    folder.mkdir()
    for i, name in enumerate(("deploy-a", "deploy-b")):
        binary_frame(600, seed=i).to_csv(root / f"{name}.csv", index=False)
        cfg = merge(BINARY_CONFIG, {"data": {"source": {"path": str(root / f"{name}.csv")}},
                                    "registry": {"model_name": name},
                                    "gate": {"bootstrap_samples": 10, "slices": []},
                                    "monitoring": {"window": {"rows": 200, "min_rows": 50}}})
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return folder


def test_deploy_refuses_without_a_server_or_a_pool(prefect_server, fleet, tmp_path):
    out = _run(["-m", "regrow.app.cli", "deploy", str(fleet), "--pool", "p"],
               _env(None, tmp_path))
    assert out.returncode == 2 and "PREFECT_API_URL is not set" in out.stderr, out.stderr
    out = _run(["-m", "regrow.app.cli", "deploy", str(fleet), "--pool", "nowhere"],
               _env(prefect_server, tmp_path))
    assert out.returncode == 2, out.stdout + out.stderr
    assert "has no work pool 'nowhere'" in out.stderr and "Traceback" not in out.stderr


def test_a_worker_elsewhere_runs_the_bound_drift_check(prefect_server, fleet, tmp_path):
    """A folder deployed on a new process pool; a worker started in another directory runs
    deploy-a's drift check against deploy-a's champion, from the config bound at deploy time."""
    import sqlalchemy as sa
    from prefect import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    env = _env(prefect_server, tmp_path / "home")
    trained = _run(["-m", "regrow.app.cli", "train", str(fleet / "deploy-a.yaml")], env)
    assert trained.returncode == 0, trained.stdout[-2000:] + trained.stderr[-2000:]
    scored = _run(["-m", "regrow.app.cli", "score", str(fleet / "deploy-a.yaml"), "--input",
                   str(fleet.parent / "deploy-a.csv")], env)
    assert scored.returncode == 0, scored.stderr[-2000:]

    out = _run(["-m", "regrow.app.cli", "deploy", str(fleet), "--pool", "fleet-pool",
                "--create-pool"], env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "on work pool 'fleet-pool'" in out.stdout
    with temporary_settings({PREFECT_API_URL: prefect_server}):
        with get_client(sync_client=True) as client:
            assert client.read_work_pool("fleet-pool").type == "process"
            deps = {name: client.read_deployment_by_name(name) for name in (
                "regrow-drift-check/drift-check-deploy-a", "regrow-drift-check/drift-check-deploy-b",
                "regrow-train-request/train-deploy-a", "regrow-score/score-deploy-b")}
            for dep in deps.values():
                assert dep.work_pool_name == "fleet-pool"
                assert dep.entrypoint.startswith("regrow.flows.serve."), dep.entrypoint
                assert dep.job_variables["env"]["REGROW_DISPATCH"] == "events"
            bound = deps["regrow-drift-check/drift-check-deploy-a"].job_variables["env"]
            assert '"model": "deploy-a"' in bound["REGROW_SERVED_CONFIGS"]
            run = client.create_flow_run_from_deployment(
                deps["regrow-drift-check/drift-check-deploy-a"].id)

    elsewhere = tmp_path / "worker-cwd"
    elsewhere.mkdir()
    worker = _run(["-m", "prefect", "worker", "start", "--pool", "fleet-pool", "--run-once"],
                  env, cwd=elsewhere)
    assert worker.returncode == 0, worker.stdout[-3000:] + worker.stderr[-3000:]
    with temporary_settings({PREFECT_API_URL: prefect_server}):
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(run.id).state
    assert state.is_completed(), (state.name, state.message)
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'home' / 'regrow.db'}")
    with engine.connect() as conn:
        checks = conn.execute(sa.text("select model, window_rows from drift_checks")).all()
    assert [c[0] for c in checks] == ["deploy-a"] and checks[0][1] > 0, checks

    # the same deployment, run by regrow's own worker: the run starts as a fork of a warm
    # process, proposes the same states and writes the same record
    with temporary_settings({PREFECT_API_URL: prefect_server}):
        with get_client(sync_client=True) as client:
            run = client.create_flow_run_from_deployment(
                deps["regrow-drift-check/drift-check-deploy-a"].id)
    warm = _run(["-m", "regrow.app.cli", "worker", "--pool", "fleet-pool", "--run-once",
                 "--limit", "1"], env, cwd=elsewhere)
    assert warm.returncode == 0, warm.stdout[-3000:] + warm.stderr[-3000:]
    assert "runs start as forks of a process that has imported the ML stack" in warm.stdout
    with temporary_settings({PREFECT_API_URL: prefect_server}):
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(run.id).state
            logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))
    assert state.is_completed(), (state.name, state.message, [g.message[-1500:] for g in logs])
    with engine.connect() as conn:
        checks = conn.execute(sa.text("select model from drift_checks")).all()
    engine.dispose()
    assert [c[0] for c in checks] == ["deploy-a", "deploy-a"], checks


def test_worker_needs_a_server(tmp_path):
    out = _run(["-m", "regrow.app.cli", "worker", "--pool", "p"], _env(None, tmp_path))
    assert out.returncode == 2 and "PREFECT_API_URL is not set" in out.stderr, out.stderr
