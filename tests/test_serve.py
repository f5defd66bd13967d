"""Served deployments on a real `prefect server`: UI-style runs, event-triggered training,
cron schedules, manual promotion (approve / reject / timeout)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import BINARY_CONFIG, binary_frame, merge, write_case
from tests.procs import free_port, start_prefect_server, stop, wait_for, wait_http

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow

MODELS = {
    "srv-auto": {"monitoring": {"schedule": "* * * * *"}, "retrain": {"cooldown": "1s", "max_trainings": 50}},
    "srv-manual": {"promotion": {"mode": "manual", "timeout": "10m"}, "retrain": {"cooldown": "1s"}},
    "srv-timeout": {"promotion": {"mode": "manual", "timeout": "4s"}},
}


def _env(server: str, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "REGROW_"))}
    env.update(PREFECT_API_URL=server, REGROW_HOME=str(home), PYTHONPATH=str(ROOT),
               PREFECT_RUNNER_POLL_FREQUENCY="1", PREFECT_SERVER_ANALYTICS_ENABLED="false")
    return env


@pytest.fixture(scope="module")
def served(prefect_server: str, tmp_path_factory: pytest.TempPathFactory):
    """`regrow serve` for three models, against the test session's Prefect server."""
    base = tmp_path_factory.mktemp("served")
    home = base / "home"
    configs = {}
    for name, patch in MODELS.items():
        # every training here draws from the same world: the served flows are tested, not the
        # paired-improvement rule (which would keep the first champion: no_gain)
        cfg = merge(merge(BINARY_CONFIG, {"registry": {"model_name": name},
                                          "gate": {"require_improvement": False}}), patch)
        configs[name] = write_case(base / name, binary_frame(900, seed=3), cfg)
    # The MLflow store is created (and migrated) here, once: the first training and the first
    # cron drift check would otherwise both migrate the fresh SQLite file at the same time.
    _registry(home).alias_version(next(iter(MODELS)), "champion")
    log = open(base / "serve.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "regrow.app.cli", "-v", "serve",
                             *map(str, configs.values())],
                            env=_env(prefect_server, home), stdout=log, stderr=subprocess.STDOUT,
                            cwd=ROOT)
    try:
        with _api(prefect_server):
            wait_for(lambda: _deployment("srv-timeout", "train") is not None, 120,
                     lambda: "deployments never appeared; serve log:\n"
                     + (base / "serve.log").read_text(), interval=1)
        yield {"server": prefect_server, "home": home, "configs": configs, "log": base / "serve.log",
               "pid": proc.pid}
    finally:
        stop(proc)
        log.close()


def _fresh_rows(served, model: str, seed: int) -> str:
    """A new data file for `model`: a retrain of unchanged data and config is skipped by design,
    so a test that wants a training gives it new rows."""
    path = Path(served["configs"][model]).parent / f"rows-{seed}.csv"
    binary_frame(900, seed=seed).to_csv(path, index=False)
    return str(path)


def _api(url: str):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    return temporary_settings({PREFECT_API_URL: url})


def _deployment(model: str, kind: str):
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    flow = {"train": "regrow-train-request", "drift-check": "regrow-drift-check",
            "score": "regrow-score", "data-arrived": "regrow-data-arrived"}[kind]
    with get_client(sync_client=True) as c:
        try:
            return c.read_deployment_by_name(f"{flow}/{kind}-{model}")
        except ObjectNotFound:
            return None


def _run(model: str, parameters: dict):
    from prefect.deployments import run_deployment

    return run_deployment(name=f"regrow-train-request/train-{model}", parameters=parameters,
                          timeout=0)


def _state(run_id):
    from prefect import get_client

    with get_client(sync_client=True) as c:
        return c.read_flow_run(run_id).state


def _paused(run_id, timeout: float = 240):
    """Wait until the run's training subflow pauses for a decision; returns the paused run id."""
    from regrow.flows.approval import paused_run

    def check():
        state = _state(run_id)
        assert not state.is_final(), f"run ended before pausing: {state.name}: {state.message}"
        try:
            return paused_run(run_id)
        except RuntimeError:
            return None
    return wait_for(check, timeout, "the training never paused", interval=1)


def _final(run_id, timeout: float = 300):
    return wait_for(lambda: (s := _state(run_id)).is_final() and s, timeout,
                     f"flow run {run_id} did not finish")


