"""One truthful history: promotions and rollbacks started together in separate processes take
turns in the model's alias section, so the history is an unbroken chain with no invented
actor; a read writes nothing; an MLflow that does not answer is never read as "no champion".
On the SQLite store and on the real PostgreSQL server."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.faultlog import record
from tests.procs import pg_database

MODEL = "race-model"

# One mover, for every round: says it is ready, waits for the round's start file, then
# promotes or rolls back as `actor` (one process per mover: the imports are paid once).
MOVER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from regrow.tasks.registry import governance as gov
    from regrow.tasks.registry.mlflow_registry import Registry
    from regrow.tasks.store.database import Store
    from regrow.tasks.store.settings import Settings

    action, actor, target, folder, model, rounds = sys.argv[1:7]
    settings = Settings.from_env()
    reg, store = Registry(settings), Store(settings.database_url)
    reg.aliases(model)  # connect before the start, so the movers really race
    for round_ in range(int(rounds)):
        Path(folder, f"ready-{round_}-{actor}").touch()
        while not Path(folder, f"start-{round_}").exists():
            time.sleep(0.002)
        try:
            if action == "promote":
                moves = gov.promote(reg, store, model, target, by=actor, reason="race")
            else:
                moves = gov.rollback(reg, store, model, by=actor, reason="race")
            print("MOVED", [m.describe() for m in moves], flush=True)
        except gov.GovernanceError as err:
            print("REFUSED", err, flush=True)
        Path(folder, f"done-{round_}-{actor}").touch()
""")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def stores(request, tmp_path: Path):
    """Environment for one MLflow store and one monitoring store, with three passed versions
    of MODEL, v1 champion (recorded)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MLFLOW_", "REGROW_", "PREFECT_"))}
    env.update(REGROW_HOME=str(tmp_path / "home"), MLFLOW_DISABLE_TELEMETRY="true")
    if request.param == "sqlite":
        yield env
        return
    with pg_database() as url:
        env["REGROW_DATABASE_URL"] = url
        yield env


def request_backend(env: dict[str, str]) -> str:
    return "postgres" if "REGROW_DATABASE_URL" in env else "sqlite"


def _setup(env: dict[str, str]) -> None:
    code = textwrap.dedent(f"""
        from regrow.tasks.registry import governance as gov
        from regrow.tasks.registry.mlflow_registry import CHAMPION, Registry
        from regrow.tasks.store.database import Store
        from regrow.tasks.store.settings import Settings
        s = Settings.from_env()
        reg, store = Registry(s), Store(s.database_url)
        reg.client.create_registered_model({MODEL!r})
        for _ in range(3):
            mv = reg.client.create_model_version({MODEL!r}, "file:///nowhere",
                                                 tags={{"regrow.gate.verdict": gov.PASSED}})
        gov.move_alias(reg, store, {MODEL!r}, CHAMPION, "1", "first", "test")
    """)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]


def _history(env: dict[str, str]) -> tuple[list[dict], str | None]:
    code = textwrap.dedent(f"""
        import json
        from regrow.tasks.registry.mlflow_registry import CHAMPION, Registry
        from regrow.tasks.store.database import Store
        from regrow.tasks.store.settings import Settings
        s = Settings.from_env()
        rows = Store(s.database_url).alias_history({MODEL!r}, CHAMPION)
        print(json.dumps({{"rows": rows, "champion": Registry(s).alias_version({MODEL!r}, CHAMPION)}},
                         default=str))
    """)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    import json

    got = json.loads(out.stdout.strip().splitlines()[-1])
    return got["rows"], got["champion"]


def test_racing_movers_leave_an_unbroken_chain_and_no_invented_actor(stores, tmp_path: Path):
    env = stores
    _setup(env)
    script = tmp_path / "mover.py"
    script.write_text(MOVER)
    movers = [("promote", "alice", "2"), ("rollback", "bob", "-"), ("promote", "carol", "3")]
    rounds = 3
    procs = [subprocess.Popen([sys.executable, str(script), action, actor, target, str(tmp_path),
                               MODEL, str(rounds)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for action, actor, target in movers]

    def wait_for(kind: str, round_: int) -> None:
        deadline = time.monotonic() + 300
        while not all((tmp_path / f"{kind}-{round_}-{actor}").exists() for _, actor, _ in movers):
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), \
                [p.communicate()[1][-2000:] for p in procs if p.poll() is not None]
            time.sleep(0.01)

    for round_ in range(rounds):
        wait_for("ready", round_)
        (tmp_path / f"start-{round_}").touch()  # all three are waiting: they start together
        wait_for("done", round_)
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
        assert out.count("MOVED") + out.count("REFUSED") == rounds, out + err[-2000:]
    rows, champion = _history(env)
    invented = [r for r in rows if r["actor"] == "external"]
    broken = [a for b, a in zip(rows, rows[1:], strict=False) if a["old_version"] != b["new_version"]]
    record("racing promote/rollback, 3 rounds of 3 processes", "fault",
           bad_history=len(invented) + len(broken),
           wrong_moves=int(rows[-1]["new_version"] != champion), backend=request_backend(env))
    assert invented == []
    for before, after in zip(rows, rows[1:], strict=False):  # each move starts where the last one ended
        assert after["old_version"] == before["new_version"], rows
        assert after["id"] > before["id"]
    assert rows[-1]["new_version"] == champion
    assert len(rows) >= 4  # the first move and at least one per round


def test_a_read_does_not_write_and_an_outage_is_not_no_champion(stores, tmp_path: Path):
    env = stores
    _setup(env)
    before, _ = _history(env)
    reader = textwrap.dedent(f"""
        from regrow.tasks.registry import governance as gov
        from regrow.tasks.registry.mlflow_registry import CHAMPION, Registry, RegistryUnavailable
        from regrow.tasks.store.database import Store
        from regrow.tasks.store.settings import Settings
        s = Settings.from_env()
        reg, store = Registry(s), Store(s.database_url)
        reg.client.set_registered_model_alias({MODEL!r}, CHAMPION, "2")  # outside regrow
        found = gov.outside_moves(reg, store, {MODEL!r}, "test")
        print("FOUND", [m.describe() for m in found])
        down = Registry(Settings.from_env().__class__(**{{**s.__dict__,
                        "tracking_uri": "http://user:secret@127.0.0.1:9/"}}))
        try:
            down.alias_version({MODEL!r}, CHAMPION)
        except RegistryUnavailable as err:
            print("DOWN", err)
    """)
    env = {**env, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "3"}
    out = subprocess.run([sys.executable, "-c", reader], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "FOUND ['champion: v1 -> v2']" in out.stdout
    down = next(line for line in out.stdout.splitlines() if line.startswith("DOWN"))
    assert "MLflow at http://user:***@127.0.0.1:9/ did not answer" in down
    assert "secret" not in down
    after, champion = _history(env)
    record("MLflow down during a read; an outside move read", "fault",
           bad_history=len(after) - len(before), tracebacks=0, backend=request_backend(env))
    assert after == before and champion == "2"  # found, shown, not written
