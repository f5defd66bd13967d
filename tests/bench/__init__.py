"""Benchmarks (`make bench`); shared helpers for those that time commands as fresh processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def command_env(home: Path) -> dict[str, str]:
    """The environment a fresh `regrow` process gets: the caller's, minus any REGROW_, PREFECT_
    and MLFLOW_ setting, on the state directory `home`."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "MLFLOW_", "REGROW_"))}
    env.update(REGROW_HOME=str(home), PYTHONPATH=str(ROOT), MLFLOW_DISABLE_TELEMETRY="true",
               PREFECT_SERVER_ANALYTICS_ENABLED="false")
    return env


def timed(argv: list[str], home: Path) -> float:
    """Run a process on `home`; its wall time in seconds (exits with its output if it fails)."""
    t0 = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True, env=command_env(home), cwd=ROOT,
                         timeout=900)
    took = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"`{' '.join(argv[-6:])}` failed:\n{out.stdout[-1500:]}"
                         f"{out.stderr[-2000:]}")
    return took


def timed_regrow(args: list[str], home: Path) -> float:
    """`regrow ARGS` as a fresh process; its wall time in seconds."""
    return timed([sys.executable, "-m", "regrow.app.cli", *args], home)