def _registry(home: Path):
    from regrow.tasks.registry.mlflow_registry import Registry
    from regrow.tasks.store.settings import Settings

    saved = os.environ.get("REGROW_HOME")
    os.environ["REGROW_HOME"] = str(home)
    try:
        return Registry(Settings.from_env())
    finally:
        if saved is None:
            os.environ.pop("REGROW_HOME")
        else:
            os.environ["REGROW_HOME"] = saved


def test_ui_style_run_trains_with_its_parameters(served):
    cfg = str(served["configs"]["srv-auto"])
    with _api(served["server"]):
        dep = _deployment("srv-auto", "train")
        assert "request" in dep.parameter_openapi_schema["properties"]  # the typed UI form
        assert dep.concurrency_limit == 1 or dep.global_concurrency_limit is not None
        other = Path(cfg).parent / "other.csv"  # the form may choose the data, not the rules
        binary_frame(700, seed=4).to_csv(other, index=False)
        run = _run("srv-auto", {"request": {"reason": "clicked in the UI",
                                            "overrides": {"data.source.path": str(other)}}})
        state = _final(run.id)
    assert state.is_completed(), state.message
    reg = _registry(served["home"])
    version = reg.alias_version("srv-auto", "champion")
    info = reg.run_info(reg.version_info("srv-auto", version).run_id)
    assert str(other) in info["tags"]["regrow.data.source"]
    assert info["tags"]["regrow.data.rows"] == "700"
    assert info["tags"]["regrow.trigger"] == "ui"
    assert info["tags"]["regrow.trigger_reason"] == "clicked in the UI"
    assert info["tags"]["regrow.trigger_ref"].startswith("retrain_request:")


def test_served_flows_travel_to_their_run_process_whole(tmp_path):
    """The runner hands each run process the flow object itself (pickled by value), so its
    parameters must validate without the module's namespace (no postponed annotations)."""
    import cloudpickle

    from regrow.configs.schema import load_config
    from regrow.flows.serve import deployments_for

    cfg = merge(BINARY_CONFIG, {"serve": {"retrain_cron": "0 3 * * *",
                                          "data_arrived": "score_and_check"}})
    served = deployments_for(load_config(write_case(tmp_path, binary_frame(50), cfg)))
    assert len(served) == 5
    for d in served:
        copy = cloudpickle.loads(cloudpickle.dumps(d.flow))
        assert copy.validate_parameters(d.options["parameters"]), d.options["name"]
    request = next(d for d in served if d.options["name"].startswith("train-"))
    checked = cloudpickle.loads(cloudpickle.dumps(request.flow)).validate_parameters(
        {"request": {"kind": "webhook", "request_id": 7}})
    assert checked["request"].request_id == 7 and checked["request"].kind == "webhook"
    # no served flow takes a file: a config_path is refused by the flow's own validation
    from prefect.exceptions import ParameterTypeError, SignatureMismatchError

    with pytest.raises(ParameterTypeError, match="config_path: not a parameter"):
        cloudpickle.loads(cloudpickle.dumps(request.flow)).validate_parameters(
            {"request": {"config_path": "x.yaml"}})
    for d in served:
        if d is not request:
            with pytest.raises(SignatureMismatchError, match="config_path"):
                d.flow.validate_parameters({**d.options["parameters"], "config_path": "x.yaml"})


def test_runs_start_from_the_warm_fork_server_and_keep_their_last_logs(served):
    import psutil
    from prefect import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    rows = _fresh_rows(served, "srv-auto", 21)
    with _api(served["server"]):
        run = _run("srv-auto", {"request": {"reason": "warm start",
                                            "overrides": {"data.source.path": rows}}})
        assert _final(run.id).is_completed()

        def last_line():
            with get_client(sync_client=True) as c:
                logs = c.read_logs(log_filter=LogFilter(
                    flow_run_id=LogFilterFlowRunId(any_=[run.id])))
            return any(log.message.startswith("Finished in state Completed") for log in logs)
        # The engine writes its last line as the run process exits: it arrives only if the
        # fork server's child drains Prefect's log worker as an interpreter exit would.
        wait_for(last_line, 30, "the run's last log line never arrived", interval=1)
    children = psutil.Process(served["pid"]).children()
    assert any("multiprocessing.forkserver" in " ".join(p.cmdline()) for p in children), \
        [p.cmdline() for p in children]


