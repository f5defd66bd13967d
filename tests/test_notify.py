"""Notifications: each decision kind reaches a local HTTP receiver through a generic webhook
block, by the automations `regrow serve` creates, on a real `prefect server`, once per quiet
window; a block that cannot deliver never fails a training; the config, the sentences and the
infra/ file on their own."""

from __future__ import annotations

import contextvars
import json
import re
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pandas as pd
import pytest
import yaml

from regrow.configs.schema import (
    NOTIFY_DEFAULT,
    NOTIFY_KINDS,
    ConfigError,
    load_config,
    parse_config,
)
from regrow.flows import events as notify
from regrow.tasks.policy import notices as nt
from tests.helpers import BINARY_CONFIG, binary_frame, merge, write_case
from tests.procs import free_port, wait_for

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "hdr-token-5f0c1d2e3a4b"  # sent as a header by the block: must appear in no message


# ----------------------------------------------------------------- config, sentences, infra

@pytest.mark.parametrize("notify_section, message", [
    ({"block": "custom-webhook/x", "on": ["gate_reject"]},
     "notify.on: unknown decision kind(s) 'gate_reject'; known kinds: " + ", ".join(NOTIFY_KINDS)),
    ({"block": "Slack Alerts"}, "notify.block: 'Slack Alerts' is not a Prefect block reference "
                                "like slack-webhook/ml-alerts"),
    ({"block": "slack-webhook/ml-alerts", "window": "5 minutes"},
     "notify.window: '5 minutes' is not a duration like 90s"),
    ({"block": "slack-webhook/ml-alerts", "on": []}, "notify.on: name at least one decision kind"),
    ({"on": ["promoted"]}, "notify.block: Field required"),
])
def test_bad_notify_sections_name_the_key_and_what_is_allowed(notify_section, message):
    with pytest.raises(ConfigError) as info:
        parse_config(merge(BINARY_CONFIG, {"notify": notify_section}))
    assert message in str(info.value)


def test_notify_defaults_every_kind_and_an_hour():
    cfg = parse_config(merge(BINARY_CONFIG, {"notify": {"block": "slack-webhook/ml-alerts"}}))
    assert cfg.notify.on == list(NOTIFY_DEFAULT) and cfg.notify.window_seconds == 3600
    # every move of champion is sent by default, each one (no quiet window)
    moves = {"promoted", "rolled_back", "challenger_promoted"}
    assert moves <= set(NOTIFY_DEFAULT)
    assert {k for k in NOTIFY_KINDS if not nt.EVENTS_TABLE[k].quiet} == moves
    assert parse_config(BINARY_CONFIG).notify is None


def test_sentences_carry_numbers_and_a_link_and_no_secret(monkeypatch):
    monkeypatch.setenv("REGROW_SOURCE_PASSWORD", "hunter2-very-secret")
    links = nt.Links(run="http://admin:pw@prefect.example:4200/runs/flow-run/abc?token=t0k&x=1",
                     mlflow="https://mlflow.example/#/experiments/1/runs/r1",
                     report="file:///var/lib/regrow/reports/m/drift.html",
                     card="https://bob:pw@mlflow.example/#/models/m/versions/3")
    notices = [
        nt.gate_rejected("m", "4", "roc_auc", 0.5123, "3", 0.8811, ["baseline"], links),
        nt.promoted("m", "4", "3", "roc_auc", 0.9012, 0.8811, "alice", links),
        nt.approval_waiting("m", "4", "3", "roc_auc", 0.8702, 0.8811, "24h", True, links),
        nt.training_failed("m", "failed", "OperationalError: cannot connect to "
                           "postgresql+psycopg://regrow:hunter2-very-secret@db:5432/regrow\n"
                           "(traceback follows)", "drift", links),
        nt.circuit_opened("m", 3, 3, "webhook", links),
        nt.degradation_confirmed("m", "3", {"metric": "roc_auc", "current": 0.5213,
                                            "reference": 0.8811, "drop": 0.3598,
                                            "degraded": True, "estimated": False,
                                            "labelled_rows": 1200, "tolerance_kind": "absolute"},
                                 0.25, ["a", "b"], "2 of the last 3 checks",
                                 "the retrain policy answered admitted", links),
        nt.rolled_back("m", "4", "3", "roc_auc", 0.61, 0.84, 400, 0.01, links),
        nt.approval_rejected("m", "4", "3", "bob", "not now", False, links),
        nt.circuit_reset("m", "carol", "upstream fixed", links),
        nt.retrain_answered("m", 7, "webhook", "new data", "admitted", "1 of 3 trainings", links),
        nt.retrain_answered("m", 8, "drift", "drift", "coalesced", "request #7 in flight", links),
        nt.retrain_answered("m", 9, "manual", "again", "cooling_down", "300 s left", links),
        nt.drift_checked("m", "3", 12, "drift", ["feature drift: share 0.50 >= 0.30"],
                         {"drift_share": 0.5}, links),
    ]
    # the challenger's notices: test_a_challengers_notices_tell_its_trial_and_verdict_...
    assert {n.kind for n in notices} == set(NOTIFY_KINDS) - {
        "challenger_started", "challenger_promoted", "challenger_retired"}
    for n in notices:
        text = n.message
        assert "\n" not in text and text.count(", see ") == 1, text
        if n.kind in ("gate_rejected", "promoted", "degradation_confirmed", "rolled_back",
                      "approval_waiting"):  # these carry metrics
            assert re.search(r"\d\.\d{4}", text), text
        assert re.search(r"(https?|file)://\S+$", text), text
        for secret in ("pw@", "admin", "hunter2", "t0k", "bob:"):
            assert secret not in json.dumps(n.payload()), (secret, n.payload())
        assert n.payload()["message"] == text and n.payload()["kind"] == n.kind
        assert n.event == nt.EVENTS[n.kind] and n.subject.startswith("regrow: m: ")
    by = {n.kind: n for n in notices}
    assert by["gate_rejected"].message == (
        "The gate rejected m v4: roc_auc 0.5123 against champion v3's 0.8811 on the same "
        "holdout (failed: baseline); v3 keeps serving, see "
        "http://prefect.example:4200/runs/flow-run/abc?x=1")
    assert "postgresql+psycopg://***@db:5432/regrow" in by["training_failed"].message
    assert "circuit breaker of m is open: 3 consecutive trainings promoted nothing (limit 3)" \
        in by["circuit_opened"].message
    assert by["degradation_confirmed"].message.startswith(
        "m v3 has degraded: roc_auc 0.5213 on 1,200 labelled rows against 0.8811 at training "
        "(drop 0.3598), confirmed by 2 of the last 3 checks; the retrain policy answered admitted"
        ", see file:///var/lib/regrow/reports/m/drift.html")
    assert by["approval_rejected"].message.startswith(
        "m v4 passed the gate but was not promoted: rejected by bob (not now); v3 keeps serving")
    assert by["circuit_reset"].message.startswith(
        "The retrain circuit breaker of m was reset by carol (upstream fixed): retrain requests "
        "are answered again")
    answered = [n.message for n in notices if n.kind.startswith("retrain_")]
    assert answered[0].startswith("A webhook retrain request for m (#7: new data) was admitted: "
                                  "a training starts; 1 of 3 trainings")
    assert answered[1].startswith("A drift retrain request for m (#8: drift) was coalesced with "
                                  "the training in flight; request #7 in flight")
    assert answered[2].startswith("A manual retrain request for m (#9: again) was refused "
                                  "(cooling down); 300 s left")
    assert by["drift_checked"].message.startswith(
        "Drift check #12 of m v3: drift (feature drift: share 0.50 >= 0.30), see file://")
    assert by["drift_checked"].payload()["drift_share"] == 0.5
    moved = nt.promoted_by_hand("m", "5", "4", "dana", "hotfix\x1b[2J", "gate was wrong", True,
                                links)
    assert moved.kind == "promoted" and moved.payload()["by"] == nt.BY_PERSON
    assert moved.message.startswith("m v5 is the new champion, replacing v4: promoted by hand by "
                                    "dana (hotfix\\x1b[2J), gate overridden: gate was wrong; "
                                    "it bakes against v4, see https://mlflow.example/")


