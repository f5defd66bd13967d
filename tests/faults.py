"""``make faults``: run the fault suite and print what a person and an auditor would have met.

Runs every fault test module (``tests/test_faults*.py``, ``tests/test_history_races.py``) on
SQLite and on the PostgreSQL server, with ``REGROW_FAULT_LOG`` set so that each test records
the faults it injected and the effects it measured (`tests.faultlog`), then prints the totals.
Exits 1 when a test fails or a figure is above its target.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULES = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_faults*.py")) \
    + ["tests/test_history_races.py"]
BLOCK_TARGET = 5.0  # seconds a dead training may block its model on one host


def table(rows: list[dict]) -> tuple[list[tuple[str, str, str]], bool]:
    """The ledger's totals as (figure, value, target) lines, and whether every target is met."""
    def total(key: str) -> int:
        return sum(int(r[key]) for r in rows)

    blocked = [r["blocked_seconds"] for r in rows if r["blocked_seconds"] is not None]
    worst = max(blocked) if blocked else None
    lines = [
        ("faults injected", str(sum(r["kind"] == "fault" for r in rows)), "-"),
        ("bad inputs tried", str(sum(r["kind"] == "bad_input" for r in rows)), "-"),
        ("cases on PostgreSQL", str(sum(r["backend"] == "postgres" for r in rows)), "-"),
        ("tracebacks shown to a person", str(total("tracebacks")), "0"),
        ("wrong champion moves", str(total("wrong_moves")), "0"),
        ("invented or broken history rows", str(total("bad_history")), "0"),
        ("lost or doubled predictions and labels", str(total("lost") + total("doubled")), "0"),
        ("seconds a dead training blocks its model (worst)",
         "not measured" if worst is None else f"{worst:.1f}", f"<= {BLOCK_TARGET:.0f}"),
    ]
    ok = all(total(k) == 0 for k in ("tracebacks", "wrong_moves", "bad_history", "lost",
                                     "doubled")) and (worst is None or worst <= BLOCK_TARGET)
    return lines, ok


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="regrow-faults-") as tmp:
        log = Path(tmp) / "faults.jsonl"
        log.touch()
        code = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               *MODULES, *argv], cwd=ROOT,
                              env={**os.environ, "REGROW_FAULT_LOG": str(log)}
                              ).returncode
        rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    lines, ok = table(rows)
    width = max(len(f) for f, _, _ in lines)
    print(f"\nfault suite: {len(rows)} cases recorded from {', '.join(MODULES)}")
    print(f"{'figure':<{width}}  {'measured':>12}  target")
    for figure, value, target in lines:
        print(f"{figure:<{width}}  {value:>12}  {target}")
    if code:
        print(f"pytest exited {code}: a fault test failed")
    return 0 if code == 0 and ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
