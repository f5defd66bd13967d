"""The gate on bad data (baseline rule, broken labels) and time columns read as what they are:
unit tests of the plain functions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from regrow.configs.schema import ConfigError, load_config, parse_config
from regrow.tasks.data import ingest as ing
from regrow.tasks.data.timecol import TimeUnitError, infer_unit, to_time, to_times
from regrow.tasks.model import evaluate as ev
from regrow.tasks.model import gate as gt
from regrow.tasks.model import train as tr
from tests.helpers import BINARY_CONFIG, REGRESSION_CONFIG, binary_frame, merge, write_case

SHIPPED_GATE = {"gate": {"primary_metric": "roc_auc"}}  # the defaults: no floors, no slices


def _gate(base=BINARY_CONFIG, **gate):
    # these tests judge the data and label rules on candidates level with their champion: the
    # paired-improvement rule (no_gain) has its own tests (tests/test_significance.py)
    gate.setdefault("require_improvement", False)
    return parse_config(merge(merge(base, {"gate": None}), {"gate": gate})).gate


def _e(v: float, ci=None, metric="roc_auc") -> ev.Evaluation:
    return ev.Evaluation({metric: v}, metric, ci)


def test_baseline_rule_uses_the_conservative_end_of_the_interval():
    gate = _gate(primary_metric="roc_auc")
    assert gate.baseline and not gate.floors
    base = _e(0.5)
    chance = gt.decide(gate, _e(0.52, (0.48, 0.56)), None, baseline=base)
    assert not chance.passed
    rule = next(r for r in chance.rules if r.rule == "baseline")
    assert rule.measured == 0.48 and rule.threshold == 0.5 and not rule.passed
    assert "0.5200" in rule.detail and "0.5000" in rule.detail  # both numbers named
    assert gt.decide(gate, _e(0.80, (0.75, 0.85)), None, baseline=base).passed
    # Without bootstrap: the point value must clear the baseline by the stated margin.
    assert not gt.decide(gate, _e(0.505), None, baseline=base).passed
    assert gt.decide(gate, _e(0.52), None, baseline=base).passed
    off = _gate(primary_metric="roc_auc", baseline=False)
    assert gt.decide(off, _e(0.52, (0.48, 0.56)), None, baseline=base).passed


def test_baseline_rule_lower_is_better():
    gate = _gate(REGRESSION_CONFIG, primary_metric="rmse")
    base = _e(2.0, metric="rmse")
    assert not gt.decide(gate, _e(1.98, (1.9, 2.05), "rmse"), None, baseline=base).passed
    ok = gt.decide(gate, _e(1.0, (0.9, 1.1), "rmse"), None, baseline=base)
    assert ok.passed and next(r for r in ok.rules if r.rule == "baseline").measured == 1.1


def test_trivial_model_scores_chance():
    cfg = parse_config(merge(BINARY_CONFIG, SHIPPED_GATE))
    parts = tr.split(cfg, binary_frame(800))
    target = tr.resolve_target(cfg, parts.train)
    base = ev.evaluate_baseline(parts.train, parts.holdout, target, "roc_auc")
    assert base.value == 0.5
    assert 0.4 < base.metrics["accuracy"] < 0.7
    from tests.helpers import regression_frame

    rcfg = parse_config(REGRESSION_CONFIG)
    rparts = tr.split(rcfg, regression_frame(600))
    rbase = ev.evaluate_baseline(rparts.train, rparts.holdout,
                                 tr.resolve_target(rcfg, rparts.train), "rmse")
    assert abs(rbase.value - rparts.holdout["y"].std()) < 0.2 * rparts.holdout["y"].std()


def _trusted(champion_now=0.92, candidate=0.55):
    return gt.TrustedCheck(True, 500, at_registration=0.93, baseline=0.5, champion=champion_now,
                           candidate=candidate)


def test_broken_labels_refused_when_champion_collapses_and_candidate_has_no_skill():
    gate = _gate(primary_metric="roc_auc", baseline=False)  # the rule stands on its own
    d = gt.decide(gate, _e(0.51, (0.47, 0.55)), _e(0.52), "4", baseline=_e(0.5),
                  trusted=_trusted())
    assert not d.passed
    rule = next(r for r in d.rules if r.rule == "broken_labels")
    assert not rule.passed and "look broken" in rule.detail
    assert "0.9200 on its own trusted set" in rule.detail and "0.5200 on the new holdout" in rule.detail
    row = next(r for r in d.rules if r.rule == "trusted_set")
    assert row.passed and row.measured == 0.55 and "500 rows" in row.detail


def test_collapse_with_a_skilled_candidate_is_a_concept_change():
    gate = _gate(primary_metric="roc_auc", max_regression=0.02)
    d = gt.decide(gate, _e(0.85, (0.8, 0.9)), _e(0.55), "4", baseline=_e(0.5), trusted=_trusted())
    rule = next(r for r in d.rules if r.rule == "broken_labels")
    assert d.passed and rule.passed and rule.detail.startswith("concept change")
    steady = gt.decide(gate, _e(0.90, (0.85, 0.95)), _e(0.90), "4", baseline=_e(0.5),
                       trusted=_trusted(candidate=0.91))  # as good as the champion on its rows
    assert steady.passed and "no collapse" in next(
        r for r in steady.rules if r.rule == "broken_labels").detail


def test_a_candidate_far_worse_on_the_champions_own_holdout_is_refused():
    """No collapse on the new holdout, but on the champion's trusted set the candidate keeps
    12% of the champion's skill (0.55 vs 0.92, trivial 0.50): refused, by gate.trusted_max_loss."""
    gate = _gate(primary_metric="roc_auc", max_regression=0.02)
    far = gt.decide(gate, _e(0.90, (0.85, 0.95)), _e(0.90), "4", baseline=_e(0.5),
                    trusted=_trusted(candidate=0.55))
    rule = next(r for r in far.rules if r.rule == "trusted_set")
    assert not far.passed and not rule.passed
    assert rule.measured == 0.55 and rule.threshold == pytest.approx(0.71)  # 0.5 + 50% of 0.42
    assert "keeps 12% of the champion's skill" in rule.detail and "trusted_max_loss 0.5" in rule.detail
    assert any(r.startswith("trusted_set on roc_auc") for r in far.reasons)
    recorded = {r["rule"]: r for r in far.to_dict()["rules"]}  # the decision record
    assert not recorded["trusted_set"]["passed"] and recorded["trusted_set"]["threshold"]
    close = gt.decide(gate, _e(0.90, (0.85, 0.95)), _e(0.90), "4", baseline=_e(0.5),
                      trusted=_trusted(candidate=0.75))  # keeps 60%: within the default
    assert close.passed
    strict = _gate(primary_metric="roc_auc", max_regression=0.02, trusted_max_loss=0.2)
    assert not gt.decide(strict, _e(0.90, (0.85, 0.95)), _e(0.90), "4", baseline=_e(0.5),
                         trusted=_trusted(candidate=0.75)).passed
    report_only = _gate(primary_metric="roc_auc", max_regression=0.02, trusted_max_loss=None)
    off = gt.decide(report_only, _e(0.90, (0.85, 0.95)), _e(0.90), "4", baseline=_e(0.5),
                    trusted=_trusted(candidate=0.55))
    assert off.passed and "reported only" in next(
        r for r in off.rules if r.rule == "trusted_set").detail