def test_a_challengers_notices_tell_its_trial_and_verdict_with_the_pooled_gain(monkeypatch):
    """The notices of a shadow trial, built by the functions the training's register step and
    the drift check's judgement step call (`flows.events`), from verdicts `decide` reached."""
    from regrow.tasks.registry import challenger as ch

    monkeypatch.setenv("REGROW_SOURCE_TOKEN", "tok-3e1f9a")
    trial = parse_config(merge(BINARY_CONFIG, {"promotion": {"mode": "shadow", "shadow": {
        "windows": 2, "min_labels": 50, "confidence": 0.9}}})).promotion.shadow
    links = nt.Links(run="http://u:pw@prefect.example/runs/flow-run/r?token=tok-3e1f9a",
                     card="file:///var/lib/regrow/m/card/model_card.html")
    won = ch.decide([ch.WindowResult(300, 0.0812, 0.0411, 0.1213, True),
                     ch.WindowResult(100, 0.0612, 0.0103, 0.1121, True)], trial, "roc_auc")
    lost = ch.decide([ch.WindowResult(200, -0.0205, -0.0611, 0.0201, True),
                      ch.WindowResult(200, 0.0101, -0.0302, 0.0504, True)], trial, "roc_auc")
    assert (won.state, lost.state) == (ch.PROMOTED, ch.RETIRED)
    started = nt.challenger_started("m", "4", "3", "roc_auc", 0.9012, 0.8811, trial.windows,
                                    links)
    promoted = nt.challenger_decided("challenger_promoted", "m", "4", "3", "roc_auc", won.gain,
                                     won.low, won.high, won.windows_done, won.reason, links)
    retired = nt.challenger_decided("challenger_retired", "m", "4", "3", "roc_auc", lost.gain,
                                    lost.low, lost.high, lost.windows_done, lost.reason, links)
    for n, kind in ((started, "challenger_started"), (promoted, "challenger_promoted"),
                    (retired, "challenger_retired")):
        assert n.kind == kind and n.event == nt.EVENTS[kind] == nt.EVENTS_TABLE[kind].event
        assert n.event.startswith("regrow.challenger.") and n.subject == f"regrow: m: {nt.TITLES[kind]}"
        assert "\n" not in n.message and n.message.count(", see ") == 1, n.message
        assert n.payload()["message"] == n.message and n.payload()["kind"] == kind
        for secret in ("pw@", "tok-3e1f9a", "u:"):
            assert secret not in json.dumps(n.payload()), (secret, n.payload())
    # a takeover moves champion: every one is heard; a start or a retirement is windowed
    assert [nt.EVENTS_TABLE[k].quiet for k in ("challenger_promoted", "challenger_retired",
                                               "challenger_started")] == [False, True, True]
    assert started.message == (
        "m v4 passed the gate (roc_auc 0.9012 against champion v3's 0.8811 on the same holdout) "
        "and scores in shadow; it takes over only if it beats v3 on matured labels of 2 "
        "window(s), see http://prefect.example/runs/flow-run/r")
    assert promoted.message == (
        "m v4 is the new champion, replacing v3: in shadow it beat the champion: pooled roc_auc "
        f"gain +0.0762 (90% CI {won.low:+.4f}..{won.high:+.4f}) over 2 window(s), 400 rows, "
        "above 0.0, see file:///var/lib/regrow/m/card/model_card.html")
    assert 0 < won.low < 0.0762 < won.high
    assert retired.message.startswith(
        "m challenger v4 retired, v3 keeps serving: in shadow it did not beat the champion: "
        "pooled roc_auc gain -0.0052 (90% CI -")
    assert retired.message.endswith("over 2 window(s), 400 rows, not above 0.0, see "
                                    "file:///var/lib/regrow/m/card/model_card.html")
    got = promoted.payload()
    assert (got["version"], got["champion_version"], got["windows"], got["by"]) == (
        "4", "3", 2, "shadow")
    assert (got["gain"], got["gain_low"], got["gain_high"]) == (won.gain, won.low, won.high)
    assert "by" not in retired.payload() and retired.payload()["gain"] == lost.gain


