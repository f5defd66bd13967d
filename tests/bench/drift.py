"""Drift benchmark: ``tasks.monitoring.drift.check_drift`` against a plain Evidently ``DataDriftPreset``.

Both arms compare a reference and a current frame of the same size (20 columns: 16 numeric
of several shapes, 4 categorical strings; 5 columns shifted by a known amount, one of them
categorical) in the same run:

- ours: ``check_drift`` with its defaults -- one ``ValueDrift`` per column with explicit
  methods (normed Wasserstein 0.1 numeric, Jensen-Shannon 0.1 categorical), an explicit
  ``DataDefinition``, and a seeded sample of at most 100,000 rows per side;
- baseline (the ratio): ``Report([DataDriftPreset()], include_tests=True).run(current,
  reference)`` on the same seeded sample ``check_drift`` compares (drawn the same way, the
  drawing timed too), types inferred (the tests only add each column's drifted/not verdict; at
  these sizes the preset picks the same methods and thresholds): the same work, no more;
- the preset on the full frames, as a plain Evidently user would run it: shown beside, not the
  ratio's baseline (it compares up to ten times more rows at 1M; what the sampling saves).

Each arm runs in its own subprocess (imports and data generation are not timed), so its peak
RSS (``ru_maxrss``) is its own; the table shows the peak and the growth during the timed
calls. "agree" compares the drifted-column sets (the baseline's from its per-column tests,
looked up by column name) and both against the columns that were really shifted.

Usage (``python -m tests.bench`` passes on only arguments that start with ``-``, so give
values with ``=``)::

    .venv/bin/python -m tests.bench drift --quick                # 100k rows, 1 run per arm
    .venv/bin/python -m tests.bench drift --sizes=100000,1000000 # the default
    .venv/bin/python -m tests.bench.drift --help

The baseline takes minutes at 1M rows. Timings are wall-clock on a shared 2-core machine and
noisy (+-30% is common).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tests.bench import record

ROOT = Path(__file__).resolve().parents[2]
SEED = 20_26
DEFAULT_SIZES = [100_000, 1_000_000]
TARGET_SIZE, TARGET_SPEEDUP = 1_000_000, 10.0

# 16 numeric columns cycling through these shapes, then 4 categorical ones.
SHAPES = {
    "normal": lambda rng, n: rng.normal(50, 10, n),
    "lognormal": lambda rng, n: rng.lognormal(1, 0.6, n),
    "exponential": lambda rng, n: rng.exponential(2, n),
    "uniform": lambda rng, n: rng.uniform(0, 100, n),
    "bimodal": lambda rng, n: np.where(rng.random(n) < 0.4, rng.normal(-3, 1, n),
                                       rng.normal(2, 1.5, n)),
    "student_t": lambda rng, n: rng.standard_t(5, n),
}
NUMERIC = [f"num{i:02d}" for i in range(16)]
CATEGORICAL = [f"cat{i}" for i in range(4)]
LEVELS = [list("abcde"), [f"r{i}" for i in range(8)], list("xyz"), [f"p{i}" for i in range(12)]]
# Shifts of the current frame: numeric by this many reference standard deviations (the
# normed Wasserstein distance of a pure location shift), categorical to these proportions.
NUMERIC_SHIFT = {"num00": 0.5, "num05": 0.25, "num10": 0.15, "num13": 1.0}
CATEGORICAL_SHIFT = {"cat2": [0.2, 0.3, 0.5]}  # from [0.5, 0.3, 0.2]
SHIFTED = sorted([*NUMERIC_SHIFT, *CATEGORICAL_SHIFT])


# --- synthetic data -------------------------------------------------------------------------

def _proportions(k: int) -> np.ndarray:
    w = np.linspace(k, 1, k)
    return w / w.sum()


def make_frames(rows: int, seed: int = SEED) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reference and current frames of `rows` rows; the current one has SHIFTED shifted."""
    rng = np.random.default_rng(seed)
    shapes = list(SHAPES.values())
    frames = []
    for side in ("reference", "current"):
        data: dict[str, object] = {}
        for i, name in enumerate(NUMERIC):
            values = shapes[i % len(shapes)](rng, rows)
            if side == "current" and name in NUMERIC_SHIFT:
                values = values + NUMERIC_SHIFT[name] * float(np.std(values))
            data[name] = values
        for name, levels in zip(CATEGORICAL, LEVELS, strict=True):
            p = _proportions(len(levels))
            if side == "current" and name in CATEGORICAL_SHIFT:
                p = np.asarray(CATEGORICAL_SHIFT[name])
            codes = rng.choice(len(levels), size=rows, p=p)
            data[name] = np.asarray(levels, dtype=object)[codes]
        frames.append(pd.DataFrame(data))
    return frames[0], frames[1]


# --- one arm, in a child process ------------------------------------------------------------