def test_trusted_rule_lower_is_better():
    gate = _gate(REGRESSION_CONFIG, primary_metric="rmse")
    trusted = gt.TrustedCheck(True, 300, at_registration=1.0, baseline=3.0, champion=1.0,
                              candidate=2.5)  # keeps 25% of a 2.0 skill
    d = gt.decide(gate, _e(1.0, (0.9, 1.1), "rmse"), _e(1.0, metric="rmse"), "2",
                  baseline=_e(3.0, metric="rmse"), trusted=trusted)
    rule = next(r for r in d.rules if r.rule == "trusted_set")
    assert not rule.passed and rule.threshold == pytest.approx(2.0) and rule.comparator == "<="


def test_versions_without_a_trusted_set_are_named_not_failed():
    gate = _gate(primary_metric="roc_auc")
    none = gt.TrustedCheck(False, note="champion v1 has no trusted evaluation set (registered "
                           "before trusted sets were kept, or trusted_rows: 0)")
    d = gt.decide(gate, _e(0.85, (0.8, 0.9)), _e(0.84), "1", baseline=_e(0.5), trusted=none)
    assert d.passed
    notes = {r.rule: r.detail for r in d.rules}
    assert "no trusted evaluation set" in notes["trusted_set"]
    assert notes["broken_labels"].startswith("not checked")