def test_a_notice_that_cannot_be_built_is_a_warning_not_an_error(caplog):
    with caplog.at_level("WARNING", logger="regrow.notify"):
        assert notify.training_done(None, None, None, None) is None
    assert "notification training_done not emitted: AttributeError" in caplog.text


def test_infra_file_parses_into_prefect_automations_and_matches_the_code():
    from prefect.events.schemas.automations import AutomationCore

    doc = yaml.safe_load((ROOT / "infra" / "automations.yaml").read_text())
    parsed = [AutomationCore.model_validate(a) for a in doc["automations"]]
    assert [a.trigger.expect for a in parsed] == [{nt.EVENTS[k]} for k in NOTIFY_DEFAULT]
    for kind, a in zip(NOTIFY_DEFAULT, parsed, strict=True):
        assert a.trigger.posture.value == "Reactive" and a.trigger.threshold == 1
        # each move of champion is sent; the others once per window
        assert a.trigger.within.total_seconds() == (
            0 if kind in ("promoted", "rolled_back", "challenger_promoted") else 3600)
        assert a.trigger.for_each == {"prefect.resource.id"}
        assert a.actions[0].type == "send-notification"
    assert doc == notify.automations_file()  # the file is what the code builds


# ----------------------------------------------------------------- a real Prefect server

class Receiver:
    """A local HTTP endpoint that keeps every JSON body posted to it."""

    def __init__(self):
        self.bodies: list[dict] = []
        self.headers: list[dict] = []
        self.times: list[float] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                size = int(self.headers.get("content-length", 0))
                outer.bodies.append(json.loads(self.rfile.read(size) or b"{}"))
                outer.headers.append(dict(self.headers))
                outer.times.append(time.time())
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def about(self, model: str) -> list[dict]:
        return [b for b in self.bodies if f"regrow: {model}: " in b.get("subject", "")]


def _drain_workers() -> None:
    """Flush this process's Prefect event and log workers, so the next ones bind to the API
    URL in force (another test module may have bound them to its own server)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (EventsWorker, APILogWorker):
        worker.drain_all(timeout=30, at_exit=False)


@pytest.fixture(scope="module")
def api(prefect_server: str):
    """Flows in this process run against the session's `prefect server` (its triggers and
    actions services deliver notifications)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    _drain_workers()
    with temporary_settings({PREFECT_API_URL: prefect_server}):
        yield prefect_server
        _drain_workers()


