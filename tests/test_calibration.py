"""Calibrated drift thresholds (tasks/monitoring/calibration.py) on synthetic data with known answers.

Pure functions, no Prefect. The statistics are checked once against Evidently's own scores
(through `tasks.monitoring.drift.check_drift`); the false-alarm tests then use them directly, so 200
windows cost seconds.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from regrow.configs.schema import parse_config
from regrow.tasks.monitoring.calibration import (
    Calibration,
    CalibrationError,
    calibrate,
    jensenshannon,
    jensenshannon_null,
    normed_wasserstein,
    resolve_thresholds,
    wasserstein_null,
)
from tests.helpers import BINARY_CONFIG, merge

METHODS = {"numeric": "wasserstein", "categorical": "jensenshannon"}
LEVELS200 = np.array([f"v{i:03d}" for i in range(200)], dtype=object)
P200 = 1 / np.arange(1, 201) ** 1.1
P200 /= P200.sum()
P5 = np.array([0.4, 0.25, 0.15, 0.12, 0.08])

# Ten columns: six numeric (two heavy-tailed: lognormal sigma 1.2 and Student t with 3
# degrees of freedom; one discrete), four categorical (one with 200 levels).
GENERATORS = {
    "normal": lambda rng, n: rng.normal(10, 2, n),
    "lognormal": lambda rng, n: rng.lognormal(0, 1.2, n),
    "student_t3": lambda rng, n: rng.standard_t(3, n),
    "uniform": lambda rng, n: rng.uniform(-1, 1, n),
    "counts": lambda rng, n: rng.poisson(4, n).astype(float),
    "bimodal": lambda rng, n: np.where(rng.random(n) < 0.3, rng.normal(-2, 1, n),
                                       rng.normal(3, 1, n)),
    "cat5": lambda rng, n: np.array(list("abcde"), dtype=object)[rng.choice(5, n, p=P5)],
    "cat3": lambda rng, n: np.array(list("xyz"), dtype=object)[rng.choice(3, n, p=[.5, .3, .2])],
    "cat12": lambda rng, n: np.array([f"p{i}" for i in range(12)], dtype=object)[
        rng.choice(12, n)],
    "cat200": lambda rng, n: LEVELS200[rng.choice(200, n, p=P200)],
}
KINDS = {c: ("categorical" if c.startswith("cat") else "numeric") for c in GENERATORS}


def draw(seed: int, n: int) -> pd.DataFrame:
    """`n` rows of the ten columns from one seed (the same distribution for every seed)."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({c: g(rng, n) for c, g in GENERATORS.items()})


def score(ref: pd.DataFrame, window: pd.DataFrame, col: str) -> float:
    f = normed_wasserstein if KINDS[col] == "numeric" else jensenshannon
    return f(ref[col], window[col])


def scores(ref: pd.DataFrame, window: pd.DataFrame) -> dict[str, float]:
    return {c: score(ref, window, c) for c in KINDS}


def flagged(ref: pd.DataFrame, window: pd.DataFrame, thresholds: dict[str, float]) -> list[str]:
    return [c for c, v in scores(ref, window).items() if v >= thresholds[c]]


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return draw(1, 20_000)


# ----------------------------------------------------------------- the statistics are Evidently's

def test_statistics_equal_evidentlys_scores():
    from regrow.tasks.monitoring.drift import check_drift

    rng = np.random.default_rng(3)
    ref, cur = draw(4, 3000), draw(5, 700)
    cur["lognormal"] = cur["lognormal"] * 1.3  # some real differences too
    cur.loc[rng.choice(700, 40, replace=False), "normal"] = np.nan
    ref.loc[rng.choice(3000, 30, replace=False), "cat5"] = None
    cur.loc[:5, "cat12"] = "unseen"
    numeric = [c for c, k in KINDS.items() if k == "numeric"]
    categorical = [c for c, k in KINDS.items() if k == "categorical"]
    s = check_drift(ref, cur, numeric, categorical)
    for col in KINDS:
        assert score(ref, cur, col) == pytest.approx(s.column(col).score, abs=1e-9), col


