"""Synthetic tables and configs for tests: small, seeded, generated on the spot."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml


def binary_frame(n: int = 1500, seed: int = 0, start: str = "2024-01-01",
                 shuffle_labels: bool = False, noise: float = 0.5) -> pd.DataFrame:
    """Rows with a learnable binary label: 4 numeric, 1 categorical, time and id columns."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    seg = rng.choice(["north", "south", "east"], size=n)
    logit = 1.5 * x[:, 0] - 1.0 * x[:, 1] + 0.5 * x[:, 2] + np.where(seg == "north", 0.8, -0.4)
    y = (logit + rng.normal(scale=noise, size=n) > 0).astype(int)
    if shuffle_labels:
        y = rng.permutation(y)
    return pd.DataFrame({
        "row_id": np.arange(n), "ts": pd.date_range(start, periods=n, freq="h"),
        "amount": x[:, 0] * 10 + 50, "age": x[:, 1] * 5 + 40, "score": x[:, 2], "noise": x[:, 3],
        "segment": seg, "label": y,
    })


def regression_frame(n: int = 1500, seed: int = 0) -> pd.DataFrame:
    """Rows with a numeric target linear in the features plus noise (no time column)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    kind = rng.choice(["a", "b"], size=n)
    y = 3 * x[:, 0] - 2 * x[:, 1] + np.where(kind == "a", 1.0, -1.0) + rng.normal(scale=0.3, size=n)
    return pd.DataFrame({"id": np.arange(n), "f1": x[:, 0], "f2": x[:, 1], "f3": x[:, 2],
                         "kind": kind, "y": y})


BINARY_CONFIG: dict[str, Any] = {
    "data": {"source": {"kind": "file", "path": "data.csv"}, "target": "label",
             "task": "binary", "time_column": "ts", "id_column": "row_id"},
    "expectations": {"row_count": {"min": 100},
                     "columns": {"amount": "float", "segment": "string"},
                     "ranges": {"age": {"min": 0, "max": 120}},
                     "allowed": {"label": [0, 1]}, "unique": ["row_id"]},
    "features": {"numeric": ["amount", "age", "score", "noise"], "categorical": ["segment"],
                 "drop": ["ts"], "infer": False},
    "candidates": {"cv_folds": 3, "seed": 1, "estimators": [
        {"name": "logreg", "estimator": "logistic_regression", "params": {"max_iter": 300},
         "grid": {"C": [0.1, 1.0]}},
        {"name": "tree", "estimator": "decision_tree_classifier", "params": {"max_depth": 4}}]},
    "split": {"holdout_fraction": 0.25},
    "gate": {"primary_metric": "roc_auc", "floors": {"roc_auc": 0.6}, "max_regression": 0.02,
             "slices": [{"column": "segment", "floor": 0.55, "min_rows": 20}],
             "bootstrap_samples": 50},
    "registry": {"model_name": "test-binary"},
}

REGRESSION_CONFIG: dict[str, Any] = {
    "data": {"source": {"kind": "file", "path": "data.parquet"}, "target": "y",
             "task": "regression", "id_column": "id"},
    "candidates": {"cv_folds": 3, "estimators": [
        {"name": "ridge", "estimator": "ridge", "grid": {"alpha": [0.1, 10.0]}},
        {"name": "forest", "estimator": "random_forest_regressor",
         "params": {"n_estimators": 20, "max_depth": 6}}]},
    "gate": {"primary_metric": "rmse", "floors": {"r2": 0.5}, "max_regression": 0.05,
             "bootstrap_samples": 20},
    "registry": {"model_name": "test-regression"},
}


def merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge `patch` into a copy of `base` (a None value deletes the key)."""
    out = copy.deepcopy(base)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def write_case(folder: Path, frame: pd.DataFrame | None, config: dict[str, Any],
               data_name: str | None = None) -> Path:
    """Write a frame (CSV or Parquet, by the config's path) and the config; returns the YAML path."""
    folder.mkdir(parents=True, exist_ok=True)
    src = config["data"]["source"]
    if frame is not None and src.get("kind", "file") == "file":
        path = folder / (data_name or src["path"])
        if path.suffix == ".parquet":
            frame.to_parquet(path, index=False)
        else:
            frame.to_csv(path, index=False)
    cfg_path = folder / "model.yaml"
    cfg_path.write_text(yaml.safe_dump(config, sort_keys=False))
    return cfg_path


def stays_frame(n: int = 1200, seed: int = 0) -> pd.DataFrame:
    """Bookings whose price depends on the season of the arrival date and on the nights
    between arrival and departure (dates as text, as a CSV holds them) -- learnable only
    from derived features; `guests` alone explains little."""
    rng = np.random.default_rng(seed)
    arrival = pd.Timestamp("2022-01-01") + pd.to_timedelta(rng.integers(0, 3 * 365, n), unit="D")
    nights = rng.integers(1, 15, n)
    departure = arrival + pd.to_timedelta(nights, unit="D")
    guests = rng.integers(1, 5, n)
    season = np.cos(2 * np.pi * (arrival.month.to_numpy() - 1) / 12)  # winter dear, summer cheap
    price = 80 + 25 * nights + 60 * season + 3 * guests + rng.normal(scale=5, size=n)
    return pd.DataFrame({"booking": np.arange(n), "arrival": arrival.strftime("%Y-%m-%d"),
                         "departure": departure.strftime("%Y-%m-%d"), "guests": guests,
                         "price": price})


STAYS_CONFIG: dict[str, Any] = {
    "data": {"source": {"kind": "file", "path": "stays.csv"}, "target": "price",
             "task": "regression", "id_column": "booking"},
    "features": {"numeric": ["guests"], "drop": ["arrival", "departure"], "infer": False,
                 "derived": [
                     {"name": "nights", "expr": "departure - arrival"},
                     {"name": "arr", "date_parts": {"column": "arrival", "parts": ["month"],
                                                    "cyclical": True}}]},
    "candidates": {"cv_folds": 3, "seed": 3, "estimators": [
        {"name": "ridge", "estimator": "ridge", "grid": {"alpha": [0.1, 1.0]}}]},
    "gate": {"primary_metric": "rmse", "floors": {"r2": 0.5}, "bootstrap_samples": 20},
    "registry": {"model_name": "stays"},
}