def test_admitted_event_starts_a_training_run(served):
    from regrow.configs.schema import load_config
    from regrow.flows import dispatch
    from regrow.tasks.policy import retrain as policy
    from regrow.tasks.store.database import Store
    from regrow.tasks.store.settings import Settings

    cfg = served["configs"]["srv-auto"]
    loaded = load_config(cfg)
    os.environ["REGROW_HOME"], saved = str(served["home"]), os.environ.get("REGROW_HOME", "")
    try:
        store = Store(Settings.from_env().database_url)
    finally:
        os.environ["REGROW_HOME"] = saved
    time.sleep(1.5)  # past the 1 s cooldown of the previous test's training
    answer = policy.request_retrain(store, "srv-auto", loaded.config.retrain, kind="webhook",
                                    reason="upstream table refreshed", ref="test-event")
    assert answer.admitted, answer.detail
    # Post the event to the server's events API (this process's event client may already be
    # bound to another test server), exactly as dispatch.emit_admitted shapes it.
    import datetime as dt
    import uuid

    import httpx

    event = {"id": str(uuid.uuid4()), "occurred": dt.datetime.now(dt.UTC).isoformat(),
             "event": dispatch.ADMITTED_EVENT, "resource": dispatch.resource("srv-auto"),
             "payload": dispatch.admitted_payload(answer.request_id, "webhook",
                                                  "upstream table refreshed", "test-event"),
             "related": []}
    assert httpx.post(f"{served['server']}/events", json=[event], timeout=10).status_code < 300
    with _api(served["server"]):
        dep = _deployment("srv-auto", "train")

        def started():
            from prefect import get_client
            from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

            with get_client(sync_client=True) as c:
                runs = c.read_flow_runs(deployment_filter=DeploymentFilter(
                    id=DeploymentFilterId(any_=[dep.id])))
            return [r for r in runs if r.parameters["request"].get("request_id") == answer.request_id]
        (run,) = wait_for(started, 60, "the admitted event created no flow run", interval=1)
        assert run.parameters["request"]["kind"] == "webhook"
        state = _final(run.id)
    assert state.is_completed(), state.message
    rows = policy.recent_requests(store, "srv-auto")
    mine = next(r for r in rows if r["id"] == answer.request_id)
    assert mine["state"] == "done"
    tags = _registry(served["home"]).run_info(mine["run_id"])["tags"]
    assert tags["regrow.trigger_ref"] == f"retrain_request:{answer.request_id};test-event"


def test_drift_check_cron_creates_scheduled_runs(served):
    from prefect import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with _api(served["server"]):
        dep = _deployment("srv-auto", "drift-check")
        assert dep.schedules and dep.schedules[0].schedule.cron == "* * * * *"

        def scheduled():
            with get_client(sync_client=True) as c:
                runs = c.read_flow_runs(deployment_filter=DeploymentFilter(
                    id=DeploymentFilterId(any_=[dep.id])))
            return [r for r in runs if r.state and r.state.is_scheduled()]
        assert len(wait_for(scheduled, 90, "the scheduler created no runs", interval=1)) >= 1


def _cli(served, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "regrow.app.cli", *args], capture_output=True,
                          text=True, env=_env(served["server"], served["home"]), cwd=ROOT,
                          timeout=120)


def test_manual_promotion_approve_then_reject(served):
    reg = _registry(served["home"])
    with _api(served["server"]):
        run = _run("srv-manual", {"request": {"reason": "first"}})
        _paused(run.id)
        assert reg.alias_version("srv-manual", "champion") is None  # waiting for a person
        out = _cli(served, "approve", str(run.id), "--by", "alice", "--reason", "looks right")
        assert out.returncode == 0, out.stderr
        assert _final(run.id).is_completed()
        v1 = reg.alias_version("srv-manual", "champion")
        tags = reg.version_info("srv-manual", v1).tags
        assert tags["regrow.approver"] == "alice" and tags["regrow.approval"] == "approved"

        fresh = {"data.source.path": _fresh_rows(served, "srv-manual", 42)}
        second = _run("srv-manual", {"request": {"reason": "second", "overrides": fresh}})
        _paused(second.id)
        out = _cli(served, "reject", str(second.id), "--by", "bob", "--reason", "not now")
        assert out.returncode == 0, out.stderr
        assert _final(second.id).is_completed()
    assert reg.alias_version("srv-manual", "champion") == v1
    assert reg.alias_version("srv-manual", "challenger") is None  # rejected: it waits no more
    second_version = str(int(v1) + 1)
    assert reg.version_info("srv-manual", second_version).tags["regrow.approval"] == "rejected"
    from regrow.tasks.store.database import Store
    from regrow.tasks.store.settings import Settings

    os.environ["REGROW_HOME"], saved = str(served["home"]), os.environ.get("REGROW_HOME", "")
    try:
        history = Store(Settings.from_env().database_url).alias_history("srv-manual", "champion")
    finally:
        os.environ["REGROW_HOME"] = saved
    assert len(history) == 1 and history[0]["actor"] == "approval:alice"
    assert "approved by alice: looks right" in history[0]["reason"]


