"""Backtest benchmark: ``regrow backtest`` of the demo config over the demo's watch period.

The history is the demo's weather table (18,159 days). The replay starts at day 10,000 with a
first champion trained on the 4,000 days before it, and replays days 10,000-18,158 in windows
of 1,000 (labels arrive with each window; a retrain trains on the latest 4,000 labelled days),
under the shipped policy, whose cooldown and budget act on event time.

Figures: the backtest's wall time (median of the repeats) against the baseline measured in the
same run, one in-memory training of the same config on the first champion's rows (validation,
training, evaluation, gate, reference): the ratio says how many trainings' worth of time a
replay of 8 years costs. Then the per-window table of the last repeat, as the command prints it.

Usage::

    .venv/bin/python -m tests.bench backtest [--repeats=3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tests.bench import record

START_DAY, TRAIN_DAYS, WINDOW = 10_000, 4000, 1000


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="bench backtest")
    p.add_argument("--repeats", type=int, default=3)
    args, _ = p.parse_known_args(argv)
    with tempfile.TemporaryDirectory() as home:
        os.environ["REGROW_HOME"] = home
        from regrow.app.demo import CONFIG, load_rainfall, write_demo_data
        from regrow.configs.schema import load_config
        from regrow.tasks.monitoring import backtest as bt
        write_demo_data(Path(home))
        loaded = load_config(CONFIG)
        frame = load_rainfall()
        start = str(frame["date"].iloc[START_DAY].date())
        opts = bt.Options(window=str(WINDOW), start=start, train_window=str(TRAIN_DAYS))
        first_rows = frame.iloc[START_DAY - TRAIN_DAYS:START_DAY]
        fits, runs, report = [], [], None
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            bt.fit(loaded.config, first_rows, "1", None)
            fits.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            report = bt.run(loaded, frame, opts, source="demo table")
            runs.append(time.perf_counter() - t0)
    fit_s, run_s = statistics.median(fits), statistics.median(runs)
    print(f"backtest of configs/rainfall.yaml, days {START_DAY}..{len(frame) - 1} in windows of "
          f"{WINDOW}, start {start}, train window {TRAIN_DAYS} days; {args.repeats} repeats, "
          f"{os.cpu_count()} cores")
    print(f"\n| measure | median s | ratio |\n|---|---|---|\n"
          f"| one training of the config (baseline) | {fit_s:.2f} | 1.00x |\n"
          f"| backtest, {len(report.windows)} windows, {report.totals.retrains} trainings | "
          f"{run_s:.2f} | {run_s / fit_s:.2f}x |\n"
          f"| per window (mean) | {run_s / len(report.windows):.2f} | "
          f"{run_s / len(report.windows) / fit_s:.2f}x |")
    rows = bt.table_rows(report.windows, report.totals.metric)
    print("\n| " + " | ".join(rows[0]) + " | s |\n|" + "---|" * (len(rows[0]) + 1))
    for w, cells in zip(report.windows, rows[1:], strict=True):
        print("| " + " | ".join(cells) + f" | {w.seconds:.2f} |")
    print()
    for line in bt.summary_lines(report):
        print(line)
    windows = len(report.windows)
    record("backtest", [
        {"measure": "one training of the config (baseline)", "median s": fit_s, "ratio": "1.00x"},
        {"measure": f"backtest, {windows} windows, {report.totals.retrains} trainings",
         "median s": run_s, "ratio": f"{run_s / fit_s:.2f}x"},
        {"measure": "per window (mean)", "median s": run_s / windows,
         "ratio": f"{run_s / windows / fit_s:.2f}x"}],
        "one in-memory training of the same config on the first champion's rows, in the same run",
        tables={"per window (last repeat)": [dict(zip([*rows[0], "s"], [*cells, f"{w.seconds:.2f}"],
                                                      strict=True))
                                             for w, cells in zip(report.windows, rows[1:],
                                                                 strict=True)]},
        notes=[f"days {START_DAY}..{len(frame) - 1} in windows of {WINDOW}, start {start}, train "
               f"window {TRAIN_DAYS} days; {args.repeats} repeats",
               *bt.summary_lines(report)])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
