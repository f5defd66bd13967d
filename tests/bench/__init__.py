"""Benchmarks (`make bench`); shared helpers for those that time commands as fresh processes,
and `record`, which keeps each benchmark's final table for the docs site."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
# One JSON file per benchmark, written by `record`; docs/gen_reference.py renders them.
RESULTS = ROOT / "docs" / "benchmarks"


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


def _command(name: str) -> str:
    """The command line that ran this benchmark, as a person would type it."""
    args = sys.argv[1:]
    if Path(sys.argv[0]).name != "__main__.py":  # python -m tests.bench.<name> ...
        args = [name, *args]
    return " ".join(["python -m tests.bench", *map(shlex.quote, map(_no_tmp, args))])


def _no_tmp(arg: str) -> str:
    """An argument naming a place in this machine's temporary directory (`--home` kept between
    runs) as ``<tmp>/...``: a record is read on other machines."""
    tmp = tempfile.gettempdir().rstrip("/") + "/"
    key, eq, value = arg.partition("=") if arg.startswith("--") else ("", "", arg)
    if value.startswith(tmp):
        value = "<tmp>/" + value[len(tmp):]
    return f"{key}{eq}{value}"


def _first_line(path: str, key: str) -> str | None:
    """The value of the first `key: value` line of a /proc file (None off Linux)."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        load = None
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, text=True,
                            capture_output=True).stdout.strip() or None
    return {"cores": os.cpu_count(), "cpu": _first_line("/proc/cpuinfo", "model name"),
            "memory": _first_line("/proc/meminfo", "MemTotal"), "platform": platform.platform(),
            "python": platform.python_version(), "load_average": load, "commit": commit}


def _plain(value: Any) -> Any:
    """Cells as JSON: floats rounded to 4 decimals, anything unusual as text."""
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, int | str | bool) or value is None:
        return value
    return str(value)


def record(name: str, rows: list[dict[str, Any]], baseline_note: str, *,
           tables: dict[str, list[dict[str, Any]]] | None = None,
           notes: list[str] | None = None) -> Path:
    """Keep a benchmark's final table as ``docs/benchmarks/<name>.json``, next to what it prints.

    `rows` is the main table (one dict per row, column -> cell, in column order), `tables` any
    further titled tables, `baseline_note` what the ratios compare against (printed here, under
    the table: one line saying what the baseline does), `notes` lines
    printed under the tables (verdicts, summaries). The command line, the date and the machine
    are added here. The docs site's benchmark page is generated from these files
    (``docs/gen_reference.py``); a new run replaces the file.
    """
    payload = {
        "benchmark": name,
        "command": _command(name),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "baseline": baseline_note,
        "rows": [{k: _plain(v) for k, v in row.items()} for row in rows],
        "tables": {title: [{k: _plain(v) for k, v in row.items()} for row in table]
                   for title, table in (tables or {}).items()},
        "notes": list(notes or []),
    }
    print(f"baseline: {baseline_note}", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(path)
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    print(f"[bench] {name}: table recorded in {shown}", flush=True)
    return path