def test_manual_promotion_times_out_as_rejected(served):
    with _api(served["server"]):
        run = _run("srv-timeout", {"request": {"reason": "nobody answers"}})
        assert _final(run.id).is_completed()
    reg = _registry(served["home"])
    assert reg.alias_version("srv-timeout", "champion") is None
    assert reg.alias_version("srv-timeout", "challenger") is None
    tags = reg.version_info("srv-timeout", "1").tags
    assert tags["regrow.approval"] == "rejected" and tags["regrow.approval_via"] == "timeout"


SECRET = "test-webhook-secret-0123456789"


@pytest.fixture(scope="module")
def receiver(served, tmp_path_factory: pytest.TempPathFactory):
    """The webhook receiver (uvicorn) for the served models, on a free port."""
    port = free_port()
    env = _env(served["server"], served["home"])
    env["REGROW_WEBHOOK_SECRET"] = SECRET
    log = open(tmp_path_factory.mktemp("receiver") / "webhook.log", "w")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "regrow.app.cli", "webhook",
                             *map(str, served["configs"].values()), "--port", str(port),
                             "--no-access-log"], env=env, stdout=log, stderr=subprocess.STDOUT,
                            cwd=ROOT)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", 120)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)
        log.close()


def _post(url: str, payload, *, secret: str = SECRET, ts: int | None = None,
          delivery: str | None = None, raw: bytes | None = None, headers: dict | None = None):
    import json
    import uuid

    import httpx

    from regrow.app.webhook import sign

    body = raw if raw is not None else json.dumps(payload).encode()
    h = sign(secret, body, ts or int(time.time()), delivery_id=delivery or uuid.uuid4().hex)
    h.update(headers or {})
    return httpx.post(f"{url}/v1/hooks/retrain", content=body, headers=h, timeout=30)


def _train_runs(model: str) -> list:
    from prefect import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    dep = _deployment(model, "train")
    with get_client(sync_client=True) as c:
        return c.read_flow_runs(deployment_filter=DeploymentFilter(
            id=DeploymentFilterId(any_=[dep.id])))


def _quiet(model: str) -> None:
    """Wait until no training run of the model is pending or running, and the cooldown passed."""
    wait_for(lambda: all(r.state.is_final() for r in _train_runs(model) if r.state), 300,
              "a training run never finished")
    time.sleep(1.5)


def test_signed_webhook_trains_a_new_champion(served, receiver):
    with _api(served["server"]):
        _quiet("srv-auto")
        fresh = {"data.source.path": _fresh_rows(served, "srv-auto", 41)}
        answer = _post(receiver, {"model": "srv-auto", "reason": "warehouse table refreshed",
                                  "overrides": fresh}, delivery="delivery-e2e-1")
        assert answer.status_code == 202, answer.text
        body = answer.json()
        assert body["verdict"] == "admitted"
        runs = wait_for(lambda: [r for r in _train_runs("srv-auto") if
                                  r.parameters["request"].get("request_id") == body["request_id"]],
                         60, "the webhook created no training run", interval=1)
        assert _final(runs[0].id).is_completed()
    reg = _registry(served["home"])
    champion = reg.alias_version("srv-auto", "champion")
    run = reg.run_info(reg.version_info("srv-auto", champion).run_id)
    assert run["tags"]["regrow.trigger"] == "webhook"
    assert "webhook:delivery-e2e-1" in run["tags"]["regrow.trigger_ref"]
    assert run["tags"]["regrow.trigger_ref"].startswith(f"retrain_request:{body['request_id']};")