def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _run_ours(ref: pd.DataFrame, cur: pd.DataFrame, max_rows: int | None) -> dict:
    from regrow.tasks.monitoring.drift import check_drift

    s = check_drift(ref, cur, NUMERIC, CATEGORICAL, max_rows=max_rows)
    return {
        "columns": {c.column: [c.method, c.score, c.threshold, c.drifted] for c in s.columns},
        "drifted": sorted(s.drifted_columns),
        "dataset_drift": s.dataset_drift,
        "compared_rows": [s.reference_sampled_rows, s.current_sampled_rows],
        "notes": s.notes,
    }


def _same_sample(ref: pd.DataFrame, cur: pd.DataFrame,
                 max_rows: int | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rows check_drift compares: its seeded sample of each side (seed 0, its default)."""
    from regrow.tasks.monitoring.drift import _sample

    ref_rng, cur_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(0).spawn(2))
    return _sample(ref, max_rows, ref_rng), _sample(cur, max_rows, cur_rng)


def _run_preset(ref: pd.DataFrame, cur: pd.DataFrame, max_rows: int | None = None) -> dict:
    from evidently import Report
    from evidently.presets import DataDriftPreset

    if max_rows is not None:
        ref, cur = _same_sample(ref, cur, max_rows)

    snapshot = Report([DataDriftPreset()], include_tests=True).run(
        current_data=cur, reference_data=ref)
    columns, counted = {}, None
    for result in snapshot.metric_results.values():
        location = result.metric_value_location
        params = location.metric.params if location is not None else {}
        kind = str(params.get("type", ""))
        if kind.endswith(":ValueDrift"):
            statuses = [getattr(t.status, "value", t.status) for t in result.tests]
            drifted = ("FAIL" in statuses) if statuses else None
            columns[params["column"]] = [params.get("method"), float(result.value),
                                         params.get("threshold"), drifted]
        elif kind.endswith(":DriftedColumnsCount"):
            counted = result.to_simple_dict()
    return {
        "columns": columns,
        "drifted": sorted(c for c, v in columns.items() if v[3]),
        "undecided": sorted(c for c, v in columns.items() if v[3] is None),
        "drifted_count": counted,
        "compared_rows": [len(ref), len(cur)],
    }


def child(arm: str, rows: int, repeats: int, max_rows: int | None) -> dict:
    """Generate the data, import the arm's libraries, then time `repeats` calls."""
    ref, cur = make_frames(rows)
    import evidently  # noqa: F401 - the import (8-9 s) is not part of either arm's time
    import evidently.presets  # noqa: F401

    import regrow.tasks.monitoring.drift  # noqa: F401

    before = _maxrss_mb()
    seconds, out = [], {}
    for _ in range(repeats):
        t0 = time.perf_counter()
        if arm == "ours":
            out = _run_ours(ref, cur, max_rows)
        else:
            out = _run_preset(ref, cur, max_rows if arm == "preset" else None)
        seconds.append(time.perf_counter() - t0)
    return {"arm": arm, "rows": rows, "seconds": seconds, "rss_before_mb": before,
            "rss_peak_mb": _maxrss_mb(), "evidently": evidently.__version__, **out}


def run_child(arm: str, rows: int, repeats: int, max_rows: int | None,
              timeout: float) -> dict:
    """One arm in a fresh interpreter; its result, or {"error": ...}."""
    cmd = [sys.executable, "-m", "tests.bench.drift", f"--arm={arm}", f"--rows={rows}",
           f"--repeats={repeats}", f"--max-rows={max_rows or 0}"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT "):])
            result["wall_s"] = time.perf_counter() - t0
            return result
    tail = "\n".join((proc.stderr or proc.stdout).splitlines()[-15:])
    return {"error": f"exit code {proc.returncode}:\n{tail}"}


# --- the comparison -------------------------------------------------------------------------

@dataclass
class SizeResult:
    """Both arms at one size."""

    rows: int
    ours: dict
    preset: dict  # the preset on the same sample: the baseline
    full: dict | None = None  # the preset on the full frames (None: not run)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def ours_s(self) -> float:
        return statistics.median(self.ours["seconds"])

    @property
    def preset_s(self) -> float:
        return statistics.median(self.preset["seconds"])

    @property
    def speedup(self) -> float:
        return self.preset_s / self.ours_s

    @property
    def full_s(self) -> float | None:
        return statistics.median(self.full["seconds"]) if self.full else None

    @property
    def agree(self) -> bool:
        return self.ours["drifted"] == self.preset["drifted"] and not self.preset["undecided"]


def run_size(rows: int, repeats: int, args: argparse.Namespace, log) -> SizeResult:
    results = {}
    arms = ["ours", "preset"] + (["full"] if args.full else [])
    for arm in arms:
        log(f"{rows:,} rows: {arm}, {repeats} run(s)")
        results[arm] = run_child(arm, rows, repeats, args.max_rows, args.timeout)
        if "error" not in results[arm]:
            log(f"  {', '.join(f'{s:.2f}' for s in results[arm]['seconds'])} s; "
                f"peak RSS {results[arm]['rss_peak_mb']:.0f} MB; "
                f"drifted {results[arm]['drifted']}")
    errors = [f"{arm}: {r['error']}" for arm, r in results.items() if "error" in r]
    return SizeResult(rows, results["ours"], results["preset"], results.get("full"), errors)


def repeats_for(rows: int, args: argparse.Namespace) -> int:
    """Runs per arm at a size."""
    if args.repeats:
        return max(1, args.repeats)
    return 1 if rows >= 1_000_000 else 3


# --- printing -------------------------------------------------------------------------------

def comparison_table(results: list[SizeResult]) -> str:
    """Medians, speedup, peak RSS (and growth during the calls), drifted-set agreement."""
    head = (f"{'rows':>10} {'runs':>4} {'ours s':>7} {'preset s':>9} {'speedup':>8} "
            f"{'full-frame preset s':>20}  "
            f"{'ours RSS MB':>14} {'preset RSS MB':>14}  {'drifted':>7} {'agree':>5} "
            f"{'= shifted':>9}")
    lines = [head, "-" * len(head)]
    for r in results:
        if not r.ok:
            lines.append(f"{r.rows:>10,}  failed: {'; '.join(e.splitlines()[0] for e in r.errors)}")
            continue
        o, p = r.ours, r.preset
        o_mem = f"{o['rss_peak_mb']:.0f} (+{o['rss_peak_mb'] - o['rss_before_mb']:.0f})"
        p_mem = f"{p['rss_peak_mb']:.0f} (+{p['rss_peak_mb'] - p['rss_before_mb']:.0f})"
        truth = "yes" if o["drifted"] == SHIFTED == p["drifted"] else "NO"
        full = f"{r.full_s:.2f}" if r.full_s is not None else "-"
        lines.append(f"{r.rows:>10,} {len(o['seconds']):>4} {r.ours_s:>7.2f} {r.preset_s:>9.2f} "
                     f"{r.speedup:>7.1f}x {full:>20}  {o_mem:>14} {p_mem:>14}  "
                     f"{len(o['drifted']):>3}/{len(o['columns']):<3} "
                     f"{'yes' if r.agree else 'NO':>5} {truth:>9}")
    return "\n".join(lines)


def detail_lines(results: list[SizeResult]) -> list[str]:
    """Per size: rows compared, the drifted columns, and any column the arms disagree on."""
    out = []
    for r in results:
        if not r.ok:
            out += [f"{r.rows:,} rows failed:"] + [f"  {e}" for e in r.errors]
            continue
        o, p = r.ours, r.preset
        out.append(f"{r.rows:,} rows: ours compared {o['compared_rows'][0]:,} / "
                   f"{o['compared_rows'][1]:,} rows, preset {p['compared_rows'][0]:,} / "
                   f"{p['compared_rows'][1]:,}; drifted: ours {o['drifted']}, "
                   f"preset {p['drifted']} (its DriftedColumnsCount: {p['drifted_count']})")
        for col in sorted(set(o["columns"]) | set(p["columns"])):
            oc, pc = o["columns"].get(col), p["columns"].get(col)
            if oc is None or pc is None or oc[3] != pc[3]:
                out.append(f"  {col}: ours {oc}, preset {pc}  <- differs")
        methods = sorted({f"{v[0]} @ {v[2]}" for v in p["columns"].values()})
        out.append(f"  preset's resolved methods: {methods}")
        gap = max((abs(o["columns"][c][1] - p["columns"][c][1]) for c in o["columns"]
                   if c in p["columns"]), default=0.0)
        out.append(f"  largest score difference ours vs preset: {gap:.4f}")
        if p["undecided"]:
            out.append(f"  preset columns without a test verdict: {p['undecided']}")
        shifted = {c: round(o["columns"][c][1], 4) for c in SHIFTED if c in o["columns"]}
        out.append(f"  shifted columns' scores (ours): {shifted}")
        for note in o.get("notes", []):
            out.append(f"  ours note: {note}")
    return out


def verdict_line(results: list[SizeResult]) -> str:
    """The sampling's target: >= 10x faster than the full-frame preset at 1M rows, with the
    same drifted columns as the preset on the same sample."""
    at = [r for r in results if r.rows == TARGET_SIZE and r.ok and r.full_s is not None]
    name = (f"target: check_drift >= {TARGET_SPEEDUP:.0f}x faster than the full-frame preset "
            f"at {TARGET_SIZE:,} rows, same drifted columns")
    if not at:
        return f"{name}: not measured"
    r = at[0]
    gain = r.full_s / r.ours_s
    ok = gain >= TARGET_SPEEDUP and r.agree
    return (f"{name}: {'MET' if ok else 'NOT MET'} ({gain:.1f}x; "
            f"{'identical' if r.agree else 'different'} columns)")


def load_average() -> str:
    try:
        return " ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "?"


# --- entry point ----------------------------------------------------------------------------

def parse_args(argv: list[str]) -> argparse.Namespace:
    """Flags; ``--quick`` is ``--sizes=100000 --repeats=1``."""
    p = argparse.ArgumentParser(prog="python -m tests.bench drift",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=_int_list, default=None,
                   help="comma-separated row counts per side (default 100000,1000000)")
    p.add_argument("--repeats", type=int, default=None,
                   help="runs per arm and size (default 3 below 1M rows, 1 at 1M and above)")
    p.add_argument("--quick", action="store_true", help="100k rows, 1 run per arm")
    p.add_argument("--max-rows", type=int, default=100_000,
                   help="ours: sample cap per side (0: no sampling; default 100000)")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per arm and size")
    p.add_argument("--no-full", dest="full", action="store_false",
                   help="skip the preset on the full frames (minutes at 1M rows)")
    p.add_argument("--arm", choices=["ours", "preset", "full"], help=argparse.SUPPRESS)
    p.add_argument("--rows", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.sizes = args.sizes or [100_000]
        args.repeats = args.repeats or 1
    args.sizes = args.sizes or DEFAULT_SIZES
    args.max_rows = args.max_rows or None
    return args


def _int_list(text: str) -> list[int]:
    return [int(v.replace("_", "")) for v in text.split(",") if v.strip()]


def main(argv: list[str]) -> int:
    """Run the benchmark and print its table. Returns 0, or 1 when an arm failed outright."""
    args = parse_args(argv)
    if args.arm:  # inside a child process
        result = child(args.arm, args.rows, args.repeats or 1, args.max_rows)
        print("RESULT " + json.dumps(result), flush=True)
        return 0

    def log(msg: str) -> None:
        print(f"[bench drift] {msg}", file=sys.stderr, flush=True)

    loads = [load_average()]
    results = [run_size(rows, repeats_for(rows, args), args, log) for rows in args.sizes]
    loads.append(load_average())
    version = next((r.ours.get("evidently") for r in results if r.ok), "?")
    print(f"\ndrift benchmark -- {os.cpu_count()} cores, python {sys.version.split()[0]}, "
          f"evidently {version}, load average {' -> '.join(loads)} "
          "(start -> end); wall-clock medians, noisy")
    print(f"data: reference and current of the same size, {len(NUMERIC)} numeric + "
          f"{len(CATEGORICAL)} categorical columns; shifted: {SHIFTED}")
    print(f"ours: check_drift, max_rows={args.max_rows} per side; preset: "
          "Report([DataDriftPreset()], include_tests=True) on the same sample (the baseline); "
          "full-frame preset: the same report on every row; "
          "RSS = peak of the arm's process (+ growth during the timed calls)")
    print(comparison_table(results))
    print(verdict_line(results))
    print("\n".join(detail_lines(results)))
    table = []
    for r in results:
        if not r.ok:
            table.append({"rows": r.rows, "failed": "; ".join(e.splitlines()[0] for e in r.errors)})
            continue
        o, p = r.ours, r.preset
        table.append({
            "rows": r.rows, "runs": len(o["seconds"]), "ours s": r.ours_s, "preset s": r.preset_s,
            "speedup": f"{r.speedup:.1f}x",
            "full-frame preset s": r.full_s if r.full_s is not None else "-",
            "ours RSS MB": f"{o['rss_peak_mb']:.0f} (+{o['rss_peak_mb'] - o['rss_before_mb']:.0f})",
            "preset RSS MB": f"{p['rss_peak_mb']:.0f} (+{p['rss_peak_mb'] - p['rss_before_mb']:.0f})",
            "drifted": f"{len(o['drifted'])}/{len(o['columns'])}",
            "agree": "yes" if r.agree else "NO",
            "= shifted": "yes" if o["drifted"] == SHIFTED == p["drifted"] else "NO"})
    record("drift", table,
           "a plain Evidently Report([DataDriftPreset()], include_tests=True) on the same "
           "seeded sample check_drift compares (the drawing timed too), in the same run; the "
           "full-frame preset is shown beside, not as the baseline",
           notes=[f"evidently {version}; reference and current of the same size, {len(NUMERIC)} "
                  f"numeric + {len(CATEGORICAL)} categorical columns; ours: check_drift, "
                  f"max_rows={args.max_rows} per side; RSS = peak of the arm's process (+ growth "
                  "during the timed calls)", verdict_line(results)])
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
