"""Evidently adapter: feature and prediction drift between a reference and a current window.

This is the only module that imports evidently (inside functions: the import alone takes
about 8 s). It returns a `DriftSummary` in plain types.

Evidently 0.7's current API is used (``evidently.Report`` with one ``ValueDrift`` metric per
column, an explicit ``DataDefinition``), not ``evidently.legacy``. Three things keep it fast
on large windows, where ``DataDriftPreset`` takes minutes:

- each column's drift is computed once (the preset computes it three times: for
  ``DriftedColumnsCount``, for each ``ValueDrift`` and again to render its table); the drifted
  count and share are derived here from the per-column results;
- the data definition is explicit, so Evidently infers no types (inference calls
  ``nunique()`` on every column);
- each side is reduced to a seeded random sample of at most ``max_rows`` rows before
  Evidently sees it (see `check_drift`).
"""

from __future__ import annotations

import math
import numbers
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

NUMERIC, CATEGORICAL = "numeric", "categorical"
ColumnKind = Literal["numeric", "categorical"]

DISTANCE, P_VALUE = "distance", "p_value"

# Evidently's stat tests that this adapter accepts: whether the score is a distance (drift
# when score >= threshold) or a p-value (drift when p < threshold), and the column kinds it
# applies to. Names are Evidently's own.
METHODS: dict[str, tuple[str, frozenset[str]]] = {
    "wasserstein": (DISTANCE, frozenset({NUMERIC})),  # normed by the reference's std
    "ed": (DISTANCE, frozenset({NUMERIC})),  # energy distance
    "psi": (DISTANCE, frozenset({NUMERIC, CATEGORICAL})),
    "jensenshannon": (DISTANCE, frozenset({NUMERIC, CATEGORICAL})),
    "hellinger": (DISTANCE, frozenset({NUMERIC, CATEGORICAL})),
    "kl_div": (DISTANCE, frozenset({NUMERIC, CATEGORICAL})),
    "ks": (P_VALUE, frozenset({NUMERIC})),
    "t_test": (P_VALUE, frozenset({NUMERIC})),
    "mannw": (P_VALUE, frozenset({NUMERIC})),
    "anderson": (P_VALUE, frozenset({NUMERIC})),
    "cramer_von_mises": (P_VALUE, frozenset({NUMERIC})),
    "chisquare": (P_VALUE, frozenset({CATEGORICAL})),
    "z": (P_VALUE, frozenset({CATEGORICAL})),
    "g_test": (P_VALUE, frozenset({CATEGORICAL})),
    "fisher_exact": (P_VALUE, frozenset({CATEGORICAL})),
}


class DriftError(ValueError):
    """The inputs of a drift check cannot be compared (empty, missing columns, bad values)."""


@dataclass(frozen=True)
class ColumnDrift:
    """One column's drift verdict.

    Attributes:
        column: the column name; kind: ``numeric`` or ``categorical``.
        method: Evidently's stat test name (``wasserstein``, ``ks``, ``psi``, ...).
        score: the distance, or the p-value for p-value methods (see `rule`).
        threshold: the bound the score is compared with.
        drifted: distances drift when score >= threshold, p-values when p < threshold.
    """

    column: str
    kind: str
    method: str
    score: float
    threshold: float
    drifted: bool

    @property
    def rule(self) -> str:
        """The comparison that decides `drifted`, e.g. ``score >= 0.1`` or ``p < 0.05``."""
        if METHODS.get(self.method, (DISTANCE,))[0] == P_VALUE:
            return f"p < {self.threshold:g}"
        return f"score >= {self.threshold:g}"