def test_rejected_webhooks_create_no_flow_run(served, receiver):
    good = {"model": "srv-auto", "reason": "should never run"}
    with _api(served["server"]):
        _quiet("srv-auto")
        before = {r.id for r in _train_runs("srv-auto")}
        cases = {
            "bad signature": _post(receiver, good, secret="not-the-secret-at-all-0000"),
            "missing signature": _post(receiver, good, headers={"X-Regrow-Signature": ""}),
            "stale timestamp": _post(receiver, good, ts=int(time.time()) - 3600),
            "oversized body": _post(receiver, None, raw=b'{"model": "srv-auto", "reason": "'
                                    + b"x" * (1024 * 1024 + 10) + b'"}'),
            "malformed JSON": _post(receiver, None, raw=b'{"model": "srv-auto", '),
            "schema error": _post(receiver, {"model": "srv-auto"}),
            "unknown model": _post(receiver, {"model": "nope", "reason": "x"}),
        }
        expected = {"bad signature": 401, "missing signature": 401, "stale timestamp": 401,
                    "oversized body": 413, "malformed JSON": 422, "schema error": 422,
                    "unknown model": 404}
        assert {k: v.status_code for k, v in cases.items()} == expected
        time.sleep(6)  # longer than event -> automation -> flow run takes here
        assert {r.id for r in _train_runs("srv-auto")} == before


def test_same_delivery_twice_and_50_concurrent_make_one_training(served, receiver):
    from concurrent.futures import ThreadPoolExecutor

    with _api(served["server"]):
        _quiet("srv-auto")
        before = {r.id for r in _train_runs("srv-auto")}
        first = _post(receiver, {"model": "srv-auto", "reason": "once"}, delivery="twice-1")
        again = _post(receiver, {"model": "srv-auto", "reason": "once"}, delivery="twice-1")
        assert again.status_code == first.status_code == 202
        assert again.json() == first.json()
        with ThreadPoolExecutor(max_workers=25) as pool:
            answers = list(pool.map(lambda i: _post(receiver, {"model": "srv-auto",
                                                               "reason": f"storm {i}"}),
                                    range(50)))
        assert all(a.status_code == 202 for a in answers)
        verdicts = [a.json()["verdict"] for a in answers] + [first.json()["verdict"]]
        assert verdicts.count("admitted") == 1
        time.sleep(6)
        new = [r for r in _train_runs("srv-auto") if r.id not in before]
        assert len(new) == 1
        assert _final(new[0].id).is_completed()


# Overrides from outside may choose the data, never the code that runs nor the rules a
# candidate is judged by. The Popen reproduction would make the training import
# subprocess.Popen and call it with the given args, creating the file.
def _popen(target: Path) -> dict:
    return {"candidates.estimators.0.estimator": "subprocess.Popen",
            "candidates.estimators.0.params": {"args": ["touch", str(target)]},
            "candidates.estimators.0.grid": {}}


def _store(home: Path):
    from regrow.tasks.store.database import Store
    from regrow.tasks.store.settings import Settings

    saved = os.environ.get("REGROW_HOME")
    os.environ["REGROW_HOME"] = str(home)
    try:
        return Store(Settings.from_env().database_url)
    finally:
        if saved is None:
            os.environ.pop("REGROW_HOME")
        else:
            os.environ["REGROW_HOME"] = saved


def _requests(store, model: str) -> list[int]:
    from regrow.tasks.policy import retrain as policy
    return [r["id"] for r in policy.recent_requests(store, model, limit=1000)]


REFUSED = {
    "Popen": (_popen, ["candidates.estimators.0.estimator", "candidates.estimators.0.params",
                       "candidates.estimators.0.grid"]),
    "gate": (lambda _: {"gate.max_regression": 0.5}, ["gate.max_regression"]),
    "cooldown": (lambda _: {"retrain.cooldown": "1s"}, ["retrain.cooldown"]),
}


@pytest.mark.parametrize("name", ["Popen", "gate"])
def test_ui_form_run_with_refused_overrides_fails_before_anything_runs(served, tmp_path, name):
    make, keys = REFUSED[name]
    pwned = tmp_path / "pwned"
    reg = _registry(served["home"])
    store = _store(served["home"])
    with _api(served["server"]):
        _quiet("srv-auto")
        champion = reg.alias_version("srv-auto", "champion")
        requests_before = _requests(store, "srv-auto")
        run = _run("srv-auto", {"request": {"reason": f"form: {name}",
                                            "overrides": make(pwned)}})
        state = _final(run.id, timeout=600)  # the run fails at once; starting it can be slow
    assert state.is_failed(), (state.name, state.message)
    assert "overrides refused" in state.message and all(k in state.message for k in keys)
    assert not pwned.exists()
    assert reg.alias_version("srv-auto", "champion") == champion
    assert _requests(store, "srv-auto") == requests_before  # refused before the policy
    store.dispose()


