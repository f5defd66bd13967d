"""Great Expectations adapter: the config's expectations as a GX 1.x suite, run in memory.

This is the only module that imports great_expectations. It returns a `ValidationReport`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from regrow.configs.schema import Config
from regrow.tasks.policy.untrusted import markdown

_INT = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
        "Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32", "UInt64", "int"]
_FLOAT = ["float16", "float32", "float64", "Float32", "Float64", "float"]
TYPE_LISTS: dict[str, list[str]] = {
    "int": _INT,
    "float": _FLOAT,
    "number": _INT + _FLOAT,
    "string": ["str", "string", "object"],
    "bool": ["bool", "boolean"],
    "datetime": ["datetime64[ns]", "datetime64[us]", "datetime64[ms]", "datetime64[s]",
                 "datetime64", "Timestamp", "datetime"],
    "category": ["category"],
}


@dataclass(frozen=True)
class ExpectationOutcome:
    """One expectation's result, in plain types."""

    expectation: str
    column: str | None
    kwargs: dict[str, Any]
    success: bool
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    examples: list[Any] = field(default_factory=list)
    observed: Any = None
    error: str | None = None


@dataclass(frozen=True)
class ValidationReport:
    """The outcome of a suite on one batch."""

    success: bool
    rows: int
    outcomes: list[ExpectationOutcome]

    @property
    def failed(self) -> list[ExpectationOutcome]:
        """The expectations that did not hold."""
        return [o for o in self.outcomes if not o.success]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return json.loads(json.dumps(asdict(self), default=str))

    def to_markdown(self) -> str:
        """A table of the failed expectations (or a one-line pass)."""
        met = len(self.outcomes) - len(self.failed)
        head = f"**{met}/{len(self.outcomes)} expectations met** on {self.rows} rows"
        if self.success:
            return head
        lines = [head, "", "| expectation | column | arguments | unexpected | examples |",
                 "|---|---|---|---|---|"]
        for o in self.failed:
            args = ", ".join(f"{k}={v!r}" for k, v in o.kwargs.items() if k != "column")
            if o.error:
                unexp = o.error
            elif o.unexpected_count is not None:
                unexp = f"{o.unexpected_count} ({o.unexpected_percent or 0:.2f}%)"
            else:
                unexp = f"observed {o.observed!r}"
            ex = ", ".join(repr(v) for v in o.examples[:5])
            # column names, observed values and examples come from the data: inert Markdown
            lines.append(f"| {o.expectation} | {markdown(o.column or '')} | {markdown(args)} | "
                         f"{markdown(unexp)} | {markdown(ex)} |")
        return "\n".join(lines)

    def describe_failures(self) -> str:
        """One line per failed expectation, for error messages."""
        out = []
        for o in self.failed:
            what = o.error or (
                f"{o.unexpected_count} unexpected ({o.unexpected_percent or 0:.2f}%), "
                f"e.g. {o.examples[:3]}" if o.unexpected_count is not None else f"observed {o.observed!r}"
            )
            col = f" [{o.column}]" if o.column else ""
            out.append(f"  - {o.expectation}{col}: {what}")
        return "\n".join(out)


