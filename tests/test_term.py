"""Terminal output: colour only on a terminal and never with NO_COLOR; tables keep their
alignment whether or not cells are coloured."""

from __future__ import annotations

import io

import pytest

from regrow.app import term


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colour_on_a_terminal_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert term.verdict("promote", Tty()) == "\033[32mpromote\033[0m"
    assert term.verdict("reject", Tty()).startswith("\033[1;31m")
    assert term.verdict("promote", io.StringIO()) == "promote"  # piped: plain
    monkeypatch.setenv("NO_COLOR", "")
    assert term.verdict("promote", Tty()) == "promote"


def test_table_has_a_header_and_aligned_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    rows = [[1, "drift", "a, b"], [12, "ok", None]]
    plain = term.table(["#", "verdict", "columns"], rows)
    assert plain[0] == "  #   verdict  columns"
    assert plain[1] == "  --  -------  -------"
    assert plain[2] == "  1   drift    a, b" and plain[3] == "  12  ok       -"
    monkeypatch.setattr(term, "colour_enabled", lambda stream=None: True)
    coloured = term.table(["#", "verdict", "columns"], rows, verdicts=[1])
    strip = [line.replace("\033[33m", "").replace("\033[32m", "").replace("\033[0m", "")
             for line in coloured]
    assert strip == plain and "\033[33mdrift\033[0m" in coloured[2]


HOSTILE = "\x1b[2J\x1b[Hrebuilt\r\nchampion v9 promoted by admin\u202eevil\x07"


def test_text_from_outside_is_shown_inert() -> None:
    """Control characters become visible escapes: no screen clearing, no forged lines, no
    reordering; ordinary text is left as it is."""
    shown = term.shown(HOSTILE)
    assert shown == ("\\x1b[2J\\x1b[Hrebuilt\\r\\nchampion v9 promoted by admin\\u202eevil\\x07")
    assert "\x1b" not in shown and "\n" not in shown and "\r" not in shown
    assert term.shown("Zürich – 東京 ✓") == "Zürich – 東京 ✓" and term.shown(None) == "-"
    lines = term.table(["#", "reason"], [[1, HOSTILE], [2, "plain"]])
    assert len(lines) == 4 and all("\x1b" not in ln and "\r" not in ln for ln in lines)


def test_status_shows_a_hostile_reason_on_one_inert_line() -> None:
    from regrow.app.report import render_status

    info = {"model": "m", "champion": "1", "challenger": None,
            "champion_trigger": {"trigger": "webhook", "trigger_reason": HOSTILE,
                                 "trigger_ref": "webhook:\x1b]0;title\x07"},
            "drift_checks": [], "trainings": [], "bakes": [], "external_moves": [],
            "retrain_requests": [{"id": 1, "created_at": "2026-01-01T00:00:00", "kind": "webhook",
                                  "verdict": "admitted", "state": "done", "reason": HOSTILE}]}
    text = render_status(info)
    assert "\x1b" not in text and "\r" not in text and "\x07" not in text
    assert not any(line.lstrip().startswith("champion v9") for line in text.splitlines())
    assert sum("rebuilt\\r\\nchampion v9" in line for line in text.splitlines()) == 2


def test_history_shows_hostile_actors_and_reasons_inert(tmp_path, monkeypatch, capsys) -> None:
    """`regrow history` prints who moved an alias and why: text from outside, escaped."""
    from types import SimpleNamespace

    from regrow.app import cli
    from regrow.tasks.registry import governance
    from tests.helpers import BINARY_CONFIG, write_case

    cfg = write_case(tmp_path, None, BINARY_CONFIG)
    entry = SimpleNamespace(at="2026-01-01T00:00:00", alias="champion", old_version="1",
                            new_version="2", reason=HOSTILE, actor="approval:\x1b[31mroot",
                            gate_verdict="promote", gate_reasons="all rules passed",
                            trigger="webhook", trigger_reason=HOSTILE, trigger_ref="x\ry",
                            approval="approved by \x1b[8mmallory")
    monkeypatch.setattr(cli, "_governance", lambda args: (cli._load_or_exit(args), None, None))
    monkeypatch.setattr(governance, "outside_moves", lambda *a: [])
    monkeypatch.setattr(governance, "history", lambda *a: [entry])
    args = cli.build_parser().parse_args(["history", str(cfg)])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\r" not in out and "\x07" not in out
    assert "by approval:\\x1b[31mroot" in out and "approval: approved by \\x1b[8mmallory" in out
    assert not any(line.lstrip().startswith("champion v9") for line in out.splitlines())