# A served deployment runs only the config it was served with. Its parameters name no file;
# a run that names one anyway -- one POST to the Prefect API, which has no login -- is refused
# before any config is read. The attacker's config would train the same model on its own data
# with a module of its own, whose import leaves a mark.
EVILMOD = """from pathlib import Path
Path({marker!r}).write_text("imported")
from sklearn.linear_model import LogisticRegression as Evil
"""


def _evil_config(folder: Path, marker: Path) -> Path:
    cfg = merge(merge(BINARY_CONFIG, {"registry": {"model_name": "srv-auto"}}), {
        "modules": ["evilmod"],
        "candidates": {"estimators": [{"name": "evil", "estimator": "evilmod.Evil"}]},
        "gate": {"max_regression": 1.0, "floors": {"roc_auc": 0.0}, "slices": []}})
    path = write_case(folder, binary_frame(300, seed=66), cfg)
    (folder / "evilmod.py").write_text(EVILMOD.format(marker=str(marker)))
    return path


def _create_run(server: str, deployment_id, parameters: dict, enforce: bool | None):
    """POST /deployments/<id>/create_flow_run as anyone who reaches the API can; (status,
    body). `enforce=False` asks the server to skip its parameter schema check (allowed per run)."""
    import httpx

    body: dict = {"parameters": parameters}
    if enforce is not None:
        body["enforce_parameter_schema"] = enforce
    for _ in range(10):  # 503: the server's database was busy; Prefect's own client retries too
        res = httpx.post(f"{server}/deployments/{deployment_id}/create_flow_run", json=body,
                         timeout=30)
        if res.status_code != 503:
            break
        time.sleep(1)
    return res.status_code, res.json()


def _settled(run_id):
    """The run's final state, past a Crashed that the runner's hook turns into Failed."""
    state = _final(run_id, timeout=600)
    if not state.is_crashed():
        return state
    return wait_for(lambda: (now := _state(run_id)).is_failed() and now, 60,
                    lambda: f"still {_state(run_id).name}: {_state(run_id).message}",
                    interval=0.5)


ATTACKS = {
    "train": lambda evil: {"request": {"config_path": evil, "reason": "pwn"}},
    "train-top-level": lambda evil: {"config_path": evil},
    "score": lambda evil: {"config_path": evil, "input_path": str(Path(evil).parent / "data.csv")},
    "drift-check": lambda evil: {"config_path": evil},
}


@pytest.mark.parametrize("kind", list(ATTACKS))
def test_api_run_naming_a_config_file_is_refused(served, tmp_path, kind):
    from tests.faultlog import record

    marker = tmp_path / "evilmod-imported"
    evil = str(_evil_config(tmp_path / "evil", marker))
    reg, store = _registry(served["home"]), _store(served["home"])
    with _api(served["server"]):
        _quiet("srv-auto")
        champion = reg.alias_version("srv-auto", "champion")
        history = store.alias_history("srv-auto")
        requests_before = _requests(store, "srv-auto")
        dep = _deployment("srv-auto", kind.removesuffix("-top-level"))
        # With the deployment's schema enforced, the server refuses to create a training run
        # (its request form forbids unknown keys); the other flows' schemas let an unknown
        # top-level parameter through, so those runs are created ...
        status, body = _create_run(served["server"], dep.id, ATTACKS[kind](evil), None)
        if kind == "train":
            assert status == 409 and "config_path" in body["detail"], (status, body)
            runs = []
        else:
            assert status == 201, (status, body)
            runs = [body["id"]]
        # ... and so is one that asks the server not to check (allowed per run)
        status, body = _create_run(served["server"], dep.id, ATTACKS[kind](evil), False)
        assert status == 201, (status, body)
        runs.append(body["id"])
        # every one fails before the flow's body (or its run name) reads any config; a run
        # whose process could not bind the parameters shows Crashed until the runner's hook
        # (a moment later) sets it Failed with the reason
        states = [_settled(run) for run in runs]
    for state in states:
        assert state.is_failed(), (state.name, state.message)
        if kind == "train":  # the request form's own validation
            assert state.message.startswith("Validation of flow parameters failed"), state.message
            assert "config_path: not a parameter of a served training; a served deployment " \
                "trains only the config `regrow serve` bound to it" in state.message, state.message
        else:  # Prefect cannot even bind the parameters: the runner's hook says why
            assert state.message.startswith("Parameters refused before the run started: "
                                            "config_path: not a parameter of a served regrow-"), \
                state.message
            assert "runs only the config `regrow serve` bound to it" in state.message
    moved = int(reg.alias_version("srv-auto", "champion") != champion)
    after = store.alias_history("srv-auto")
    record("API run naming a config file", "bad_input", wrong_moves=moved,
           bad_history=len(after) - len(history))
    assert not marker.exists()  # the attacker's module was never imported
    assert moved == 0 and after == history
    assert _requests(store, "srv-auto") == requests_before  # not even a retrain request
    store.dispose()


