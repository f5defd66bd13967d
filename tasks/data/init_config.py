"""The commented YAML `regrow init` writes from a table's `Profile`: a config that
`regrow train` accepts as it is, every inferred choice with its reason in a comment.

The candidates and the gate are `configs.defaults`' (the same a config that leaves them out
gets); monitoring and retrain are the schema's defaults, each commented with its field's own
description.
"""

from __future__ import annotations

import math
import re
from typing import Any

import yaml
from pydantic import BaseModel

from regrow.configs.defaults import ONE_THREAD_BELOW, default_candidates, default_gate
from regrow.configs.schema import (
    FileSource,
    Monitoring,
    RetrainPolicy,
    SqlSource,
    config_from_text,
)
from regrow.tasks.data.profile import RANGE_MARGIN, Profile

_ROLE_LIST = ("numeric", "categorical", "datetime")


def _flow(value: Any) -> str:
    """A value as one line of YAML."""
    return yaml.safe_dump(value, default_flow_style=True, width=10_000, sort_keys=False,
                          allow_unicode=True).strip().removesuffix("\n...").removesuffix("...")


def _line(indent: int, key: str, value: Any = None, comment: str = "", block: bool = False) -> str:
    head = "  " * indent + _flow(key) + ":" + ("" if block else " " + _flow(value))
    return head + (f"  # {comment}" if comment else "")


def _first_sentence(text: str | None) -> str:
    if not text:
        return ""
    words = " ".join(text.split())
    cut = re.search(r"(?<!e\.g)(?<!i\.e)\. ", words)
    return words if cut is None else words[:cut.start() + 1]


def _model_lines(model: BaseModel, indent: int) -> list[str]:
    """A schema section with its default values, each key commented by its description (a
    nested section by its class's first sentence)."""
    lines = []
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            lines.append(_line(indent, name, comment=_first_sentence(type(value).__doc__),
                               block=True))
            lines += _model_lines(value, indent + 1)
        else:
            lines.append(_line(indent, name, value, _first_sentence(info.description)))
    return lines


def _rounded(x: float, up: bool) -> float | int:
    """A bound rounded outward to 3 significant digits (a whole number stays whole)."""
    if x == 0 or not math.isfinite(x):
        return 0
    step = 10 ** (math.floor(math.log10(abs(x))) - 2)
    v = (math.ceil if up else math.floor)(x / step) * step
    return int(v) if float(v).is_integer() else float(f"{v:.6g}")