def expectation_specs(config: Config, columns: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """The suite for a config as (expectation name, kwargs) pairs.

    Implicit rules come first: the target, time, id and listed feature columns must exist,
    the target must be non-null (and have two or more classes for classification), numeric
    features must be numbers. Then the config's own expectations.
    """
    d, e, f = config.data, config.expectations, config.features
    specs: list[tuple[str, dict[str, Any]]] = []
    needed = [d.target, *(c for c in (d.time_column, d.id_column) if c)]
    needed += [*f.numeric, *f.categorical, *f.datetime]
    needed += list(e.columns) + e.not_null + list(e.ranges) + list(e.allowed) + e.unique
    for col in dict.fromkeys(needed):
        specs.append(("expect_column_to_exist", {"column": col}))
    rc = {k: v for k, v in (("min_value", e.row_count.min), ("max_value", e.row_count.max)) if v is not None}
    if rc:
        specs.append(("expect_table_row_count_to_be_between", rc))
    present = set(columns)

    def col_spec(name: str, col: str, **kw: Any) -> None:
        if col in present:  # a missing column is already reported by expect_column_to_exist
            specs.append((name, {"column": col, **kw}))

    col_spec("expect_column_values_to_not_be_null", d.target)
    if d.task != "regression":
        col_spec("expect_column_unique_value_count_to_be_between", d.target, min_value=2)
    declared = dict(e.columns)
    for col in f.numeric:
        declared.setdefault(col, "number")
    for col, dtype in declared.items():
        col_spec("expect_column_values_to_be_in_type_list", col, type_list=TYPE_LISTS[dtype])
    for col in e.not_null:
        col_spec("expect_column_values_to_not_be_null", col)
    for col, r in e.ranges.items():
        col_spec("expect_column_values_to_be_between", col, min_value=r.min, max_value=r.max,
                 mostly=r.mostly)
    for col, values in e.allowed.items():
        col_spec("expect_column_values_to_be_in_set", col, value_set=values)
    for col in e.unique:
        col_spec("expect_column_values_to_be_unique", col)
    for c in e.custom:
        specs.append((c.type, dict(c.kwargs)))
    return specs


def _plain(value: Any) -> Any:
    try:
        return json.loads(json.dumps(value, default=str))
    except (TypeError, ValueError):
        return str(value)


def validate(config: Config, frame: pd.DataFrame) -> ValidationReport:
    """Run the config's expectations on a frame with an ephemeral GX context.

    Raises:
        ValueError: a custom expectation name GX does not know, or bad arguments for it.
    """
    import logging

    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig
    from great_expectations.expectations.registry import get_expectation_impl

    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch_def = (
        ctx.data_sources.add_pandas("regrow")
        .add_dataframe_asset("batch")
        .add_batch_definition_whole_dataframe("whole")
    )
    # Built in one go: `ExpectationSuite.add_expectation` compares each new expectation with
    # every one before it (two pydantic dumps per pair), 0.17 s for 39 of them; the same
    # set semantics (a repeated expectation runs once) cost nothing on the specs themselves.
    expectations, seen = [], set()
    for name, kwargs in expectation_specs(config, list(frame.columns)):
        key = (name, json.dumps(kwargs, sort_keys=True, default=str))
        if key in seen:
            continue
        seen.add(key)
        try:
            expectations.append(get_expectation_impl(name)(**kwargs))
        except Exception as err:  # noqa: BLE001 - GX raises several types here
            raise ValueError(f"expectations: cannot build {name}({kwargs}): {err}") from None
    suite = gx.ExpectationSuite(name=f"{config.registry.model_name}-suite",
                                expectations=expectations)
    result = batch_def.get_batch(batch_parameters={"dataframe": frame}).validate(
        suite, result_format="SUMMARY"
    )
    outcomes = []
    for r in result.results:
        cfg = r.expectation_config
        if cfg is None:  # GX sets it on every result of a suite; the error cfg.kwargs would raise
            raise AttributeError("a GX validation result without its expectation_config")
        kwargs = {k: _plain(v) for k, v in cfg.kwargs.items() if k != "batch_id"}
        res = r.result or {}
        exc = r.exception_info or {}
        error = exc.get("exception_message") if exc.get("raised_exception") else None
        outcomes.append(
            ExpectationOutcome(
                expectation=cfg.type,
                column=kwargs.get("column"),
                kwargs=kwargs,
                success=bool(r.success),
                unexpected_count=res.get("unexpected_count"),
                unexpected_percent=res.get("unexpected_percent"),
                examples=_plain(res.get("partial_unexpected_list") or [])[:10],
                observed=_plain(res.get("observed_value")),
                error=(error.splitlines()[0] if error else None)
                or ("column is missing" if cfg.type == "expect_column_to_exist" and not r.success
                    else None),
            )
        )
    return ValidationReport(success=bool(result.success), rows=len(frame), outcomes=outcomes)