def test_served_run_refuses_a_config_changed_since_serve(served):
    """Editing a served config takes a restart of `regrow serve`: until then its runs refuse
    the file, saying so."""
    path = Path(served["configs"]["srv-timeout"])
    text = path.read_text()
    reg = _registry(served["home"])
    champion = reg.alias_version("srv-timeout", "champion")
    try:
        path.write_text(text.replace("max_regression: 0.02", "max_regression: 0.9"))
        with _api(served["server"]):
            run = _run("srv-timeout", {"request": {"reason": "after an edit"}})
            state = _final(run.id, timeout=600)
    finally:
        path.write_text(text)
    assert state.is_failed(), (state.name, state.message)
    assert "changed since deployment 'train-srv-timeout' was served" in state.message
    assert "restart `regrow serve`" in state.message
    assert reg.alias_version("srv-timeout", "champion") == champion


OUTSIDE_INPUTS = {
    "score input_path outside": ("score", {"input_path": "/etc/hostname"},
                                 "data.source.allowed_paths"),
    "score query from outside": ("score", {"query": "select 1"}, "SQL never comes from outside"),
    "data-arrived ../ traversal": ("data-arrived", {"input_path": "../../../../etc/hostname"},
                                   "data.source.allowed_paths"),
}


@pytest.mark.parametrize("case", list(OUTSIDE_INPUTS))
def test_served_run_refuses_inputs_outside_the_config_limits(served, case):
    """A served scoring or data-arrived run started from outside (the API, the UI form, an
    event) with a file outside data.source.allowed_paths, or with a query, fails with one
    sentence before it reads anything."""
    from tests.faultlog import record

    kind, parameters, rule = OUTSIDE_INPUTS[case]
    with _api(served["server"]):
        dep = _deployment("srv-auto", kind)
        status, body = _create_run(served["server"], dep.id, parameters, None)
        assert status == 201, (status, body)
        state = _settled(body["id"])
    assert state.is_failed(), (state.name, state.message)
    assert rule in state.message, state.message
    record(f"served {case}", "bad_input")


def test_webhook_refuses_overrides_outside_the_allowed_keys(served, receiver, tmp_path):
    from regrow.configs.schema import SAFE_OVERRIDES

    pwned = tmp_path / "pwned"
    store = _store(served["home"])
    with _api(served["server"]):
        _quiet("srv-auto")
        runs_before = {r.id for r in _train_runs("srv-auto")}
        requests_before = _requests(store, "srv-auto")
        for name, (make, keys) in REFUSED.items():
            res = _post(receiver, {"model": "srv-auto", "reason": f"refused: {name}",
                                   "overrides": make(pwned)})
            assert res.status_code == 422, (name, res.text)
            body = res.json()
            assert body["refused"] == keys and body["allowed"] == list(SAFE_OVERRIDES)
            detail = body["detail"]  # one sentence: each refused key, then the allowed ones
            assert isinstance(detail, str) and detail.startswith("overrides refused: ")
            assert all(k in detail for k in [*keys, *SAFE_OVERRIDES]), detail
            assert "\n" not in detail
        time.sleep(6)  # longer than event -> automation -> flow run takes here
        assert {r.id for r in _train_runs("srv-auto")} == runs_before
        assert _requests(store, "srv-auto") == requests_before  # not even a refused request
        assert not pwned.exists()

        # keys the config allows are still accepted, and reach the training
        data = str(Path(served["configs"]["srv-auto"]).parent / "data.csv")
        res = _post(receiver, {"model": "srv-auto", "reason": "allowed override",
                               "overrides": {"data.source.path": data}})
        assert res.status_code == 202, res.text
        assert res.json()["verdict"] == "admitted"
        runs = wait_for(lambda: [r for r in _train_runs("srv-auto") if r.parameters["request"]
                                  .get("request_id") == res.json()["request_id"]],
                         120, "the admitted webhook created no training run", interval=1)
        assert runs[0].parameters["request"]["overrides"] == {"data.source.path": data}
        state = _final(runs[0].id, timeout=600)
    assert state.is_completed(), state.message
    assert not pwned.exists()
    store.dispose()