@pytest.fixture(scope="module")
def receiver(api: str) -> Receiver:
    """The receiver, saved as the generic webhook block ``custom-webhook/nt-receiver``."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    rec = Receiver()
    CustomWebhookNotificationBlock(
        name="regrow-tests", url=rec.url, json_data={"subject": "{{subject}}", "text": "{{body}}"},
        headers={"Authorization": "Bearer {{token}}"}, secrets={"token": TOKEN},
    ).save("nt-receiver", overwrite=True)
    return rec


def _events_at_least(model: str, name: str, count: int) -> list:
    """The model's events of a name, once the server has stored at least `count` of them (its
    event persister writes in batches, after the triggers have seen them)."""
    def stored():
        found = _events(model, name)
        return found if len(found) >= count else None
    return wait_for(stored, 30, f"fewer than {count} {name} events of {model} were stored")


def _timeline(model: str, count: int) -> list[tuple[str, dict]]:
    """The model's regrow events (name, payload) in the order they happened, once the server
    has stored at least `count` of them."""
    from prefect import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    seen: list = []

    def stored():
        with get_client(sync_client=True) as client:
            page = client.read_events(EventFilter(
                event=EventNameFilter(prefix=["regrow."]),
                resource=EventResourceFilter(id=[f"regrow.model.{model}"])), limit=50)
        seen[:] = sorted(page.events, key=lambda e: e.occurred)
        return page.events if len(page.events) >= count else None
    found = wait_for(stored, 30, lambda: f"fewer than {count} events of {model} were stored: "
                     f"{[e.event for e in seen]}")
    return [(e.event, e.payload) for e in sorted(found, key=lambda e: e.occurred)]


def _events(model: str, name: str) -> list:
    from prefect import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    with get_client(sync_client=True) as client:
        page = client.read_events(EventFilter(event=EventNameFilter(name=[name]),
                                              resource=EventResourceFilter(
                                                  id=[f"regrow.model.{model}"])), limit=50)
    return page.events


def _set_home(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    monkeypatch.setenv("REGROW_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("REGROW_DATABASE_URL", raising=False)
    monkeypatch.setenv("REGROW_PROGRESS", "0")


def _config(name: str, **patch) -> dict:
    return merge(merge(BINARY_CONFIG, {"registry": {"model_name": name}}), patch)


def _flipped(frame: pd.DataFrame) -> pd.DataFrame:
    """The same inputs under the opposite concept (every label flipped)."""
    out = frame.copy()
    out["label"] = 1 - out["label"]
    return out


def _score_and_label(cfg_path: Path, frame: pd.DataFrame, folder: Path) -> None:
    from regrow.flows.monitoring import score_flow
    from regrow.tasks.monitoring import scoring
    from regrow.tasks.store.database import Store
    from regrow.tasks.store.settings import Settings

    rows = folder / f"rows-{frame['row_id'].iloc[0]}.parquet"
    frame.drop(columns=["label"]).to_parquet(rows)
    score_flow(str(cfg_path), str(rows))
    store = Store(Settings.from_env().database_url)
    scoring.record_labels(load_config(cfg_path).config, frame[["row_id", "label"]], store)
    store.dispose()


def test_each_kind_reaches_the_receiver_once_per_window(receiver: Receiver, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch):
    from regrow.flows.monitoring import drift_check_flow
    from regrow.flows.training import train_flow

    _set_home(monkeypatch, tmp_path / "home")
    model = "nt-all"
    cfg = _config(model, notify={"block": "custom-webhook/nt-receiver", "window": "1h",
                                 "on": list(NOTIFY_KINDS)},
                  retrain={"circuit_breaker_after": 2},
                  promotion={"bake": {"windows": 1, "tolerance": 0.0, "min_labels": 50}},
                  monitoring={"window": {"rows": 600, "min_rows": 100},
                              "persistence": {"k": 1, "n": 1},
                              "performance": {"min_labels": 50}})
    case = tmp_path / "case"
    paths = {}
    for name, frame in {"bad": binary_frame(900, seed=1, shuffle_labels=True),
                        "good": binary_frame(900, seed=1),
                        "invalid": binary_frame(900, seed=1).assign(age=500.0),
                        "bad2": binary_frame(900, seed=2, shuffle_labels=True),
                        "concept-b": _flipped(binary_frame(900, seed=3))}.items():
        paths[name] = str(write_case(case / name, frame, cfg))
    loaded = load_config(paths["good"])
    assert notify.sync_automations(loaded) == [f"regrow notify {k} {model}" for k in NOTIFY_KINDS]
    # what these trainings and checks tell (no retrain is asked, no circuit reset, no person
    # moves champion): each once per window, except a move of champion, each one sent
    told = dict.fromkeys(NOTIFY_KINDS, 1) | {"promoted": 2, "retrain_admitted": 0,
                                             "retrain_coalesced": 0, "retrain_refused": 0,
                                             "circuit_reset": 0, "challenger_started": 0,
                                             "challenger_promoted": 0, "challenger_retired": 0}

    assert train_flow(paths["bad"]).decision["verdict"] == "reject"        # gate_rejected
    assert train_flow(paths["good"]).champion_after == "2"                 # promoted
    with pytest.raises(Exception, match="validation failed"):
        train_flow(paths["invalid"])                                       # training_failed
    assert train_flow(paths["bad2"]).decision["verdict"] == "reject"       # again: quiet
    # ... and that was the second training in a row that promoted nothing: circuit_opened
    manual = train_flow(paths["concept-b"], overrides={"promotion.mode": "manual",  # approval_waiting
                                                       "promotion.timeout": "2s"})
    assert manual.decision["verdict"] == "promote" and manual.champion_after == "2"  # timed out
    # ... nobody decided: approval_rejected
    baking = train_flow(paths["concept-b"])
    assert baking.promoted and baking.champion_before == "2"               # promoted: again
    # The new champion bakes against v2: on rows of the old concept it loses -> rolled_back.
    old = binary_frame(300, seed=4, start="2025-01-01").assign(row_id=lambda f: f.row_id + 10_000)
    _score_and_label(Path(paths["good"]), old, tmp_path)
    check = drift_check_flow(paths["good"], retrain=False)                 # drift_checked
    assert check.bake["state"] == "rolled_back"
    # v2 serves again; on rows of the new concept it has degraded -> degradation_confirmed.
    new = _flipped(binary_frame(300, seed=5, start="2025-03-01")).assign(
        row_id=lambda f: f.row_id + 20_000)
    _score_and_label(Path(paths["good"]), new, tmp_path)
    check = drift_check_flow(paths["good"], retrain=False)                 # drift_checked: quiet
    assert check.version == "2" and check.assessment["persistent"]

    def arrived():
        return {b["subject"] for b in receiver.about(model)} >= \
            {f"regrow: {model}: {nt.TITLES[k]}" for k, n in told.items() if n}
    wait_for(arrived, 60, lambda: f"not every kind arrived: {receiver.about(model)}")
    time.sleep(3)  # anything the window should have held back would have arrived by now
    got = {nt_kind: [b["text"] for b in receiver.about(model)
                     if b["subject"] == f"regrow: {model}: {title}"]
           for nt_kind, title in nt.TITLES.items()}
    assert {k: len(v) for k, v in got.items()} == told, got
    # Twice emitted, once delivered: the quiet window is the automation's doing ...
    assert len(_events_at_least(model, nt.EVENTS["gate_rejected"], 2)) == 2
    assert len(_events_at_least(model, nt.EVENTS["drift_checked"], 2)) == 2
    # ... but every move of champion is heard: both promotions, the rollback.
    assert len(_events_at_least(model, nt.EVENTS["promoted"], 2)) == 2
    assert got["promoted"][1].startswith("nt-all v5 is the new champion, replacing v2: ")
    # The check that rolled the baking champion back was told first, then the rollback.
    line = _timeline(model, 13)  # every event above, regrow.bake.rolled_back included
    assert [name for name, _ in line if name.startswith(("regrow.drift", "regrow.model.rolled",
                                                          "regrow.degradation"))] == [
        nt.EVENTS["drift_checked"], nt.EVENTS["rolled_back"], nt.EVENTS["drift_checked"],
        nt.EVENTS["degradation_confirmed"]]
    rollback_check = next(p for n, p in line if n == nt.EVENTS["drift_checked"])
    assert rollback_check["version"] == "5" and rollback_check["message"].startswith(
        "Drift check #1 of nt-all v5: ")
    (rolled,) = [p for n, p in line if n == nt.EVENTS["rolled_back"]]
    assert rolled["by"] == nt.BY_BAKE and rolled["from_version"] == "5"

    text = {k: v[0] for k, v in got.items() if v}
    run_link = re.compile(re.escape(api_ui(receiver)) + r"/runs/flow-run/[0-9a-f-]{36}$")
    assert re.match(r"The gate rejected nt-all v1: roc_auc 0\.\d{4} with no champion to compare "
                    r"\(failed: [a-z_:=, ]*baseline", text["gate_rejected"])
    assert run_link.search(text["gate_rejected"])
    assert re.match(r"nt-all v2 is the first champion: roc_auc 0\.9\d{3} on its holdout, see "
                    r"file://.*/card/model_card\.html$", text["promoted"])
    assert text["training_failed"].startswith("A manual training of nt-all failed: "
                                              "ValidationFailed: validation failed: 1 of ")
    assert text["circuit_opened"].startswith("The retrain circuit breaker of nt-all is open: "
                                             "2 consecutive trainings promoted nothing (limit 2)")
    assert re.match(r"nt-all v4 passed the gate and waits for approval \(roc_auc 0\.9\d{3} "
                    r"against champion v2's 0\.\d{4} on the same holdout\); no decision within 2s",
                    text["approval_waiting"])
    assert run_link.search(text["approval_waiting"])
    assert re.match(r"nt-all rolled back from v5 to v2: on 300 labelled rows of its bake v5 "
                    r"scored roc_auc 0\.\d{4} against v2's 0\.9\d{3}", text["rolled_back"])
    assert re.match(r"nt-all v2 has degraded: roc_auc 0\.\d{4} on 300 labelled rows against "
                    r"0\.9\d{3} at training \(drop 0\.\d{4}, .*\), confirmed by one check.*; no "
                    r"retrain asked .*, see file://.*/drift-.*\.html$",
                    text["degradation_confirmed"])
    assert text["approval_rejected"].startswith("nt-all v4 passed the gate but was not promoted: "
                                                "nobody decided (no decision within 2s); v2 "
                                                "keeps serving, see ")
    assert all(TOKEN not in t for t in text.values())
    assert all(h.get("Authorization") == f"Bearer {TOKEN}" for h in receiver.headers)


# ----------------------------------------------------------------- moves by people, verdicts

MOVES = "nt-moves"


def _cli_env(server: str, home: Path) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "REGROW_", "MLFLOW_"))}
    env.update(PREFECT_API_URL=server, REGROW_HOME=str(home), REGROW_PROGRESS="0",
               PYTHONPATH=str(ROOT), PREFECT_HOME=str(home / "prefect"))  # no user profile
    return env


def _regrow(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "regrow.app.cli", *args], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=180)


@pytest.fixture(scope="module")
def moved(api: str, receiver: Receiver, tmp_path_factory: pytest.TempPathFactory):
    """The module's one trained model for the moves of people and the policy's verdicts: v1
    champion (the gate promoted it), v2 a candidate the gate rejected; every kind notifies,
    with an hour's window."""
    from regrow.flows.training import train_flow

    folder = tmp_path_factory.mktemp("moves")
    cfg = _config(MOVES, notify={"block": "custom-webhook/nt-receiver", "window": "1h",
                                 "on": list(NOTIFY_KINDS)},
                  retrain={"cooldown": "0s", "max_trainings": 20},
                  monitoring={"window": {"rows": 600, "min_rows": 100},
                              "persistence": {"k": 1, "n": 1},
                              "performance": {"min_labels": 50}})
    paths = {name: write_case(folder / name, frame, cfg) for name, frame in {
        "good": binary_frame(900, seed=1), "bad": binary_frame(900, seed=1, shuffle_labels=True),
        "concept-b": _flipped(binary_frame(900, seed=3)),
        "concept-b2": _flipped(binary_frame(900, seed=6))}.items()}
    with pytest.MonkeyPatch.context() as mp:
        _set_home(mp, folder / "home")
        notify.sync_automations(load_config(paths["good"]))
        assert train_flow(str(paths["good"])).champion_after == "1"
        assert train_flow(str(paths["bad"])).decision["verdict"] == "reject"
        yield {"paths": paths, "home": folder / "home", "server": api, "folder": folder}