def expectations(p: Profile) -> dict[str, Any]:
    """The expectations a profile supports: types, not-null where the sample had no nulls,
    ranges with a margin, allowed values of low-cardinality columns, a row-count floor and a
    unique id."""
    kept = [c for c in p.columns if c.role != "drop"]
    out: dict[str, Any] = {"row_count": {"min": max(1, p.rows // 2)}}
    out["columns"] = {c.name: c.dtype for c in kept if c.dtype and c.role != "time"}
    out["not_null"] = [c.name for c in kept if c.nulls == 0]
    ranges = {}
    for c in kept:
        if c.low is None or c.high is None or c.values is not None or c.role in ("id", "time"):
            continue
        if c.role == "target" and p.task != "regression":
            continue
        span = (c.high - c.low) or abs(c.high) or 1.0
        rule: dict[str, Any] = {"min": _rounded(c.low - RANGE_MARGIN * span, up=False),
                                "max": _rounded(c.high + RANGE_MARGIN * span, up=True)}
        if not p.complete:
            rule["mostly"] = 0.99  # the sample is the table's first rows: allow a few outside
        ranges[c.name] = rule
    out["ranges"] = ranges
    allowed = {c.name: c.values for c in kept if c.values is not None and c.role != "id"}
    if p.task == "regression":
        allowed.pop(p.target, None)
    out["allowed"] = allowed
    out["unique"] = [p.id_column] if p.id_column else []
    return {k: v for k, v in out.items() if v}


def _source(source: FileSource | SqlSource) -> dict[str, Any]:
    if isinstance(source, SqlSource):
        return {"kind": "sql", "url": source.url,
                **({"table": source.table} if source.table else {"query": source.query})}
    return {"kind": "file", "path": source.path}


def render(p: Profile, source: FileSource | SqlSource, model_name: str,
           command: str = "") -> str:
    """The config file's text for a profile: valid as it is, commented."""
    exp = expectations(p)
    cand, gate = default_candidates(p.task, p.rows), default_gate(p.task)
    seen = f"{p.rows:,} rows" + ("" if p.complete else " (the table's first rows: a sample)")
    lines = [f"# regrow config for {p.target!r} in {p.where}, written by `regrow init` from "
             f"{seen}.",
             *([f"# {command}"] if command else []),
             "# Edit freely: `regrow config check` validates it, `regrow config show` prints it "
             "with every default.", ""]
    for w in p.warnings:
        lines.append(f"# WARNING: {w}")
    if p.warnings:
        lines.append("")
    lines += ["data:", _line(1, "source", block=True)]
    lines += [_line(2, k, v) for k, v in _source(source).items()]
    lines.append(_line(1, "target", p.target))
    lines.append(_line(1, "task", p.task, p.task_why))
    lines.append(_line(1, "id_column", p.id_column, f"id: {p.id_why}"))
    lines.append(_line(1, "time_column", p.time_column,
                       f"time: {p.time_why}" + ("; the holdout is the latest rows"
                                                if p.time_column else "; random holdout")))
    lines += ["", "# What a batch must satisfy before anything trains on it (observed on the "
              "sample; ranges widened by " + f"{RANGE_MARGIN:.0%} of the observed span).",
              "expectations:"]
    comments = {"row_count": "half the rows seen: a batch much smaller is a broken load",
                "columns": "type of each column", "not_null": "no empty value in the sample",
                "ranges": "observed min/max, widened", "allowed": "every value seen, for "
                "columns with few distinct values", "unique": "the id names one row"}
    for key, value in exp.items():
        if isinstance(value, dict) and key != "row_count":
            lines.append(_line(1, key, comment=comments[key], block=True))
            lines += [_line(2, k, v) for k, v in value.items()]
        else:
            lines.append(_line(1, key, value, comments[key]))
    lines += ["", "features:"]
    for role in _ROLE_LIST:
        cols = p.role(role)
        if cols:
            lines.append(_line(1, role, block=True))
            lines += [f"    - {_flow(c)}" for c in cols]
    dropped = [c for c in p.columns if c.role == "drop"]
    if dropped:
        lines.append(_line(1, "drop", comment="not features", block=True))
        lines += [f"    - {_flow(c.name)}  # {c.why}" for c in dropped]
    lines.append(_line(1, "infer", False, "columns not listed here are not features"))
    lines += ["", "# Two candidates fit for any size: a linear model and gradient boosting, a "
              "small grid each, compared by cross-validation.", "candidates:"]
    lines.append(_line(1, "cv_folds", cand["cv_folds"]))
    lines.append(_line(1, "seed", cand["seed"]))
    if "threads" in cand:
        lines.append(_line(1, "threads", cand["threads"], f"under {ONE_THREAD_BELOW:,} rows "
                           "one native thread per fit is faster"))
    lines.append(_line(1, "estimators", block=True))
    for c in cand["estimators"]:
        lines.append("    - " + _line(0, "name", c["name"]))
        lines += [_line(3, k, v) for k, v in c.items() if k != "name"]
    lines += ["", "gate:", _line(1, "primary_metric", gate["primary_metric"],
                                  "the metric candidates are ranked and gated by"),
              _line(1, "baseline", gate["baseline"], "must beat the trivial model (class prior "
                    "/ mean) on the holdout"),
              _line(1, "max_regression", gate["max_regression"], "largest loss allowed "
                    "against the champion, in the metric's units"),
              "", "registry:", _line(1, "model_name", model_name), ""]
    lines += ["monitoring:", *_model_lines(Monitoring(), 1), "",
              "retrain:", *_model_lines(RetrainPolicy(), 1), ""]
    return "\n".join(lines)


def check_rendered(text: str, path: str) -> None:
    """Validate a rendered config with the schema, as `regrow train` will.

    Raises:
        ConfigError: the text does not validate (a bug of the writer, named as such).
    """
    config_from_text(text, path)
