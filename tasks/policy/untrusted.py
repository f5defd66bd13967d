"""Text from outside, shown without letting it act: the one escaping helper.

Reasons, refs and delivery ids from webhooks, actors and approval reasons, alias moves
recorded from other tools, file paths chosen by a request: anything a sender chose reaches
people through the terminal (`regrow status`, `history`), HTML pages (model card, drift report
links), the model card's Markdown and Prefect's Markdown artifacts. There it must read as
text and do nothing else:

- `visible` (every medium): control characters -- C0 and C1 controls, DEL, and the Unicode
  characters that reorder or break lines (bidi overrides and isolates, line and paragraph
  separators) -- become visible escapes such as ``\\x1b``, ``\\r``, ``\\n``, ``\\u202e``. A
  reason holding ``"\\x1b[2J...\\r\\nforged line"`` can then neither clear a screen nor forge
  a line of output; ordinary text (accents, other scripts, emoji) is left alone.
- `markdown` (Markdown pages): `visible`, and Markdown's own syntax escaped -- backslash,
  emphasis, code, links, images, tables, a block marker at the start -- with ``<``, ``>``
  and ``&`` written as HTML entities, so that no tag, link or table cell comes from outside.
- HTML pages are autoescaped by their templates (jinja2); `visible` is their filter for
  control characters.

Standard library only: light commands import it.
"""

from __future__ import annotations

import re

# C0 controls, DEL, C1 controls; bidi embeddings, overrides and isolates; the Unicode line
# and paragraph separators; the byte-order mark / zero-width no-break space.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e"
                      "\u2066-\u2069\ufeff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Inline Markdown syntax, escaped with a backslash (CommonMark: any ASCII punctuation may be).
_MD_INLINE = re.compile(r"([\\`*_\[\]|~!#])")
_MD_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
# What makes a block of the rest of a line when it starts one: headings, quotes, list items,
# thematic breaks, setext underlines.
_MD_BLOCK_MARK = re.compile(r"^(\s*)([-+=])")
_MD_BLOCK_NUMBER = re.compile(r"^(\s*\d+)([.)])")


def _escape(ch: str) -> str:
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def visible(text: object) -> str:
    """`text` with every control character written as a visible escape (``\\x1b``, ``\\n``,
    ``\\u202e``); everything else as it is. None is shown as ``-``."""
    if text is None:
        return "-"
    return _CONTROL.sub(lambda m: _escape(m.group()), str(text))


def markdown(text: object) -> str:
    """`text` as inert Markdown: one line that renders as the same characters (control
    characters shown as `visible` escapes), never as a tag, link, image, table cell, code span,
    emphasis, heading or list."""
    if text is None:
        return "-"
    out = _MD_INLINE.sub(r"\\\1", str(text))
    out = "".join(_MD_ENTITIES.get(ch, ch) for ch in out)
    out = _MD_BLOCK_NUMBER.sub(r"\1\\\2", _MD_BLOCK_MARK.sub(r"\1\\\2", out))
    return visible(out)