def _delivered(receiver: Receiver, title: str, count: int) -> list[str]:
    subject = f"regrow: {MOVES}: {title}"

    def enough():
        texts = [b["text"] for b in receiver.about(MOVES) if b["subject"] == subject]
        return texts if len(texts) >= count else None
    return wait_for(enough, 60, lambda: f"fewer than {count} {title!r} messages arrived: "
                    f"{receiver.about(MOVES)}")


def test_a_person_promoting_and_rolling_back_is_heard(moved, receiver: Receiver):
    """`regrow promote` and `regrow rollback` send their events to the Prefect server the
    command is pointed at; each move reaches the receiver, the person and reason in its words."""
    env, cfg = _cli_env(moved["server"], moved["home"]), str(moved["paths"]["good"])
    out = _regrow(env, "promote", cfg, "--version", "2", "--by", "dana", "--reason", "hotfix",
                  "--override-gate", "the gate was wrong")
    assert out.returncode == 0 and out.stderr == "", out.stdout + out.stderr
    out = _regrow(env, "rollback", cfg, "--by", "erin", "--reason", "v2 misbehaves")
    assert out.returncode == 0 and out.stderr == "", out.stdout + out.stderr

    promoted = _delivered(receiver, nt.TITLES["promoted"], 2)  # the gate's v1, then dana's v2
    assert re.match(r"nt-moves v2 is the new champion, replacing v1: promoted by hand by dana "
                    r"\(hotfix\), gate overridden: the gate was wrong, see file://.*"
                    r"/card/model_card\.html$", promoted[-1])
    (rolled,) = _delivered(receiver, nt.TITLES["rolled_back"], 1)
    assert re.match(r"nt-moves rolled back from v2 to v1 by hand by erin \(v2 misbehaves\), see "
                    r"file://", rolled)
    line = [(n, p) for n, p in _timeline(MOVES, 4) if n.startswith("regrow.model.")]
    assert [(n, p["by"], p.get("actor")) for n, p in line] == [
        (nt.EVENTS["promoted"], nt.BY_GATE, "gate"), (nt.EVENTS["promoted"], nt.BY_PERSON, "dana"),
        (nt.EVENTS["rolled_back"], nt.BY_PERSON, "erin")]


def test_a_move_without_a_prefect_server_happens_and_says_the_event_was_not_sent(moved):
    from regrow.tasks.registry.mlflow_registry import Registry
    from regrow.tasks.store.settings import Settings

    cfg = str(moved["paths"]["good"])
    dead = _cli_env(f"http://127.0.0.1:{free_port()}/api", moved["home"])
    out = _regrow(dead, "promote", cfg, "--version", "2", "--by", "dana", "--reason", "again",
                  "--override-gate", "still wrong")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "champion: v1 -> v2" in out.stdout
    (warning,) = out.stderr.splitlines()
    assert warning.startswith(f"warning: the {nt.EVENTS['promoted']} event was not sent: the "
                              f"Prefect server at {dead['PREFECT_API_URL']} did not take it"), \
        warning
    none = {k: v for k, v in dead.items() if k != "PREFECT_API_URL"}
    out = _regrow(none, "rollback", cfg, "--by", "erin", "--reason", "undo")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stderr.splitlines() == [
        f"warning: the {nt.EVENTS['rolled_back']} event was not sent: no Prefect server is "
        "configured (PREFECT_API_URL, or `regrow up`)"]
    with pytest.MonkeyPatch.context() as mp:
        _set_home(mp, moved["home"])
        assert Registry(Settings.from_env()).alias_version(MOVES, "champion") == "1"


