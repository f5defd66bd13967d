"""Calibration benchmark: false alarms of calibrated vs fixed 0.1 drift thresholds, and the
cost of calibrating.

False alarms: one 20,000-row reference of 10 columns (6 numeric, two of them heavy-tailed;
4 categorical, one with 200 levels; see tests/test_calibration.py) and 200 windows drawn
fresh from the same distribution (new seeds) at 500, 1,000 and 10,000 rows. A window is a
false alarm when any column is flagged. Baseline: Evidently's fixed thresholds (normed
Wasserstein 0.1, Jensen-Shannon 0.1) on the same windows; calibrated: `tasks.monitoring.calibration`
at alpha 0.01 (Bonferroni over the 10 columns), default floors. Scores use the statistics
of `tasks.monitoring.calibration`, equal to Evidently's to 1e-9 (tests/test_calibration.py).

Cost: `calibrate` for 20 features plus a prediction column at 20,000 reference rows and a
1,000-row window (median of 3, wall and CPU), against one pass of the same 21 statistics
over one window (what a drift check computes) as the baseline.

Usage::

    .venv/bin/python -m tests.bench calibration [--windows=200] [--sizes=500,1000,10000]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time

import numpy as np
import pandas as pd

from regrow.tasks.monitoring.calibration import calibrate, jensenshannon, normed_wasserstein
from tests.bench import record
from tests.test_calibration import KINDS, METHODS, draw

ALPHA, FIXED = 0.01, 0.1
TIME_BUDGET_S = 2.0


def scores(ref: pd.DataFrame, window: pd.DataFrame, kinds: dict[str, str]) -> dict[str, float]:
    """Every column's drift score."""
    return {c: (normed_wasserstein if k == "numeric" else jensenshannon)(ref[c], window[c])
            for c, k in kinds.items()}


def false_alarms(ref: pd.DataFrame, rows: int, windows: int) -> dict:
    """Window-level and per-column false-alarm counts at one window size."""
    cal = calibrate(ref, KINDS, METHODS, window_rows=rows, alpha=ALPHA, seed=7)
    th = cal.thresholds(rows)
    out = {"rows": rows, "windows": windows, "calibrated": 0, "fixed": 0,
           "per_column_fixed": dict.fromkeys(KINDS, 0), "per_column_cal": dict.fromkeys(KINDS, 0),
           "thresholds": th}
    for w in range(windows):
        got = scores(ref, draw(900_000 + rows * 7 + w, rows), KINDS)
        out["calibrated"] += any(v >= th[c] for c, v in got.items())
        out["fixed"] += any(v >= FIXED for v in got.values())
        for c, v in got.items():
            out["per_column_cal"][c] += v >= th[c]
            out["per_column_fixed"][c] += v >= FIXED
    return out


def wide_reference(rows: int) -> tuple[pd.DataFrame, dict[str, str]]:
    """20 features (the 10 columns twice) and a probability-like prediction column."""
    a, b = draw(11, rows), draw(12, rows)
    frame = pd.concat([a.add_suffix("_a"), b.add_suffix("_b")], axis=1)
    frame["__score"] = np.random.default_rng(13).beta(2, 5, rows)
    kinds = {f"{c}_{s}": k for s in "ab" for c, k in KINDS.items()} | {"__score": "numeric"}
    return frame, kinds


