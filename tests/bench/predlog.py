"""The prediction log at scale: scoring and logging a million rows, a drift check over a
million-row window, and the log's size.

Set-up, on a fresh state directory: the demo config trained on its early period (days
0-5,999); `--rows` rows (default 1,000,000) of the demo's width made from the rest of the
table (rows drawn with replacement, each numeric value jittered by N(0, 0.01) so that no two
rows repeat, unique ids), written once as Parquet.

Rows (fresh processes, medians of `--repeats`; without the control plane each command imports
the stack and starts its temporary Prefect server, as a cron job would):

- ``regrow score`` of the file against a bare script in its own process that reads the same
  file, loads the same registered model from the same MLflow store, makes one
  ``predict_proba`` pass (the prediction read off it, as regrow's scoring does) and writes the
  predictions and inputs to Parquet (target: <= 1.3x);
- ``regrow watch --no-retrain`` with the window set to all `--rows` rows, without and with the
  control plane (`regrow up`: the command runs in its warm process) (target <= 15 s; peak
  memory <= 1 GB: the maximum resident size of the command's own process, without the plane);
- the store's growth per million predictions (SQLite file + the log's files; target
  <= 100 MB).

Usage::

    .venv/bin/python -m tests.bench predlog [--rows=1000000] [--repeats=3]
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

from tests.bench import ROOT, command_env, record, timed, timed_regrow

CONFIG = ROOT / "configs" / "rainfall.yaml"
MODEL = "rainfall-binary"

BARE = r'''
import sys, os
import numpy as np, pandas as pd
import mlflow.sklearn
from mlflow import MlflowClient
os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "true"
home = sys.argv[2]
mlflow.set_tracking_uri(f"sqlite:///{home}/mlflow.db")
model = mlflow.sklearn.load_model("models:/rainfall-binary@champion")
frame = pd.read_parquet(sys.argv[1])
num = ["temperature", "dew_point", "sea_level_pressure", "visibility", "average_wind_speed",
       "max_sustained_wind_speed", "minimum_temperature", "maximum_temperature"]
X = frame[num]
out = X.copy()
out.insert(0, "row_id", frame["day"].astype(str))
# One predict_proba pass, the prediction read off it, as regrow's scoring does
# (tasks/model/predict.py): the same work, no second pass.
proba = model.predict_proba(X)
out["prediction"] = model.steps[-1][1].classes_[proba.argmax(axis=1)].astype(str)
out["score"] = proba[:, 1]
out.to_parquet(sys.argv[3], compression="zstd", index=False)
print(len(out))
'''


BASELINE = ("a bare script in its own process that reads the same file, loads the same "
            "registered model, makes one predict_proba pass (the prediction read off it, as "
            "regrow does) and writes the predictions and inputs to Parquet (zstd)")


def _peak(argv: list[str], home: Path) -> tuple[float, float]:
    """(wall seconds, peak resident MB) of a command as a fresh process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=command_env(home), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    took = time.perf_counter() - t0
    out, err = proc.stdout.read(), proc.stderr.read()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"`{' '.join(argv[-5:])}` failed:\n{out[-1500:]!r}\n{err[-2500:]!r}")
    return took, usage.ru_maxrss / 1024