def test_verdicts_and_a_drift_retrain_are_told_in_the_order_they_happened(moved,
                                                                         receiver: Receiver):
    """A circuit reset; a drift check that finds the champion degraded: the check, the
    degradation, the admitted retrain, the promotion it caused, in that order; a request
    coalesced with one in flight, and one refused."""
    from regrow.flows.monitoring import drift_check_flow
    from regrow.tasks.policy import retrain as policy
    from regrow.tasks.store.database import Store
    from regrow.tasks.store.settings import Settings

    env, good = _cli_env(moved["server"], moved["home"]), moved["paths"]["good"]
    out = _regrow(env, "reset-circuit", str(good), "--actor", "carol", "--reason", "upstream fixed")
    assert out.returncode == 0 and out.stderr == "", out.stdout + out.stderr
    with pytest.MonkeyPatch.context() as mp:
        _set_home(mp, moved["home"])
        # v1 serves; rows of another concept arrive, labelled: its performance dropped
        rows = _flipped(binary_frame(300, seed=5, start="2025-03-01")).assign(
            row_id=lambda f: f.row_id + 30_000)
        _score_and_label(good, rows, moved["folder"])
        check = drift_check_flow(str(moved["paths"]["concept-b"]))
        assert check.assessment["persistent"] and check.retrain.verdict == "admitted"
        assert check.retrain.training.promoted and check.retrain.training.champion_before == "1"
        store = Store(Settings.from_env().database_url)
        rules = load_config(good).config.retrain
        first = notify.request_retrain(store, MOVES, rules, kind="webhook", reason="new rows",
                                       ref=None)
        second = notify.request_retrain(store, MOVES, rules, kind="ui", reason="me too", ref=None)
        assert (first.verdict, second.verdict) == (policy.ADMITTED, policy.COALESCED)
        policy.mark_request(store, first.request_id, "failed")
        refused = notify.request_retrain(store, MOVES, rules.model_copy(update={
            "max_trainings": 1}), kind="schedule", reason="nightly", ref=None)
        assert refused.verdict == policy.OVER_BUDGET
        store.dispose()

    def since_reset():
        line = _timeline(MOVES, 1)
        last = max(i for i, (n, _) in enumerate(line) if n == nt.EVENTS["circuit_reset"])
        return line[last:] if len(line) - last >= 8 else None
    line = wait_for(since_reset, 30, lambda: f"not every event was stored: {_timeline(MOVES, 1)}")
    names = [n for n, _ in line]
    assert names == [nt.EVENTS[k] for k in (
        "circuit_reset", "drift_checked", "degradation_confirmed", "retrain_admitted",
        "promoted", "retrain_admitted", "retrain_coalesced", "retrain_refused")], names
    assert line[0][1]["actor"] == "carol"
    assert line[4][1]["by"] == nt.BY_GATE and line[4][1]["version"] == "3"
    reset = _delivered(receiver, nt.TITLES["circuit_reset"], 1)[0]
    assert reset == ("The retrain circuit breaker of nt-moves was reset by carol (upstream "
                     "fixed): retrain requests are answered again")
    (checked,) = _delivered(receiver, nt.TITLES["drift_checked"], 1)
    assert re.match(r"Drift check #\d+ of nt-moves v1: drift \(performance: .*\), see file://",
                    checked)
    (degraded,) = _delivered(receiver, nt.TITLES["degradation_confirmed"], 1)
    assert "; the retrain policy answered admitted, see " in degraded
    (admitted,) = _delivered(receiver, nt.TITLES["retrain_admitted"], 1)  # the second: quiet
    assert re.match(r"A drift retrain request for nt-moves \(#\d+: performance: .*\) was "
                    r"admitted: a training starts; ", admitted)
    (coalesced,) = _delivered(receiver, nt.TITLES["retrain_coalesced"], 1)
    assert re.match(r"A ui retrain request for nt-moves \(#\d+: me too\) was coalesced with "
                    r"the training in flight; training for request #\d+ is already in flight",
                    coalesced)
    (refused_text,) = _delivered(receiver, nt.TITLES["retrain_refused"], 1)
    assert re.match(r"A schedule retrain request for nt-moves \(#\d+: nightly\) was refused "
                    r"\(over budget\); \d+ trainings in the last 1d \(budget 1\)", refused_text)


