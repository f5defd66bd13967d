"""Terminal output: colour on a terminal (never with ``NO_COLOR`` or when piped), aligned
tables with a header row, and text from outside shown inert (`shown`: control characters as
visible escapes, so a reason cannot clear the screen or forge a line). Standard library only:
light commands import it."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from regrow.tasks.policy.untrusted import visible as shown

_CODES = {"ok": "32", "bad": "1;31", "warn": "33", "bold": "1", "dim": "2"}
# Words that colour themselves wherever `verdict` meets them.
_VERDICTS = {"promote": "ok", "promoted": "ok", "ok": "ok", "pass": "ok", "admitted": "ok",
             "passed": "ok", "finished": "ok", "reject": "bad", "fail": "bad", "failed": "bad",
             "crashed": "bad", "drift": "warn", "circuit_open": "bad", "rolled_back": "bad",
             "cooling_down": "warn", "over_budget": "warn", "coalesced": "dim",
             "insufficient_data": "dim", "skipped": "dim", "bad_request": "warn",
             "no_gain": "dim"}


def colour_enabled(stream=None) -> bool:
    """True on a terminal, unless ``NO_COLOR`` is set (any value) or ``TERM=dumb``."""
    stream = stream or sys.stdout
    if "NO_COLOR" in os.environ or os.environ.get("TERM") == "dumb":
        return False
    return bool(getattr(stream, "isatty", lambda: False)())


def style(text: str, kind: str, stream=None) -> str:
    """`text` in the colour of `kind` (ok, bad, warn, bold, dim) when colour is on."""
    code = _CODES.get(kind)
    if not code or not colour_enabled(stream):
        return text
    return f"\033[{code}m{text}\033[0m"


def verdict(word: str, stream=None) -> str:
    """A verdict word coloured by what it means (green pass, red fail, yellow drift)."""
    return style(word, _VERDICTS.get(word.lower().strip(), ""), stream)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], indent: str = "  ",
          max_width: int = 60, verdicts: Sequence[int] = ()) -> list[str]:
    """Lines of an aligned table: the header, a rule, one line per row (cells cut at
    `max_width`, except the last column; columns in `verdicts` coloured by `verdict`). Every
    cell is `shown`: one line, control characters escaped."""
    cells = [[shown(c) for c in r] for r in rows]
    last = len(headers) - 1
    widths = [min(max_width, max([len(h), *(len(r[i]) for r in cells)]))
              for i, h in enumerate(headers)]

    def line(values: Sequence[str], colour: bool = True) -> str:
        out = []
        for i, v in enumerate(values):
            cut = v if i == last else v[:widths[i]]
            pad = "" if i == last else " " * (widths[i] - len(cut))
            out.append((verdict(cut) if colour and i in verdicts else cut) + pad)
        return (indent + "  ".join(out)).rstrip()

    return [line(headers, colour=False), indent + "  ".join("-" * w for w in widths),
            *(line(r) for r in cells)]
