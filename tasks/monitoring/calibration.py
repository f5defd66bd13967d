"""Drift thresholds calibrated from the reference: a resampled null per column.

A fixed distance threshold (Evidently's normed Wasserstein 0.1, Jensen-Shannon 0.1) means a
different false-alarm rate for every column shape, window size and category count: small
windows, heavy tails and many categories score high on undrifted data. Here the threshold of
each checked column is instead the distance that undrifted windows of the monitored size
exceed with a chosen small probability:

1. split the reference ``draws`` times at random into a window of m' rows and the rest, and
   score the rest against the window with exactly the statistic the drift check uses
   (`normed_wasserstein`, `jensenshannon`; both equal Evidently 0.7.23's to 1e-9); splitting
   (not resampling against the whole reference) lets a window hold values beyond the rest's
   range and categories it lacks, as fresh windows of heavy-tailed or many-valued columns do;
2. take the upper ``alpha / K`` quantile (Bonferroni over the K checked columns: features
   plus the prediction), so an undrifted window flags any column with probability at most
   about ``alpha``; that quantile lies beyond what the draws see, so it comes from an
   exponential tail fitted to the top 10% of draws (peaks over a threshold with shape 0; for
   the light, Gaussian-like tails of these distances it errs high: fewer false alarms);
3. rescale from the simulated sizes (m' vs n - m') to the real ones (window m vs reference
   n): both statistics' chance values shrink like sqrt(1/m + 1/n). m' is at most a tenth of
   the reference, and at most ``MAX_SIMULATED_ROWS`` for Wasserstein (cost);
4. never go below ``min_effect`` of the method, so a very large window does not alarm on a
   shift too small to matter.

Plain numpy/scipy, no Evidently import (it takes seconds).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from scipy.special import rel_entr

from regrow.configs.schema import CALIBRATED_MIN_EFFECT as DEFAULT_MIN_EFFECT

WASSERSTEIN, JENSENSHANNON = "wasserstein", "jensenshannon"
NUMERIC, CATEGORICAL = "numeric", "categorical"
# (method, column kind) pairs whose null this module simulates; any other method (p-values,
# PSI, KL, binned Jensen-Shannon on numbers) keeps its fixed threshold.
CALIBRATED = {(WASSERSTEIN, NUMERIC), (JENSENSHANNON, CATEGORICAL)}
DRAWS = 1000
TAIL_FRACTION = 0.1
# Wasserstein windows larger than this are simulated at this size and scaled by the
# sqrt(1/m + 1/n) law (cost: draws x rows per column).
MAX_SIMULATED_ROWS = 500
MIN_VALUES = 50  # a reference column with fewer usable values keeps the fixed threshold


class CalibrationError(ValueError):
    """Calibration was asked for with unusable settings (alpha, window size)."""


# --------------------------------------------------------------------------- the statistics

def normed_wasserstein(reference: np.ndarray, current: np.ndarray) -> float:
    """Evidently's ``wasserstein`` score: the first Wasserstein distance over the reference's
    population standard deviation (at least 0.001). Missing and infinite values are left out,
    as Evidently does."""
    ref, cur = _finite(reference), _finite(current)
    return float(stats.wasserstein_distance(ref, cur) / max(float(np.std(ref)), 0.001))


def jensenshannon(reference: Any, current: Any) -> float:
    """Evidently's ``jensenshannon`` score for a categorical column: the Jensen-Shannon
    distance (natural log) between the category shares of both sides, over the union of the
    categories seen; missing values are left out."""
    ref, cur = pd.Series(reference).dropna(), pd.Series(current).dropna()
    keys = list(pd.unique(pd.concat([ref, cur], ignore_index=True)))
    p = ref.value_counts().reindex(keys, fill_value=0).to_numpy(dtype=float) / len(ref)
    q = cur.value_counts().reindex(keys, fill_value=0).to_numpy(dtype=float) / len(cur)
    return float(_js_rows(p[None, :], q[None, :])[0])


def _finite(values: Any) -> np.ndarray:
    arr = np.asarray(pd.to_numeric(pd.Series(values), errors="coerce"), dtype=float)
    return arr[np.isfinite(arr)]


def _js_rows(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen-Shannon distance per row, as ``scipy.spatial.distance.jensenshannon``."""
    p = p / p.sum(axis=1, keepdims=True)
    q = q / q.sum(axis=1, keepdims=True)
    m = (p + q) / 2.0
    js = rel_entr(p, m).sum(axis=1) + rel_entr(q, m).sum(axis=1)
    return np.sqrt(np.maximum(js, 0.0) / 2.0)


# --------------------------------------------------------------------------- null distributions

