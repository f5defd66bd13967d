"""The fleet view: `regrow status` without a config, the ``regrow-fleet`` artifact a drift check
refreshes, and `regrow serve` / `regrow up` taking a folder of configs.

Most cases write their records through the store's own API (the training, policy and alias
code paths that write them in production are tested elsewhere); the artifact comes from real
trainings and a real drift check on a real Prefect server.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from regrow.app.cli import build_parser, main
from regrow.configs.folders import config_paths, load_configs
from regrow.configs.schema import ConfigError, RetrainPolicy
from regrow.tasks.monitoring.assess import Assessment, Performance
from regrow.tasks.policy import retrain as policy
from regrow.tasks.store import database as st
from regrow.tasks.store import fleet
from regrow.tasks.store.settings import Settings
from tests.helpers import BINARY_CONFIG, binary_frame, merge, write_case
from tests.procs import pg_database

ROOT = Path(__file__).resolve().parent.parent
DAY = 86400.0


def _check(store: st.Store, model: str, version: str, verdict: str = "ok", *,
           degraded: bool | None = None, persistent: bool = False, estimated: bool = False) -> int:
    perf = None if degraded is None else Performance(
        "roc_auc", 0 if estimated else 400, 0.71 if degraded else 0.85, 0.86,
        0.15 if degraded else 0.01, 0.05, degraded, estimated=estimated)
    return st.record_drift_check(store, model, version, Assessment(
        verdict, 500, [f"{verdict} for the test"], drift_share=0.6 if verdict == "drift" else 0.0,
        drifted_columns=["amount"] if verdict == "drift" else [], performance=perf,
        persistent=persistent), None)


def _promoted(store: st.Store, model: str, version: str = "1", verdict: str = "promote") -> int:
    row = store.start_training(model, "manual", "test")
    store.finish_training(row, status="finished", verdict=verdict, version=version)
    if verdict == "promote":
        store.record_alias_move(model, "champion", None, version, "gate passed", "manual:test",
                                None)
    return row


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, home: Path, monkeypatch: pytest.MonkeyPatch):
    """The home's monitoring store: its SQLite default, or a fresh PostgreSQL database
    (``REGROW_DATABASE_URL``, which the commands started here inherit)."""
    with contextlib.ExitStack() as stack:
        url = Settings.from_env().database_url
        if request.param == "postgresql":
            url = stack.enter_context(pg_database())
            monkeypatch.setenv("REGROW_DATABASE_URL", url)
        s = st.Store(url)
        stack.callback(s.dispose)
        yield s


@pytest.fixture
def fleet_store(store: st.Store) -> st.Store:
    """Eight models, one per reason a person is needed, and one that needs nobody."""
    _promoted(store, "alpha")                       # healthy
    _check(store, "alpha", "1", degraded=False)
    _promoted(store, "bravo")                       # degraded (estimated, no labels)
    _check(store, "bravo", "1", "drift", degraded=True, estimated=True)
    _check(store, "bravo", "1", "insufficient_data")  # the newest has no data: still degraded
    _promoted(store, "charlie")                     # circuit open
    for _ in range(3):
        row = store.start_training("charlie", "drift", "again")
        store.finish_training(row, status="finished", verdict="reject", version="2")
    answer = policy.request_retrain(store, "charlie", RetrainPolicy(circuit_breaker_after=3),
                                    kind="manual", reason="once more")
    assert answer.verdict == policy.CIRCUIT_OPEN
    _promoted(store, "delta")                       # a version waits for approval
    row = store.start_training("delta", "manual", "new data", lease_seconds=600)
    store.note_training(row, verdict="promote", version="2")
    store.record_alias_move("delta", "challenger", None, "2", "passed the gate; waits for "
                            "approval", "manual:test", None)
    _promoted(store, "echo")                        # stale champion: promoted 40 days ago
    with store.engine.begin() as conn:
        h = st.alias_history.c
        conn.execute(st.alias_history.update().where(h.model == "echo")
                     .values(at=st.now() - dt.timedelta(days=40)))
    _promoted(store, "foxtrot", verdict="reject")   # no champion: the first gate refused
    _promoted(store, "golf")                        # failing checks: persistent, no request
    _check(store, "golf", "1", "drift", persistent=True)
    _promoted(store, "hotel")                       # a training whose process died
    row = store.start_training("hotel", "webhook", "new rows", lease_seconds=600)
    with store.engine.begin() as conn:
        conn.execute(st.training_leases.update().where(st.training_leases.c.key == f"training:{row}")
                     .values(expires_at=st.now() - dt.timedelta(minutes=5)))
    return store


EXPECTED = {"bravo": ["degraded"], "charlie": ["circuit_open"], "delta": ["approval_waiting"],
            "echo": ["stale_champion"], "foxtrot": ["no_champion"], "golf": ["failing_checks"],
            "hotel": ["training_failed"], "alpha": []}


def test_one_row_per_model_needing_a_person_first(fleet_store: st.Store, home: Path):
    view = fleet.collect(fleet_store, home)
    assert [m.model for m in view.models] == [*sorted(set(EXPECTED) - {"alpha"}), "alpha"]
    assert {m.model: [n["code"] for n in m.needs_person] for m in view.models} == EXPECTED
    assert view.attention == 7
    rows = {m.model: m for m in view.models}
    assert rows["alpha"].champion == "1" and rows["alpha"].champion_age_seconds < 60
    assert rows["echo"].champion_age_seconds > 39 * DAY
    assert rows["foxtrot"].champion is None
    assert rows["bravo"].last_check["verdict"] == "insufficient_data"  # the newest check
    assert "estimated" in rows["bravo"].needs_person[0]["detail"]
    assert rows["charlie"].circuit == {"state": "open", "streak": 3, "threshold": None,
                                       "last_reset": None}
    assert rows["delta"].approvals[0]["version"] == "2"
    assert rows["delta"].approvals[0]["training"] == "running"
    assert rows["delta"].last_training["status"] == "running"
    assert rows["hotel"].last_training["status"] == "crashed"  # read so; nothing written
    with fleet_store.engine.connect() as conn:
        assert conn.execute(sa.select(st.training_runs.c.status)
                            .where(st.training_runs.c.model == "hotel")
                            .order_by(st.training_runs.c.id.desc())).first()[0] == "running"


def test_a_person_clears_what_the_store_shows(fleet_store: st.Store, home: Path):
    """Each reason goes away when the records that made it change."""
    policy.reset_circuit(fleet_store, "charlie", "ana", "looked at the rejections")
    fleet_store.record_alias_move("delta", "challenger", "2", None, "approved", "approval:ana", None)
    _promoted(fleet_store, "echo", version="2")
    _check(fleet_store, "bravo", "1", degraded=False)
    view = fleet.collect(fleet_store, home)
    codes = {m.model: [n["code"] for n in m.needs_person] for m in view.models}
    assert codes["charlie"] == codes["delta"] == codes["echo"] == codes["bravo"] == []
    rows = {m.model: m for m in view.models}
    assert rows["charlie"].circuit["state"] == "closed" and rows["charlie"].circuit["streak"] == 0
    # a longer stale limit: no champion is stale
    assert fleet.collect(fleet_store, home, stale_after=60 * DAY).models[0].model != "echo"


def test_served_configs_join_the_fleet_with_their_thresholds(store: st.Store, home: Path,
                                                            tmp_path: Path):
    """The configs the control plane serves (its state file names them) add their models,
    trained or not, and their circuit breaker limit: two rejections open a limit of 2."""
    from regrow.tasks.store.plane_state import start_time, write_state

    strict = _config(tmp_path / "cfg", "strict", retrain={"circuit_breaker_after": 2})
    fresh = _config(tmp_path / "cfg", "fresh")
    _promoted(store, "strict")
    for _ in range(2):
        row = store.start_training("strict", "drift", "again")
        store.finish_training(row, status="finished", verdict="reject", version="2")
    me = os.getpid()  # this process stands for the plane's `serve` part: alive, same start
    write_state(home / "run", {"ready": True, "parts": [
        {"name": "serve", "pid": me, "starttime": start_time(me), "argv": [],
         "configs": [str(strict), str(fresh)]}]})
    rows = {m.model: m for m in fleet.collect(store, home).models}
    assert rows["strict"].config == str(strict) and rows["fresh"].config == str(fresh)
    assert rows["strict"].circuit == {"state": "open", "streak": 2, "threshold": 2,
                                      "last_reset": None}
    assert [n["code"] for n in rows["strict"].needs_person] == ["circuit_open"]
    assert rows["fresh"].champion is None and rows["fresh"].needs_person == []  # never asked
    (home / "run" / "plane.json").unlink()  # the plane is down: only the store's models
    assert [m.model for m in fleet.collect(store, home).models] == ["strict"]


def test_the_docs_define_every_reason():
    """Each reason code is defined beside the code (`fleet.ATTENTION`); the page lists them all."""
    text = (ROOT / "docs" / "how-to" / "fleet.md").read_text()
    listed = [line.split("`")[1] for line in text.splitlines() if line.startswith("| `")
              and line.split("`")[1] in fleet.ATTENTION]
    assert listed == list(fleet.ATTENTION)


def _statements(store: st.Store, home: Path) -> int:
    seen: list[str] = []

    def count(*args) -> None:
        seen.append(args[2])

    sa.event.listen(store.engine, "before_cursor_execute", count)
    try:
        fleet.collect(store, home)
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", count)
    return len(seen)


def test_queries_do_not_grow_with_the_models(store: st.Store, home: Path):
    """A fixed handful of statements for the whole fleet, never some per model."""
    for i in range(30):
        if i == 2:
            few = _statements(store, home)
        _promoted(store, f"m{i:02d}")
        _check(store, f"m{i:02d}", "1", degraded=i % 2 == 0)
        policy.request_retrain(store, f"m{i:02d}", RetrainPolicy(), kind="manual", reason="r")
    assert len(fleet.collect(store, home).models) == 30
    assert few == _statements(store, home) <= 12


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "REGROW_", "MLFLOW_")) or k == "REGROW_DATABASE_URL"}
    env.update(REGROW_HOME=str(home), PYTHONPATH=str(ROOT), REGROW_WARM="off", NO_COLOR="1")
    return subprocess.run([sys.executable, "-m", "regrow.app.cli", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_status_without_a_config_prints_the_table_and_json(fleet_store: st.Store, home: Path):
    out = _cli(home, "status")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "8 model(s)" in lines[0] and "7 need(s) a person" in lines[0]
    assert "alias history" in lines[0]  # where the champion comes from
    assert lines[1].split()[:2] == ["model", "champion"]
    table = [ln.split()[0] for ln in lines[3:11]]
    assert table == [*sorted(set(EXPECTED) - {"alpha"}), "alpha"]
    assert "  charlie: circuit_open -- 3 training(s) in a row" in out.stdout
    js = _cli(home, "status", "--json")
    assert js.returncode == 0, js.stderr
    doc = json.loads(js.stdout)
    assert doc["champion_source"] == "alias_history" and doc["needs_person"] == 7
    assert set(doc["reasons"]) == set(fleet.ATTENTION)
    assert [m["model"] for m in doc["models"]] == table
    row = doc["models"][-1]
    assert set(row) == {"model", "config", "champion", "champion_since", "champion_age_seconds",
                        "challenger", "bake", "last_check", "open_requests", "circuit",
                        "approvals", "last_training", "needs_person"}
    assert row["last_check"]["performance"]["metric"] == "roc_auc"


def test_status_without_a_config_imports_no_ml_stack(fleet_store: st.Store, home: Path):
    code = ("import sys; from regrow.app.cli import main; rc = main(['status', '--json']); "
            "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'mlflow', 'prefect', "
            "'evidently', 'pandas', 'sklearn', 'great_expectations', 'numpy'}); "
            "print('HEAVY', heavy, file=sys.stderr); sys.exit(rc)")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "REGROW_")) or k == "REGROW_DATABASE_URL"}
    env.update(REGROW_HOME=str(home), PYTHONPATH=str(ROOT), REGROW_WARM="off")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stderr
    assert len(json.loads(out.stdout)["models"]) == 8


def test_status_bad_input(home: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["status", "--stale-after", "soon"], warm=False) == 2
    assert "--stale-after: 'soon' is not a duration" in capsys.readouterr().err
    assert main(["status", "--set", "gate.max_regression=0.1"], warm=False) == 2
    assert "--set needs a config" in capsys.readouterr().err
    assert main(["status"], warm=False) == 0  # an empty home: says so
    assert "no models in" in capsys.readouterr().out


# ------------------------------------------------------------------ the artifact

def _artifact_table(url: str) -> tuple[list[dict], str]:
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: url}), get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[fleet.ARTIFACT_KEY])))
    assert arts, "no regrow-fleet artifact"
    newest = max(arts, key=lambda a: a.created)
    data = json.loads(newest.data) if isinstance(newest.data, str) else newest.data
    return data, newest.description or ""


@pytest.mark.slow
def test_each_drift_check_refreshes_the_fleet_artifact(prefect_server: str, home: Path,
                                                       tmp_path: Path):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from regrow.flows.monitoring import drift_check_flow, score_flow
    from regrow.flows.training import train_flow

    cheap = {"gate": {"bootstrap_samples": 20}, "candidates": {"estimators": [
        {"name": "logreg", "estimator": "logistic_regression", "params": {"max_iter": 300}}]},
        "monitoring": {"window": {"rows": 300, "min_rows": 100}}}
    good = write_case(tmp_path / "good", binary_frame(900), merge(merge(BINARY_CONFIG, cheap), {
        "registry": {"model_name": "fleet-good"}}))
    bad = write_case(tmp_path / "bad", binary_frame(900, shuffle_labels=True), merge(
        merge(BINARY_CONFIG, cheap), {"registry": {"model_name": "fleet-bad"}}))
    rows = binary_frame(300, seed=5, start="2025-01-01").drop(columns=["label"])
    rows["row_id"] += 50_000
    rows.to_csv(tmp_path / "good" / "rows.csv", index=False)
    with temporary_settings({PREFECT_API_URL: prefect_server}):
        assert train_flow(str(good), reason="first").promoted
        assert not train_flow(str(bad), reason="first").promoted  # shuffled labels: refused
        score_flow(str(good), str(tmp_path / "good" / "rows.csv"))
        check = drift_check_flow(str(good), retrain=False)
    table, description = _artifact_table(prefect_server)
    assert [r["model"] for r in table] == ["fleet-bad", "fleet-good"]  # needs a person first
    assert table[0]["needs a person"] == "no_champion" and table[1]["needs a person"] == "-"
    assert table[1]["champion"].startswith("v1 (")
    assert table[1]["last check"].startswith(check.assessment["verdict"])
    assert "no_champion: nothing can score" in table[0]["why"]
    assert "1 need a person: fleet-bad" in description
    # a person promotes fleet-bad's version by hand (recorded); the next check shows it
    store = st.Store(Settings.from_env().database_url)
    store.record_alias_move("fleet-bad", "champion", None, "1", "promoted by hand",
                            "manual:ana", None)
    with temporary_settings({PREFECT_API_URL: prefect_server}):
        second = drift_check_flow(str(good), retrain=False)
    table, description = _artifact_table(prefect_server)
    assert [r["needs a person"] for r in table] == ["-", "-"]
    assert table[0]["model"] == "fleet-bad" and table[0]["champion"].startswith("v1 (")
    assert "none needs a person" in description
    assert fleet.collect(store, home).models[1].last_check["id"] == second.check_id
    store.dispose()


# ------------------------------------------------------------------ serve a folder

def _config(folder: Path, name: str, **patch) -> Path:
    cfg = merge(merge(BINARY_CONFIG, {"registry": {"model_name": name}}), patch)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def test_a_folder_stands_for_its_configs(tmp_path: Path):
    folder = tmp_path / "models"
    a, b = _config(folder, "a"), _config(folder, "b")
    c = folder / "c.yml"
    c.write_text(a.read_text().replace("model_name: a", "model_name: c"))
    (folder / "notes.txt").write_text("not a config")
    (folder / ".hidden.yaml").write_text("{}")
    (folder / "sub").mkdir()
    _config(folder / "sub", "deeper")  # only the folder's own files
    assert config_paths([folder]) == [a, b, c]
    assert config_paths([a, folder]) == [a, b, c]  # each file once
    assert [x.config.registry.model_name for x in load_configs([str(folder)])] == ["a", "b", "c"]
    args = build_parser().parse_args(["serve", str(folder), str(a), "--limit", "2"])
    assert args.configs == [str(folder), str(a)] and args.limit == 2


def test_bad_folders_are_one_clear_error(tmp_path: Path, home: Path,
                                         capsys: pytest.CaptureFixture[str]):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="empty: no config in this folder"):
        config_paths([empty])
    with pytest.raises(ConfigError, match="gone: no such config file or folder"):
        config_paths([tmp_path / "gone"])
    folder = tmp_path / "models"
    _config(folder, "fine")
    _config(folder, "broken", gate={"max_regression": "a lot"})
    (folder / "worse.yaml").write_text("data: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load_configs([folder])
    text = str(info.value)
    assert "broken.yaml" in text and "gate.max_regression" in text
    assert "worse.yaml: not valid YAML" in text and "fine.yaml" not in text
    # the command says so before anything is served, exit 2
    assert main(["serve", str(folder)], warm=False) == 2
    err = capsys.readouterr().err
    assert "broken.yaml" in err and "gate.max_regression" in err and "worse.yaml" in err
    assert main(["serve", str(empty)], warm=False) == 2
    assert "no config in this folder" in capsys.readouterr().err
    assert main(["up", str(empty)], warm=False) == 2
    assert "no config in this folder" in capsys.readouterr().err


# ------------------------------------------------------------------ warm

def _steady(doc: dict) -> dict:
    """A fleet document without what changes from one second to the next."""
    doc.pop("generated_at")
    for m in doc["models"]:
        m.pop("champion_age_seconds")
    return doc


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="warm commands: Linux only")
def test_status_without_a_config_runs_warm(fleet_store: st.Store, home: Path):
    """While the control plane's warm process is up, the fleet view runs there and prints
    what it prints on its own."""
    import signal
    import time

    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "MLFLOW_", "REGROW_")) or k == "REGROW_DATABASE_URL"}
    env.update(REGROW_HOME=str(home), PYTHONPATH=str(ROOT), NO_COLOR="1")
    log, sock = home / "warm.log", home / "run" / "warm.sock"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "regrow.app.warm_main", str(sock)],
                                env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while "listening" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        run = [sys.executable, "-m", "regrow.app.cli", "status", "--json"]
        there = subprocess.run(run, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
        here = subprocess.run(run, env={**env, "REGROW_WARM": "off"}, cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
        assert there.returncode == here.returncode == 0, there.stderr + here.stderr
        assert _steady(json.loads(there.stdout)) == _steady(json.loads(here.stdout))
        assert "ran `regrow status --json` -> exit 0" in log.read_text()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