def timing(repeats: int = 3) -> dict:
    """Calibration wall/CPU seconds (median) and the one-pass baseline."""
    ref, kinds = wide_reference(20_000)
    window = wide_reference(1000)[0]
    cal_wall, cal_cpu, base_wall = [], [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        calibrate(ref, kinds, METHODS, window_rows=1000, alpha=ALPHA, seed=7)
        cal_wall.append(time.perf_counter() - t0)
        cal_cpu.append(time.process_time() - c0)
        t0 = time.perf_counter()
        scores(ref, window, kinds)
        base_wall.append(time.perf_counter() - t0)
    return {"columns": len(kinds), "wall": statistics.median(cal_wall),
            "cpu": statistics.median(cal_cpu), "baseline": statistics.median(base_wall)}


def margin(windows: int) -> float:
    """Three binomial standard deviations of a rate ALPHA over `windows` windows."""
    return 3 * math.sqrt(ALPHA * (1 - ALPHA) / windows)


def main(argv: list[str]) -> int:
    """Print both tables. Returns 1 when the calibrated rate exceeds alpha + 3 sigma."""
    p = argparse.ArgumentParser(prog="python -m tests.bench calibration")
    p.add_argument("--windows", type=int, default=200)
    p.add_argument("--sizes", default="500,1000,10000")
    p.add_argument("--quick", action="store_true", help="50 windows, 500 and 1000 rows")
    args, _ = p.parse_known_args(argv)
    sizes = [int(v) for v in args.sizes.split(",") if v]
    if args.quick:
        args.windows, sizes = 50, [500, 1000]
    load = " ".join(f"{v:.1f}" for v in os.getloadavg())
    ref = draw(1, 20_000)
    results = []
    for rows in sizes:
        print(f"[bench calibration] {args.windows} windows of {rows:,} rows", file=sys.stderr,
              flush=True)
        results.append(false_alarms(ref, rows, args.windows))
    t = timing()
    print(f"\ncalibration benchmark -- {os.cpu_count()} cores, load average {load}; reference "
          f"20,000 rows x 10 columns (heavy tails, a 200-level categorical), alpha {ALPHA}")
    head = (f"{'window rows':>11} {'windows':>7} {'fixed 0.1 FA':>12} {'calibrated FA':>13} "
            f"{'fixed/calibrated':>16} {'alpha + 3 sigma':>15}")
    print(head + "\n" + "-" * len(head))
    ok = True
    for r in results:
        w = r["windows"]
        fixed, cal = r["fixed"] / w, r["calibrated"] / w
        ratio = f"{fixed / cal:.1f}x" if cal else "inf"
        ok &= cal <= ALPHA + margin(w)
        print(f"{r['rows']:>11,} {w:>7} {fixed:>12.3f} {cal:>13.3f} {ratio:>16} "
              f"{ALPHA + margin(w):>15.3f}")
    for r in results:
        noisy = {c: n for c, n in r["per_column_fixed"].items() if n}
        print(f"  {r['rows']:,} rows: fixed flags per column {noisy}; calibrated "
              f"{ {c: n for c, n in r['per_column_cal'].items() if n} }; thresholds "
              f"{ {c: round(v, 3) for c, v in r['thresholds'].items()} }")
    print(f"\ncalibration time, {t['columns']} columns (20 features + prediction) at 20,000 "
          f"reference rows, 1,000-row window, median of 3:")
    print(f"  calibrate: {t['wall']:.2f} s wall, {t['cpu']:.2f} s CPU (budget "
          f"{TIME_BUDGET_S:.0f} s); baseline, one pass of the 21 statistics over one window: "
          f"{t['baseline']:.3f} s; ratio {t['wall'] / t['baseline']:.0f}x")
    table = []
    for r in results:
        w = r["windows"]
        fixed, cal = r["fixed"] / w, r["calibrated"] / w
        table.append({"window rows": r["rows"], "windows": w, "fixed 0.1 FA": fixed,
                      "calibrated FA": cal,
                      "fixed/calibrated": f"{fixed / cal:.1f}x" if cal else "inf",
                      "alpha + 3 sigma": ALPHA + margin(w)})
    record("calibration", table,
           "fixed thresholds of 0.1 on the same undrifted windows (false alarms: share of windows "
           "flagging any column); for the time, one pass of the 21 statistics over one window",
           tables={"calibration time, 20 features + prediction at 20,000 reference rows, "
                   "1,000-row window, median of 3": [{
                       "columns": t["columns"], "calibrate wall s": t["wall"],
                       "calibrate CPU s": t["cpu"], "budget s": TIME_BUDGET_S,
                       "one pass of the statistics s": t["baseline"],
                       "ratio": f"{t['wall'] / t['baseline']:.0f}x"}]},
           notes=[f"reference 20,000 rows x 10 columns (heavy tails, a 200-level categorical), "
                  f"alpha {ALPHA}; calibrated within alpha + 3 sigma: {'yes' if ok else 'NO'}"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