def _size_mb(home: Path) -> float:
    files = [home / "regrow.db", *(home / "predictions").rglob("*")]
    return sum(f.stat().st_size for f in files if f.is_file()) / 1e6


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="bench predlog")
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--repeats", type=int, default=3)
    args, _ = p.parse_known_args(argv)
    import numpy as np

    from regrow.app.demo import load_rainfall

    with tempfile.TemporaryDirectory(prefix="bench-predlog-") as tmp:
        home, data = Path(tmp) / "home", Path(tmp) / "data"
        data.mkdir()
        frame = load_rainfall()
        early = data / "early.csv"
        frame.iloc[:6000].to_csv(early, index=False)
        rest = frame.iloc[6000:].reset_index(drop=True)
        rng = np.random.default_rng(0)
        big = rest.iloc[rng.integers(0, len(rest), args.rows)].drop(columns=["rain"])
        big = big.reset_index(drop=True).assign(day=np.arange(10**7, 10**7 + args.rows))
        num = big.select_dtypes("float").columns
        # drawn rows repeat: jitter them so the log cannot compress repeats away
        big[num] = big[num] + rng.normal(scale=0.01, size=(args.rows, len(num)))
        rows_file = data / "rows.parquet"
        big.to_parquet(rows_file, index=False)
        print(f"set-up: first training; {args.rows:,} rows of the demo's width ...", flush=True)
        timed_regrow(["train", str(CONFIG), "--set", f"data.source.path={early}", "--reason",
                      "bench"], home)
        score_cmd = ["score", str(CONFIG), "--input", str(rows_file)]
        scores, bares, sizes = [], [], []
        for i in range(args.repeats):
            before = _size_mb(home)
            scores.append(timed_regrow(score_cmd, home))
            sizes.append(_size_mb(home) - before)
            bares.append(timed([sys.executable, "-c", BARE, str(rows_file), str(home),
                                str(data / "bare-out.parquet")], home))
            print(f"  repeat {i + 1}: regrow score {scores[-1]:.1f} s, bare {bares[-1]:.1f} s, "
                  f"log +{sizes[-1]:.0f} MB", flush=True)
        watch = ["watch", str(CONFIG), "--no-retrain", "--set",
                 f"monitoring.window.rows={args.rows}", "--set",
                 f"monitoring.window.min_rows={min(500, args.rows)}"]
        checks: dict[str, list[tuple[float, float]]] = {"no plane": [], "plane up": []}
        for mode in checks:
            if mode == "plane up":
                from tests.procs import free_port

                timed_regrow(["up", "--prefect-port", str(free_port()), "--mlflow-port",
                              str(free_port())], home)
            try:
                for i in range(args.repeats):
                    checks[mode].append(_peak([sys.executable, "-m", "regrow.app.cli", *watch], home))
                    print(f"  repeat {i + 1}, {mode}: regrow watch {checks[mode][-1][0]:.1f} s, "
                          f"peak {checks[mode][-1][1]:.0f} MB", flush=True)
            finally:
                if mode == "plane up":
                    timed_regrow(["down"], home)
    score_s, bare_s = statistics.median(scores), statistics.median(bares)
    watch_s = {m: statistics.median(c[0] for c in v) for m, v in checks.items()}
    peak = max(c[1] for c in checks["no plane"])
    per_million = statistics.median(sizes) * 1_000_000 / args.rows
    print(f"\n{args.rows:,} rows of the demo's width (8 inputs, id, date); {args.repeats} "
          f"repeats; {os.cpu_count()} cores; no control plane")
    print("\n| measure | median | baseline | ratio | target |\n|---|---|---|---|---|")
    print(f"| `regrow score` (read, predict, log) | {score_s:.1f} s | bare script "
          f"{bare_s:.1f} s | {score_s / bare_s:.2f}x | <= 1.3x |")
    for mode, took in watch_s.items():
        print(f"| `regrow watch` over a {args.rows:,}-row window, {mode} | {took:.1f} s | - | - "
              "| <= 15 s |")
    print(f"| peak memory of that check (its own process, no plane) | {peak:.0f} MB | - | - | "
          "<= 1,000 MB |")
    print(f"| store growth per million predictions | {per_million:.0f} MB | - | - | "
          "<= 100 MB |")
    record("predlog", [
        {"measure": "`regrow score` (read, predict, log)", "median": f"{score_s:.1f} s",
         "baseline": f"bare script {bare_s:.1f} s", "ratio": f"{score_s / bare_s:.2f}x",
         "target": "<= 1.3x"},
        *({"measure": f"`regrow watch` over a {args.rows:,}-row window, {mode}",
           "median": f"{took:.1f} s", "baseline": "-", "ratio": "-", "target": "<= 15 s"}
          for mode, took in watch_s.items()),
        {"measure": "peak memory of that check (its own process, no plane)",
         "median": f"{peak:.0f} MB", "baseline": "-", "ratio": "-", "target": "<= 1,000 MB"},
        {"measure": "store growth per million predictions", "median": f"{per_million:.0f} MB",
         "baseline": "-", "ratio": "-", "target": "<= 100 MB"}],
        BASELINE,
        notes=[f"{args.rows:,} rows of the demo's width (8 inputs, id, date); {args.repeats} "
               "repeats"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
