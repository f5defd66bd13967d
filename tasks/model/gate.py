"""The promotion gate: rules from config, measured values, and a decision record."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from regrow.configs.schema import METRICS, Gate
from regrow.tasks.model.evaluate import Evaluation, Gain

PROMOTE, REJECT, NO_GAIN = "promote", "reject", "no_gain"
# The rule whose failure alone is no rejection: the candidate is not worse, only not better.
IMPROVEMENT_RULE = "min_improvement"
# The smallest gain over the champion worth a new champion when `gate.min_improvement` is left
# out: (value, kind), half the drop that counts as a degradation (tasks.monitoring.assess).
# Bounded scores gain absolute points; losses and errors a share of the champion's value, as
# their units are the data's. The policy benchmark (docs/concepts/gate.md) chose them: at 0, a
# retrain on noisy labels and retrains at a season's end were promoted on gains the next
# window did not show.
MINIMUM_GAIN: dict[str, tuple[float, str]] = {
    "roc_auc": (0.01, "absolute"), "accuracy": (0.01, "absolute"), "f1": (0.01, "absolute"),
    "precision": (0.01, "absolute"), "recall": (0.01, "absolute"), "r2": (0.01, "absolute"),
    "log_loss": (0.025, "relative"), "rmse": (0.025, "relative"), "mae": (0.025, "relative"),
}
assert set(MINIMUM_GAIN) == set(METRICS)


def minimum_gain(gate: Gate) -> tuple[float, str] | None:
    """(the gain over the champion a promotion needs, its kind): the configured
    ``min_improvement`` (absolute unless ``min_improvement_kind`` says otherwise), with
    ``require_improvement`` the metric's default, else None (not a rule)."""
    if gate.min_improvement is not None:
        return gate.min_improvement, gate.min_improvement_kind or "absolute"
    return MINIMUM_GAIN[gate.primary_metric] if gate.require_improvement else None


def _in_units(need: tuple[float, str], champ: float) -> float:
    """The minimum gain in the metric's units, against a champion scoring `champ`."""
    value, kind = need
    return value * abs(champ) if kind == "relative" and not math.isnan(champ) else value


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
    """The decision record: every rule and the verdict: ``promote``, ``reject`` (a rule
    failed), or ``no_gain`` (every rule passed but the improvement over the champion: the
    champion stays, and the retrain policy's circuit breaker does not count it)."""

    verdict: str
    rules: list[RuleResult]
    reasons: list[str] = field(default_factory=list)
    champion_version: str | None = None
    borderline: bool = False

    @property
    def passed(self) -> bool:
        """True when the candidate may become champion."""
        return self.verdict == PROMOTE

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (NaN -> None)."""
        def clean(v: Any) -> Any:
            return None if isinstance(v, float) and math.isnan(v) else v
        d = asdict(self)
        d["rules"] = [{k: clean(v) for k, v in r.items()} for r in d["rules"]]
        return d

    def to_markdown(self) -> str:
        """The decision as a markdown table: numbers to 4 decimals, comparators in words
        (a bare ``>=`` would render as a quote in markdown)."""
        rows = ["| rule | metric | measured | threshold | result | detail |", "|---|---|---|---|---|---|"]
        for r in self.rules:
            m = "-" if r.measured is None or math.isnan(r.measured) else f"{r.measured:.4f}"
            t = "-" if r.threshold is None else f"{in_words(r.comparator)} {r.threshold:.4f}"
            result = "pass" if r.passed else "FAIL"
            detail = r.detail.replace("|", "\\|")
            rows.append(f"| {r.rule} | {r.metric} | {m} | {t} | {result} | {detail} |")
        return f"**verdict: {self.verdict}**\n\n" + "\n".join(rows)


COMPARATOR_WORDS = {">=": "at least", "<=": "at most", ">": "above", "<": "below"}


def in_words(comparator: str) -> str:
    """``>=`` -> ``at least`` and so on (others unchanged)."""
    return COMPARATOR_WORDS.get(comparator, comparator)


@dataclass(frozen=True)
class TrustedCheck:
    """The champion's trusted evaluation set (a labelled sample of its own holdout, kept with
    the version) and what champion and candidate score on it now.

    Attributes:
        available: False for versions registered before trusted sets were kept.
        rows: rows in the set; at_registration: the champion's score on it when registered;
        baseline: the trivial model's score on it (fitted on the champion's training part);
        champion / candidate: their scores on it now (None when they could not be scored).
        note: why something is missing.
    """

    available: bool
    rows: int = 0
    at_registration: float | None = None
    baseline: float | None = None
    champion: float | None = None
    candidate: float | None = None
    note: str = ""


def _better_or_equal(value: float, threshold: float, greater: bool) -> bool:
    if value is None or math.isnan(value):
        return False
    return value >= threshold if greater else value <= threshold


def _num(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.4f}"


def _skill(value: float | None, baseline: float | None, greater: bool) -> float:
    """How far a score is better than the trivial model's (negative: worse)."""
    if value is None or baseline is None or math.isnan(value) or math.isnan(baseline):
        return math.nan
    return value - baseline if greater else baseline - value