def test_split_nulls_are_the_statistic_of_the_split():
    """Each simulated distance equals the statistic of the rest of the reference against the
    drawn window (checked on draws without a repeated row)."""
    ref = draw(6, 5000)
    x = np.sort(ref["lognormal"].to_numpy())
    rows, checked = 40, 0
    null = wasserstein_null(x, rows, 50, np.random.default_rng(9))
    rng = np.random.default_rng(9)
    gaps = np.cumsum(rng.standard_exponential((50, rows + 1)), axis=1)
    ranks = np.minimum((gaps[:, :-1] / gaps[:, -1:] * len(x)).astype(int), len(x) - 1)
    for i in range(50):
        if len(set(ranks[i])) < rows:
            continue
        rest = np.delete(x, ranks[i])
        fpc = math.sqrt((len(x) - rows) / (len(x) - 1))  # documented with-replacement factor
        assert null[i] == pytest.approx(normed_wasserstein(rest, x[ranks[i]]) * fpc, abs=1e-9)
        checked += 1
    assert checked >= 40

    cats = ref["cat12"]
    counts = cats.value_counts()
    js = jensenshannon_null(cats, 300, 20, np.random.default_rng(2))
    windows = np.random.default_rng(2).multivariate_hypergeometric(
        counts.to_numpy(dtype=np.int64), 300, size=20)
    for i in range(20):
        win = np.repeat(counts.index.to_numpy(), windows[i])
        rest = np.repeat(counts.index.to_numpy(), counts.to_numpy() - windows[i])
        assert js[i] == pytest.approx(jensenshannon(rest, win), abs=1e-9)


# ----------------------------------------------------------------- false alarms and power

ALPHA = 0.01
WINDOWS = 200
# Three binomial standard deviations of a rate ALPHA measured on WINDOWS windows (0.021).
MARGIN = 3 * math.sqrt(ALPHA * (1 - ALPHA) / WINDOWS)


@pytest.mark.parametrize("rows", [500, 1000])
def test_false_alarm_rate_of_undrifted_windows_is_at_most_alpha(reference, rows):
    """200 fresh windows from the reference's distribution (new seeds): the share of windows
    flagging any of the 10 columns stays within alpha + 3 sigma; fixed 0.1 flags most."""
    cal = calibrate(reference, KINDS, METHODS, window_rows=rows, alpha=ALPHA, seed=7)
    assert cal.corrected_over == 10 and cal.level == pytest.approx(ALPHA / 10)
    assert set(cal.columns) == set(KINDS) and not cal.skipped
    thresholds = cal.thresholds(rows)
    alarms = fixed_alarms = 0
    for w in range(WINDOWS):
        got = scores(reference, draw(10_000 + rows + w, rows))
        alarms += any(v >= thresholds[c] for c, v in got.items())
        fixed_alarms += any(v >= 0.1 for v in got.values())
    assert alarms / WINDOWS <= ALPHA + MARGIN, (alarms, thresholds)
    # The 200-level column alone scores ~0.2 by chance at these sizes.
    assert fixed_alarms / WINDOWS > 0.9
    assert thresholds["cat200"] > 0.2


def test_real_shift_in_2_of_10_columns_is_detected(reference):
    cal = calibrate(reference, KINDS, METHODS, window_rows=1000, alpha=ALPHA, seed=7)
    thresholds = cal.thresholds(1000)
    hits: dict[str, int] = dict.fromkeys(KINDS, 0)
    for w in range(20):
        window = draw(50_000 + w, 1000)
        window["normal"] = window["normal"] + 0.4 * 2  # 0.4 standard deviations
        rng = np.random.default_rng(w)
        window["cat5"] = np.array(list("abcde"), dtype=object)[
            rng.choice(5, 1000, p=[0.25, 0.25, 0.2, 0.15, 0.15])]
        for c in flagged(reference, window, thresholds):
            hits[c] += 1
    assert hits["normal"] == 20 and hits["cat5"] == 20
    assert sum(v for c, v in hits.items() if c not in {"normal", "cat5"}) <= 1


