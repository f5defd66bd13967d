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
