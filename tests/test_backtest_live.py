"""The backtest tells what the live run does: one history replayed through the live commands
(train, then per window score, labels, watch with its retrains, through the Python API on a
real MLflow store, monitoring store and Prefect) and through `regrow backtest`'s replay gives
the same verdicts, the same measured performance and the same champion, window by window.

The history's time column is a zoned Parquet timestamp (``datetime64[ns, UTC]``), which the
live commands accept and the backtest must too."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from regrow.app.report import render_drift
from regrow.configs.schema import load_config
from regrow.tasks.data import ingest as ing
from regrow.tasks.monitoring import backtest as bt
from tests.helpers import BINARY_CONFIG, merge, write_case

WARMUP, WINDOW, TRAIN = 2000, 400, 800
CONFIG = merge(BINARY_CONFIG, {
    "data": {"source": {"kind": "file", "path": "data.parquet"}},
    "registry": {"model_name": "replayed"},
    "candidates": {"cv_folds": 2, "estimators": [
        {"name": "logreg", "estimator": "logistic_regression", "params": {"max_iter": 300}}]},
    "gate": {"slices": [], "bootstrap_samples": 0, "max_regression": 0.02},
    "monitoring": {"reference_rows": 1500, "window": {"rows": WINDOW, "min_rows": 200},
                   "persistence": {"k": 2, "n": 3},
                   "performance": {"min_labels": 150, "tolerance": 0.05}},
    # the live run replays the history in seconds: no cooldown, so the policy's event-time
    # clock in the backtest and the wall clock live admit the same requests
    "retrain": {"cooldown": "0s", "max_trainings": 20, "budget_period": "1d"},
})


def _segment(n: int, rng: np.random.Generator, flip: float = 0.0) -> pd.DataFrame:
    """Rows whose label follows a logistic relation; `flip` of the way to its reverse."""
    x = rng.normal(size=(n, 4))
    seg = rng.choice(["north", "south", "east"], size=n)
    logit = 2.0 * x[:, 0] - 1.5 * x[:, 1] + 0.5 * x[:, 2] + np.where(seg == "north", 0.8, -0.4)
    logit = (1 - 2 * flip) * logit
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame({"amount": x[:, 0] * 10 + 50, "age": x[:, 1] * 5 + 40, "score": x[:, 2],
                         "noise": x[:, 3], "segment": seg, "label": y})


def history(flips: list[float], seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.concat([_segment(WARMUP, rng)] + [_segment(WINDOW, rng, f) for f in flips],
                      ignore_index=True)
    frame.insert(0, "ts", pd.date_range("2024-01-01", periods=len(frame), freq="h", tz="UTC"))
    frame.insert(0, "row_id", np.arange(len(frame)))
    return frame


def _live(folder: Path, frame: pd.DataFrame, windows: int, patch: dict) -> list[dict]:
    """Train on the rows before the start, then per window: the source holds the latest TRAIN
    rows seen so far (what a retrain reads), score the window, record its labels, watch."""
    import regrow

    cfg = write_case(folder, frame.iloc[WARMUP - TRAIN:WARMUP], merge(CONFIG, patch))
    assert regrow.train(cfg).promoted
    seen = []
    for j in range(windows):
        part = frame.iloc[WARMUP + j * WINDOW:WARMUP + (j + 1) * WINDOW]
        end = WARMUP + (j + 1) * WINDOW
        frame.iloc[end - TRAIN:end].to_parquet(folder / "data.parquet", index=False)
        scored = regrow.score(cfg, part.drop(columns=["label"]))
        regrow.labels(cfg, part[["row_id", "label"]])
        out = regrow.watch(cfg)
        a, r, trial = out.assessment, out.retrain, out.challenger or {}
        t = None if r is None else r.training
        seen.append({
            "version": scored.version, "verdict": a["verdict"], "persistent": a["persistent"],
            "current": (a["performance"] or {}).get("current"),
            "degraded": (a["performance"] or {}).get("degraded"),
            "drifted": sorted(a["drifted_columns"]),
            "policy": None if r is None else r.verdict,
            "gate": None if t is None else t.decision["verdict"],
            "promoted": bool(t is not None and t.promoted) or trial.get("state") == "promoted",
            "trial": trial.get("state"), "catch_up": out.catch_up is not None})
        if out.catch_up:  # what `regrow watch` prints says why the retrain was asked
            assert out.catch_up in render_drift(out) and "no retrain asked" not in \
                render_drift(out)
    return seen


def _replayed(report: bt.BacktestReport) -> list[dict]:
    return [{"version": w.version, "verdict": w.verdict, "persistent": w.persistent,
             "current": (w.performance or {}).get("current"),
             "degraded": (w.performance or {}).get("degraded"),
             "drifted": sorted(w.drifted_columns), "policy": w.policy, "gate": w.gate,
             "promoted": w.promoted, "trial": w.shadow_state,
             "catch_up": w.catch_up is not None} for w in report.windows]


# promotion.mode shadow: the candidate waits as the challenger, scored beside the champion;
# while its trial runs the still degraded champion asks for no retrain; after two live
# windows it takes over (with the gate's paired interval: its gain is known, and a champion
# that came from a trial asks for no retrain of catch-up, live or replayed)
SHADOW = {"promotion": {"mode": "shadow", "shadow": {"windows": 2, "min_labels": 150}},
          "gate": {"bootstrap_samples": 200}, "registry": {"model_name": "replayed-shadow"}}


# with a paired interval on the gate (bootstrap), a promotion's gain is known: the first
# retrain after the turn trains on rows from both sides of it and gains far more than the
# practical minimum, so the next check asks for a retrain of catch-up on newer rows
CATCH_UP = {"gate": {"bootstrap_samples": 200}, "registry": {"model_name": "replayed-catch-up"}}


@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize("patch", [{}, SHADOW, CATCH_UP], ids=["auto", "shadow", "catch-up"])
def test_live_run_and_backtest_agree_window_by_window(home: Path, tmp_path: Path,
                                                      patch: dict) -> None:
    # two quiet windows, then the relation turns: a degradation, its retrain, the recovery
    flips = [0.0, 0.0, 0.8, 0.8, 0.8, 0.8, 0.8]
    frame = history(flips, seed=23)
    folder = tmp_path / "model"
    live = _live(folder, frame, len(flips), patch)
    path = tmp_path / "history.parquet"
    frame.to_parquet(path, index=False)
    loaded = load_config(folder / "model.yaml")
    rows = ing.read_rows(loaded, str(path), option="--history")
    assert str(rows["ts"].dtype) == "datetime64[ns, UTC]"
    # --start without a zone is read in the column's zone
    start = str(frame["ts"].iloc[WARMUP].tz_localize(None))
    report = bt.run(loaded, rows, bt.Options(window=str(WINDOW), start=start,
                                                train_window=str(TRAIN)))
    replayed = _replayed(report)
    assert len(replayed) == len(live)
    for j, (a, b) in enumerate(zip(live, replayed, strict=True), start=1):
        assert a["current"] == pytest.approx(b["current"], abs=1e-9), (j, a, b)
        assert {**a, "current": None} == {**b, "current": None}, (j, a, b)
    # the history did what it was built for: a retrain that promoted, a champion that moved
    assert any(w["promoted"] for w in live), live
    assert live[-1]["version"] != "1", live
    assert any(w["degraded"] for w in live), live
    if patch is CATCH_UP:  # a check that saw no degradation asked for a retrain
        catch_up = [j for j, w in enumerate(live) if w["policy"] and not w["persistent"]]
        assert catch_up and live[catch_up[0] - 1]["promoted"], live
        assert [j for j, w in enumerate(live) if w["catch_up"]] == catch_up, live
    if patch is SHADOW:  # the takeover came from a trial judged on live windows
        assert not any(w["policy"] and not w["persistent"] for w in live), live
        trial = [w["trial"] for w in live]
        assert "promoted" in trial, live
        running = trial.index("running")
        assert live[running]["persistent"] and live[running]["policy"] is None, live


def test_every_time_column_the_live_commands_read(tmp_path: Path) -> None:
    """Zoned and naive times, dates as text, calendar years and epoch seconds: the same rows
    make the same windows."""
    frame = history([0.0, 0.0], seed=3)
    zoned = frame["ts"]
    naive = zoned.dt.tz_localize(None)
    columns = {"zoned": zoned, "naive": naive, "text": naive.dt.strftime("%Y-%m-%dT%H:%M:%S"),
               "epoch": (naive - pd.Timestamp("1970-01-01")) // pd.Timedelta(seconds=1)}
    start = str(naive.iloc[WARMUP])
    windows = {}
    for name, values in columns.items():
        case = frame.assign(ts=values)
        loaded = load_config(write_case(tmp_path / name, case, CONFIG))
        line = bt.timeline(loaded.config, case, bt.Options(window="7d", start=start))
        windows[name] = [len(w) for w in line.windows]
    assert len(set(map(tuple, windows.values()))) == 1, windows
    assert sum(windows["zoned"]) == 2 * WINDOW
    # a zoned --start is converted, not compared as if it had no zone
    loaded = load_config(write_case(tmp_path / "z", frame, CONFIG))
    shifted = bt.timeline(loaded.config, frame, bt.Options(
        window=str(WINDOW), start=str(zoned.iloc[WARMUP].tz_convert("Etc/GMT+2"))))
    assert shifted.windows[0][0] == WARMUP
    # years: one row per year, windows of rows
    years = pd.DataFrame({"row_id": range(40), "ts": range(1980, 2020),
                          "label": [0, 1] * 20})
    loaded = load_config(write_case(tmp_path / "years", years, CONFIG))
    line = bt.timeline(loaded.config, years, bt.Options(window="5", start="2010"))
    assert line.windows[0][0] == 30 and len(line.windows) == 2
