"""Model cards: built from a real training's records (Prefect test server, MLflow store,
monitoring store, one drift check), logged at registration, printed and written by the CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from regrow.tasks.registry.card import (
    CARD_HTML,
    CARD_MD,
    LINK_PREFIX,
    CardError,
    build_card,
    comparator_text,
    fmt,
    publish_card,
    with_card_link,
)
from regrow.tasks.registry.mlflow_registry import Registry
from regrow.tasks.store.database import Store, version_drift_checks
from regrow.tasks.store.settings import Settings
from tests.helpers import BINARY_CONFIG, binary_frame, merge, write_case

MODEL = "card-binary"
CONFIG = merge(BINARY_CONFIG, {
    "registry": {"model_name": MODEL},
    "monitoring": {"window": {"rows": 500, "min_rows": 200}},
})
ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Trained:
    """One training (v1, champion) and one drift check on it, in a module-wide state dir."""

    home: Path
    config: Path
    run_id: str
    check_id: int


@pytest.fixture(scope="module")
def trained(prefect_harness, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    from regrow.flows.monitoring import drift_check_flow, score_flow
    from regrow.flows.training import train_flow

    base = tmp_path_factory.mktemp("card")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REGROW_HOME", str(base / "home"))
        for var in ("MLFLOW_TRACKING_URI", "REGROW_DATABASE_URL"):
            mp.delenv(var, raising=False)
        # `extra` is in the table but in no feature list (and infer is off): the card says so.
        cfg = write_case(base / "m", binary_frame(1200).assign(extra=7), CONFIG)
        out = train_flow(str(cfg), reason="card test")
        assert out.promoted and out.version == "1"
        rows = binary_frame(400, seed=4, start="2025-01-01").drop(columns=["label"])
        rows["row_id"] += 10_000
        rows.to_parquet(base / "rows.parquet")
        score_flow(str(cfg), str(base / "rows.parquet"))
        check = drift_check_flow(str(cfg), retrain=False)
        assert check.check_id is not None
        yield Trained(base / "home", cfg, out.run_id, check.check_id)


@pytest.fixture
def state(trained: Trained, monkeypatch: pytest.MonkeyPatch) -> tuple[Registry, Store]:
    monkeypatch.setenv("REGROW_HOME", str(trained.home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("REGROW_DATABASE_URL", raising=False)
    settings = Settings.from_env()
    return Registry(settings), Store(settings.database_url)


def cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "REGROW_"))}
    env.update(REGROW_HOME=str(home), PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "regrow.app.cli", *args], capture_output=True, text=True,
                          env=env, timeout=300, cwd=ROOT)


def row(markdown: str, first_cell: str) -> list[str]:
    """The cells of the table row whose first cell is `first_cell`."""
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if line.startswith("|") and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no table row starting with {first_cell!r} in the card")


def table_rows(markdown: str) -> list[list[str]]:
    """The body rows of the (first) table in `markdown`, as cells."""
    lines = [ln for ln in markdown.splitlines() if ln.startswith("|")]
    return [[c.strip() for c in ln.strip().strip("|").split(" | ")] for ln in lines[2:]]


def section(markdown: str, title: str) -> str:
    """The text of one `## title` section."""
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", markdown, re.M | re.S)
    assert m, f"no section {title!r}"
    return m.group(1)


# ------------------------------------------------------------------------------ units

def test_numbers_and_comparators_for_people():
    assert [fmt(v) for v in (0.873412, 12.34567, 0.00123456, 1200, 12345.6, None, float("nan"))] == [
        "0.8734", "12.35", "0.001235", "1200", "12346", "-", "-"]
    assert [comparator_text(c) for c in (">=", "<=")] == ["at least", "at most"]
    once = with_card_link("all rules passed", "file:///a/card/model_card.md")
    assert once == "all rules passed\nModel card: file:///a/card/model_card.md"
    assert with_card_link(once, "file:///b") == "all rules passed\nModel card: file:///b"


# ------------------------------------------------------------------------ at registration

def test_card_logged_on_the_run_and_linked_from_the_version(trained: Trained, state):
    reg, _ = state
    assert set(reg.list_artifacts(trained.run_id, "card")) == {CARD_MD, CARD_HTML}
    run = reg.run_info(trained.run_id)
    info = reg.version_info(MODEL, "1")
    lines = info.description.splitlines()
    assert lines[0] == "all rules passed"  # the gate's reasons, as the register step set them
    base = run["artifact_uri"]
    assert lines[-1] == f"{LINK_PREFIX}{base}/{CARD_MD} (HTML: {base}/{CARD_HTML})"
    logged = reg.read_text_artifact(trained.run_id, CARD_MD)
    assert logged.startswith(f"# Model card: {MODEL} v1\n")
    # Written at registration, before the promotion: no alias pointed at v1 yet.
    assert "No alias has pointed at this version." in section(logged, "Alias history")
    assert "Not promoted to champion" in section(logged, "Drift checks")
    page = reg.read_text_artifact(trained.run_id, CARD_HTML)
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page and "<link" not in page
    assert f"<h1>Model card: {MODEL} v1</h1>" in page and "<td class=\"pass\">pass</td>" in page
    assert "model card not written" not in json.dumps(run["tags"])


def test_publishing_never_raises(trained: Trained, state):
    reg, store = state
    res = publish_card(reg, store, MODEL, "99", run_id=trained.run_id)
    assert res.markdown_uri is None and "has no version 99" in res.notes[0]
    assert "has no version 99" in reg.run_info(trained.run_id)["tags"]["regrow.card_error"]


# ------------------------------------------------------------------------ content = records

def test_card_holds_the_recorded_numbers(trained: Trained, state):
    reg, store = state
    card = build_card(reg, store, MODEL)  # the champion by default
    assert card.version == "1" and card.run_id == trained.run_id
    md = card.to_markdown()
    run = reg.run_info(trained.run_id)
    tags, metrics = run["tags"], run["metrics"]

    data = section(md, "Data")
    assert row(data, "fingerprint (sha256)")[1] == tags["regrow.data.fingerprint"]
    assert row(data, "rows")[1] == "1200" == tags["regrow.data.rows"]
    assert tags["regrow.data.time_min"] in row(data, "time range")[1]
    assert row(data, "split")[1].startswith("time: 900 training / 300 holdout rows")
    assert re.fullmatch(r"\d+/\d+ expectations met on 1200 rows \(Great Expectations\)",
                        row(data, "validation")[1])

    holdout = section(md, "Holdout evaluation")
    shown = float(row(holdout, "roc_auc (primary)")[1])
    assert shown == pytest.approx(metrics["holdout_roc_auc"], abs=5e-5)
    assert float(row(holdout, "accuracy")[1]) == pytest.approx(metrics["holdout_accuracy"], abs=5e-5)
    assert (f"bootstrap 95% interval {fmt(metrics['holdout_roc_auc_ci_low'])} .. "
            f"{fmt(metrics['holdout_roc_auc_ci_high'])} over 50 resamples") in holdout

    decision = reg.read_json_artifact(trained.run_id, "gate/decision.json")
    gate = section(md, "Gate decision")
    assert "Verdict: promote (no champion to compare with)" in gate
    for rule in decision["rules"]:
        cells = row(gate, rule["rule"])
        assert cells[2] == fmt(rule["measured"]) and cells[4] == ("pass" if rule["passed"] else "FAIL")
        if rule["threshold"] is not None:
            assert cells[3] == f"{comparator_text(rule['comparator'])} {fmt(rule['threshold'])}"
    assert row(gate, "floor")[3] == "at least 0.6000"
    slices = [r for r in decision["rules"] if r["rule"].startswith("slice:segment=")]
    assert len(slices) == 3
    for rule in slices:  # per-slice metrics, with their row counts
        cells = row(holdout, rule["rule"].removeprefix("slice:"))
        assert cells[2] == fmt(rule["measured"]) and rule["detail"].startswith(cells[1] + " rows")

    cands = section(md, "Candidates")
    for c in reg.read_json_artifact(trained.run_id, "candidates.json"):
        name = c["name"] + (" (chosen)" if c["name"] == run["params"]["best_candidate"] else "")
        assert row(cands, name)[2] == f"{fmt(c['cv_score'])} +- {fmt(c['cv_std'])}"
    assert "C=" in row(cands, "logreg" + (" (chosen)" if run["params"]["best_candidate"] == "logreg"
                                           else ""))[3]

    feats = section(md, "Features")
    assert row(feats, "amount")[1:] == ["numeric", "listed in features.numeric"]
    assert row(feats, "segment")[1:] == ["categorical", "listed in features.categorical"]
    assert row(feats, "extra")[1] == "not listed, and features.infer is off"
    assert row(feats, "ts")[1] == "time column: orders the split; listed in features.drop"
    assert row(feats, "row_id")[1].startswith("id column") and row(feats, "label")[1] == "target (binary)"

    why = section(md, "Why it was trained")
    assert row(why, "kind")[1] == "manual" and row(why, "reason")[1] == "card test"

    moves = section(md, "Alias history")
    (cells,) = table_rows(moves)  # the only move
    assert cells[1:4] == ["champion", "(none) -> v1 (to this version)", "manual:cli"]
    assert cells[4].startswith("gate passed") and cells[5] == trained.run_id
    assert "challenger" not in moves  # auto promotion: nothing waited


def test_card_shows_drift_checks_and_approvals_recorded_later(trained: Trained, state):
    reg, store = state
    assert "No approval by a person" in section(build_card(reg, store, MODEL, "1").to_markdown(),
                                                "Approval")
    # What the promote step records when a person decides (version tags):
    reg.set_version_tags(MODEL, "1", {"regrow.approval": "approved", "regrow.approver": "alice",
                                      "regrow.approval_reason": "slices | checked",
                                      "regrow.approval_via": "prefect-input",
                                      "regrow.gate_override": "by bob: floor too strict"})
    md = build_card(reg, store, MODEL, "1").to_markdown()
    approval = section(md, "Approval")
    assert row(approval, "approver")[1] == "alice" and row(approval, "via")[1] == "prefect-input"
    assert row(approval, "reason")[1] == "slices \\| checked"  # a pipe cannot break the table
    assert "The gate was overridden to promote this version by hand: by bob: floor too strict." in approval
    drift = section(md, "Drift checks")
    cells = row(drift, str(trained.check_id))
    (check,) = version_drift_checks(store, MODEL, "1")
    assert cells[2] == check["verdict"] and cells[3] == "400"
    assert cells[4] == fmt(check["drift_share"])


def test_missing_version_and_missing_champion_are_clear_errors(trained: Trained, state):
    reg, store = state
    with pytest.raises(CardError, match=r"model 'card-binary' has no version 5 \(its versions are 1\)"):
        build_card(reg, store, MODEL, "5")
    with pytest.raises(CardError, match="model 'nobody' has no champion; pass --version N"):
        build_card(reg, store, "nobody")


# ------------------------------------------------------------------------------ the command

def test_cli_prints_and_writes_the_card(trained: Trained, tmp_path: Path):
    printed = cli(trained.home, "card", str(trained.config))
    assert printed.returncode == 0, printed.stderr[-2000:]
    assert printed.stdout.startswith(f"# Model card: {MODEL} v1\n")
    assert row(section(printed.stdout, "Drift checks"), str(trained.check_id))  # current records
    page = tmp_path / "card.html"  # the suffix picks HTML
    wrote = cli(trained.home, "card", str(trained.config), "--version", "1", "--out", str(page))
    assert wrote.returncode == 0 and f"to {page}" in wrote.stdout
    html = page.read_text()
    assert html.startswith("<!DOCTYPE html>") and f"<h1>Model card: {MODEL} v1</h1>" in html
    assert f"<td>{trained.check_id}</td>" in html


def test_cli_refuses_a_missing_version_or_champion(trained: Trained):
    missing = cli(trained.home, "card", str(trained.config), "--version", "7")
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "error: model 'card-binary' has no version 7 (its versions are 1)" in missing.stderr
    other = cli(trained.home, "card", str(trained.config), "--set", "registry.model_name=other")
    assert other.returncode == 2 and "Traceback" not in other.stderr
    assert "error: model 'other' has no champion; pass --version N" in other.stderr


def test_card_command_stays_light(trained: Trained, tmp_path: Path):
    """No scikit-learn, Evidently, Prefect or Great Expectations in the command's process."""
    code = ("import sys; from regrow.app.cli import main; rc = main(['card', sys.argv[1], '--html', "
            "'--out', sys.argv[2]]); print(rc, sorted(m for m in ('sklearn', 'evidently', "
            "'prefect', 'great_expectations') if m in sys.modules))")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "REGROW_"))}
    env.update(REGROW_HOME=str(trained.home), PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code, str(trained.config), str(tmp_path / "card.txt")],
                         capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert out.stdout.strip().splitlines()[-1] == "0 []", out.stderr[-2000:]
    assert (tmp_path / "card.txt").read_text().startswith("<!DOCTYPE html>")  # --html wins


