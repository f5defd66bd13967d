"""A challenger in shadow (``promotion.mode: shadow``): a passing candidate scores beside the
champion and takes over only when it beats it on matured labels -- real Prefect, MLflow store
and monitoring store."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from regrow.configs.schema import load_config
from regrow.flows.monitoring import drift_check_flow, score_flow
from regrow.flows.training import train_flow
from regrow.tasks.monitoring.scoring import record_labels
from regrow.tasks.registry import bake as baking
from regrow.tasks.registry import challenger as ch
from regrow.tasks.registry.mlflow_registry import CHALLENGER, CHAMPION, Registry
from regrow.tasks.store.database import Store, shadow_predictions
from regrow.tasks.store.settings import Settings
from tests.helpers import BINARY_CONFIG, binary_frame, merge, write_case

pytestmark = pytest.mark.usefixtures("prefect_harness")

SHADOWED = merge(BINARY_CONFIG, {
    "registry": {"model_name": "shadowed"},
    "monitoring": {"window": {"rows": 600, "min_rows": 100}},
    "promotion": {"mode": "shadow",
                  "shadow": {"windows": 2, "min_labels": 200, "bootstrap_samples": 100},
                  "bake": {"windows": 1, "tolerance": 0.0, "min_labels": 50}},
})


def _stores() -> tuple[Registry, Store]:
    settings = Settings.from_env()
    return Registry(settings), Store(settings.database_url)


def _flipped(frame: pd.DataFrame) -> pd.DataFrame:
    """The same inputs under the opposite concept (every label flipped)."""
    return frame.assign(label=1 - frame["label"])


def _pair(tmp_path: Path) -> tuple[Path, Path]:
    """v1 champion on concept A; v2, trained on concept B, passes the gate (v1 is wrong on B)
    and becomes challenger in shadow. Returns the two config paths."""
    a = write_case(tmp_path / "a", binary_frame(900, seed=1), SHADOWED)
    b = write_case(tmp_path / "b", _flipped(binary_frame(900, seed=2)), SHADOWED)
    first = train_flow(str(a))
    assert first.promoted and first.champion_after == "1"
    second = train_flow(str(b))
    assert second.decision["verdict"] == "promote", second.decision
    assert not second.promoted and second.champion_after == "1"
    return a, b


def _window(cfg: Path, folder: Path, seed: int, start: str, flip: bool) -> None:
    frame = binary_frame(300, seed=seed, start=start)
    frame = _flipped(frame) if flip else frame
    frame["row_id"] = frame["row_id"] + seed * 100_000  # fresh ids per window
    rows = folder / f"rows-{seed}.csv"
    frame.drop(columns=["label"]).to_csv(rows, index=False)
    result = score_flow(str(cfg), str(rows))
    assert (result.version, result.shadow_version, result.shadow_rows) == ("1", "2", 300)
    record_labels(load_config(cfg).config, frame[["row_id", "label"]], _stores()[1])


def test_a_passing_candidate_becomes_challenger_and_takes_over_when_better(home: Path,
                                                                           tmp_path: Path):
    a, b = _pair(tmp_path)
    reg, store = _stores()
    assert reg.alias_version("shadowed", CHAMPION) == "1"
    assert reg.alias_version("shadowed", CHALLENGER) == "2"
    moved = store.alias_history("shadowed", CHALLENGER)[-1]
    assert moved["new_version"] == "2" and moved["reason"].startswith(ch.REASON_PREFIX)
    tags = reg.version_info("shadowed", "2").tags
    assert (tags[ch.TAG_STATE], tags[ch.TAG_CHAMPION]) == (ch.RUNNING, "1")
    # a failed run in shadow mode moves neither alias
    bad = write_case(tmp_path / "bad", binary_frame(900, seed=3).assign(age=500.0), SHADOWED)
    with pytest.raises(Exception, match="validation failed"):
        train_flow(str(bad))
    assert reg.alias_version("shadowed", CHAMPION) == "1"
    assert reg.alias_version("shadowed", CHALLENGER) == "2"
    # live data follows concept B: the challenger wins on the same matured rows
    _window(b, tmp_path, seed=11, start="2025-01-01", flip=True)
    with store.engine.connect() as conn:
        logged = conn.execute(shadow_predictions.select().where(
            shadow_predictions.c.model == "shadowed", shadow_predictions.c.version == "2")).all()
    assert len(logged) == 300
    first = drift_check_flow(str(b), retrain=False)
    assert first.challenger is not None and first.challenger["state"] == ch.RUNNING
    assert first.challenger["windows_done"] == 1 and first.challenger["gain"] > 0
    assert reg.alias_version("shadowed", CHAMPION) == "1"
    _window(b, tmp_path, seed=12, start="2025-02-01", flip=True)
    second = drift_check_flow(str(b), retrain=False)
    assert second.challenger["state"] == ch.PROMOTED, second.challenger
    assert second.challenger["windows_done"] == 2
    # the second window counted only rows the first did not (the window holds both batches)
    windows = ch.windows_of(reg.version_info("shadowed", "2").tags)
    assert [w.rows for w in windows] == [300, 300]
    assert reg.alias_version("shadowed", CHAMPION) == "2"
    last = store.alias_history("shadowed", CHAMPION)[-1]
    assert (last["old_version"], last["new_version"], last["actor"]) == ("1", "2", "shadow")
    assert "took over" in last["reason"]
    bake = baking.latest(store, "shadowed", 1)[0]  # the bake after a takeover, as after any
    assert (bake.version, bake.previous_version, bake.state) == ("2", "1", baking.BAKING)
    assert reg.version_info("shadowed", "2").tags[ch.TAG_STATE] == ch.PROMOTED


def test_a_challenger_that_does_not_beat_the_champion_is_retired(home: Path, tmp_path: Path):
    a, _ = _pair(tmp_path)
    reg, store = _stores()
    # live data follows concept A: the challenger, fit on B, loses on the matured labels
    for i, seed in enumerate((21, 22)):
        _window(a, tmp_path, seed=seed, start=f"2025-0{i + 1}-01", flip=False)
        check = drift_check_flow(str(a), retrain=False)
        assert check.challenger["windows_done"] == i + 1 and check.challenger["gain"] < 0
    assert check.challenger["state"] == ch.RETIRED
    assert reg.alias_version("shadowed", CHAMPION) == "1"
    assert reg.alias_version("shadowed", CHALLENGER) is None
    last = store.alias_history("shadowed", CHALLENGER)[-1]
    assert (last["old_version"], last["new_version"], last["actor"]) == ("2", None, "shadow")
    assert "retired" in last["reason"] and "did not beat" in last["reason"]
    assert all(r["new_version"] != "2" for r in store.alias_history("shadowed", CHAMPION))
    assert reg.version_info("shadowed", "2").tags[ch.TAG_STATE] == ch.RETIRED
    assert baking.latest(store, "shadowed", 1) == []
