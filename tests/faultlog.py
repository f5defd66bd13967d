"""The fault ledger: each fault test records what it injected and what it saw, and
``python -m tests.faults`` (``make faults``) prints the totals as one table.

A test calls `record` once per fault or bad input it tried, with what a person would have met:
tracebacks on the terminal, wrong champion moves, invented or broken history rows, lost or
doubled predictions and labels, and how long a dead training blocked its model. The figures
come from the run itself; `record` writes them only when ``REGROW_FAULT_LOG`` names a file
(``tests.faults`` sets it), so a plain ``make test`` is unaffected.
"""

from __future__ import annotations

import json
import os
import re
from typing import Literal

LOG_ENV = "REGROW_FAULT_LOG"
TRACEBACK = re.compile(r"^Traceback \(most recent call last\):", re.M)

Kind = Literal["fault", "bad_input"]


def tracebacks(*texts: str | None) -> int:
    """How many Python tracebacks the texts (a command's stdout and stderr) show a person."""
    return sum(len(TRACEBACK.findall(t or "")) for t in texts)


def record(case: str, kind: Kind, *, tracebacks: int = 0, wrong_moves: int = 0,
           bad_history: int = 0, lost: int = 0, doubled: int = 0,
           blocked_seconds: float | None = None, backend: str = "sqlite") -> None:
    """Add one fault (or bad input) and its observed effects to the ledger."""
    path = os.environ.get(LOG_ENV)
    if not path:
        return
    row = {"case": case, "kind": kind, "backend": backend, "tracebacks": tracebacks,
           "wrong_moves": wrong_moves, "bad_history": bad_history, "lost": lost,
           "doubled": doubled, "blocked_seconds": blocked_seconds}
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
