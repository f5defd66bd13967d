"""Governance commands: how long a person waits for `regrow status`, `history` and `rollback`.

One state dir with two trained versions of a small synthetic model; then, interleaved, each
command as a fresh `regrow` process (as a person runs it), median of `--repeats` runs, against
`regrow --help` (the interpreter and argument parsing alone) as the baseline. Rollbacks
alternate between the two versions (rollback, then `promote` back, which is timed apart).

Usage::

    .venv/bin/python -m tests.bench governance [--repeats=5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "MLFLOW_", "REGROW_"))}
    env.update(REGROW_HOME=str(home), PYTHONPATH=str(ROOT), MLFLOW_DISABLE_TELEMETRY="true",
               PREFECT_SERVER_ANALYTICS_ENABLED="false")
    return env


def _run(args: list[str], home: Path) -> float:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True,
                         text=True, env=_env(home), cwd=ROOT, timeout=900)
    took = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"`regrow {' '.join(args)}` failed:\n{out.stderr[-2000:]}")
    return took


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="bench governance")
    p.add_argument("--repeats", type=int, default=5)
    args, _ = p.parse_known_args(argv)
    from tests.helpers import BINARY_CONFIG, binary_frame, write_case

    with tempfile.TemporaryDirectory(prefix="bench-gov-") as tmp:
        home = Path(tmp) / "home"
        first = write_case(Path(tmp) / "a", binary_frame(2000, seed=1, noise=2.0), BINARY_CONFIG)
        second = write_case(Path(tmp) / "b", binary_frame(2000, seed=2), BINARY_CONFIG)
        print("setting up: two trainings ...", flush=True)
        _run(["train", str(first)], home)
        _run(["train", str(second)], home)
        cfg = str(first)
        times: dict[str, list[float]] = {k: [] for k in
                                         ("--help", "status", "history", "rollback", "promote")}
        for _ in range(args.repeats):
            times["--help"].append(_run(["--help"], home))
            times["status"].append(_run(["status", cfg], home))
            times["history"].append(_run(["history", cfg], home))
            times["rollback"].append(_run(["rollback", cfg, "--by", "bench", "--reason", "b"], home))
            times["promote"].append(_run(["promote", cfg, "--version", "2", "--by", "bench",
                                          "--reason", "back"], home))
    base = statistics.median(times["--help"])
    print("\n| command | runs | median s | min s | max s | vs `--help` |")
    print("|---|---|---|---|---|---|")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"| `regrow {name}` | {len(ts)} | {med:.2f} | {min(ts):.2f} | {max(ts):.2f} | "
              f"{med / base:.1f}x |")
    return 0