@dataclass(frozen=True)
class DriftSummary:
    """The outcome of one drift check.

    Attributes:
        reference_rows, current_rows: rows in the frames as given.
        reference_sampled_rows, current_sampled_rows: rows actually compared per side after
            sampling (equal to the given rows when a side has at most `max_rows`).
        max_rows, seed: the sampling cap (None: no cap) and the seed of the random sample.
        columns: every feature's verdict, in the order numeric then categorical as listed.
        drifted_columns: names of the drifted features (the prediction is not counted).
        drift_share: drifted features / features; drift_share_threshold: the share at which
            the dataset counts as drifted; dataset_drift: drift_share >= drift_share_threshold.
        prediction_drift: the prediction column's verdict, when one was checked.
        performance: model quality on the current window (not computed yet: None).
        report_path: the Evidently HTML report, when one was written.
        seconds: wall time of the check, excluding the one-off evidently import.
        notes: anything a reader should know (sampling, disagreements with Evidently's own
            per-column tests, which are cross-checked on every run).
        evidently_version: the library version that computed the scores.
    """

    reference_rows: int
    current_rows: int
    reference_sampled_rows: int
    current_sampled_rows: int
    max_rows: int | None
    seed: int
    columns: list[ColumnDrift]
    drifted_columns: list[str]
    drift_share: float
    drift_share_threshold: float
    dataset_drift: bool
    prediction_drift: ColumnDrift | None = None
    performance: dict[str, Any] | None = None
    report_path: str | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    evidently_version: str = ""

    @property
    def sampled(self) -> bool:
        """True when either side was reduced to a sample."""
        return (self.reference_sampled_rows < self.reference_rows
                or self.current_sampled_rows < self.current_rows)

    def column(self, name: str) -> ColumnDrift:
        """The verdict for one feature (or the prediction) by name.

        Raises:
            KeyError: no such column was checked.
        """
        for c in [*self.columns, *([self.prediction_drift] if self.prediction_drift else [])]:
            if c.column == name:
                return c
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (NaN -> None)."""
        def clean(v: Any) -> Any:
            return None if isinstance(v, float) and math.isnan(v) else v
        d = asdict(self)
        d["columns"] = [{k: clean(v) for k, v in c.items()} for c in d["columns"]]
        if d["prediction_drift"] is not None:
            d["prediction_drift"] = {k: clean(v) for k, v in d["prediction_drift"].items()}
        return d

    def to_markdown(self) -> str:
        """The verdict and a table of every checked column."""
        verdict = "DRIFT" if self.dataset_drift else "no dataset drift"
        head = (f"**{verdict}**: {len(self.drifted_columns)}/{len(self.columns)} features "
                f"drifted (share {self.drift_share:.2f}, threshold "
                f"{self.drift_share_threshold:.2f}); {self.reference_sampled_rows} reference vs "
                f"{self.current_sampled_rows} current rows")
        if self.sampled:
            head += (f" (sampled from {self.reference_rows} / {self.current_rows}, "
                     f"seed {self.seed})")
        rows = ["| column | kind | method | score | rule | drifted |", "|---|---|---|---|---|---|"]
        checked = [*self.columns, *([self.prediction_drift] if self.prediction_drift else [])]
        for c in checked:
            name = f"{c.column} (prediction)" if c is self.prediction_drift else c.column
            rows.append(f"| {name} | {c.kind} | {c.method} | {c.score:.4g} | {c.rule} | "
                        f"{'**yes**' if c.drifted else 'no'} |")
        return head + "\n\n" + "\n".join(rows)


def _verdict(method: str, score: float, threshold: float) -> bool:
    if score is None or math.isnan(score):
        return False
    if METHODS[method][0] == P_VALUE:
        return score < threshold
    return score >= threshold


def _sample(frame: pd.DataFrame, max_rows: int | None, rng: np.random.Generator) -> pd.DataFrame:
    """At most `max_rows` rows drawn without replacement, kept in their original order."""
    if max_rows is None or len(frame) <= max_rows:
        return frame
    idx = np.sort(rng.choice(len(frame), size=max_rows, replace=False))
    return frame.iloc[idx]


_NUMERIC_OBJECT_KINDS = {"integer", "floating", "mixed-integer-float", "decimal", "boolean",
                         "empty"}


def _numeric_problem(series: pd.Series) -> str | None:
    """Why a column cannot be read as numbers (None when it can)."""
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return None
    if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_complex_dtype(dtype):
        return None
    is_object = pd.api.types.is_object_dtype(dtype)
    if is_object and pd.api.types.infer_dtype(series, skipna=True) in _NUMERIC_OBJECT_KINDS:
        return None
    if is_object or pd.api.types.is_string_dtype(dtype):
        bad = series[pd.to_numeric(series, errors="coerce").isna() & series.notna()]
        if bad.empty:  # every value parses, but they are strings
            examples = ", ".join(repr(v) for v in pd.unique(series.dropna())[:3])
            return f"numbers stored as text, e.g. {examples} (convert the column first)"
        examples = ", ".join(repr(v) for v in pd.unique(bad)[:3])
        return f"non-numeric values, e.g. {examples}"
    return f"dtype {dtype} is not numeric"


def _check_inputs(reference: pd.DataFrame, current: pd.DataFrame, numeric: list[str],
                  categorical: list[str], prediction: str | None, prediction_kind: str,
                  thresholds: dict[str, float], methods: dict[str, tuple[str, float]],
                  drift_share: float, max_rows: int | None) -> None:
    for side, frame in (("reference", reference), ("current", current)):
        if not isinstance(frame, pd.DataFrame):
            raise DriftError(f"the {side} data must be a pandas DataFrame, "
                             f"got {type(frame).__name__}")
        if len(frame) == 0:
            raise DriftError(f"the {side} data is empty (0 rows)")
    if not numeric and not categorical:
        raise DriftError("no feature columns to check: list some numeric or categorical columns")
    listed = [*numeric, *categorical, *([prediction] if prediction is not None else [])]
    not_names = [c for c in listed if not isinstance(c, str)]
    if not_names:
        raise DriftError(f"column names must be strings, got {not_names}")
    dupes = sorted({c for c in listed if listed.count(c) > 1})
    if dupes:
        raise DriftError("columns listed more than once (as numeric, categorical or "
                         f"prediction): {dupes}")
    for side, frame in (("reference", reference), ("current", current)):
        missing = [c for c in listed if c not in frame.columns]
        if missing:
            raise DriftError(f"the {side} data lacks column(s) {missing}")
        if frame.columns.duplicated().any():
            raise DriftError(f"the {side} data has duplicate column names: "
                             f"{sorted(set(frame.columns[frame.columns.duplicated()]))}")
    unknown = sorted(set(thresholds) - set(listed))
    if unknown:
        raise DriftError(f"thresholds given for columns that are not checked: {unknown}")
    if prediction_kind not in (NUMERIC, CATEGORICAL):
        raise DriftError("prediction_kind must be 'numeric' or 'categorical', "
                         f"got {prediction_kind!r}")
    for kind, (method, _) in methods.items():
        if method not in METHODS:
            raise DriftError(f"unknown {kind} drift method {method!r}; known: {sorted(METHODS)}")
        if kind not in METHODS[method][1]:
            raise DriftError(f"drift method {method!r} does not apply to {kind} columns")
    defaults = [(f"{kind}_threshold", t) for kind, (_, t) in methods.items()]
    for name, value in [*thresholds.items(), *defaults]:
        if not isinstance(value, numbers.Real) or isinstance(value, bool) \
                or not math.isfinite(value) or value <= 0:
            raise DriftError(f"threshold for {name!r} must be a positive number, got {value!r}")
    if not 0 < drift_share <= 1:
        raise DriftError(f"drift_share must be in (0, 1], got {drift_share!r}")
    if max_rows is not None and (not isinstance(max_rows, numbers.Integral)
                                 or isinstance(max_rows, bool) or max_rows < 1):
        raise DriftError(f"max_rows must be a positive integer or None, got {max_rows!r}")
    numeric_checked = list(numeric)
    if prediction is not None and prediction_kind == NUMERIC:
        numeric_checked.append(prediction)
    for side, frame in (("reference", reference), ("current", current)):
        for col in numeric_checked:
            problem = _numeric_problem(frame[col])
            if problem:
                raise DriftError(f"numeric column {col!r} in the {side} data has {problem}")


def _prepare(frame: pd.DataFrame, numeric: list[str], categorical: list[str],
             side: str) -> pd.DataFrame:
    """Only the checked columns: numbers as float64, categories as plain objects.

    Raises:
        DriftError: a column has no usable values on this side.
    """
    out = {}
    for col in numeric:
        s = frame[col]
        if pd.api.types.is_object_dtype(s.dtype):
            s = pd.to_numeric(s, errors="raise")
        values = s.to_numpy(dtype="float64", na_value=np.nan)
        if not np.isfinite(values).any():
            raise DriftError(f"numeric column {col!r} has no finite values in the {side} data")
        out[col] = values
    for col in categorical:
        s = frame[col]
        if isinstance(s.dtype, pd.CategoricalDtype) or pd.api.types.is_string_dtype(s.dtype):
            s = s.astype(object).where(s.notna(), None)
        if s.notna().sum() == 0:
            raise DriftError(f"categorical column {col!r} has only missing values "
                             f"in the {side} data")
        out[col] = s.to_numpy()
    return pd.DataFrame(out, index=frame.index)


# Below this many rows on a side, normed Wasserstein at 0.1 raises false alarms on
# undrifted data in roughly 1-10% of columns (measured: 500-row windows against 10,000).
SMALL_WINDOW = 1000


def _chance_notes(ref: pd.DataFrame, cur: pd.DataFrame,
                  verdicts: dict[str, ColumnDrift]) -> list[str]:
    """Warnings for columns whose threshold is close to what equal distributions score.

    The Jensen-Shannon distance of two samples of one distribution over k categories is
    about sqrt((k - 1) / 8 * (1/n + 1/m)) (the plug-in bias); with many categories and small
    windows that reaches the threshold, and the column drifts by chance alone.
    """
    notes = []
    small: list[str] = []
    for col, v in verdicts.items():
        n, m = int(ref[col].notna().sum()), int(cur[col].notna().sum())
        if v.method == "jensenshannon" and v.kind == CATEGORICAL:
            k = len(set(pd.unique(ref[col].dropna())) | set(pd.unique(cur[col].dropna())))
            chance = math.sqrt(max(k - 1, 0) / 8 * (1 / n + 1 / m))
            if chance >= 0.7 * v.threshold:
                notes.append(f"{col}: with {k} categories and {n} vs {m} rows, equal distributions "
                             f"score about {chance:.3f} by chance (threshold {v.threshold:g}); use "
                             "longer windows or a higher threshold for this column")
        elif v.method == "wasserstein" and min(n, m) < SMALL_WINDOW:
            small.append(col)
    if small:
        notes.append(f"fewer than {SMALL_WINDOW} values on a side for {small}: normed Wasserstein "
                     "distances of small windows are noisy and may drift by chance")
    return notes


def check_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    *,
    prediction: str | None = None,
    prediction_kind: ColumnKind = "numeric",
    thresholds: dict[str, float] | None = None,
    numeric_method: str = "wasserstein",
    numeric_threshold: float = 0.1,
    categorical_method: str = "jensenshannon",
    categorical_threshold: float = 0.1,
    drift_share: float = 0.5,
    max_rows: int | None = 100_000,
    seed: int = 0,
    report_html: Path | None = None,
) -> DriftSummary:
    """Compare the current window with the reference, column by column, with Evidently.

    Every listed feature gets one Evidently ``ValueDrift`` with an explicit method and
    threshold (``thresholds`` overrides the threshold per column, the prediction included).
    A distance drifts when score >= threshold, a p-value when p < threshold; each verdict is
    cross-checked against Evidently's own test for the column and any disagreement is noted
    in ``notes``. The dataset drifts when the share of drifted features reaches
    ``drift_share`` (Evidently's rule). The prediction column, when given, is checked the
    same way but is not counted in the share.

    Sampling: a side with more than ``max_rows`` rows is replaced by a random sample of
    ``max_rows`` rows drawn without replacement (reference and current from independent
    streams of ``seed``, so the same inputs always give the same result); ``None`` compares
    every row. The summary records the rows compared per side. Sampling 100,000 of 1,000,000
    rows moves a normed Wasserstein distance by about 0.005 (0.015 at most in the benchmark),
    well below the usual 0.1 threshold, so only columns scoring within that of the threshold
    can change verdict; p-value methods on large samples flag even negligible shifts, with or
    without sampling. Missing and infinite values are left out of each column's comparison.

    Raises:
        DriftError: an empty frame, a listed column missing from either frame, a numeric
            column with non-numeric values, a column with no usable values, an unknown method
            or one that does not apply to the column kind, a bad threshold or ``max_rows``.
        OSError: the HTML report cannot be written.
    """
    thresholds = dict(thresholds or {})
    methods = {NUMERIC: (numeric_method, numeric_threshold),
               CATEGORICAL: (categorical_method, categorical_threshold)}
    numeric, categorical = list(numeric), list(categorical)
    _check_inputs(reference, current, numeric, categorical, prediction, prediction_kind,
                  thresholds, methods, drift_share, max_rows)

    import evidently
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    started = time.perf_counter()
    ref_rng, cur_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    ref = _sample(reference, max_rows, ref_rng)
    cur = _sample(current, max_rows, cur_rng)

    kinds: dict[str, str] = {c: NUMERIC for c in numeric} | {c: CATEGORICAL for c in categorical}
    if prediction is not None:
        kinds[prediction] = prediction_kind
    num_cols = [c for c, k in kinds.items() if k == NUMERIC]
    cat_cols = [c for c, k in kinds.items() if k == CATEGORICAL]
    ref = _prepare(ref, num_cols, cat_cols, "reference")
    cur = _prepare(cur, num_cols, cat_cols, "current")

    definition = DataDefinition(  # every list given, so Evidently infers nothing
        numerical_columns=num_cols, categorical_columns=cat_cols, text_columns=[],
        datetime_columns=[], unknown_columns=[], list_columns=[],
    )
    wanted: dict[str, tuple[str, str, float]] = {}  # metric id -> column, method, threshold
    metrics = []
    for col, kind in kinds.items():
        method, default = methods[kind]
        threshold = float(thresholds.get(col, default))
        metric = ValueDrift(column=col, method=method, threshold=threshold)
        wanted[metric.get_metric_id()] = (col, method, threshold)
        metrics.append(metric)
    try:
        snapshot = Report(metrics, include_tests=True).run(
            current_data=Dataset.from_pandas(cur, data_definition=definition),
            reference_data=Dataset.from_pandas(ref, data_definition=definition),
        )
    except (ValueError, TypeError) as err:  # Evidently's reaction to data it cannot compare
        raise DriftError(f"Evidently could not compare the data: {err}") from err

    notes: list[str] = []
    if len(ref) < len(reference) or len(cur) < len(current):
        notes.append(f"compared a seeded random sample (seed {seed}) of at most {max_rows} rows "
                     f"per side: reference {len(ref)} of {len(reference)}, "
                     f"current {len(cur)} of {len(current)}")
    verdicts: dict[str, ColumnDrift] = {}
    results = snapshot.metric_results
    for metric_id, (col, method, threshold) in wanted.items():
        result = results.get(metric_id)
        if result is None:
            raise DriftError(f"Evidently returned no drift result for column {col!r}")
        params = result.metric_value_location.metric.params
        if params.get("column") != col or params.get("method") != method \
                or not math.isclose(float(params.get("threshold", math.nan)), threshold):
            notes.append(f"{col}: Evidently ran {params.get('method')!r} at "
                         f"{params.get('threshold')!r}, not {method!r} at {threshold!r}")
        score = float(result.value)
        drifted = _verdict(method, score, threshold)
        statuses = [t.status for t in result.tests]
        if statuses:
            evidently_drifted = any(getattr(s, "value", s) == "FAIL" for s in statuses)
            if evidently_drifted != drifted:
                says = {True: "drift", False: "no drift"}
                rule = "p < threshold" if METHODS[method][0] == P_VALUE else "score >= threshold"
                notes.append(f"{col}: Evidently's test says {says[evidently_drifted]} for "
                             f"{method} score {score!r} vs threshold {threshold!r}; this check "
                             f"says {says[drifted]} ({rule})")
        else:
            notes.append(f"{col}: Evidently returned no test to cross-check the verdict")
        if math.isnan(score):
            notes.append(f"{col}: {method} score is NaN; counted as not drifted")
        verdicts[col] = ColumnDrift(col, kinds[col], method, score, threshold, drifted)

    notes += _chance_notes(ref, cur, verdicts)
    features = [verdicts[c] for c in [*numeric, *categorical]]
    drifted_columns = [c.column for c in features if c.drifted]
    share = len(drifted_columns) / len(features)
    report_path = None
    if report_html is not None:
        path = Path(report_html)
        path.parent.mkdir(parents=True, exist_ok=True)
        snapshot.save_html(str(path))  # a Path object is silently ignored by save_html
        report_path = str(path)
    return DriftSummary(
        reference_rows=len(reference),
        current_rows=len(current),
        reference_sampled_rows=len(ref),
        current_sampled_rows=len(cur),
        max_rows=max_rows,
        seed=seed,
        columns=features,
        drifted_columns=drifted_columns,
        drift_share=share,
        drift_share_threshold=drift_share,
        dataset_drift=share >= drift_share,
        prediction_drift=verdicts.get(prediction) if prediction is not None else None,
        performance=None,
        report_path=report_path,
        seconds=time.perf_counter() - started,
        notes=notes,
        evidently_version=evidently.__version__,
    )