def test_text_from_outside_is_inert_in_both_pages(trained: Trained, state):
    """A trigger reason, ref and approval written by a sender render as the same characters:
    no tag, link, table cell or heading in the Markdown, no markup in the HTML, and control
    characters shown as escapes in both."""
    reg, store = state
    hostile = "<img src=x onerror=alert(1)> [click](http://evil) | x \x1b[2J\r\n# heading"
    before = reg.run_info(trained.run_id)["tags"]
    reg.set_tags(trained.run_id, {"regrow.trigger_reason": hostile,
                                  "regrow.trigger_ref": "webhook:`rm -rf /`"})
    reg.set_version_tags(MODEL, "1", {"regrow.approval_reason": hostile})
    try:
        card = build_card(reg, store, MODEL, "1")
        md, html = card.to_markdown(), card.to_html()
    finally:
        reg.set_tags(trained.run_id, {k: before.get(k, "-") for k in
                                      ("regrow.trigger_reason", "regrow.trigger_ref")})
        reg.set_version_tags(MODEL, "1", {"regrow.approval_reason": "slices | checked"})
    reason = row(section(md, "Why it was trained"), "reason")[1]
    assert reason == ("&lt;img src=x onerror=alert(1)&gt; \\[click\\](http://evil) \\| x "
                      "\\x1b\\[2J\\r\\n\\# heading")
    assert row(section(md, "Why it was trained"), "reference")[1] == "webhook:\\`rm -rf /\\`"
    assert "\x1b" not in md and "\r" not in md and "<img" not in md
    assert "\n# heading" not in md and not re.search(r"(?<!\\)\]\(http://evil", md)
    assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "\x1b" not in html and "\\x1b[2J\\r\\n# heading" in html