def test_infra_prefect_yaml_deploys_to_a_work_pool(prefect_server, tmp_path):
    """`prefect deploy --all` with infra/prefect.yaml creates the deployments."""
    env = _env(prefect_server, tmp_path / "home")
    prefect = [sys.executable, "-m", "prefect", "--no-prompt"]
    pool = subprocess.run([*prefect, "work-pool", "create", "regrow-process", "--type", "process",
                           "--overwrite"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert pool.returncode == 0, pool.stdout + pool.stderr
    out = subprocess.run([*prefect, "deploy", "--all", "--prefect-file", "infra/prefect.yaml"],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    with _api(prefect_server):
        for kind in ("train", "drift-check", "score", "data-arrived"):
            dep = _deployment("rainfall-binary", kind)
            assert dep is not None and dep.work_pool_name == "regrow-process"
        assert _deployment("rainfall-binary", "drift-check").schedules[0].schedule.cron == "0 6 * * *"


def _own_server(home: Path) -> tuple[subprocess.Popen, str]:
    """A `prefect server start` of this test's own (its home seeded from regrow's template
    when `make setup` built one); (process, API URL)."""
    from regrow.runtime.prefect_home import seed

    seed(home)
    return start_prefect_server(home)


def _serve_then_terminate(cfg: Path, url: str, home: Path, log: Path,
                          kill_first: subprocess.Popen | None = None) -> float:
    """Start `regrow serve` for `cfg`, wait for its deployments, (stop `kill_first`, the
    server,) send SIGTERM; seconds until the process ended."""
    proc = subprocess.Popen([sys.executable, "-m", "regrow.app.cli", "serve", str(cfg)],
                            env={**_env(url, home), "REGROW_WARM": "off"}, cwd=ROOT,
                            stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        with _api(url):
            wait_for(lambda: "serving 4 deployments" in log.read_text(), 120,
                     lambda: f"serve never started; its log:\n{log.read_text()}", interval=0.5)
            assert not _deployment("srv-stop", "drift-check").paused
        if kill_first is not None:
            stop(kill_first)
        t0 = time.monotonic()
        proc.terminate()
        proc.wait(timeout=120)
        return time.monotonic() - t0
    finally:
        stop(proc)


def test_serve_stops_promptly_with_or_without_its_prefect_server(tmp_path):
    """SIGTERM: with the server up, `serve` pauses its deployments' schedules and ends (the
    runner's own pause never reached the server); served again, they run again; with the
    server gone, it stops trying after a few seconds (Prefect's own pause retried an
    unreachable API for a minute) and says the schedules were left as they were."""
    cfg = write_case(tmp_path / "m", binary_frame(300), merge(BINARY_CONFIG, {
        "registry": {"model_name": "srv-stop"}, "monitoring": {"schedule": "0 * * * *"}}))
    server, url = _own_server(tmp_path / "prefect")
    try:
        took = _serve_then_terminate(cfg, url, tmp_path / "home", tmp_path / "serve1.log")
        assert took < 15, (took, (tmp_path / "serve1.log").read_text()[-2000:])
        assert "regrow serve: stopped; paused the schedules of 4 deployments" in \
            (tmp_path / "serve1.log").read_text()
        with _api(url):
            assert _deployment("srv-stop", "drift-check").paused  # the schedule was paused
        # served again (schedules resumed), then its server goes away before it stops
        took = _serve_then_terminate(cfg, url, tmp_path / "home", tmp_path / "serve2.log",
                                     kill_first=server)
    finally:
        stop(server)
    out = (tmp_path / "serve2.log").read_text()
    assert took < 15, (took, out[-2000:])
    assert "regrow serve: stopped; deployments' schedules left as they were (not paused)" in out
