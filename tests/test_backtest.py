"""The policy backtest on synthetic histories with known answers: a change injected at a known
window, a no-drift control, a covariate shift that leaves performance alone, labels that turn
to noise (the gate refuses, the breaker opens, cooldown acts on event time), and the command
itself, which must leave the live stores untouched."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from regrow.configs.schema import load_config
from regrow.tasks.monitoring import backtest as bt
from tests.helpers import BINARY_CONFIG, merge, write_case

WINDOW = 500
CONFIG = merge(BINARY_CONFIG, {
    "candidates": {"cv_folds": 2, "estimators": [
        {"name": "logreg", "estimator": "logistic_regression", "params": {"max_iter": 300}}]},
    "gate": {"slices": [], "bootstrap_samples": 0, "max_regression": 0.02},
    "monitoring": {"reference_rows": 2000, "window": {"rows": WINDOW, "min_rows": 300},
                   "persistence": {"k": 2, "n": 3},
                   # severe drops wait for persistence too: these tests are about persistence
                   "performance": {"min_labels": 200, "tolerance": 0.05, "severe": 100}},
    "retrain": {"cooldown": "1h", "max_trainings": 10, "budget_period": "1d"},
})
# The first champion trains on these rows; the replay starts after them.
WARMUP = 3000


def _segment(n: int, rng: np.random.Generator, *, shift: float = 0.0, concept: bool = False,
             noise_labels: bool = False) -> pd.DataFrame:
    x = rng.normal(size=(n, 4))
    x[:, 3] += shift  # `noise` carries no signal: moving it changes nothing the model needs
    seg = rng.choice(["north", "south", "east"], size=n)
    logit = 2.0 * x[:, 0] - 1.5 * x[:, 1] + 0.5 * x[:, 2] + np.where(seg == "north", 0.8, -0.4)
    p = 1 / (1 + np.exp(logit if concept else -logit))
    y = (rng.random(n) < (np.full(n, 0.5) if noise_labels else p)).astype(int)
    return pd.DataFrame({"amount": x[:, 0] * 10 + 50, "age": x[:, 1] * 5 + 40, "score": x[:, 2],
                         "noise": x[:, 3] * 3, "segment": seg, "label": y})


def history(*windows: dict, seed: int = 0) -> pd.DataFrame:
    """WARMUP undisturbed rows, then one WINDOW of rows per dict (`_segment` keywords), hourly."""
    rng = np.random.default_rng(seed)
    parts = [_segment(WARMUP, rng)] + [_segment(WINDOW, rng, **w) for w in windows]
    frame = pd.concat(parts, ignore_index=True)
    frame.insert(0, "ts", pd.date_range("2024-01-01", periods=len(frame), freq="h"))
    frame.insert(0, "row_id", np.arange(len(frame)))
    return frame


def replay(tmp_path: Path, frame: pd.DataFrame, patch: dict | None = None,
           **opts) -> bt.BacktestReport:
    path = write_case(tmp_path, frame, merge(CONFIG, patch or {}))
    loaded = load_config(path)
    start = str(frame["ts"].iloc[WARMUP])
    return bt.run(loaded, frame, bt.Options(window=str(WINDOW), start=start, **opts))


def requested(report: bt.BacktestReport) -> list[int]:
    return [w.index for w in report.windows if w.policy is not None]


def test_concept_change_retrains_at_the_second_degraded_window(tmp_path: Path) -> None:
    # Windows 1-2 as before; from window 3 the labels follow the reversed relation.
    frame = history({}, {}, {"concept": True}, {"concept": True}, {"concept": True})
    report = replay(tmp_path, frame, train_window=str(2 * WINDOW))
    w = report.windows
    assert [x.rows for x in w] == [WINDOW] * 5
    assert not any(x.performance["degraded"] for x in w[:2])
    assert w[2].performance["degraded"] and not w[2].persistent  # 1 of the 2 needed
    assert requested(report) == [4]  # persistence k=2 of n=3: the second degraded window
    assert (w[3].policy, w[3].gate, w[3].new_version, w[3].promoted) == \
        ("admitted", "promote", "2", True)
    assert w[3].training_rows == 2 * WINDOW
    assert w[4].version == "2"  # the replayed champion scores the next window
    # In hindsight the retrained champion recovers; the first one stays inverted.
    assert w[4].realized > 0.8 and w[4].realized_first < 0.3
    t = report.totals
    assert (t.requests, t.retrains, t.promotions, t.rejections) == (1, 1, 1, 0)
    assert t.with_retraining > t.without_retraining + 0.1


def test_no_drift_control_asks_for_nothing(tmp_path: Path) -> None:
    report = replay(tmp_path, history(*[{}] * 6, seed=3))
    assert requested(report) == []
    assert report.totals.alarms == 0, [w.reasons for w in report.windows]
    assert report.totals.with_retraining == pytest.approx(report.totals.without_retraining)


def test_feature_shift_with_unchanged_performance_warns_without_retraining(tmp_path: Path) -> None:
    frame = history({}, *[{"shift": 3.0}] * 4, seed=5)
    one_column = {"monitoring": {"drift": {"drift_share": 0.2}}}  # 1 of 5 features is drift
    report = replay(tmp_path, frame, one_column)
    shifted = report.windows[1:]
    assert all("noise" in w.drifted_columns for w in shifted)
    assert all(w.warning and not w.persistent for w in shifted)
    assert requested(report) == []
    # ... while `retrain.on: drift` would have retrained on the same history
    drift = replay(tmp_path / "drift", frame, merge(one_column, {"retrain": {"on": "drift"}}))
    assert requested(drift) and drift.windows[requested(drift)[0] - 1].gate in (
        "promote", "reject", "no_gain")  # it trained; the gate decided


def test_performance_drop_with_unchanged_features_is_caught_only_by_performance(
        tmp_path: Path) -> None:
    frame = history({}, *[{"concept": True}] * 3, seed=7)
    perf = replay(tmp_path, frame, train_window=str(2 * WINDOW))
    assert not any(w.drifted_columns for w in perf.windows)  # the inputs did not move
    assert requested(perf)[0] == 3
    drift_only = replay(tmp_path / "drift", frame, {
        "retrain": {"on": "drift"}, "monitoring": {"performance": {"min_labels": 10**6}}})
    assert requested(drift_only) == []


def test_noise_labels_are_refused_and_policy_acts_on_event_time(tmp_path: Path) -> None:
    # From window 2 the labels are coin flips: every retrain fails the gate.
    frame = history({}, *[{"noise_labels": True}] * 9, seed=11)
    # Windows are 500 h apart: a 900 h cooldown blocks the request one window after a training.
    report = replay(tmp_path, frame, {"retrain": {"cooldown": "900h",
                                                  "circuit_breaker_after": 2}},
                    train_window=str(WINDOW))
    verdicts = [(w.index, w.policy, w.gate) for w in report.windows if w.policy]
    assert verdicts[0][1:] == ("admitted", "reject")
    assert ("cooling_down" in [v[1] for v in verdicts]), verdicts
    assert verdicts[-1][1] == "circuit_open", verdicts
    assert report.totals.promotions == 0
    assert all(w.version == "1" for w in report.windows)  # the champion never moved
    rejected = next(w for w in report.windows if w.gate == "reject")
    assert any("broken_labels" in r or "baseline" in r for r in rejected.gate_reasons), \
        rejected.gate_reasons


def test_labels_that_never_arrive_are_estimated(tmp_path: Path) -> None:
    frame = history({}, {"concept": True}, {"concept": True}, seed=13)
    report = replay(tmp_path, frame, label_delay="never")
    assert all(w.performance["estimated"] for w in report.windows)
    assert requested(report) == []  # a concept change moves no probability: nothing to see
    # hindsight still uses every label
    assert report.windows[-1].realized < 0.3


def test_label_delay_in_windows_postpones_the_request(tmp_path: Path) -> None:
    frame = history({}, *[{"concept": True}] * 4, seed=17)
    now = replay(tmp_path, frame, train_window=str(2 * WINDOW))
    later = replay(tmp_path / "later", frame, label_delay="1", train_window=str(2 * WINDOW),
                   patch={"monitoring": {"window": {"rows": 2 * WINDOW}}})
    assert requested(now)[0] == 3
    assert requested(later) and requested(later)[0] > 3


def test_options_that_do_not_fit_are_named(tmp_path: Path) -> None:
    frame = history({}, seed=1)
    cases = {"window": ("-3 rows", "--window"), "label_delay": ("soon", "--label-delay"),
             "start": ("2030-01-01", "--start")}
    for key, (value, name) in cases.items():
        opts = {"window": str(WINDOW), key: value}
        path = write_case(tmp_path / key, frame, CONFIG)
        with pytest.raises(bt.BacktestError, match=name):
            bt.run(load_config(path), frame, bt.Options(**opts))


def test_command_writes_reports_and_leaves_live_state_alone(tmp_path: Path) -> None:
    frame = history({}, {"concept": True}, {"concept": True}, seed=19)
    path = write_case(tmp_path / "case", frame, CONFIG)
    home = tmp_path / "home"
    env = {"REGROW_HOME": str(home), "PATH": "/usr/bin:/bin", "NO_COLOR": "1"}
    cmd = [sys.executable, "-m", "regrow.app.cli", "backtest", str(path), "--history",
           str(tmp_path / "case" / "data.csv"), "--start", str(frame["ts"].iloc[WARMUP])]
    root = Path(__file__).resolve().parent.parent
    res = subprocess.run([*cmd, "--json"], capture_output=True, text=True, env=env, cwd=root,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert [w["index"] for w in data["windows"]] == [1, 2, 3]
    assert Path(data["html_path"]).is_file() and Path(data["json_path"]).is_file()
    assert "never retrained" in Path(data["html_path"]).read_text()
    # nothing but the reports: no MLflow store, no monitoring store
    assert sorted(p.name for p in home.iterdir()) == ["reports"]
    text = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=root, timeout=300)
    assert text.returncode == 0, text.stderr
    assert "windows replayed" in text.stdout and "first champion v1" in text.stdout
    bad = subprocess.run([*cmd, "--window", "fortnight"], capture_output=True, text=True,
                         env=env, cwd=root, timeout=300)
    assert bad.returncode == 2 and "--window" in bad.stderr and "Traceback" not in bad.stderr


SHADOW = {"promotion": {"mode": "shadow", "shadow": {"windows": 1, "min_labels": 200}}}


def test_shadow_challenger_takes_over_after_beating_the_champion_on_a_live_window(
        tmp_path: Path) -> None:
    frame = history({}, {}, {"concept": True}, {"concept": True}, {"concept": True},
                    {"concept": True})
    report = replay(tmp_path, frame, SHADOW, train_window=str(2 * WINDOW))
    w = report.windows
    assert requested(report)[0] == 4
    # the candidate passed its gate but waits as the challenger: the champion does not move
    assert (w[3].gate, w[3].new_version, w[3].promoted, w[3].challenger, w[3].shadow_state) == \
        ("promote", "2", False, "2", None)
    assert w[4].version == "1"  # the first champion still serves window 5 ...
    # ... while the challenger scores it beside; on its labels the trial decides
    assert w[4].shadow_state == "promoted" and w[4].promoted and w[4].challenger is None
    assert "gain of the challenger +" in w[4].shadow and w[4].judged == "2"
    gate_cells = [row[8] for row in bt.table_rows(w, "roc_auc")[1:]]
    assert gate_cells[3] == "shadow v2" and gate_cells[4].startswith("v2 in")
    # the same check still saw v1 degraded: its retrain is gated against the new champion
    assert w[4].policy == "admitted" and w[4].gate in ("no_gain", "promote")
    assert w[5].version == "2" and w[5].replaced_version == "1"
    assert w[5].realized > w[5].realized_replaced + 0.3
    assert report.totals.promotions == 1
    assert not any("not replayed" in n for n in report.notes)


def test_shadow_challenger_of_a_passing_change_is_retired(tmp_path: Path) -> None:
    # The relation turns for two windows and comes back: the candidate trained on the turned
    # rows passes its gate (on turned holdout rows) but loses to the champion live.
    frame = history({}, {}, {"concept": True}, {"concept": True}, {}, {})
    report = replay(tmp_path, frame, SHADOW, train_window=str(2 * WINDOW))
    w = report.windows
    assert (w[3].gate, w[3].challenger, w[3].promoted) == ("promote", "2", False)
    assert w[4].shadow_state == "retired" and not w[4].promoted
    assert "did not beat the champion" in w[4].shadow
    assert [x.version for x in w] == ["1"] * 6
    assert report.totals.promotions == 0
    # the same history in auto mode promotes the turned model, which then serves the
    # returned relation worse than the champion it replaced
    auto = replay(tmp_path / "auto", frame, train_window=str(2 * WINDOW)).windows
    assert auto[3].promoted and auto[4].version == "2"
    assert auto[4].realized < auto[4].realized_replaced


def test_no_retrain_is_asked_while_a_challenger_is_on_trial(tmp_path: Path) -> None:
    # a newer candidate would replace the challenger and restart its trial: none would end
    frame = history({}, {}, *[{"concept": True}] * 5)
    patch = {"promotion": {"mode": "shadow", "shadow": {"windows": 3, "min_labels": 200}}}
    w = replay(tmp_path, frame, patch, train_window=str(2 * WINDOW)).windows
    assert (w[3].policy, w[3].challenger) == ("admitted", "2")
    for x in w[4:6]:  # v1 still degraded, the trial still running
        assert x.persistent and x.policy is None and x.shadow_state == "running"
        assert "no retrain asked while the challenger is on trial" in x.shadow
    assert w[6].shadow_state == "promoted" and w[6].promoted
