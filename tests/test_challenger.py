"""A challenger in shadow (``promotion.mode: shadow``): a passing candidate scores beside the
champion and takes over only when it beats it on matured labels -- real Prefect, MLflow store
and monitoring store."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pandas as pd
import pytest

from regrow.configs.schema import load_config
from regrow.flows.monitoring import drift_check_flow, score_flow
from regrow.flows.training import train_flow
from regrow.tasks.monitoring.scoring import record_labels
from regrow.tasks.policy import notices as nt
from regrow.tasks.registry import bake as baking
from regrow.tasks.registry import challenger as ch
from regrow.tasks.registry.card import build_card
from regrow.tasks.registry.mlflow_registry import CHALLENGER, CHAMPION, Registry
from regrow.tasks.store.database import Store, shadow_predictions
from regrow.tasks.store.settings import Settings
from tests.helpers import BINARY_CONFIG, binary_frame, merge, write_case
from tests.procs import wait_for

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


def _trial_card(reg: Registry, store: Store, version: str) -> tuple[str, dict[str, str], str]:
    """The card's "Shadow trial" section of `version`: its text, its facts table (first cell:
    second cell) and the section as HTML."""
    card = build_card(reg, store, "shadowed", version)
    md = card.to_markdown()
    m = re.search(r"^## Shadow trial\n(.*?)(?=^## |\Z)", md, re.M | re.S)
    assert m, md
    facts = {}
    for line in m.group(1).splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if line.startswith("|") and len(cells) == 2 and cells[0]:
            facts[cells[0]] = cells[1]
    html = card.to_html()
    return m.group(1).strip(), facts, html[html.index("<h2>Shadow trial</h2>"):]


def _window_rows(section: str) -> list[list[str]]:
    """The rows of the section's table of windows."""
    return [[c.strip() for c in line.strip().strip("|").split(" | ")]
            for line in section.splitlines() if re.match(r"\| \d+ \| ", line)]


def _challenger_events(since: dt.datetime, count: int) -> list[tuple[str, dict]]:
    """The ``regrow.challenger.*`` events of the model since `since`, as the Prefect API stored
    them (name, payload), once at least `count` are there."""
    from prefect import get_client
    from prefect.events.filters import (
        EventFilter,
        EventNameFilter,
        EventOccurredFilter,
        EventResourceFilter,
    )
    from prefect.events.worker import EventsWorker

    EventsWorker.drain_all(timeout=30, at_exit=False)
    seen: list = []

    def stored():
        with get_client(sync_client=True) as client:
            page = client.read_events(EventFilter(
                event=EventNameFilter(prefix=["regrow.challenger."]),
                resource=EventResourceFilter(id=["regrow.model.shadowed"]),
                occurred=EventOccurredFilter(since=since)), limit=50)
        seen[:] = sorted(page.events, key=lambda e: e.occurred)
        return seen if len(seen) >= count else None
    wait_for(stored, 60, lambda: f"fewer than {count} challenger events: "
             f"{[e.event for e in seen]}")
    return [(e.event, e.payload) for e in seen]


def test_a_passing_candidate_becomes_challenger_and_takes_over_when_better(home: Path,
                                                                           tmp_path: Path):
    since = dt.datetime.now(dt.UTC)
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
    # the card of the running challenger shows its trial so far, from the version's tags
    text, facts, _ = _trial_card(reg, store, "2")
    (judged,) = ch.windows_of(reg.version_info("shadowed", "2").tags)
    assert text.startswith("v2 passed its gate and scores in shadow beside champion v1;")
    assert (facts["state"], facts["judged against"], facts["windows judged"]) == (
        "running", "champion v1", "1 of 2")
    level = load_config(b).config.promotion.shadow.confidence
    assert facts["judgement"].startswith(f"1 of 2 window(s) judged: pooled roc_auc gain "
                                         f"{judged.gain:+.4f} ({level:.0%} CI {judged.low:+.4f}..")
    assert facts["decided"] == "-" and facts["started"] != "-"
    assert _window_rows(text) == [["1", "300", f"{judged.gain:+.4f}",
                                   f"{judged.low:+.4f} .. {judged.high:+.4f}"]]
    assert "Shadow trial" not in build_card(reg, store, "shadowed", "1").to_markdown()
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
    # the new champion's card says it took over from a trial, with the pooled verdict and when
    text, facts, html = _trial_card(reg, store, "2")
    assert text.startswith("v2 took over as champion from v1 after its shadow trial: it beat v1 "
                           "on matured labels of 2 window(s).")
    assert (facts["state"], facts["windows judged"]) == ("promoted", "2 of 2")
    assert facts["judgement"] == second.challenger["reason"]
    assert re.match(r"beat the champion: pooled roc_auc gain \+0\.\d{4} \(\d+% CI \+0\.\d{4}\.\.",
                    facts["judgement"]), facts["judgement"]
    assert facts["decided"] == last["at"].isoformat(sep=" ", timespec="seconds") + " UTC"
    assert [r[:3] for r in _window_rows(text)] == [
        [str(i), "300", f"{w.gain:+.4f}"] for i, w in enumerate(windows, 1)]
    assert "<td>promoted</td>" in html and "took over as champion from v1" in html
    # one event each: the trial started, the challenger took over (the notices' own events)
    told = _challenger_events(since, 2)
    assert [name for name, _ in told] == [nt.EVENTS["challenger_started"],
                                          nt.EVENTS["challenger_promoted"]], told
    started, promoted = (p for _, p in told)
    assert started["message"].startswith("shadowed v2 passed the gate (roc_auc 0.")
    assert "takes over only if it beats v1 on matured labels of 2 window(s)" in started["message"]
    assert promoted["message"].startswith("shadowed v2 is the new champion, replacing v1: in "
                                          f"shadow it {second.challenger['reason']}, see ")
    assert (promoted["kind"], promoted["version"], promoted["champion_version"],
            promoted["windows"], promoted["by"]) == ("challenger_promoted", "2", "1", 2, "shadow")
    assert promoted["gain"] == pytest.approx(second.challenger["gain"])


def test_a_challenger_that_does_not_beat_the_champion_is_retired(home: Path, tmp_path: Path):
    since = dt.datetime.now(dt.UTC)
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
    text, facts, _ = _trial_card(reg, store, "2")
    assert text.startswith("v2 was retired from its shadow trial against champion v1 and no "
                           "longer scores.")
    assert (facts["state"], facts["windows judged"]) == ("retired", "2 of 2")
    assert facts["judgement"] == check.challenger["reason"]
    assert facts["judgement"].startswith("did not beat the champion: pooled roc_auc gain -0.")
    assert facts["decided"] == last["at"].isoformat(sep=" ", timespec="seconds") + " UTC"
    assert len(_window_rows(text)) == 2
    told = _challenger_events(since, 2)
    assert [name for name, _ in told] == [nt.EVENTS["challenger_started"],
                                          nt.EVENTS["challenger_retired"]], told
    retired = told[1][1]
    assert retired["message"].startswith("shadowed challenger v2 retired, v1 keeps serving: in "
                                         f"shadow it {check.challenger['reason']}, see ")
    assert (retired["kind"], retired["windows"]) == ("challenger_retired", 2)
    assert "by" not in retired
