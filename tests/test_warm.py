"""Warm commands (`regrow.runtime.warm`): a command forwarded to the warm process behaves as the same
command run on its own -- output, exit code, terminal -- and dies with its caller."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import BINARY_CONFIG, binary_frame, write_case

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "MLFLOW_", "REGROW_"))}
    env.update(REGROW_HOME=str(home), PYTHONPATH=str(ROOT), NO_COLOR="1", **extra)
    return env


@pytest.fixture(scope="module")
def warm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, dict]]:
    """A warm process on a fresh REGROW_HOME; yields (home, its log, the env it was given)."""
    home = tmp_path_factory.mktemp("warm-home")
    env = _env(home, REGROW_TEST_PAUSE_AT="ingest", REGROW_TEST_PAUSE_SECONDS="300")
    log = home / "warm.log"
    sock = home / "run" / "warm.sock"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "regrow.app.warm_main", str(sock)], env=env,
                                stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                start_new_session=True)
    deadline = time.monotonic() + 300
    while "listening" not in log.read_text():
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)
    yield home, log, env
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


def _regrow(args: list[str], env: dict, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "regrow.app.cli", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300, **kw)


def test_forwarded_command_prints_and_exits_as_a_local_one(warm, tmp_path: Path) -> None:
    home, log, env = warm
    cfg = write_case(tmp_path / "m", binary_frame(100), BINARY_CONFIG)
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    for args in (["config", "check", str(cfg)], ["config", "check", str(bad)],
                 ["status", str(cfg)]):
        there = _regrow(args, env)
        here = _regrow(args, {**env, "REGROW_WARM": "off"})
        assert (there.returncode, there.stdout, there.stderr) == \
            (here.returncode, here.stdout, here.stderr), args
    assert _regrow(["config", "check", str(bad)], env).returncode == 2
    ran = log.read_text()
    assert f"ran `regrow config check {bad}` -> exit 2" in ran
    assert f"ran `regrow status {cfg}` -> exit 0" in ran


def test_a_different_environment_runs_locally(warm, tmp_path: Path) -> None:
    home, log, env = warm
    cfg = write_case(tmp_path / "m", binary_frame(100), BINARY_CONFIG)
    before = log.read_text().count("config check")
    other = _regrow(["config", "check", str(cfg)], {**env, "MLFLOW_TRACKING_URI": "sqlite://"})
    assert other.returncode == 0 and other.stdout.startswith("OK ")
    assert log.read_text().count("config check") == before  # not forwarded
    # ... and says why, in one line naming the variable (never its value).
    assert other.stderr.count("\n") == 1 and "MLFLOW_TRACKING_URI is set here only" in \
        other.stderr and "sqlite://" not in other.stderr, other.stderr
    unset = {k: v for k, v in env.items() if k != "REGROW_TEST_PAUSE_AT"}
    missing = _regrow(["config", "check", str(cfg)], unset)
    assert "REGROW_TEST_PAUSE_AT is not set here" in missing.stderr, missing.stderr
    same = _regrow(["config", "check", str(cfg)], env)
    assert same.stderr == ""  # warm: nothing to say


def test_the_command_dies_with_its_caller(warm, tmp_path: Path) -> None:
    home, log, env = warm
    cfg = write_case(tmp_path / "m", binary_frame(300), BINARY_CONFIG)
    marker = home / "paused-at-ingest"
    caller = subprocess.Popen([sys.executable, "-m", "regrow.app.cli", "train", str(cfg)], env=env,
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not marker.exists():
        assert caller.poll() is None, "the training ended before it paused"
        assert time.monotonic() < deadline
        time.sleep(0.2)
    command = int(marker.read_text())
    assert command != caller.pid  # it ran in a fork of the warm process
    caller.kill()  # kill -9: no chance to say goodbye
    caller.wait()
    deadline = time.monotonic() + 30
    while Path(f"/proc/{command}").exists() and "Z" not in _state(command):
        assert time.monotonic() < deadline, "the forwarded command outlived its caller"
        time.sleep(0.2)
    while "caller went away, ended" not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"
