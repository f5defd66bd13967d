"""Outages: a monitoring store, an MLflow server or a Prefect API that does not answer, a state
directory that cannot be written, a disk that is full, a reader that went away. Each command
then exits 1 with one sentence (``error: ...``) naming the service and its address (password
masked), shows no traceback, leaves nothing half-written and leaves the champion where it was.

Every command runs as a subprocess (``python -m regrow.app.cli``) against the module's state
directory, where champion v1 was trained once. The outages, and how they are simulated:

- store down: ``REGROW_DATABASE_URL`` names a PostgreSQL server on a port nobody listens on (with
  a password, which must not be shown); a PostgreSQL store whose database was dropped;
- MLflow down: ``MLFLOW_TRACKING_URI`` is ``http://user:password@127.0.0.1:<free port>``;
- Prefect down: ``PREFECT_API_URL`` is ``http://127.0.0.1:<free port>/api``;
- read-only state directory: every file and folder of ``REGROW_HOME`` made read-only (the
  command runs without the capabilities that let root ignore file modes);
- full disk: the command runs with ``RLIMIT_FSIZE`` at 4 KiB, so every write that grows a file
  past it fails (``EFBIG``, as ``ENOSPC`` would; no mount needed);
- a closed pipe (``regrow status | true``): stdout closed before the command writes.

Each case is recorded in the fault ledger (`tests.faultlog`) with the tracebacks seen, champion
moves, history rows added or left running, and files left half-written.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.faultlog import record, tracebacks
from tests.helpers import BINARY_CONFIG, binary_frame, merge, write_case
from tests.procs import free_port, pg_database

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux rlimits")

REGROW = [sys.executable, "-m", "regrow.app.cli"]
ROOT = Path(__file__).resolve().parent.parent
MODEL = "outages"
CONFIG = merge(BINARY_CONFIG, {
    "registry": {"model_name": MODEL},
    "retrain": {"cooldown": "1s", "max_trainings": 100, "circuit_breaker_after": 100}})
PASSWORD = "s3cret-pw"
TABLES = ("alias_history", "training_runs", "retrain_requests", "prediction_batches", "labels",
          "drift_checks", "bakes")


def env_for(home: Path, api_url: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "MLFLOW_", "REGROW_"))}
    env.update(REGROW_HOME=str(home), PYTHONPATH=str(ROOT), REGROW_WARM="off",
               PREFECT_SERVER_ANALYTICS_ENABLED="false")
    if api_url:
        env["PREFECT_API_URL"] = api_url
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def case(tmp_path_factory, prefect_server) -> tuple[Path, Path, str]:
    """(config path, state dir, Prefect API) with champion v1 trained once for the module and
    one batch scored (a drift check has a window to judge), and the files the commands read:
    ``rows.csv`` to score, ``labels.csv``."""
    folder = tmp_path_factory.mktemp("outages")
    cfg = write_case(folder / "case", binary_frame(), CONFIG)
    rows = binary_frame(300, seed=3)
    rows["row_id"] += 10_000
    rows.drop(columns=["label"]).to_csv(folder / "rows.csv", index=False)
    rows[["row_id", "label"]].to_csv(folder / "labels.csv", index=False)
    home = folder / "home"
    for args in (["train", str(cfg)], ["score", str(cfg), "--input", str(folder / "rows.csv")]):
        out = subprocess.run([*REGROW, *args], env=env_for(home, prefect_server), cwd=ROOT,
                             capture_output=True, text=True, timeout=1200)
        assert out.returncode == 0, out.stderr
    return cfg, home, prefect_server


def commands(cfg: Path) -> dict[str, list[str]]:
    """Each command's arguments; ``labels`` gets labels the store has not seen (labels already
    recorded are not written again, so they could not meet a write that fails)."""
    import uuid

    folder = cfg.parent.parent
    fresh = folder / f"labels-{uuid.uuid4().hex[:8]}.csv"
    fresh.write_text("row_id,label\n" + "".join(f"{fresh.stem}-{i},{i % 2}\n" for i in range(300)))
    return {
        "train": ["train", str(cfg)],
        "score": ["score", str(cfg), "--input", str(folder / "rows.csv")],
        "labels": ["labels", str(cfg), "--input", str(fresh)],
        "watch": ["watch", str(cfg), "--no-retrain"],
        "status": ["status", str(cfg)],
        "history": ["history", str(cfg)],
        "promote": ["promote", str(cfg), "--version", "1", "--by", "ops", "--reason", "test"],
        "rollback": ["rollback", str(cfg), "--by", "ops", "--reason", "test"],
        "retrain": ["retrain", str(cfg), "--reason", "test"],
        "serve": ["serve", str(cfg)],
    }


# -- what a command left behind -------------------------------------------------------------------

def open_stores(home: Path):
    from regrow.tasks.registry.mlflow_registry import Registry
    from regrow.tasks.store.database import Store
    from regrow.tasks.store.settings import Settings

    old = os.environ.get("REGROW_HOME")
    os.environ["REGROW_HOME"] = str(home)
    try:
        s = Settings.from_env()
    finally:
        os.environ["REGROW_HOME"] = old or ""
    return Registry(s), Store(s.database_url)


def snapshot(home: Path) -> dict:
    """Aliases, row counts, files under the state directory, MLflow runs left RUNNING."""
    reg, store = open_stores(home)
    try:
        with store.engine.connect() as conn:
            counts = {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar()
                      for t in TABLES}
            running = conn.execute(sa.text(
                "SELECT count(*) FROM training_runs WHERE status = 'running'")).scalar()
        files = sorted(str(p.relative_to(home)) for d in ("predictions", "reports")
                       for p in (home / d).rglob("*") if p.is_file())
        return {"champion": reg.alias_version(MODEL, "champion"),
                "challenger": reg.alias_version(MODEL, "challenger"), "counts": counts,
                "running": running, "files": files, "mlflow_running": len(reg.running_runs(MODEL))}
    finally:
        store.dispose()


def effects(before: dict, after: dict) -> dict[str, int]:
    """The ledger's figures for what changed between two snapshots (all 0 for an outage)."""
    moved = int(before["champion"] != after["champion"]) \
        + int(before["challenger"] != after["challenger"])
    rows = sum(max(0, after["counts"][t] - before["counts"][t]) for t in TABLES)
    left_running = max(0, after["running"] - before["running"]) \
        + max(0, after["mlflow_running"] - before["mlflow_running"])
    half_files = len(set(after["files"]) - set(before["files"]))
    return {"wrong_moves": moved, "bad_history": rows + left_running, "lost": half_files}


