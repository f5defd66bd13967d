"""Commands as a person runs them: `regrow status`, `watch` and `train` as fresh processes,
with the control plane up (`regrow up`: Prefect server, MLflow UI, the warm process) and
without it (each command imports the stack and starts a temporary Prefect server: the
baseline), and the demo config's training against a bare script doing the same fit.

Set-up, on a fresh state directory: the demo config trained on its early period (days
0-5,999), then 49 more versions registered for the same model (50 in all) and 1,000,000
predictions written to the monitoring store (`regrow status` must not slow down with either);
1,000 rows of later days scored and labelled, so `regrow watch` checks a full 1,000-row window.

Rows (medians of `--repeats`, wall clock of the whole command):

- `regrow status` (target <= 1.0 s with the plane);
- `regrow watch --no-retrain` on the 1,000-row window (target <= 6 s with the plane);
- `regrow train` of the demo config on the early period, against a bare script (a fresh
  Python process: read the CSV, the same time split, the same two candidates with the same
  grids, folds and thread cap, refit, holdout ROC AUC) (target <= 1.5x with the plane).

Usage::

    .venv/bin/python -m tests.bench commands [--repeats=3] [--predictions=1000000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tests.bench import ROOT, record, timed, timed_regrow

CONFIG = ROOT / "configs" / "rainfall.yaml"

BARE = r'''
import sys, time
import numpy as np, pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GridSearchCV, TimeSeriesSplit
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits
frame = pd.read_csv(sys.argv[1], parse_dates=["date"]).sort_values("date")
cut = int(len(frame) * 0.75)
num = ["temperature", "dew_point", "sea_level_pressure", "visibility", "average_wind_speed",
       "max_sustained_wind_speed", "minimum_temperature", "maximum_temperature"]
train, hold = frame.iloc[:cut], frame.iloc[cut:]
prep = ColumnTransformer([("n", Pipeline([("i", SimpleImputer()), ("s", StandardScaler())]), num)])
best = None
for est, grid in ((LogisticRegression(max_iter=500), {"m__C": [0.1, 1.0]}),
                  (HistGradientBoostingClassifier(max_iter=150, learning_rate=0.05), {})):
    search = GridSearchCV(Pipeline([("p", prep), ("m", est)]), [grid] if grid else [{}],
                          scoring="roc_auc", cv=TimeSeriesSplit(3), refit=True)
    with threadpool_limits(limits=1):
        search.fit(train[num], train["rain"])
    if best is None or search.best_score_ > best.best_score_:
        best = search
with threadpool_limits(limits=1):
    auc = roc_auc_score(hold["rain"], best.predict_proba(hold[num])[:, 1])
print(f"holdout roc_auc {auc:.4f}")
'''


def _fill(home: Path, versions: int, predictions: int) -> None:
    """Register more versions of the trained model and log `predictions` rows (Parquet batches
    of 50,000 rows indexed in the store, as `regrow score` writes them)."""
    os.environ["REGROW_HOME"] = str(home)
    import pandas as pd

    from regrow.tasks.monitoring.scoring import log_batch
    from regrow.tasks.registry.mlflow_registry import CHAMPION, Registry
    from regrow.tasks.store.database import Store
    from regrow.tasks.store.settings import Settings

    settings = Settings.from_env()
    reg = Registry(settings)
    name = "rainfall-binary"
    champ = reg.version_info(name, reg.alias_version(name, CHAMPION))
    for _ in range(versions - 1):
        reg.client.create_model_version(name, champ.source, champ.run_id, tags=champ.tags)
    store = Store(settings.database_url)
    at = dt.datetime.now(dt.UTC)
    chunk = 50_000
    for lo in range(0, predictions, chunk):  # batches of the prediction log, as scoring writes
        n = min(chunk, predictions - lo)
        rows = pd.DataFrame({"__row_id": [f"bench-{i}" for i in range(lo, lo + n)],
                             "__event_time": pd.NaT, "__prediction": "0", "__score": 0.25,
                             "temperature": 0.1, "dew_point": 0.2, "sea_level_pressure": 0.3})
        log_batch(store, name, champ.version, f"bench-{lo // chunk}", at, rows)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="bench commands")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--predictions", type=int, default=1_000_000)
    p.add_argument("--versions", type=int, default=50)
    args, _ = p.parse_known_args(argv)
    from regrow.app.demo import load_rainfall
    from tests.procs import free_port

    with tempfile.TemporaryDirectory(prefix="bench-commands-") as tmp:
        home = Path(tmp) / "home"
        data = Path(tmp) / "data"
        data.mkdir()
        frame = load_rainfall()
        early = data / "early.csv"
        frame.iloc[:6000].to_csv(early, index=False)
        frame.iloc[10_000:11_000].drop(columns=["rain"]).to_csv(data / "window.csv", index=False)
        frame.iloc[10_000:11_000][["day", "rain"]].to_csv(data / "labels.csv", index=False)
        train = ["train", str(CONFIG), "--set", f"data.source.path={early}", "--reason", "bench"]
        print("set-up: first training, versions, predictions, one scored window ...", flush=True)
        first = timed_regrow(train, home)
        t0 = time.perf_counter()
        _fill(home, args.versions, args.predictions)
        print(f"  first training {first:.1f} s; {args.versions} versions and "
              f"{args.predictions:,} predictions written in {time.perf_counter() - t0:.1f} s",
              flush=True)
        timed_regrow(["score", str(CONFIG), "--input", str(data / "window.csv")], home)
        timed_regrow(["labels", str(CONFIG), "--input", str(data / "labels.csv")], home)
        commands = {"status": ["status", str(CONFIG)],
                    "watch --no-retrain (1,000-row window)": ["watch", str(CONFIG),
                                                              "--no-retrain"],
                    "train (demo config, 6,000 rows)": train}
        times: dict[tuple[str, str], list[float]] = {}
        bare: list[float] = []
        for mode in ("no plane", "plane up"):
            if mode == "plane up":
                took = timed_regrow(["up", "--prefect-port", str(free_port()), "--mlflow-port",
                                str(free_port())], home)
                print(f"  regrow up: {took:.1f} s", flush=True)
            try:
                for _ in range(args.repeats):
                    for name, cmd in commands.items():
                        times.setdefault((name, mode), []).append(timed_regrow(cmd, home))
                    if mode == "no plane":
                        bare.append(timed([sys.executable, "-c", BARE, str(early)], home))
                    print(f"  {mode}: " + ", ".join(f"{n.split()[0]} {times[(n, mode)][-1]:.1f} s"
                                                    for n in commands), flush=True)
            finally:
                if mode == "plane up":
                    timed_regrow(["down"], home)
    bare_s = statistics.median(bare)
    print(f"\nstate: {args.versions} versions, {args.predictions:,} predictions; "
          f"{args.repeats} repeats; {os.cpu_count()} cores")
    print("\n| command | no plane: median s | plane up: median s | plane / no plane | target |")
    print("|---|---|---|---|---|")
    targets = {"status": "<= 1.0 s", "watch": "<= 6 s", "train": "<= 1.5x bare"}
    for name in commands:
        base = statistics.median(times[(name, "no plane")])
        med = statistics.median(times[(name, "plane up")])
        print(f"| `regrow {name}` | {base:.2f} | {med:.2f} | {med / base:.2f}x | "
              f"{targets[name.split()[0]]} |")
    train_name = next(n for n in commands if n.startswith("train"))
    med = statistics.median(times[(train_name, "plane up")])
    base = statistics.median(times[(train_name, "no plane")])
    print(f"\n| demo-config training | median s | / bare script |\n|---|---|---|\n"
          f"| bare script (read, split, 2 candidates by CV, refit, holdout AUC) | {bare_s:.2f} | "
          f"1.00x |\n| `regrow train`, no plane | {base:.2f} | {base / bare_s:.2f}x |\n"
          f"| `regrow train`, plane up | {med:.2f} | {med / bare_s:.2f}x |")
    table = []
    for name in commands:
        no_plane = statistics.median(times[(name, "no plane")])
        plane = statistics.median(times[(name, "plane up")])
        table.append({"command": f"`regrow {name}`", "no plane: median s": no_plane,
                      "plane up: median s": plane, "plane / no plane": f"{plane / no_plane:.2f}x",
                      "target": targets[name.split()[0]]})
    record("commands", table,
           "each command without the control plane (a temporary Prefect server per command); "
           "the training also against a bare script doing the same read, split, cross-validated "
           "fit and holdout score",
           tables={"demo-config training": [
               {"arm": "bare script (read, split, 2 candidates by CV, refit, holdout AUC)",
                "median s": bare_s, "/ bare script": "1.00x"},
               {"arm": "`regrow train`, no plane", "median s": base,
                "/ bare script": f"{base / bare_s:.2f}x"},
               {"arm": "`regrow train`, plane up", "median s": med,
                "/ bare script": f"{med / bare_s:.2f}x"}]},
           notes=[f"state: {args.versions} versions, {args.predictions:,} predictions; "
                  f"{args.repeats} repeats; each command a fresh process"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
