"""`regrow backtest --compare`: several policies replayed on one history, ranked by the metric
less a cost per training; each variant's figures are those of its own backtest."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from regrow.configs.schema import load_config
from regrow.tasks.monitoring import backtest as bt
from regrow.tasks.monitoring import compare as cmp
from tests.helpers import merge, write_case
from tests.test_backtest import CONFIG, WARMUP, WINDOW, history

# never retrains: no check ever sees enough labels to judge performance
BLIND = {"monitoring.performance.min_labels": 10**6, "monitoring.performance.estimate": False}


def test_grid_and_named_variants(tmp_path: Path) -> None:
    got = cmp.variants(["retrain.on=performance,drift",
                        "monitoring.performance.tolerance=0.02, 0.05"])
    assert [v.name for v in got] == [
        cmp.AS_GIVEN, "retrain.on=performance, monitoring.performance.tolerance=0.02",
        "retrain.on=performance, monitoring.performance.tolerance=0.05",
        "retrain.on=drift, monitoring.performance.tolerance=0.02",
        "retrain.on=drift, monitoring.performance.tolerance=0.05"]
    assert got[1].overrides == {"retrain.on": "performance",
                                "monitoring.performance.tolerance": 0.02}
    assert got[1].set_lines() == ["--set retrain.on=performance",
                                  "--set monitoring.performance.tolerance=0.02"]
    f = tmp_path / "variants.yaml"
    f.write_text("eager:\n  retrain: {cooldown: 0s, max_trainings: 9}\n"
                 "same: {retrain.on: drift}\n")
    named = cmp.variants(["retrain.on=drift"], f)
    assert [(v.name, v.overrides) for v in named] == [
        (cmp.AS_GIVEN, {}), ("retrain.on=drift", {"retrain.on": "drift"}),
        ("eager", {"retrain.cooldown": "0s", "retrain.max_trainings": 9})]  # `same` repeats
    for bad, name in [(["retrain.on"], "--compare"), (["retrain.on="], "--compare")]:
        with pytest.raises(bt.BacktestError, match=name):
            cmp.variants(bad)
    f.write_text("- a list\n")
    with pytest.raises(bt.BacktestError, match="--variants"):
        cmp.variants([], f)
    path = write_case(tmp_path / "c", None, CONFIG)
    with pytest.raises(bt.BacktestError, match="variant 'retrain.on=often'"):
        cmp.load_variant(load_config(path), cmp.Variant("retrain.on=often",
                                                        {"retrain.on": "often"}))


def test_ranking_follows_the_stated_rule_and_matches_each_backtest(tmp_path: Path) -> None:
    # the relation reverses at window 3 and stays reversed: retraining pays
    frame = history({}, {}, *[{"concept": True}] * 4, seed=29)
    loaded = load_config(write_case(tmp_path, frame, CONFIG))
    opts = bt.Options(window=str(WINDOW), start=str(frame["ts"].iloc[WARMUP]),
                      train_window=str(2 * WINDOW))
    chosen = [cmp.Variant(cmp.AS_GIVEN, {}), cmp.Variant("blind", BLIND)]
    free = cmp.compare(loaded, frame, opts, chosen, training_cost=0.0)
    by = {o.name: o for o in free.outcomes}
    assert [o.rank for o in free.outcomes] == [1, 2]
    assert free.best.name == cmp.AS_GIVEN and free.adopt() == []
    blind = by["blind"]
    assert (blind.trainings, blind.promotions) == (0, 0)
    # each variant's figures are its own backtest's
    alone = bt.run(cmp.load_variant(loaded, chosen[0]), frame, opts)
    given = by[cmp.AS_GIVEN]
    assert given.value == pytest.approx(alone.totals.with_retraining)
    assert (given.trainings, given.promotions) == (alone.totals.retrains,
                                                   alone.totals.promotions)
    assert given.trainings >= 1 and given.value > blind.value + 0.1
    assert blind.degraded_windows == 4 and given.degraded_windows < 4  # one yardstick
    worse = sum(w.realized < w.realized_replaced for w in alone.windows
                if w.replaced_version is not None)
    assert (given.worse_promotions, given.judged_promotions) == (
        worse, sum(w.replaced_version is not None for w in alone.windows))
    # a training that costs more than the gain: never retraining ranks first
    cost = (given.value - blind.value) / given.trainings * 1.5
    dear = cmp.compare(loaded, frame, opts, list(reversed(chosen)), training_cost=cost)
    assert dear.best.name == "blind"
    assert dear.adopt() == ["--set monitoring.performance.min_labels=1000000",
                            "--set monitoring.performance.estimate=false"]
    assert dear.best.score == pytest.approx(blind.value)
    assert dear.outcomes[1].score == pytest.approx(given.value - cost * given.trainings)
    assert "less" in dear.rule and f"{cost:g}" in dear.rule


def test_command_prints_the_table_and_the_lines_to_adopt(tmp_path: Path) -> None:
    frame = history({}, {"concept": True}, {"concept": True}, seed=31)
    path = write_case(tmp_path / "case", frame, merge(CONFIG, {"retrain": {"on": "drift"}}))
    env = {"REGROW_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin", "NO_COLOR": "1"}
    cmd = [sys.executable, "-m", "regrow.app.cli", "backtest", str(path), "--history",
           str(tmp_path / "case" / "data.csv"), "--start", str(frame["ts"].iloc[WARMUP]),
           "--compare", "retrain.on=performance,drift", "--training-cost", "0.002"]
    root = Path(__file__).resolve().parent.parent
    res = subprocess.run([*cmd, "--json"], capture_output=True, text=True, env=env, cwd=root,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    # retrain.on=drift is the config as given: replayed once, listed beside `performance`
    assert sorted(o["name"] for o in data["outcomes"]) == [cmp.AS_GIVEN,
                                                           "retrain.on=drift",
                                                           "retrain.on=performance"]
    assert [o["rank"] for o in data["outcomes"]] == [1, 2, 3]
    assert data["training_cost"] == 0.002 and data["best"] == data["outcomes"][0]["name"]
    assert Path(data["json_path"]).is_file()
    text = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=root, timeout=300)
    assert text.returncode == 0, text.stderr
    assert "ranked by roc_auc over the replayed rows less 0.002 per training" in text.stdout
    assert "worse promotions" in text.stdout and "best: " in text.stdout
    bad = subprocess.run([*cmd, "--compare", "retrain.on=often"], capture_output=True, text=True,
                         env=env, cwd=root, timeout=300)
    assert bad.returncode == 2 and "retrain.on" in bad.stderr and "Traceback" not in bad.stderr