@pytest.mark.parametrize("values,unit,first", [
    ([2015, 2016, 2019], "year", "2015-01-01"),
    ([20150301, 20160229], "date", "2015-03-01"),
    ([1_700_000_000, 1_700_086_400], "s", "2023-11-14 22:13:20"),
    ([1_700_000_000_000, 1_700_086_400_000], "ms", "2023-11-14 22:13:20"),
    ([1_700_000_000_000_000_000, 1_700_000_000_000_000_001], "ns", "2023-11-14 22:13:20"),
])
def test_integer_time_columns_read_by_their_range(values, unit, first):
    s = pd.Series(values)
    assert infer_unit(s) == unit
    assert to_times(s, "auto")[0] == pd.Timestamp(first)
    assert to_times(s, unit)[0] == pd.Timestamp(first)


def test_ambiguous_or_wrong_time_values_ask_for_time_unit():
    with pytest.raises(TimeUnitError, match="set data.time_unit"):
        to_times(pd.Series([5, 300, 12_000]), "auto", "data.time_column: 'day'")
    assert str(to_times(pd.Series([5, 300]), "s")[1]) == "1970-01-01 00:05:00"
    with pytest.raises(TimeUnitError, match="in unit year"):
        to_times(pd.Series(["x", "y"]), "year")
    with pytest.raises(TimeUnitError, match="whole numbers"):
        to_times(pd.Series([2015.5, 2016.0]), "year")
    assert str(to_times(pd.Series(["2015-03-01", "2016-01-02"]))[0]) == "2015-03-01 00:00:00"
    assert str(to_time("2015")) == "2015-01-01 00:00:00"
    assert str(to_time("2024-06-01")) == "2024-06-01 00:00:00"


def _yearly(n: int = 400) -> pd.DataFrame:
    frame = binary_frame(n).drop(columns=["ts"])
    return frame.assign(year=np.repeat(np.arange(2000, 2000 + n // 20), 20)[:n])


YEARLY = merge(BINARY_CONFIG, {"data": {"time_column": "year"},
                               "features": {"drop": ["year"]}})


def test_year_column_ingested_split_and_tagged_as_years(tmp_path: Path):
    loaded = load_config(write_case(tmp_path, _yearly(), YEARLY))
    got = ing.ingest(loaded)
    assert (got.time_min, got.time_max) == ("2000-01-01 00:00:00", "2019-01-01 00:00:00")
    parts = tr.split(loaded.config, got.frame)
    assert parts.cutoff == "2015-01-01 00:00:00"
    cut = load_config(write_case(tmp_path, _yearly(), merge(YEARLY, {"split": {"cutoff": 2017}})))
    assert cut.config.split.cutoff == "2017"
    parts = tr.split(cut.config, ing.ingest(cut).frame)
    assert parts.holdout["year"].min() == pd.Timestamp("2017-01-01") and len(parts.holdout) == 60


def test_ambiguous_time_column_is_a_clear_error_and_time_unit_fixes_it(tmp_path: Path):
    frame = _yearly().assign(year=np.arange(400) * 7)  # days? hours? nobody can tell
    loaded = load_config(write_case(tmp_path, frame, YEARLY))
    with pytest.raises(ing.IngestError, match=r"data.time_column: 'year' .*set data.time_unit"):
        ing.ingest(loaded)
    fixed = load_config(write_case(tmp_path, frame, merge(YEARLY, {"data": {"time_unit": "s"}})))
    assert ing.ingest(fixed).time_max == "1970-01-01 00:46:33"
    with pytest.raises(ConfigError, match="data.time_unit"):
        load_config(write_case(tmp_path, frame, merge(YEARLY, {"data": {"time_unit": "days"}})))