def test_regrow_approve_is_heard_as_a_promotion_approved_by_that_person(moved,
                                                                       receiver: Receiver):
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    from regrow.flows.training import train_flow

    done: dict = {}
    with pytest.MonkeyPatch.context() as mp:
        _set_home(mp, moved["home"])

        def train() -> None:
            done["out"] = train_flow(str(moved["paths"]["concept-b2"]), overrides={
                "promotion.mode": "manual", "promotion.timeout": "120s",
                "gate.max_regression": 1.0, "gate.require_improvement": False})
        # the thread runs against the module's server: Prefect's settings live in contextvars
        worker = threading.Thread(target=contextvars.copy_context().run, args=(train,))
        worker.start()

        runs: list = []

        def paused():
            with get_client(sync_client=True) as client:
                runs[:] = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                    name=FlowRunFilterName(like_=MOVES)), limit=50)
            return next((r for r in runs if r.state and r.state.is_paused()), None)
        run = wait_for(paused, 120, lambda: f"the training never paused for approval: "
                       f"{[(r.name, r.state_name) for r in runs]}")
        out = _regrow(_cli_env(moved["server"], moved["home"]), "approve", str(run.id), "--by",
                      "alice", "--reason", "looks right")
        worker.join(120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert done["out"].promoted and done["out"].approval["approver"] == "alice"
    version = done["out"].version
    approved = re.compile(rf"nt-moves v{version} is the new champion, replacing v\d+: roc_auc "
                          r"0\.\d{4} against 0\.\d{4} on the same holdout, approved by alice, "
                          r"see ")
    wait_for(lambda: [b for b in receiver.about(MOVES) if approved.match(b["text"])], 60,
             lambda: f"the approved promotion never arrived: {receiver.about(MOVES)}")
    (event,) = wait_for(lambda: [e for e in _events(MOVES, nt.EVENTS["promoted"])
                                 if e.payload["version"] == version], 30,
                        "the approved promotion's event was not stored")
    assert event.payload["by"] == nt.BY_APPROVAL and event.payload["actor"] == "alice"


def test_the_missing_block_message_creates_the_block_as_written(api: str):
    """The Python the error suggests runs as written and makes the block it names."""
    with pytest.raises(notify.NotifySetupError) as info:
        notify.block_id("custom-webhook/nt-suggested", "cfg.yaml")
    message = str(info.value)
    assert "prefect block create custom-webhook" in message
    code = re.search(r"in Python, replacing each '<\.\.\.>' with its value: `([^`]+)`$", message)
    assert code, message
    assert "CustomWebhookNotificationBlock(name='nt-suggested', url='<url>')" in code.group(1)
    exec(code.group(1), {})  # noqa: S102 - the suggestion, run as a user would paste it
    assert notify.block_id("custom-webhook/nt-suggested", "cfg.yaml")


def api_ui(receiver: Receiver) -> str:
    from prefect.settings import PREFECT_UI_URL

    return PREFECT_UI_URL.value().rstrip("/")


def test_the_next_message_comes_once_the_window_has_passed(receiver: Receiver, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch):
    from regrow.flows.training import train_flow

    _set_home(monkeypatch, tmp_path / "home")
    model, window = "nt-quick", 12.0
    cfg = _config(model, notify={"block": "custom-webhook/nt-receiver", "on": ["training_failed"],
                                 "window": f"{window:g}s"})
    path = str(write_case(tmp_path / "m", binary_frame(300, seed=1).assign(age=500.0), cfg))
    notify.sync_automations(load_config(path))

    def fail() -> None:
        with pytest.raises(Exception, match="validation failed"):
            train_flow(path)

    fail()
    fail()  # within the window: held back
    wait_for(lambda: receiver.about(model), 30, "the first failure was never delivered")
    # The window runs from the first event, which was emitted before it was delivered.
    delivered = receiver.times[receiver.bodies.index(receiver.about(model)[0])]
    time.sleep(max(0.0, delivered + window + 0.5 - time.time()))
    fail()  # the window has passed: delivered
    wait_for(lambda: len(receiver.about(model)) >= 2, 30, "the failure after the window was "
              "never delivered")
    time.sleep(2)
    assert len(_events_at_least(model, nt.EVENTS["training_failed"], 3)) == 3
    assert len(receiver.about(model)) == 2


def test_a_block_that_cannot_deliver_never_fails_the_training(api: str, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch):
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    from regrow.flows.training import train_flow

    _set_home(monkeypatch, tmp_path / "home")
    CustomWebhookNotificationBlock(name="dead", url=f"http://127.0.0.1:{free_port()}/nobody",
                                   json_data={"text": "{{body}}"}).save("nt-dead", overwrite=True)
    model = "nt-dead"
    cfg = write_case(tmp_path / "m", binary_frame(900, seed=1),
                     _config(model, notify={"block": "custom-webhook/nt-dead", "on": ["promoted"]}))
    (name,) = notify.sync_automations(load_config(cfg))
    out = train_flow(str(cfg))
    assert out.promoted and out.champion_after == "1"

    from prefect import get_client
    from prefect.events.filters import EventFilter, EventNameFilter

    with get_client(sync_client=True) as client:
        (auto,) = client.read_automations_by_name(name)

        def automation_events(prefix: str) -> list:
            page = client.read_events(EventFilter(event=EventNameFilter(prefix=[prefix])),
                                      limit=50)
            return [e for e in page.events if e.resource.id == f"prefect.automation.{auto.id}"]
        # The automation fired for the promotion; its webhook met a closed port (Prefect's
        # server logs the connection error and retries the action, then drops it).
        wait_for(lambda: automation_events("prefect.automation.triggered"), 30,
                  "the automation never fired")
        time.sleep(2)
        assert not automation_events("prefect.automation.action.executed")


def test_sync_keeps_unchanged_automations_and_drops_kinds_no_longer_named(api: str, receiver,
                                                                          tmp_path: Path):
    from prefect import get_client

    base = _config("nt-sync", notify={"block": "custom-webhook/nt-receiver",
                                      "on": ["promoted", "gate_rejected"]})
    first = write_case(tmp_path / "a", None, base)
    notify.sync_automations(load_config(first))

    def mine():
        with get_client(sync_client=True) as client:
            return {a.name: a.id for a in client.read_automations() if "model:nt-sync" in a.tags}
    before = mine()
    assert set(before) == {"regrow notify promoted nt-sync", "regrow notify gate_rejected nt-sync"}
    notify.sync_automations(load_config(first))
    assert mine() == before  # a restart keeps them (and their quiet windows)
    fewer = write_case(tmp_path / "b", None, merge(base, {"notify": {"on": ["gate_rejected"],
                                                                     "window": "10m"}}))
    notify.sync_automations(load_config(fewer))
    after = mine()
    assert set(after) == {"regrow notify gate_rejected nt-sync"}  # a new window: replaced
    assert after["regrow notify gate_rejected nt-sync"] != \
        before["regrow notify gate_rejected nt-sync"]
    off = write_case(tmp_path / "c", None, merge(base, {"notify": None}))
    assert notify.sync_automations(load_config(off)) == [] and mine() == {}


def test_regrow_notify_print_is_a_file_prefect_reads(api: str, receiver, tmp_path: Path, capsys):
    import argparse

    from prefect.events.schemas.automations import AutomationCore

    from regrow.app.cli import cmd_notify

    cfg = write_case(tmp_path / "a", None, _config("nt-print", notify={
        "block": "custom-webhook/nt-receiver", "on": ["training_failed"], "window": "30m"}))
    assert cmd_notify(argparse.Namespace(configs=[str(cfg)], print=True, set=None)) == 0
    (auto,) = [AutomationCore.model_validate(a)
               for a in yaml.safe_load(capsys.readouterr().out)["automations"]]
    assert auto.name == "regrow notify training_failed nt-print"
    assert auto.trigger.within.total_seconds() == 1800
    assert auto.trigger.match.model_dump() == {"prefect.resource.id": "regrow.model.nt-print"}
    assert auto.actions[0].block_document_id == notify.block_id("custom-webhook/nt-receiver", "x")


@pytest.mark.slow
def test_serve_with_a_missing_block_says_how_to_create_it(prefect_server: str, tmp_path: Path):
    import os

    cfg = write_case(tmp_path / "m", None, _config("nt-missing", notify={
        "block": "slack-webhook/no-such-block"}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "REGROW_"))}
    env.update(PREFECT_API_URL=prefect_server, REGROW_HOME=str(tmp_path / "home"),
               PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-m", "regrow.app.cli", "serve", str(cfg)],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=180)
    assert out.returncode == 2, out.stdout + out.stderr
    lines = [ln for ln in out.stderr.splitlines() if ln.strip() and not ln.startswith("note:")]
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert lines[0].startswith(f"error: {cfg}: notify.block 'slack-webhook/no-such-block' does "
                               f"not exist on the Prefect server at {prefect_server}; create it")
    assert "prefect block create slack-webhook" in lines[0]
    assert ("from prefect.blocks.notifications import SlackWebhook; "
            "SlackWebhook(url='<url>').save('no-such-block')`") in lines[0]


def test_a_training_whose_process_died_is_announced_as_crashed(api: str, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch):
    from regrow.flows.training import train_flow
    from regrow.tasks.registry.mlflow_registry import Registry
    from regrow.tasks.store.database import Store
    from regrow.tasks.store.settings import Settings

    _set_home(monkeypatch, tmp_path / "home")
    model = "nt-crash"
    cfg = write_case(tmp_path / "m", binary_frame(900, seed=1), _config(model))
    # What a `kill -9` leaves: a running training record whose lease stops being renewed,
    # and its MLflow run still RUNNING.
    settings = Settings.from_env()
    registry, store = Registry(settings), Store(settings.database_url)
    dead_run = registry.start_run(model, f"train-{model}-schedule", {})
    store.start_training(model, "schedule", "nightly", dead_run, 2.0)
    time.sleep(2.5)
    assert train_flow(str(cfg)).promoted  # the next training finds it and closes it
    assert registry.run_info(dead_run)["status"] == "FAILED"
    (event,) = _events_at_least(model, nt.EVENTS["training_failed"], 1)
    assert event.payload["how"] == "crashed" and event.payload["trigger"] == "schedule"
    assert event.payload["message"].startswith(f"A schedule training of {model} crashed: no "
                                               "heartbeat since ")
    store.dispose()


def test_links_use_the_control_planes_mlflow_ui_for_its_local_store(home, monkeypatch):
    """With the control plane up and serving this home's embedded MLflow store, links are
    pages of its MLflow UI; another store, a plane that is down, or no plane: no UI address."""
    import os

    from regrow.tasks.registry.mlflow_registry import Registry, ui_url
    from regrow.tasks.store import plane_state as plane
    from regrow.tasks.store.settings import Settings

    monkeypatch.delenv("REGROW_MLFLOW_UI_URL", raising=False)
    settings = Settings.from_env()
    registry = Registry(settings)
    assert ui_url(registry) is None
    me = {"name": "mlflow", "pid": os.getpid(), "starttime": plane.start_time(os.getpid()),
          "argv": ["mlflow", "server", "--backend-store-uri", settings.tracking_uri],
          "url": "http://127.0.0.1:5999"}
    plane.write_state(settings.run_dir, {"ready": True, "parts": [me]})
    assert ui_url(registry) == "http://127.0.0.1:5999"
    plane.write_state(settings.run_dir, {"ready": True, "parts": [
        {**me, "argv": ["mlflow", "server", "--backend-store-uri", "sqlite:///elsewhere.db"]}]})
    assert ui_url(registry) is None
    plane.write_state(settings.run_dir, {"ready": True, "parts": [{**me, "starttime": -1}]})
    assert ui_url(registry) is None  # that process is gone
    monkeypatch.setenv("REGROW_MLFLOW_UI_URL", "http://mlflow.internal:80/")
    assert ui_url(registry) == "http://mlflow.internal:80"


def test_regrow_notify_without_a_prefect_server_says_so(tmp_path: Path):
    """Without a Prefect server, `regrow notify` refuses in one sentence (a temporary server
    would forget the automations) and `--print` writes the file with the placeholder block."""
    import os

    from prefect.events.schemas.automations import AutomationCore

    cfg = write_case(tmp_path / "n", None, _config("nt-noserver", notify={
        "block": "slack-webhook/ml-alerts", "on": ["promoted"]}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "REGROW_"))}
    env.update(REGROW_HOME=str(tmp_path / "home"), PREFECT_HOME=str(tmp_path / "prefect"),
               PYTHONPATH=str(ROOT))
    regrow = [sys.executable, "-m", "regrow.app.cli", "notify", str(cfg)]
    out = subprocess.run(regrow, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.startswith("error: regrow notify keeps automations on a Prefect server, "
                                 "and none is configured")
    out = subprocess.run([*regrow, "--print"], capture_output=True, text=True, env=env, cwd=ROOT,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert str(notify.PLACEHOLDER_BLOCK_ID) in out.stderr
    (auto,) = [AutomationCore.model_validate(a)
               for a in yaml.safe_load(out.stdout)["automations"]]
    assert auto.name == "regrow notify promoted nt-noserver"
    assert auto.actions[0].block_document_id == notify.PLACEHOLDER_BLOCK_ID