def beats_baseline(gate: Gate, candidate: Evaluation, baseline: Evaluation) -> RuleResult:
    """The baseline rule: the candidate beats the trivial model on the same holdout, judged by
    the conservative end of its bootstrap interval (or, without one, by `baseline_margin`)."""
    metric, greater = gate.primary_metric, METRICS[gate.primary_metric][1]
    b, cand = baseline.value, candidate.value
    if candidate.ci:
        measured, threshold = (candidate.ci[0] if greater else candidate.ci[1]), b
        how = f"95% CI {_num(candidate.ci[0])}..{_num(candidate.ci[1])}, {'low' if greater else 'high'} end"
    else:
        measured = cand
        threshold = b + gate.baseline_margin if greater else b - gate.baseline_margin
        how = f"no bootstrap: point value, margin {gate.baseline_margin}"
    ok = not (math.isnan(measured) or math.isnan(threshold)) and (
        measured > threshold if greater else measured < threshold)
    kind = "mean of the training target" if "rmse" in baseline.metrics else "class prior"
    return RuleResult("baseline", metric, measured, threshold, ">" if greater else "<", ok,
                      f"candidate {_num(cand)} ({how}) vs trivial model ({kind}) {_num(b)}")


def _broken_labels(gate: Gate, candidate: Evaluation, champion: Evaluation, baseline: Evaluation,
                   trusted: TrustedCheck, version: str | None) -> RuleResult:
    """Refuse when the champion collapses on the new holdout and the candidate has no skill
    either: the new labels, not the world, most likely changed. A collapse with a skilled
    candidate is a concept change, which retraining exists for: passed, with a note."""
    metric, greater = gate.primary_metric, METRICS[gate.primary_metric][1]
    if not trusted.available:
        return RuleResult("broken_labels", metric, None, None, ">", True,
                          f"not checked: {trusted.note or f'champion v{version} has no trusted set'}")
    own = trusted.champion if trusted.champion is not None else trusted.at_registration
    ref_skill = _skill(own, trusted.baseline, greater)
    new_skill = _skill(champion.value, baseline.value, greater)
    keep = 1.0 - gate.collapse_share
    if math.isnan(ref_skill) or ref_skill <= 0 or math.isnan(new_skill):
        return RuleResult("broken_labels", metric, None, keep, ">", True,
                          f"not checked: champion v{version} shows no measurable skill over the "
                          f"trivial model on its own trusted set ({_num(own)} vs "
                          f"{_num(trusted.baseline)})")
    retained = new_skill / ref_skill
    evidence = (f"champion v{version} scores {_num(own)} on its own trusted set (trivial "
                f"{_num(trusted.baseline)}) but {_num(champion.value)} on the new holdout (trivial "
                f"{_num(baseline.value)}), keeping {retained:.0%} of its skill")
    if retained > keep:
        return RuleResult("broken_labels", metric, retained, keep, ">", True,
                          f"{evidence}: no collapse")
    skilled = beats_baseline(gate, candidate, baseline)
    if skilled.passed:
        return RuleResult("broken_labels", metric, retained, keep, ">", True,
                          f"concept change: {evidence}; the candidate has skill ({skilled.detail}),"
                          " so the other rules decide")
    return RuleResult("broken_labels", metric, retained, keep, ">", False,
                      f"the new labels look broken: {evidence}; the candidate shows no skill "
                      f"either ({skilled.detail})")


