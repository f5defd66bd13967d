"""The promotion gate: rules from config, measured values, and a decision record."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from configs.schema import METRICS, Gate
from tasks.evaluate import Evaluation


@dataclass(frozen=True)
class RuleResult:
    """One gate rule: what was measured, against what, and whether it held."""

    rule: str
    metric: str
    measured: float | None
    threshold: float | None
    comparator: str
    passed: bool
    detail: str = ""


@dataclass(frozen=True)
class GateDecision:
    """The decision record: every rule and the verdict (``promote`` or ``reject``)."""

    verdict: str
    rules: list[RuleResult]
    reasons: list[str] = field(default_factory=list)
    champion_version: str | None = None
    borderline: bool = False

    @property
    def passed(self) -> bool:
        """True when the candidate may become champion."""
        return self.verdict == "promote"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (NaN -> None)."""
        def clean(v: Any) -> Any:
            return None if isinstance(v, float) and math.isnan(v) else v
        d = asdict(self)
        d["rules"] = [{k: clean(v) for k, v in r.items()} for r in d["rules"]]
        return d

    def to_markdown(self) -> str:
        """The decision as a markdown table."""
        rows = ["| rule | metric | measured | threshold | result | detail |", "|---|---|---|---|---|---|"]
        for r in self.rules:
            m = "-" if r.measured is None or math.isnan(r.measured) else f"{r.measured:.4f}"
            t = "-" if r.threshold is None else f"{r.comparator} {r.threshold:.4f}"
            result = "pass" if r.passed else "FAIL"
            rows.append(f"| {r.rule} | {r.metric} | {m} | {t} | {result} | {r.detail} |")
        return f"**verdict: {self.verdict}**\n\n" + "\n".join(rows)


def _better_or_equal(value: float, threshold: float, greater: bool) -> bool:
    if value is None or math.isnan(value):
        return False
    return value >= threshold if greater else value <= threshold


def decide(gate: Gate, candidate: Evaluation, champion: Evaluation | None,
           champion_version: str | None = None, champion_error: str | None = None) -> GateDecision:
    """Apply the gate's rules to a candidate's holdout evaluation.

    Comparison rules use the champion's score on the same holdout. With no champion they pass
    with "no champion"; with a champion that could not be scored they fail, so an unscorable
    comparison never promotes silently.
    """
    metric = gate.primary_metric
    greater = METRICS[metric][1]
    cmp = ">=" if greater else "<="
    rules: list[RuleResult] = []
    for name, bound in gate.floors.items():
        value = candidate.metrics.get(name, math.nan)
        rules.append(RuleResult("floor", name, value, bound, ">=" if METRICS[name][1] else "<=",
                                _better_or_equal(value, bound, METRICS[name][1])))
    cand = candidate.value
    if champion_error:
        rules.append(RuleResult("vs_champion", metric, cand, None, cmp, False,
                                f"champion v{champion_version} could not be scored: {champion_error}"))
    elif champion is None:
        rules.append(RuleResult("max_regression", metric, cand, None, cmp, True, "no champion yet"))
    else:
        champ = champion.value
        delta = (cand - champ) if greater else (champ - cand)  # > 0 means the candidate is better
        rules.append(RuleResult(
            "max_regression", metric, cand,
            champ - gate.max_regression if greater else champ + gate.max_regression, cmp,
            not math.isnan(delta) and delta >= -gate.max_regression,
            f"champion v{champion_version} scores {champ:.4f}; change {delta:+.4f}",
        ))
        if gate.min_improvement is not None:
            rules.append(RuleResult(
                "min_improvement", metric, cand,
                champ + gate.min_improvement if greater else champ - gate.min_improvement, cmp,
                not math.isnan(delta) and delta >= gate.min_improvement,
                f"required gain {gate.min_improvement:+.4f}, got {delta:+.4f}",
            ))
    for sl in gate.slices:
        per = candidate.slices.get(sl.column)
        if per is None:
            rules.append(RuleResult(f"slice:{sl.column}", metric, None, sl.floor, cmp, False,
                                    "column not in holdout"))
            continue
        for value, stats in sorted(per.items()):
            measured = stats.get(metric, math.nan)
            if stats["rows"] < sl.min_rows:
                note = f"{int(stats['rows'])} rows < {sl.min_rows}: reported only"
                rules.append(RuleResult(f"slice:{sl.column}={value}", metric, measured, sl.floor,
                                        cmp, True, note))
                continue
            rules.append(RuleResult(f"slice:{sl.column}={value}", metric, measured, sl.floor, cmp,
                                    _better_or_equal(measured, sl.floor, greater),
                                    f"{int(stats['rows'])} rows"))
    failed = [r for r in rules if not r.passed]
    reasons = [
        f"{r.rule} on {r.metric}: measured {r.measured if r.measured is None else round(r.measured, 4)}"
        f" {('not ' + r.comparator) if r.threshold is not None else ''} "
        f"{'' if r.threshold is None else round(r.threshold, 4)} {r.detail}".strip()
        for r in failed
    ]
    if not failed:
        reasons = ["all rules passed"]
    # Borderline: passes only thanks to the regression allowance (worse than the champion).
    borderline = not failed and champion is not None and any(
        r.rule == "max_regression" and r.measured is not None and r.threshold is not None
        and (r.measured < r.threshold + gate.max_regression if greater
             else r.measured > r.threshold - gate.max_regression) for r in rules)
    return GateDecision("reject" if failed else "promote", rules, reasons, champion_version,
                        borderline)
