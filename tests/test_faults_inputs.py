"""Bad input from outside: nothing a sender or a data file chooses replaces a champion, runs
code, opens the circuit breaker for others, or reaches a person's terminal or page as anything
but text. Each case is recorded in the fault ledger (`tests.faultlog`, ``make faults``) as a
bad input, with the tracebacks, wrong champion moves, invented history rows and doubled labels
measured on the run.

Two set-ups, one per module: a champion trained through the Python API on the Prefect test
harness (the data, gate, labels and logged-config cases; the commands run in this process
through their own functions: ``build_parser().parse_args([...]).func(args)``), and a real
webhook receiver process with short timeouts against a real Prefect server (the door).
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from regrow.app.cli import build_parser
from regrow.tasks.registry.mlflow_registry import CHAMPION, Registry
from regrow.tasks.store.database import Store, labels, training_runs
from regrow.tasks.store.settings import Settings
from tests.faultlog import record, tracebacks
from tests.helpers import BINARY_CONFIG, binary_frame, merge, write_case

MODEL = "faults-inputs"
SECRET = "hunter2-not-for-artifacts"
CONFIG = merge(BINARY_CONFIG, {
    "registry": {"model_name": MODEL},
    # a literal credential and an environment reference, both in the text that gets logged
    "description": f"mirror of postgresql://analyst:{SECRET}@db.internal:5432/sales; the "
                   "replica's password is ${REPLICA_PASSWORD}",
    "retrain": {"cooldown": "1s", "max_trainings": 100}})
OVERRIDE_SECRET = "s3cret-in-an-override"
HOSTILE = "\x1b[2J\x1b[Hall clear\r\nchampion v9 promoted by admin\u202e\x07"


def command(*argv: str) -> int:
    """A regrow command run in this process by its own function (no warm process, no
    lifeline); its exit code."""
    args = build_parser().parse_args(list(argv))
    try:
        return args.func(args)
    except SystemExit as end:  # a config that does not load
        return int(end.code or 0)


# ------------------------------------------------------------------- the trained champion

@dataclass(frozen=True)
class Champion:
    home: Path
    config: Path
    run_id: str


@pytest.fixture(scope="module")
def champion(prefect_harness, tmp_path_factory: pytest.TempPathFactory):
    """v1, trained on 1,200 good rows with an override that holds a credential."""
    from regrow.flows.training import train_flow

    home = tmp_path_factory.mktemp("faults-inputs")
    mp = pytest.MonkeyPatch()
    mp.setenv("REGROW_HOME", str(home / "home"))
    for var in ("MLFLOW_TRACKING_URI", "REGROW_DATABASE_URL"):
        mp.delenv(var, raising=False)
    cfg = write_case(home / "seed", binary_frame(1200), CONFIG)
    out = train_flow(str(cfg), overrides={
        "description": f"replica at mysql://loader:{OVERRIDE_SECRET}@replica/db"})
    assert out.champion_after == "1"
    yield Champion(home / "home", cfg, out.run_id)
    mp.undo()


def _stores() -> tuple[Registry, Store]:
    settings = Settings.from_env()
    return Registry(settings), Store(settings.database_url)


def _case(tmp_path: Path, frame: pd.DataFrame, patch: dict | None = None) -> Path:
    return write_case(tmp_path / "case", frame, merge(CONFIG, patch or {}))


def _train(cfg: Path, capsys: pytest.CaptureFixture) -> tuple[int, str, str, int, int]:
    """`regrow train` in this process: (exit code, stdout, stderr, champion moves, new
    versions)."""
    reg, _ = _stores()
    champion, versions = reg.alias_version(MODEL, CHAMPION), reg.version_numbers(MODEL)
    capsys.readouterr()
    code = command("train", str(cfg))
    out, err = capsys.readouterr()
    moved = int(reg.alias_version(MODEL, CHAMPION) != champion)
    return code, out, err, moved, len(reg.version_numbers(MODEL)) - len(versions)


# ------------------------------------------------------------------ part 7: logged config

def test_logged_config_keeps_env_references_and_masks_credentials(champion: Champion):
    reg, _ = _stores()
    text = reg.read_text_artifact(champion.run_id, "config/config.yaml")
    overrides = reg.read_json_artifact(champion.run_id, "config/overrides.json")
    run = reg.run_info(champion.run_id)
    recorded = [text, json.dumps(overrides), json.dumps(run["params"]), json.dumps(run["tags"])]
    leaks = sum(s in part for part in recorded for s in (SECRET, OVERRIDE_SECRET))
    record("literal credentials in a config and an override, logged with the run", "bad_input",
           tracebacks=0, bad_history=leaks)
    assert leaks == 0
    assert "postgresql://analyst:***@db.internal:5432/sales" in text
    assert "${REPLICA_PASSWORD}" in text  # a reference stays as written
    assert overrides["description"] == "replica at mysql://loader:***@replica/db"
    assert run["tags"]["regrow.config_sha256"]  # the hash is of the text as read


# -------------------------------------------------------------- part 6: data fit to train

@pytest.mark.parametrize(("name", "edit", "needle"), [
    ("strongest feature 100% empty", lambda f: f.assign(amount=np.nan),
     "feature 'amount' is empty in the training data: all 1,200 values are missing, where "
     "champion v1 was trained with 0.0% missing; fix the data, or take 'amount' out of "
     "features.numeric"),
    ("a feature constant", lambda f: f.assign(segment="north"),
     "feature 'segment' holds one value ('north') in every row of the training data that has "
     "one, where champion v1 saw 3 distinct values"),
])
def test_an_empty_or_constant_feature_stops_the_run(champion: Champion, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture, name, edit,
                                                    needle):
    cfg = _case(tmp_path, edit(binary_frame(1200, seed=5)))
    code, out, err, moved, versions = _train(cfg, capsys)
    record(name, "bad_input", tracebacks=tracebacks(out, err), wrong_moves=moved + versions)
    assert code == 2, err[-2000:]
    assert needle in err and "training stopped before fitting" in err
    assert (moved, versions) == (0, 0)  # nothing registered, let alone promoted


def test_an_empty_declared_feature_stops_a_first_training_too():
    """No champion, so no record: a declared feature that is empty stops the run all the same;
    an undeclared one in no record does not."""
    from regrow.configs.schema import parse_config
    from regrow.tasks.data import degenerate

    cfg = parse_config(CONFIG)
    with pytest.raises(degenerate.DegenerateFeature, match=r"feature 'age' \(features.numeric\) "
                       r"is empty in the training data: all 300 values are missing"):
        degenerate.check(cfg, binary_frame(300).assign(age=np.nan), None, None)
    assert degenerate.check(cfg, binary_frame(300).assign(extra=np.nan), None, None) == []


def test_too_few_examples_of_a_class_stop_before_fitting(champion: Champion, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture):
    frame = binary_frame(5000, seed=3).assign(label=0)
    frame.loc[[100, 2000, 4500], "label"] = 1  # 3 positives in 5,000 rows
    code, out, err, moved, versions = _train(_case(tmp_path, frame), capsys)
    record("3 positives in 5,000 rows", "bad_input", tracebacks=tracebacks(out, err),
           wrong_moves=moved + versions)
    assert code == 2 and tracebacks(out, err) == 0, err[-3000:]
    assert "too few examples of class 1 for 3-fold cross-validation" in err
    assert "lower candidates.cv_folds (now 3)" in err
    assert (moved, versions) == (0, 0)


def test_a_candidate_far_worse_on_the_champions_own_holdout_is_blocked(
        champion: Champion, tmp_path: Path, capsys: pytest.CaptureFixture):
    """New rows whose strongest feature is scrambled: the candidate beats the champion on the
    new holdout, but on the champion's trusted set (its own holdout) it keeps ~60% of the
    champion's skill; with gate.trusted_max_loss 0.25 the gate refuses it, and says so in the
    decision record."""
    frame = binary_frame(1200, seed=6, start="2024-03-01")
    frame["amount"] = np.random.default_rng(6).permutation(frame["amount"].to_numpy())
    cfg = _case(tmp_path, frame, {"gate": {"trusted_max_loss": 0.25}})
    code, out, err, moved, versions = _train(cfg, capsys)
    reg, _ = _stores()
    decision = reg.read_json_artifact(reg.version_info(MODEL, reg.version_numbers(MODEL)[-1])
                                      .run_id, "gate/decision.json")
    rule = {r["rule"]: r for r in decision["rules"]}["trusted_set"]
    record("a candidate far worse on the champion's own holdout", "bad_input",
           tracebacks=tracebacks(out, err), wrong_moves=moved)
    assert code == 0 and versions == 1 and moved == 0, out[-3000:] + err[-2000:]
    assert decision["verdict"] == "reject" and not rule["passed"]
    assert [r for r in decision["rules"] if not r["passed"]] == [rule]  # the one that decided
    assert "of the champion's skill over the trivial model there (at least 75%" in rule["detail"]
    assert rule["threshold"] is not None and rule["measured"] < rule["threshold"]


# ----------------------------------------------------------------------- part 6: labels

def test_labels_outside_the_target_conflicting_or_resent(champion: Champion, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture):
    _, store = _stores()

    def stored() -> int:
        with store.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(labels)).scalar_one()

    def send(frame: pd.DataFrame, name: str) -> tuple[int, str, str]:
        path = tmp_path / f"{name}.csv"
        frame.to_csv(path, index=False)
        capsys.readouterr()
        code = command("labels", str(champion.config), "--input", str(path))
        out, err = capsys.readouterr()
        return code, out, err

    words = send(pd.DataFrame({"row_id": range(6), "label": [1, 0, "yes", "maybe", "yes", 1]}),
                 "words")
    clash = send(pd.DataFrame({"row_id": [7, 7, 8], "label": [1, 0, 1]}), "clash")
    good = pd.DataFrame({"row_id": range(10_000, 10_500), "label": [i % 2 for i in range(500)]})
    first, again = send(good, "first"), send(good, "again")
    rows = stored()
    shown = sum(tracebacks(o, e) for _, o, e in (words, clash, first, again))
    record("labels 'yes'/'maybe' for a 0/1 target", "bad_input", tracebacks=tracebacks(*words[1:]))
    record("one id labelled 1 and 0", "bad_input", tracebacks=tracebacks(*clash[1:]))
    record("the same 500 labels sent twice", "bad_input", tracebacks=tracebacks(*again[1:]),
           doubled=rows - 500)
    assert shown == 0
    assert words[0] == 2 and "must be one of '0', '1' (expectations.allowed.label); got 'yes' " \
        "(2 rows), 'maybe' (1 row); nothing recorded" in words[2]
    assert clash[0] == 2 and "conflicting labels for 1 id(s) in the input, e.g. id '7' " \
        "labelled '1' and '0'" in clash[2]
    assert first[0] == 0 and "500 new labels, 0 already recorded" in first[1]
    assert again[0] == 0 and "0 new labels, 500 already recorded" in again[1]
    assert rows == 500


# ----------------------------------------------------------------------- part 5: the door

WH_MODEL = "wh-faults"
HEADER_TIMEOUT, BODY_TIMEOUT = 2.0, 3.0


@pytest.fixture(scope="module")
def door(prefect_server: str, tmp_path_factory: pytest.TempPathFactory):
    """A receiver with 2 s for headers and 3 s for a body; its model's breaker opens after 3
    trainings that promoted nothing."""
    from tests.procs import stop
    from tests.test_webhook import ReceiverProcess, model_config, start_receiver

    tmp = tmp_path_factory.mktemp("door")
    cfg = write_case(tmp / "configs" / WH_MODEL, None, merge(model_config(WH_MODEL), {
        "retrain": {"cooldown": "1s", "circuit_breaker_after": 3}}))
    proc, url, log = start_receiver(tmp, prefect_server, [cfg], extra_args=[
        "--header-timeout", str(HEADER_TIMEOUT), "--body-timeout", str(BODY_TIMEOUT)])
    store = Store(f"sqlite:///{tmp / 'home' / 'regrow.db'}")
    try:
        yield ReceiverProcess(url, prefect_server, store, log, {WH_MODEL: cfg})
    finally:
        stop(proc)
        store.dispose()


def _log_from(rx, start: int) -> str:
    """What the receiver logged since `start` (characters into its log)."""
    return rx.log.read_text()[start:]


def _requests(rx) -> list[dict]:
    from tests.test_webhook import requests_of

    return requests_of(rx, WH_MODEL)


def test_override_values_are_checked_at_the_door(door):
    from tests.test_webhook import body_of, post

    start = len(door.log.read_text())
    garbage = {"split.cutoff": "'; DROP TABLE x; --"}
    answers = [post(door, body_of(WH_MODEL, overrides=garbage)) for _ in range(3)]
    invented = len(_requests(door))
    with door.store.engine.connect() as conn:
        trainings = conn.execute(sa.select(sa.func.count()).select_from(training_runs)
                                 .where(training_runs.c.model == WH_MODEL)).scalar_one()
    after = post(door, body_of(WH_MODEL, reason="a good request"))
    record("webhook overrides with a garbage split.cutoff, 3 times", "bad_input",
           tracebacks=tracebacks(_log_from(door, start)), bad_history=invented + trainings)
    for res in answers:
        assert res.status_code == 422, res.text
        (problem,) = res.json()["detail"]
        assert problem["loc"] == ["body", "overrides", "split.cutoff"]
        assert problem["msg"].startswith("split.cutoff: not a date or time: give an ISO date")
        assert "DROP TABLE" in problem["msg"]  # the value is named, as JSON text
    assert invented == 0 and trainings == 0  # nothing recorded, nothing for the breaker
    assert after.status_code == 202 and after.json()["verdict"] == "admitted", after.text


def _closed_within(sock: socket.socket, limit: float) -> tuple[float | None, bytes]:
    """Seconds until the server closes `sock` (None: still open after `limit`), and what it
    sent first."""
    t0, got = time.monotonic(), b""
    sock.settimeout(0.2)
    while time.monotonic() - t0 < limit:
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            continue
        except OSError:  # reset by the server
            return time.monotonic() - t0, got
        if not chunk:
            return time.monotonic() - t0, got
        got += chunk
    return None, got


def test_slow_senders_are_cut_off_and_deliveries_still_work(door):
    from tests.test_webhook import body_of, post

    start = len(door.log.read_text())
    host, port = door.url.removeprefix("http://").split(":")
    stop = threading.Event()
    socks = []
    for _ in range(60):  # each trickles a header byte every 0.3 s, never finishing
        s = socket.create_connection((host, int(port)))
        s.sendall(b"POST /v1/hooks/retrain HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        socks.append(s)

    def trickle() -> None:
        while not stop.is_set():
            for s in socks:
                try:
                    s.send(b"a")
                except OSError:
                    pass
            time.sleep(0.3)

    feeder = threading.Thread(target=trickle, daemon=True)
    feeder.start()
    stalled = socket.create_connection((host, int(port)))
    stalled.sendall(b"POST /v1/hooks/retrain HTTP/1.1\r\nHost: x\r\nContent-Type: "
                    b"application/json\r\nContent-Length: 400\r\n\r\n{\"model\": ")
    t0 = time.monotonic()
    normal = post(door, body_of(WH_MODEL, reason="on time while others trickle"))
    normal_seconds = time.monotonic() - t0
    try:
        closed = [_closed_within(s, HEADER_TIMEOUT + 8) for s in socks]
        body_cut = _closed_within(stalled, BODY_TIMEOUT + 8)
    finally:
        stop.set()
        feeder.join(5)
        for s in [*socks, stalled]:
            s.close()
    record("60 connections trickling headers, one stalled body", "bad_input",
           tracebacks=tracebacks(_log_from(door, start)))
    assert normal.status_code == 202 and normal_seconds < 5, normal.text
    times = [t for t, _ in closed]
    assert None not in times, f"{times.count(None)} of 60 still open"
    assert max(times) < HEADER_TIMEOUT + 3, max(times)  # measured from after the last opened
    assert all(first.startswith(b"HTTP/1.1 408 ") for _, first in closed)
    seconds, first = body_cut
    assert seconds is not None and seconds < BODY_TIMEOUT + 3
    assert first.startswith(b"HTTP/1.1 408 ") and b"body not received within 3 s" in first


def test_a_hostile_reason_reaches_the_terminal_inert(door, capsys: pytest.CaptureFixture,
                                                     monkeypatch: pytest.MonkeyPatch):
    from tests.test_webhook import body_of, post

    res = post(door, body_of(WH_MODEL, reason=HOSTILE, ref="deploy \x1b]0;pwned\x07"),
               delivery=f"hostile-{uuid.uuid4().hex}")
    assert res.status_code == 202, res.text
    monkeypatch.setenv("REGROW_HOME", str(door.log.parent / "home"))
    for var in ("MLFLOW_TRACKING_URI", "REGROW_DATABASE_URL"):
        monkeypatch.delenv(var, raising=False)
    capsys.readouterr()
    code = command("status", str(door.configs[WH_MODEL]))
    out, err = capsys.readouterr()
    raw = sum(out.count(c) for c in ("\x1b", "\r", "\x07", "\u202e"))
    forged = sum(line.lstrip().startswith("champion v9") for line in out.splitlines())
    record("a webhook reason with terminal control sequences", "bad_input",
           tracebacks=tracebacks(out, err), bad_history=raw + forged)
    assert code == 0 and raw == 0 and forged == 0, out
    assert "\\x1b[2J\\x1b[Hall clear\\r\\nchampion v9" in out
