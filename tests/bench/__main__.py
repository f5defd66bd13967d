"""``make bench``: run every benchmark module and print its table.

``python -m tests.bench [name ...]`` runs only the named ones (training, drift, ...).
Each module exposes ``main(argv) -> int`` and prints medians and ratios against a baseline
measured in the same run.

With more than one module, each runs in a fresh interpreter: a module that imports Prefect
fixes Prefect's settings (API URL, home) for the rest of the process, and one module's
threads and imports would otherwise weigh on the next one's timings.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import time

MODULES = ["training", "drift", "calibration", "estimate", "webhook", "dispatch", "governance",
           "backtest", "control", "commands", "cluster", "predlog", "fleet", "policy", "serving",
           "significance"]


def run_one(name: str, rest: list[str]) -> int:
    """One module in this process."""
    try:
        mod = importlib.import_module(f"tests.bench.{name}")
    except ModuleNotFoundError as err:
        if err.name != f"tests.bench.{name}":
            raise
        print(f"[bench] {name}: not present, skipped")
        return 0
    print(f"\n##### benchmark: {name}", flush=True)
    return mod.main(rest)


def main(argv: list[str]) -> int:
    names = [a for a in argv if a in MODULES] or MODULES
    rest = [a for a in argv if a not in MODULES]  # flags and their values, passed through
    if len(names) == 1:
        return run_one(names[0], rest)
    failed = []
    for name in names:
        t0 = time.monotonic()
        code = subprocess.run([sys.executable, "-m", "tests.bench", name, *rest]).returncode
        print(f"[bench] {name}: {'exit ' + str(code) if code else 'done'} in "
              f"{time.monotonic() - t0:.0f} s", flush=True)
        if code:
            failed.append(name)
    if failed:
        print(f"[bench] failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