def wasserstein_null(reference: np.ndarray, rows: int, draws: int,
                     rng: np.random.Generator) -> np.ndarray:
    """Normed Wasserstein distances of `draws` random splits of the reference into a window
    B of `rows` rows and the rest A, as the drift check would score A against B.

    Splitting (rather than comparing a resample with the whole reference) lets a window hold
    values beyond the rest's range, as a fresh window of a heavy-tailed column does. With
    F_n, F_A, G_B the empirical CDFs, F_A - G_B = n / (n - m) * (F_n - G_B), so the distance
    is n / (n - m) * W(F_n, G_B) over the standard deviation of A.

    W(F_n, G_B) in O(rows) per draw: both CDFs jump only at reference values, so on the gap
    after the i-th smallest value (width d_i) F_n is (i+1)/n and G_B is c_i/m, with c_i the
    number of drawn ranks <= i. The sum of |(i+1)/n - c_i/m| d_i is constant in c between
    consecutive drawn ranks; prefix sums P0 of d_i and P1 of (i+1)/n * d_i give each run in
    closed form, split at s_k, where (i+1)/n crosses c/m. Summed over the runs:

        W = sum_{k=1}^{m-1} 2 (k/m P0[s_k] - P1[s_k]) + sum_{j=1}^{m} (2 P1[r_j]
            - (2j-1)/m P0[r_j]) + P0[n-1] - P1[n-1]

    with r_1 <= ... <= r_m the drawn ranks, drawn already sorted (uniform order statistics
    from cumulated exponential gaps). Ranks are drawn with replacement; the finite-population
    factor sqrt((n - m) / (n - 1)) turns the spread into that of a split (keep m << n).
    """
    x = np.sort(_finite(reference))
    n = len(x)
    if not 0 < rows < n:
        raise CalibrationError(f"a window of {rows} rows cannot be split off {n} values")
    centred = x - x.mean()  # sums of squares without cancellation
    total, total_sq = centred.sum(), (centred ** 2).sum()
    d = np.diff(x)  # d[i] = x[i+1] - x[i], i = 0..n-2
    p0 = np.concatenate([[0.0], np.cumsum(d)])  # p0[i] = sum_{j<i} d_j, i = 0..n-1
    p1 = np.concatenate([[0.0], np.cumsum(np.arange(1, n) / n * d)])
    k = np.arange(1, rows)
    t = k / rows
    cross = -(-(k * n) // rows) - 1  # first i with (i+1)/n >= k/m
    weight = (2 * np.arange(1, rows + 1) - 1) / rows
    const = p0[-1] - p1[-1]
    rest = n - rows
    factor = n / rest * math.sqrt(rest / max(n - 1, 1))
    out = np.empty(draws)
    chunk = max(1, 1_000_000 // rows)  # bounded memory
    for start in range(0, draws, chunk):
        b = min(chunk, draws - start)
        gaps = np.cumsum(rng.standard_exponential((b, rows + 1)), axis=1)
        ranks = (gaps[:, :-1] / gaps[:, -1:] * n).astype(np.intp)  # sorted, uniform on 0..n-1
        np.minimum(ranks, n - 1, out=ranks)
        s = np.minimum(np.maximum(cross, ranks[:, :-1]), ranks[:, 1:])
        runs = 2 * (p0[s] @ t - p1[s].sum(axis=1))
        points = 2 * p1[ranks].sum(axis=1) - p0[ranks] @ weight
        drawn = centred[ranks]
        mean_a = (total - drawn.sum(axis=1)) / rest
        var_a = np.maximum((total_sq - (drawn ** 2).sum(axis=1)) / rest - mean_a ** 2, 0.0)
        out[start:start + b] = factor * (runs + points + const) / np.maximum(np.sqrt(var_a),
                                                                             0.001)
    return out


def jensenshannon_null(reference: Any, rows: int, draws: int,
                       rng: np.random.Generator) -> np.ndarray:
    """Jensen-Shannon distances of `draws` random splits of the reference into a window of
    `rows` rows (drawn without replacement: multivariate hypergeometric category counts) and
    the rest, as the drift check would score the rest against the window."""
    counts = pd.Series(reference).dropna().value_counts().to_numpy(dtype=np.int64)
    n = int(counts.sum())
    if not 0 < rows < n:
        raise CalibrationError(f"a window of {rows} rows cannot be split off {n} values")
    window = rng.multivariate_hypergeometric(counts, rows, size=draws)
    return _js_rows((counts - window).astype(float), window.astype(float))


def tail_quantile(draws: np.ndarray, level: float, tail: float = TAIL_FRACTION) -> float:
    """The upper `level` quantile of the distribution the draws come from.

    Inside the draws' reach (level * len >= 10 exceedances) the empirical quantile; beyond
    it, an exponential tail fitted over the top `tail` share: u = the (1 - tail) quantile,
    beta = mean excess over u, quantile = u + beta * ln(tail / level). The larger of the two
    estimates is kept where both exist.
    """
    values = np.sort(np.asarray(draws, dtype=float))
    u = float(np.quantile(values, 1 - tail))
    excess = values[values > u] - u
    beta = float(excess.mean()) if len(excess) else 0.0
    fitted = u + beta * math.log(tail / level) if level < tail else float(
        np.quantile(values, 1 - level))
    if level * len(values) >= 10:
        return max(fitted, float(np.quantile(values, 1 - level)))
    return fitted


# --------------------------------------------------------------------------- calibration

@dataclass(frozen=True)
class ColumnCalibration:
    """One column's calibrated threshold.

    Attributes:
        column, kind, method: what is checked and how.
        null_quantile: the distance undrifted windows of `window_rows` rows exceed with
            probability `level` (two-sample, see the module doc).
        min_effect: the floor; threshold: max(null_quantile, min_effect).
        simulated_rows: rows per simulated window (m', see the module doc).
    """

    column: str
    kind: str
    method: str
    null_quantile: float
    min_effect: float
    threshold: float
    simulated_rows: int


@dataclass(frozen=True)
class Calibration:
    """Calibrated drift thresholds of one reference.

    Attributes:
        alpha: the window-level false-alarm rate aimed at; level: alpha / corrected_over,
            the per-column rate (Bonferroni); corrected_over: columns checked (features plus
            the prediction).
        window_rows: the window size calibrated for; window_basis: where it came from.
        reference_rows: rows per side the reference contributes (after `max_rows`).
        draws: simulated windows per column; tail: how the quantile was estimated.
        columns: per column; skipped: columns left on fixed thresholds, with why.
        seconds: time spent.
    """

    alpha: float
    level: float
    corrected_over: int
    window_rows: int
    window_basis: str
    reference_rows: int
    draws: int
    tail: str
    columns: dict[str, ColumnCalibration]
    skipped: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (stored in the reference's meta)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        """Rebuild from `to_dict()`."""
        cols = {k: ColumnCalibration(**v) for k, v in data["columns"].items()}
        return cls(**{**data, "columns": cols})

    def thresholds(self, window_rows: int,
                   min_effect: dict[str, float] | None = None) -> dict[str, float]:
        """Per-column thresholds for a window of `window_rows` rows.

        The null quantile is rescaled from the calibrated window size by the same
        sqrt(1/m + 1/n) law (longer windows: lower chance distances), then floored by
        `min_effect` per method (None or a method not named: the stored floor).
        """
        m = max(int(window_rows), 1)
        n = self.reference_rows
        scale = math.sqrt((1 / m + 1 / n) / (1 / self.window_rows + 1 / n))
        floors = min_effect or {}
        return {c: max(v.null_quantile * scale, float(floors.get(v.method, v.min_effect)))
                for c, v in self.columns.items()}


def calibrate(frame: pd.DataFrame, kinds: dict[str, str], methods: dict[str, str], *,
              window_rows: int, alpha: float = 0.01,
              min_effect: dict[str, float] | None = None, max_rows: int | None = None,
              draws: int = DRAWS, seed: int = 0, window_basis: str = "") -> Calibration:
    """Calibrate a threshold for every column in `kinds` from the reference `frame`.

    Args:
        frame: the reference rows.
        kinds: column -> ``numeric`` or ``categorical``, every column the drift check looks
            at (features and the prediction): the Bonferroni correction counts them all.
        methods: column kind -> the drift method the check uses for it.
        window_rows: the window size to calibrate for (each side is capped at `max_rows`).
        alpha: window-level false-alarm rate; min_effect: per-method floor.
        draws: simulated windows per column; seed: the random stream.

    Returns:
        The `Calibration`; columns whose method has no simulated null, or with no usable
        values, are listed in ``skipped`` (they keep fixed thresholds).

    Raises:
        CalibrationError: alpha outside (0, 1), window_rows < 1, draws < 100.
    """
    if not 0 < alpha < 1:
        raise CalibrationError(f"alpha must be in (0, 1), got {alpha!r}")
    if window_rows < 1:
        raise CalibrationError(f"window_rows must be positive, got {window_rows!r}")
    if draws < 100:
        raise CalibrationError(f"draws must be at least 100, got {draws!r}")
    started = time.perf_counter()
    floors = {**DEFAULT_MIN_EFFECT, **(min_effect or {})}
    k = max(len(kinds), 1)
    level = alpha / k
    cap = max_rows or max(len(frame), window_rows)
    m, n = min(window_rows, cap), min(len(frame), cap)
    rngs = dict(zip(kinds, (np.random.default_rng(s)
                            for s in np.random.SeedSequence(seed).spawn(len(kinds))), strict=True))
    columns: dict[str, ColumnCalibration] = {}
    skipped: dict[str, str] = {}
    for col, kind in kinds.items():
        method = methods[kind]
        if (method, kind) not in CALIBRATED:
            skipped[col] = f"{method} on {kind} columns is not calibrated"
            continue
        values = frame[col]
        usable = int(values.notna().sum()) if kind == CATEGORICAL else len(_finite(values))
        if usable < MIN_VALUES:
            skipped[col] = f"fewer than {MIN_VALUES} usable reference values"
            continue
        # A window carries missing values in the reference's proportion; they are left out.
        rows = max(1, round(m * usable / len(values)))
        ref_rows = min(usable, n)
        # Split off at most a tenth of the reference (and at most MAX_SIMULATED_ROWS rows for
        # Wasserstein, for cost); the result is rescaled to `rows` vs `ref_rows`.
        sim = max(1, min(rows, usable // 10))
        if method == WASSERSTEIN:
            sim = min(sim, MAX_SIMULATED_ROWS)
            null = wasserstein_null(values.to_numpy(), sim, draws, rngs[col])
        else:
            null = jensenshannon_null(values, sim, draws, rngs[col])
        scale = math.sqrt((1 / rows + 1 / ref_rows) / (1 / sim + 1 / (usable - sim)))
        q = tail_quantile(null, level) * scale
        floor = float(floors.get(method, 0.0))
        columns[col] = ColumnCalibration(col, kind, method, float(q), floor, max(q, floor), sim)
    return Calibration(alpha, level, k, m, window_basis, n, draws,
                       f"exponential tail over the top {TAIL_FRACTION:.0%} of draws",
                       columns, skipped, time.perf_counter() - started)


def resolve_thresholds(mode: str, calibration: dict[str, Any] | None, explicit: dict[str, float],
                       checked: dict[str, str], methods: dict[str, str], window_rows: int,
                       min_effect: dict[str, float] | None = None,
                       alpha: float | None = None) -> tuple[dict[str, float], list[str]]:
    """The per-column thresholds a drift check passes to `tasks.monitoring.drift.check_drift`.

    Explicit per-column thresholds always win. In ``calibrated`` mode every other checked
    column with a calibrated null gets it, rescaled to the window and floored by `min_effect`
    (the config's current floors; None: the stored ones); the rest use the fixed defaults.

    Args:
        mode: ``calibrated`` or ``fixed``.
        calibration: `Calibration.to_dict()` stored with the reference (None: built before
            calibration, or in fixed mode).
        explicit: column -> threshold from the config.
        checked: column -> kind, every column the check compares (features, prediction).
        methods: kind -> the drift method the check uses; a column calibrated for another
            method or kind (the config changed since) keeps the fixed threshold.
        window_rows: rows the current side compares (after any sampling cap).
        alpha: the config's alpha, to note a mismatch with the stored calibration.

    Returns:
        (column -> threshold for every column not left to the fixed defaults, notes).
    """
    thresholds = {c: v for c, v in explicit.items() if c in checked}
    if mode != "calibrated":
        return thresholds, []
    if not calibration:
        return thresholds, ["thresholds: fixed (numeric_threshold / categorical_threshold); "
                            "this version's reference has no calibrated thresholds (built "
                            "before calibration or in fixed mode): retrain to calibrate"]
    cal = Calibration.from_dict(calibration)
    calibrated = cal.thresholds(window_rows, min_effect)
    stale = [c for c in checked if c in cal.columns and (cal.columns[c].kind, cal.columns[c].method)
             != (checked[c], methods.get(checked[c]))]
    used = [c for c in checked if c not in thresholds and c in calibrated and c not in stale]
    thresholds.update({c: calibrated[c] for c in used})
    notes = [f"thresholds: calibrated for {len(used)} column(s) at alpha {cal.alpha:g} "
             f"(Bonferroni over {cal.corrected_over} columns; calibrated at {cal.window_rows} "
             f"rows, rescaled to {window_rows})"]
    fixed = [c for c in checked if c not in thresholds]
    if fixed:
        why = [f"{c} ({cal.skipped[c]})" if c in cal.skipped
               else f"{c} (calibrated for {cal.columns[c].method}, checked with "
                    f"{methods.get(checked[c])}: retrain to recalibrate)" if c in stale
               else c for c in fixed]
        notes.append(f"fixed thresholds for: {', '.join(why)}")
    overridden = sorted(c for c in explicit if c in checked and c in cal.columns)
    if overridden:
        notes.append(f"explicit thresholds win over calibrated ones for {overridden}")
    if alpha is not None and not math.isclose(alpha, cal.alpha):
        notes.append(f"the config's alpha {alpha:g} differs from the calibrated "
                     f"{cal.alpha:g}: retrain to recalibrate")
    return thresholds, notes
