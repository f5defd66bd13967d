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
import statistics
import tempfile
from pathlib import Path

from tests.bench import record, timed_regrow


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
        timed_regrow(["train", str(first)], home)
        timed_regrow(["train", str(second)], home)
        cfg = str(first)
        times: dict[str, list[float]] = {k: [] for k in
                                         ("--help", "status", "history", "rollback", "promote")}
        for _ in range(args.repeats):
            times["--help"].append(timed_regrow(["--help"], home))
            times["status"].append(timed_regrow(["status", cfg], home))
            times["history"].append(timed_regrow(["history", cfg], home))
            times["rollback"].append(timed_regrow(["rollback", cfg, "--by", "bench", "--reason", "b"], home))
            times["promote"].append(timed_regrow(["promote", cfg, "--version", "2", "--by", "bench",
                                          "--reason", "back"], home))
    base = statistics.median(times["--help"])
    print("\n| command | runs | median s | min s | max s | vs `--help` |")
    print("|---|---|---|---|---|---|")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"| `regrow {name}` | {len(ts)} | {med:.2f} | {min(ts):.2f} | {max(ts):.2f} | "
              f"{med / base:.1f}x |")
    record("governance", [
        {"command": f"`regrow {name}`", "runs": len(ts), "median s": statistics.median(ts),
         "min s": min(ts), "max s": max(ts),
         "vs `--help`": f"{statistics.median(ts) / base:.1f}x"} for name, ts in times.items()],
        "`regrow --help` as a fresh process, in the same run (a store with two versions)")
    return 0