def _collapsed(gate: Gate, trusted: TrustedCheck, champion: Evaluation | None,
               baseline: Evaluation | None, greater: bool) -> float | None:
    """The share of its trusted-set skill the champion keeps on the new holdout, when that
    share says it collapsed there (see `_broken_labels`); None when it did not, or when
    that cannot be told."""
    if champion is None or baseline is None:
        return None
    own = trusted.champion if trusted.champion is not None else trusted.at_registration
    ref_skill = _skill(own, trusted.baseline, greater)
    new_skill = _skill(champion.value, baseline.value, greater)
    if math.isnan(ref_skill) or ref_skill <= 0 or math.isnan(new_skill):
        return None
    retained = new_skill / ref_skill
    return retained if retained <= 1.0 - gate.collapse_share else None


def _trusted_rule(gate: Gate, trusted: TrustedCheck, version: str | None,
                  champion: Evaluation | None, baseline: Evaluation | None) -> RuleResult:
    """The candidate on the champion's trusted set (the champion's own holdout): refused when it
    keeps less than ``1 - gate.trusted_max_loss`` of the champion's skill above the trivial
    model there. Not applied when the champion itself collapsed on the new holdout (a concept
    change: its old rows no longer judge) or when the set cannot tell; reported only with
    ``trusted_max_loss: null``."""
    metric = gate.primary_metric
    greater = METRICS[metric][1]
    if not trusted.available:
        return RuleResult("trusted_set", metric, None, None, "", True,
                          trusted.note or f"champion v{version} has no trusted set")
    note = f"; {trusted.note}" if trusted.note else ""
    scores = (f"{trusted.rows} rows of champion v{version}'s own holdout: champion "
              f"{_num(trusted.champion)} (at registration {_num(trusted.at_registration)}), "
              f"candidate {_num(trusted.candidate)}, trivial {_num(trusted.baseline)}{note}")
    if gate.trusted_max_loss is None:
        return RuleResult("trusted_set", metric, trusted.candidate, None, "", True,
                          f"{scores}: reported only (gate.trusted_max_loss: null)")
    own = trusted.champion if trusted.champion is not None else trusted.at_registration
    ref_skill = _skill(own, trusted.baseline, greater)
    cand_skill = _skill(trusted.candidate, trusted.baseline, greater)
    if math.isnan(ref_skill) or ref_skill <= 0 or math.isnan(cand_skill):
        return RuleResult("trusted_set", metric, trusted.candidate, None, "", True,
                          f"{scores}: not checked (no measurable skill of the champion over the "
                          "trivial model there, or a score missing)")
    collapsed = _collapsed(gate, trusted, champion, baseline, greater)
    if collapsed is not None:
        return RuleResult("trusted_set", metric, trusted.candidate, None, "", True,
                          f"{scores}: not applied, the champion keeps {collapsed:.0%} of its "
                          "skill on the new holdout (a concept change: its old rows no longer "
                          "judge; see broken_labels)")
    keep = 1.0 - gate.trusted_max_loss
    base = trusted.baseline if trusted.baseline is not None else math.nan  # known: skills exist
    floor = base + keep * ref_skill if greater else base - keep * ref_skill
    retained = cand_skill / ref_skill
    passed = retained >= keep - 1e-12
    return RuleResult("trusted_set", metric, trusted.candidate, floor, ">=" if greater else "<=",
                      passed, f"{scores}; the candidate keeps {retained:.0%} of the champion's "
                      f"skill over the trivial model there (at least {keep:.0%}: "
                      f"gate.trusted_max_loss {gate.trusted_max_loss:g})")


