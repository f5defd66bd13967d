"""``make bench``: run every benchmark module and print its table.

``python -m tests.bench [name ...]`` runs only the named ones (training, drift, ...).
Each module exposes ``main(argv) -> int`` and prints medians and ratios against a baseline
measured in the same run.
"""

from __future__ import annotations

import importlib
import sys

MODULES = ["training", "drift", "calibration", "estimate", "webhook", "dispatch", "governance",
           "backtest", "control", "commands", "cluster", "predlog"]


def main(argv: list[str]) -> int:
    names = [a for a in argv if a in MODULES] or MODULES
    rest = [a for a in argv if a not in MODULES]  # flags and their values, passed through
    status = 0
    for name in names:
        try:
            mod = importlib.import_module(f"tests.bench.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"tests.bench.{name}":
                raise
            print(f"[bench] {name}: not present, skipped")
            continue
        print(f"\n##### benchmark: {name}")
        status |= mod.main(rest)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
