"""The Evidently drift adapter on synthetic data with known shifts (fixed seeds)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from regrow.tasks.monitoring.drift import ColumnDrift, DriftError, DriftSummary, check_drift

# Numeric feature generators of different shapes; a shift adds `k` reference standard
# deviations to every value (a pure location shift).
SHAPES = {
    "normal": lambda rng, n: rng.normal(10, 2, n),
    "lognormal": lambda rng, n: rng.lognormal(0, 0.75, n),
    "exponential": lambda rng, n: rng.exponential(3, n),
    "uniform": lambda rng, n: rng.uniform(-1, 1, n),
    "counts": lambda rng, n: rng.poisson(4, n).astype("int64"),
    "bimodal": lambda rng, n: np.where(rng.random(n) < 0.3, rng.normal(-2, 1, n),
                                       rng.normal(3, 1, n)),
}
STD = {"normal": 2.0, "lognormal": 0.8, "exponential": 3.0, "uniform": 0.577, "counts": 2.0,
       "bimodal": 2.5}
LEVELS5 = ["a", "b", "c", "d", "e"]
P5 = [0.4, 0.25, 0.15, 0.12, 0.08]
LEVELS20 = [f"k{i:02d}" for i in range(20)]
P20 = np.linspace(2, 1, 20) / np.linspace(2, 1, 20).sum()


def numeric_frame(rng: np.random.Generator, n: int, columns: int,
                  shift: dict[int, float] | None = None) -> pd.DataFrame:
    """`columns` numeric features cycling through SHAPES; shift[i] moves feature i by that
    many standard deviations."""
    shift = shift or {}
    names = list(SHAPES)
    data = {}
    for i in range(columns):
        shape = names[i % len(names)]
        values = SHAPES[shape](rng, n)
        if i in shift:
            values = values + shift[i] * STD[shape]
        data[f"x{i}"] = values
    return pd.DataFrame(data)


def with_categories(frame: pd.DataFrame, rng: np.random.Generator,
                    p5: list[float] = P5) -> pd.DataFrame:
    n = len(frame)
    return frame.assign(cat5=rng.choice(LEVELS5, size=n, p=p5),
                        cat20=rng.choice(LEVELS20, size=n, p=P20))


def disagreements(summary: DriftSummary) -> list[str]:
    return [n for n in summary.notes if "Evidently" in n]


def test_shifting_3_of_10_numeric_columns_flags_exactly_those(tmp_path):
    rng = np.random.default_rng(11)
    ref = numeric_frame(rng, 10_000, 10)
    cur = numeric_frame(rng, 5_000, 10, shift={1: 0.5, 4: 1.0, 8: 0.7})
    html = tmp_path / "reports" / "drift.html"

    s = check_drift(ref, cur, list(ref.columns), [], report_html=html)

    assert s.drifted_columns == ["x1", "x4", "x8"]
    assert s.drift_share == pytest.approx(0.3)
    assert s.dataset_drift is False  # 0.3 < drift_share 0.5
    assert [c.column for c in s.columns] == list(ref.columns)
    for c in s.columns:
        assert (c.kind, c.method, c.threshold) == ("numeric", "wasserstein", 0.1)
        assert c.drifted == (c.score >= 0.1)
    assert min(s.column(c).score for c in s.drifted_columns) > 0.3
    assert max(c.score for c in s.columns if not c.drifted) < 0.06
    assert disagreements(s) == []  # our rule and Evidently's own tests agree
    assert (s.reference_rows, s.current_rows) == (10_000, 5_000)
    assert (s.reference_sampled_rows, s.current_sampled_rows) == (10_000, 5_000)
    assert not s.sampled
    assert s.prediction_drift is None and s.performance is None
    assert s.report_path == str(html) and html.read_text()[:200].lower().count("<html") == 1
    json.dumps(s.to_dict())  # JSON-able
    assert "x4" in s.to_markdown()


def test_categorical_shift_is_detected_and_counts_toward_dataset_drift():
    rng = np.random.default_rng(12)
    ref = with_categories(numeric_frame(rng, 10_000, 1), rng)
    cur = with_categories(numeric_frame(rng, 3_000, 1, shift={0: 0.8}), rng,
                          p5=[0.15, 0.2, 0.25, 0.2, 0.2])
    cur["cat20"] = pd.Categorical(cur["cat20"])  # pandas category dtype is accepted

    s = check_drift(ref, cur, ["x0"], ["cat5", "cat20"])

    assert s.drifted_columns == ["x0", "cat5"]
    cat5 = s.column("cat5")
    assert (cat5.kind, cat5.method) == ("categorical", "jensenshannon")
    assert cat5.score >= 0.1 and cat5.drifted
    assert not s.column("cat20").drifted
    assert s.drift_share == pytest.approx(2 / 3) and s.dataset_drift  # 2/3 >= 0.5
    assert disagreements(s) == []


def test_no_drift_control_20_windows_from_the_reference_distribution():
    """20 consecutive 2,000-row windows of undrifted data against a 10,000-row reference:
    no dataset drift and no drifted column at the default thresholds."""
    rng = np.random.default_rng(13)
    ref = with_categories(numeric_frame(rng, 10_000, 6), rng)
    stream = with_categories(numeric_frame(rng, 40_000, 6), rng)
    numeric = [f"x{i}" for i in range(6)]
    worst = {c: 0.0 for c in [*numeric, "cat5", "cat20"]}
    alarms = []
    for w in range(20):
        window = stream.iloc[w * 2_000:(w + 1) * 2_000]
        s = check_drift(ref, window, numeric, ["cat5", "cat20"])
        if s.dataset_drift or s.drifted_columns:
            alarms.append((w, s.drifted_columns))
        for c in s.columns:
            worst[c.column] = max(worst[c.column], c.score)
        assert disagreements(s) == []
    assert alarms == [], f"false alarms: {alarms}; worst scores {worst}"
    assert max(worst.values()) < 0.09, worst  # some margin below the 0.1 threshold


def test_prediction_drift_is_reported_but_not_counted_in_the_share():
    rng = np.random.default_rng(14)
    ref = numeric_frame(rng, 8_000, 3)
    cur = numeric_frame(rng, 4_000, 3)
    ref["score"] = rng.normal(0.3, 0.1, len(ref))
    cur["score"] = rng.normal(0.38, 0.1, len(cur))  # 0.8 std higher
    ref["label"] = rng.choice(["no", "yes"], len(ref), p=[0.8, 0.2])
    cur["label"] = rng.choice(["no", "yes"], len(cur), p=[0.5, 0.5])

    s = check_drift(ref, cur, ["x0", "x1", "x2"], [], prediction="score")
    assert s.prediction_drift is not None and s.prediction_drift.drifted
    assert (s.prediction_drift.column, s.prediction_drift.method) == ("score", "wasserstein")
    assert s.drifted_columns == [] and not s.dataset_drift
    assert [c.column for c in s.columns] == ["x0", "x1", "x2"]

    s = check_drift(ref, cur, ["x0"], [], prediction="label", prediction_kind="categorical",
                    thresholds={"label": 0.5})
    assert s.prediction_drift == ColumnDrift("label", "categorical", "jensenshannon",
                                             s.prediction_drift.score, 0.5, False)
    assert 0.1 < s.prediction_drift.score < 0.5  # drifted at the default, not at 0.5


def test_p_value_methods_drift_when_p_is_below_the_threshold():
    rng = np.random.default_rng(15)
    ref = with_categories(numeric_frame(rng, 5_000, 2), rng)
    cur = with_categories(numeric_frame(rng, 2_000, 2, shift={1: 0.5}), rng,
                          p5=[0.2, 0.2, 0.2, 0.2, 0.2])
    s = check_drift(ref, cur, ["x0", "x1"], ["cat5"], numeric_method="ks",
                    numeric_threshold=0.01, categorical_method="chisquare",
                    categorical_threshold=0.01)
    assert s.drifted_columns == ["x1", "cat5"]
    for c in s.columns:
        assert c.drifted == (c.score < c.threshold) and c.rule == "p < 0.01"
    assert s.column("x0").score > 0.01
    assert disagreements(s) == []


def test_large_frames_are_sampled_with_a_seed():
    rng = np.random.default_rng(16)
    ref = numeric_frame(rng, 30_000, 2)
    cur = numeric_frame(rng, 12_000, 2, shift={0: 0.6})
    a = check_drift(ref, cur, ["x0", "x1"], [], max_rows=5_000, seed=3)
    b = check_drift(ref, cur, ["x0", "x1"], [], max_rows=5_000, seed=3)
    assert (a.reference_sampled_rows, a.current_sampled_rows) == (5_000, 5_000)
    assert (a.reference_rows, a.current_rows) == (30_000, 12_000) and a.sampled
    assert any("sample" in n and "seed 3" in n for n in a.notes)
    assert [c.score for c in a.columns] == [c.score for c in b.columns]  # reproducible
    assert a.drifted_columns == ["x0"]
    full = check_drift(ref, cur, ["x0", "x1"], [], max_rows=None)
    assert not full.sampled and full.current_sampled_rows == 12_000
    assert abs(full.column("x0").score - a.column("x0").score) < 0.05


def test_many_categories_on_small_windows_are_flagged_as_chance_level():
    rng = np.random.default_rng(17)
    levels = [f"v{i}" for i in range(200)]
    ref = pd.DataFrame({"city": rng.choice(levels, 10_000)})
    cur = pd.DataFrame({"city": rng.choice(levels, 2_000)})  # same distribution
    s = check_drift(ref, cur, [], ["city"])
    assert s.column("city").score > 0.1  # Jensen-Shannon's small-sample bias alone
    assert any("city" in n and "by chance" in n for n in s.notes)


@pytest.fixture(scope="module")
def frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(18)
    ref = with_categories(numeric_frame(rng, 200, 2), rng)
    return ref, ref.copy()


@pytest.mark.parametrize("change, kwargs, message", [
    (lambda r, c: (r.iloc[:0], c), {}, "reference data is empty"),
    (lambda r, c: (r, c.iloc[:0]), {}, "current data is empty"),
    (lambda r, c: (r, c.drop(columns=["x1"])), {}, "current data lacks column(s) ['x1']"),
    (lambda r, c: (r.drop(columns=["cat5"]), c), {}, "reference data lacks column(s) ['cat5']"),
    (lambda r, c: (r, c), {"prediction": "score"}, "lacks column(s) ['score']"),
    (lambda r, c: (r, c.assign(x0="n/a")), {}, "numeric column 'x0' in the current data has "
     "non-numeric values, e.g. 'n/a'"),
    (lambda r, c: (r.assign(x1=r["x1"].astype(str)), c), {}, "numeric column 'x1' in the "
     "reference data has numbers stored as text"),
    (lambda r, c: (r, c.assign(x0=np.nan)), {}, "numeric column 'x0' has no finite values"),
    (lambda r, c: (r, c.assign(cat5=None)), {}, "categorical column 'cat5' has only missing"),
    (lambda r, c: (r, c), {"numeric_method": "chisquare"}, "'chisquare' does not apply to numeric"),
    (lambda r, c: (r, c), {"categorical_method": "wasserstein"}, "does not apply to categorical"),
    (lambda r, c: (r, c), {"numeric_method": "bogus"}, "unknown numeric drift method 'bogus'"),
    (lambda r, c: (r, c), {"thresholds": {"x9": 0.2}}, "not checked: ['x9']"),
    (lambda r, c: (r, c), {"numeric_threshold": -1}, "positive number"),
    (lambda r, c: (r, c), {"max_rows": 0}, "max_rows"),
])
def test_bad_inputs_raise_drift_error(frames, change, kwargs, message):
    ref, cur = change(*frames)
    with pytest.raises(DriftError) as err:
        check_drift(ref, cur, ["x0", "x1"], ["cat5"], **kwargs)
    assert message in str(err.value)
    assert isinstance(err.value, ValueError)


def test_column_lists_must_be_disjoint_and_non_empty(frames):
    ref, cur = frames
    with pytest.raises(DriftError, match="more than once"):
        check_drift(ref, cur, ["x0"], ["x0"])
    with pytest.raises(DriftError, match="no feature columns"):
        check_drift(ref, cur, [], [])