def _improvement(gate: Gate, cand: float, champ: float, delta: float, gain: Gain | None,
                 version: str | None) -> RuleResult | None:
    """The improvement rule against a champion scored on the same holdout (None: not a rule):
    with ``require_improvement``, the low end of the paired interval of the gain (`gain`)
    must be above the minimum gain (`minimum_gain`); without an interval (no bootstrap, or a
    caller that made none), the point gain must. Without ``require_improvement``, the point
    gain must reach ``min_improvement`` when one is set."""
    metric, greater = gate.primary_metric, METRICS[gate.primary_metric][1]
    minimum = minimum_gain(gate)
    if minimum is None:
        return None
    need = _in_units(minimum, champ)
    kind = "" if minimum[1] == "absolute" else f" ({minimum[0]:.1%} of the champion's {champ:.4f})"
    if not gate.require_improvement:
        return RuleResult(IMPROVEMENT_RULE, metric, cand, champ + need if greater else champ - need,
                          ">=" if greater else "<=", not math.isnan(delta) and delta >= need,
                          f"required gain {need:+.4f}{kind}, got {delta:+.4f}")
    if gain is not None and gain.low is not None:
        return RuleResult(IMPROVEMENT_RULE, metric, gain.low, need, ">", gain.low > need,
                          f"candidate vs champion v{version} on the same rows: "
                          f"{gain.describe()}; its low end must be above {need:+.4f}{kind}")
    return RuleResult(IMPROVEMENT_RULE, metric, delta, need, ">",
                      not math.isnan(delta) and delta > need,
                      f"candidate vs champion v{version}: point gain {delta:+.4f} (no paired "
                      f"interval), must be above {need:+.4f}{kind}")


def decide(gate: Gate, candidate: Evaluation, champion: Evaluation | None,
           champion_version: str | None = None, champion_error: str | None = None,
           baseline: Evaluation | None = None, trusted: TrustedCheck | None = None,
           gain: Gain | None = None) -> GateDecision:
    """Apply the gate's rules to a candidate's holdout evaluation.

    Comparison rules use the champion's score on the same holdout. With no champion they pass
    with "no champion"; with a champion that could not be scored they fail, so an unscorable
    comparison never promotes silently. With `baseline` (the trivial model on the same holdout)
    the baseline rule applies when `gate.baseline` is on; with a champion and `trusted`, the
    broken-labels rule applies, and the trusted-set rule: a candidate far worse than the
    champion on the champion's own holdout is refused (`gate.trusted_max_loss`).

    With a champion and `gate.require_improvement`, the candidate must also be significantly
    better (`gain`: `tasks.model.evaluate.paired_gain` on the same holdout); when that is the
    only rule it fails, the verdict is ``no_gain``, not ``reject``.
    """
    metric = gate.primary_metric
    greater = METRICS[metric][1]
    cmp = ">=" if greater else "<="
    rules: list[RuleResult] = []
    if baseline is not None and gate.baseline:
        rules.append(beats_baseline(gate, candidate, baseline))
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
        improvement = _improvement(gate, cand, champ, delta, gain, champion_version)
        if improvement is not None:
            rules.append(improvement)
        if trusted is not None and baseline is not None:
            rules.append(_broken_labels(gate, candidate, champion, baseline, trusted,
                                        champion_version))
    if trusted is not None and champion_version is not None:
        rules.append(_trusted_rule(gate, trusted, champion_version, champion, baseline))
    for sl in gate.slices:
        per = candidate.slices.get(sl.column)
        if per is None:
            rules.append(RuleResult(f"slice:{sl.column}", metric, None, sl.floor, cmp, False,
                                    "column not in holdout"))
            continue
        for level, stats in sorted(per.items()):
            measured = stats.get(metric, math.nan)
            if stats["rows"] < sl.min_rows:
                note = f"{int(stats['rows'])} rows < {sl.min_rows}: reported only"
                rules.append(RuleResult(f"slice:{sl.column}={level}", metric, measured, sl.floor,
                                        cmp, True, note))
                continue
            rules.append(RuleResult(f"slice:{sl.column}={level}", metric, measured, sl.floor, cmp,
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
    no_gain = bool(failed) and all(r.rule == IMPROVEMENT_RULE for r in failed)
    if no_gain:
        reasons = [f"no gain: the candidate does not improve enough on champion "
                   f"v{champion_version}, which stays; {reasons[0]}"]
    # Borderline: passes only thanks to the regression allowance (worse than the champion).
    borderline = not failed and champion is not None and any(
        r.rule == "max_regression" and r.measured is not None and r.threshold is not None
        and (r.measured < r.threshold + gate.max_regression if greater
             else r.measured > r.threshold - gate.max_regression) for r in rules)
    verdict = PROMOTE if not failed else NO_GAIN if no_gain else REJECT
    return GateDecision(verdict, rules, reasons, champion_version, borderline)