@contextlib.contextmanager
def read_only(home: Path):
    """Every folder and file of `home` read-only (restored afterwards)."""
    paths = [home, *home.rglob("*")]
    modes = {p: p.stat().st_mode for p in paths if not p.is_symlink()}
    for p, mode in modes.items():
        p.chmod(stat.S_IMODE(mode) & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        yield
    finally:
        for p, mode in sorted(modes.items(), key=lambda kv: len(kv[0].parts)):
            p.chmod(stat.S_IMODE(mode))


def without_file_override() -> None:
    """In the child, before exec: drop the capabilities that let root write through file modes
    (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER) from the bounding set."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2, 3):
        libc.prctl(24, cap, 0, 0, 0)  # PR_CAPBSET_DROP


def small_files() -> None:
    """In the child: every file write past 4 KiB fails (a full disk, as the process sees it)."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))


def run(args: list[str], env: dict[str, str], preexec=None,
        timeout: float = 300) -> tuple[int, str, str, float]:
    t0 = time.monotonic()
    proc = subprocess.run([*REGROW, *args], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, preexec_fn=preexec)
    return proc.returncode, proc.stdout, proc.stderr, time.monotonic() - t0


def check_outage(name: str, home: Path, args: list[str], env: dict[str, str], *,
                 names: tuple[str, ...], preexec=None, backend: str = "sqlite",
                 secret: str | None = None) -> str:
    """Run one command under an outage: exit 1, one ``error:`` line naming the service
    (`names`, each in the line), no traceback, nothing changed; record it. Returns the line."""
    before = snapshot(home)
    code, out, err, seconds = run(args, env, preexec)
    after = snapshot(home)
    seen = effects(before, after)
    record(name, "fault", tracebacks=tracebacks(out, err), backend=backend, **seen)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    others = [line for line in err.splitlines()
              if line.strip() and not line.startswith(("error:", "[", "note:"))]
    assert code == 1, (code, out, err)
    assert tracebacks(out, err) == 0, err
    assert len(errors) == 1 and not others, err
    for word in names:
        assert word in errors[0], (word, errors[0])
    if secret:
        assert secret not in out + err
    assert seen == {"wrong_moves": 0, "bad_history": 0, "lost": 0}, (seen, before, after)
    print(f"\n{name}: {seconds:.1f} s: {errors[0]}")
    return errors[0]


# -- a store or server that does not answer --------------------------------------------------------

STORE_COMMANDS = ["train", "score", "labels", "watch", "status", "history", "promote", "rollback",
                  "retrain", "serve"]


@pytest.mark.parametrize("command", STORE_COMMANDS)
def test_monitoring_store_down(case, command):
    cfg, home, api = case
    port = free_port()
    dead = f"postgresql+psycopg://regrow:{PASSWORD}@127.0.0.1:{port}/regrow"
    check_outage(f"store down: {command}", home, commands(cfg)[command],
                 env_for(home, api, REGROW_DATABASE_URL=dead),
                 names=("monitoring store", f"postgresql+psycopg://regrow:***@127.0.0.1:{port}"),
                 backend="postgres", secret=PASSWORD)


MLFLOW_COMMANDS = ["train", "score", "watch", "status", "history", "promote", "rollback", "serve"]


@pytest.mark.parametrize("command", MLFLOW_COMMANDS)
def test_mlflow_down(case, command):
    cfg, home, api = case
    port = free_port()
    dead = f"http://regrow:{PASSWORD}@127.0.0.1:{port}"
    # one retry after 1 s: the figure is "one sentence", not MLflow's patience
    check_outage(f"MLflow down: {command}", home, commands(cfg)[command],
                 env_for(home, api, MLFLOW_TRACKING_URI=dead, MLFLOW_HTTP_REQUEST_MAX_RETRIES="1"),
                 names=("MLflow", f"http://regrow:***@127.0.0.1:{port}"), secret=PASSWORD)


def test_mlflow_down_labels_still_recorded(case):
    """Labels need no MLflow: they are recorded while it is down (not an outage for them)."""
    cfg, home, api = case
    port = free_port()
    code, out, err, _ = run(commands(cfg)["labels"], env_for(
        home, api, MLFLOW_TRACKING_URI=f"http://127.0.0.1:{port}"))
    assert code == 0 and "300 labels received" in out and tracebacks(out, err) == 0, out + err


@pytest.mark.parametrize("command", ["train", "score", "watch", "serve"])
def test_prefect_down(case, command):
    cfg, home, _ = case
    dead = f"http://127.0.0.1:{free_port()}/api"
    check_outage(f"Prefect down: {command}", home, commands(cfg)[command], env_for(home, dead),
                 names=("Prefect API", dead))


@pytest.mark.postgres
@pytest.mark.parametrize("command", ["status", "labels", "score"])
def test_postgres_store_dropped(case, command):
    """A PostgreSQL store that was in use and is gone (its database dropped)."""
    import sqlalchemy as sa

    from tests.procs import PG_ADMIN_URL

    cfg, home, api = case
    with pg_database() as url:
        env = env_for(home, api, REGROW_DATABASE_URL=url)
        code, _, err, _ = run(commands(cfg)["status"], env)  # creates the schema
        assert code == 0, err
        admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE "{url.rsplit("/", 1)[1]}" WITH (FORCE)'))
        admin.dispose()
        check_outage(f"store dropped: {command}", home, commands(cfg)[command], env,
                     names=("monitoring store", url.rsplit("/", 1)[0]), backend="postgres")


# -- a state directory that cannot be written ------------------------------------------------------

@pytest.mark.parametrize("command", ["train", "score", "labels", "watch", "promote", "rollback"])
def test_read_only_state_directory(case, command):
    cfg, home, api = case
    before = snapshot(home)
    with read_only(home):
        code, out, err, _ = run(commands(cfg)[command], env_for(home, api),
                                preexec=without_file_override)
    record(f"read-only home: {command}", "fault", tracebacks=tracebacks(out, err),
           **effects(before, snapshot(home)))
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 1 and tracebacks(out, err) == 0, err
    assert len(errors) == 1, err
    assert str(home) in errors[0], errors[0]  # the store, or the state directory, by its path
    assert any(w in errors[0] for w in ("read-only", "cannot be written")), errors[0]
    assert effects(before, snapshot(home)) == {"wrong_moves": 0, "bad_history": 0, "lost": 0}


def test_read_only_state_directory_still_reads(case):
    """Reads need no write: status and history answer from a read-only state directory."""
    cfg, home, api = case
    with read_only(home):
        for command in ("status", "history"):
            code, out, err, _ = run(commands(cfg)[command], env_for(home, api),
                                    preexec=without_file_override)
            assert code == 0 and tracebacks(out, err) == 0, err
    assert "champion v1" in run(commands(cfg)["status"], env_for(home, api))[1]


@pytest.mark.parametrize("command", ["score", "labels", "watch", "promote"])
def test_full_disk(case, command):
    cfg, home, api = case
    line = check_outage(f"full disk: {command}", home, commands(cfg)[command],
                        env_for(home, api), names=(str(home),), preexec=small_files)
    assert any(w in line for w in ("full", "File too large", "disk I/O")), line


# -- a reader that went away -------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["status", "history"])
def test_closed_pipe_ends_quietly(case, command):
    """``regrow status | true``: the reader is gone before the command writes."""
    cfg, home, api = case
    proc = subprocess.Popen([*REGROW, *commands(cfg)[command]], env=env_for(home, api), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()
    err = proc.stderr.read()
    proc.wait(timeout=300)
    record(f"closed pipe: {command}", "fault", tracebacks=tracebacks(err))
    assert proc.returncode == 1 and err == "", err


def test_json_reader_gets_the_sentence(case):
    """With --json, the outage's sentence is also on stdout, as JSON."""
    import json

    cfg, home, api = case
    port = free_port()
    dead = f"postgresql+psycopg://regrow:{PASSWORD}@127.0.0.1:{port}/regrow"
    code, out, err, _ = run([*commands(cfg)["status"], "--json"],
                            env_for(home, api, REGROW_DATABASE_URL=dead))
    record("store down: status --json", "fault", tracebacks=tracebacks(out, err),
           backend="postgres")
    assert code == 1 and tracebacks(out, err) == 0, err
    said = json.loads(out)
    assert said["kind"] == "unavailable" and f"127.0.0.1:{port}" in said["error"]
    assert PASSWORD not in out + err