def test_negligible_shift_on_a_huge_window_is_held_by_the_floor(reference):
    """A 0.03-sd shift in a 100,000-row window is real but negligible: the calibrated null
    alone would flag it; the effect-size floor (0.05) does not."""
    cols = {"normal": "numeric"}
    bare = calibrate(reference, cols, METHODS, window_rows=100_000, alpha=ALPHA,
                     min_effect={"wasserstein": 0.0}, seed=7)
    floored = calibrate(reference, cols, METHODS, window_rows=100_000, alpha=ALPHA, seed=7)
    window = draw(77, 100_000)
    window["normal"] = window["normal"] + 0.03 * 2
    distance = normed_wasserstein(reference["normal"], window["normal"])
    assert bare.thresholds(100_000)["normal"] < distance < 0.05
    assert floored.thresholds(100_000)["normal"] == 0.05
    # Undrifted, the same huge window stays below both.
    assert normed_wasserstein(reference["normal"], draw(78, 100_000)["normal"]) \
        < bare.thresholds(100_000)["normal"]


def test_thresholds_rescale_with_the_window_and_bad_settings_fail(reference):
    cal = calibrate(reference, {"normal": "numeric", "cat200": "categorical"}, METHODS,
                    window_rows=1000, min_effect={"wasserstein": 0.0, "jensenshannon": 0.0})
    small, large = cal.thresholds(500), cal.thresholds(5000)
    assert small["normal"] > cal.columns["normal"].threshold > large["normal"]
    assert Calibration.from_dict(cal.to_dict()) == cal
    with pytest.raises(CalibrationError, match="alpha"):
        calibrate(reference, KINDS, METHODS, window_rows=1000, alpha=1.5)
    psi = calibrate(reference, {"normal": "numeric"}, {"numeric": "psi"}, window_rows=1000)
    assert psi.columns == {} and "not calibrated" in psi.skipped["normal"]


# ----------------------------------------------------------------- thresholds a check uses

def _stored(reference) -> dict:
    return calibrate(reference, {"normal": "numeric", "cat5": "categorical"}, METHODS,
                     window_rows=1000, seed=7).to_dict()


def test_resolve_explicit_wins_old_reference_falls_back_and_method_changes(reference):
    stored = _stored(reference)
    checked = {"normal": "numeric", "cat5": "categorical"}
    th, notes = resolve_thresholds("calibrated", stored, {"cat5": 0.3}, checked, METHODS, 1000)
    assert th["cat5"] == 0.3 and th["normal"] == pytest.approx(
        Calibration.from_dict(stored).columns["normal"].threshold)
    assert any("explicit thresholds win" in n for n in notes)

    th, notes = resolve_thresholds("calibrated", None, {}, checked, METHODS, 1000)
    assert th == {} and "no calibrated thresholds" in notes[0]  # fixed defaults, with a note

    th, notes = resolve_thresholds("fixed", stored, {"normal": 0.2}, checked, METHODS, 1000)
    assert th == {"normal": 0.2} and notes == []

    th, notes = resolve_thresholds("calibrated", stored, {}, checked,
                                   {"numeric": "ks", "categorical": "jensenshannon"}, 1000)
    assert "normal" not in th and "cat5" in th
    assert any("calibrated for wasserstein, checked with ks" in n for n in notes)

    th, _ = resolve_thresholds("calibrated", stored, {}, checked, METHODS, 1000,
                               min_effect={"wasserstein": 0.5})
    assert th["normal"] == 0.5


def test_config_keys_and_errors():
    cfg = parse_config(BINARY_CONFIG)
    d = cfg.monitoring.drift
    assert (d.thresholds_mode, d.alpha, d.min_effect) == (
        "calibrated", 0.01, {"wasserstein": 0.05, "jensenshannon": 0.05})
    partial = parse_config(merge(BINARY_CONFIG, {"monitoring": {"drift": {
        "min_effect": {"wasserstein": 0.02}}}}))
    assert partial.monitoring.drift.min_effect == {"wasserstein": 0.02, "jensenshannon": 0.05}
    from regrow.configs.schema import ConfigError

    for bad, needle in [({"min_effect": {"psi": 0.1}}, "unknown method"),
                        ({"alpha": 0}, "alpha"), ({"thresholds_mode": "auto"}, "thresholds_mode")]:
        with pytest.raises(ConfigError, match=needle):
            parse_config(merge(BINARY_CONFIG, {"monitoring": {"drift": bad}}))
