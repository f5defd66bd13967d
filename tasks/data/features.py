"""Feature roles, derived features and the preprocessing half of every candidate Pipeline.

A candidate's Pipeline is ``derive -> prep -> model``:

- ``derive`` (`DeriveFeatures`, only when the config has ``features.derived`` or
  ``features.custom``) computes each derived feature from columns of the table with its own
  small transformer, fitted on the training rows only, and passes the role columns through;
- ``prep`` (a ColumnTransformer) imputes and scales numeric columns, one-hot encodes
  categorical ones and expands ``datetime`` columns into six numbers;
- ``model`` is the estimator.

Every transformer here is a plain scikit-learn transformer whose state is numbers, strings
and lists, so the registered model carries it and scoring applies exactly what training fitted.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, RobustScaler, StandardScaler

from regrow.configs import expression
from regrow.configs.schema import Config, CustomTransformer, Derived

# An inferred text column with more distinct values than this share of rows is an identifier,
# not a category: one-hot encoding it would only memorise rows.
ID_LIKE_SHARE = 0.5
MISSING = "__missing__"
# How a text column is read (numbers, dates, text) is decided on its first present values.
KIND_SAMPLE = 2000


class FeatureError(ValueError):
    """The feature spec does not fit the data."""


@dataclass(frozen=True)
class FeatureRoles:
    """Which raw columns feed the model, and how. `sources` are columns read only by derived
    or custom features (not model inputs by themselves)."""

    numeric: list[str]
    categorical: list[str]
    datetime: list[str]
    notes: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    @property
    def passthrough(self) -> list[str]:
        """The columns the preprocessing reads as they are."""
        return [*self.numeric, *self.categorical, *self.datetime]

    @property
    def inputs(self) -> list[str]:
        """Every raw column the pipeline reads, in a stable order."""
        return [*self.passthrough, *self.sources]


def resolve_roles(config: Config, frame: pd.DataFrame) -> FeatureRoles:
    """Combine the listed roles with dtype inference for unlisted columns.

    Columns that derived or custom features read are not inferred as features themselves
    (list them under a role to use them as they are too).

    Raises:
        FeatureError: no feature columns remain.
    """
    f, d = config.features, config.data
    numeric, categorical, dt = list(f.numeric), list(f.categorical), list(f.datetime)
    notes: list[str] = []
    read = f.derived_sources()
    if f.infer:
        taken = {*numeric, *categorical, *dt, *f.drop, d.target, *read}
        taken |= {c for c in (d.id_column, d.time_column) if c}
        for col in frame.columns:
            if col in taken:
                continue
            s = frame[col]
            if pd.api.types.is_bool_dtype(s):
                categorical.append(col)
            elif pd.api.types.is_numeric_dtype(s):
                numeric.append(col)
            elif pd.api.types.is_datetime64_any_dtype(s):
                dt.append(col)
            elif len(s) and s.nunique(dropna=True) > ID_LIKE_SHARE * len(s):
                notes.append(f"column {col!r} skipped: {s.nunique()} distinct values look like ids")
            else:
                categorical.append(col)
    listed = {*numeric, *categorical, *dt}
    roles = FeatureRoles(numeric, categorical, dt, notes, [c for c in read if c not in listed])
    if not roles.inputs:
        raise FeatureError("features: no feature columns (list some, or set features.infer: true)")
    return roles


class ToString(BaseEstimator, TransformerMixin):
    """Cast categorical inputs to strings so mixed or numeric codes one-hot encode cleanly."""

    def fit(self, X, y=None):  # noqa: N803 - sklearn naming
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X):  # noqa: N803
        arr = pd.DataFrame(X).astype(object)
        return arr.where(arr.notna(), None).astype(str).where(arr.notna(), np.nan).to_numpy()

    def get_feature_names_out(self, input_features=None):
        return np.asarray(input_features if input_features is not None else [], dtype=object)


class DatetimeParts(BaseEstimator, TransformerMixin):
    """Expand datetime columns into year, month, day, weekday, hour and day-of-year."""

    PARTS = ("year", "month", "day", "dayofweek", "hour", "dayofyear")

    def fit(self, X, y=None):  # noqa: N803
        self.columns_ = list(pd.DataFrame(X).columns)
        return self

    def transform(self, X):  # noqa: N803
        frame = pd.DataFrame(X)
        out = {}
        for col in frame.columns:
            ts = pd.to_datetime(frame[col], errors="coerce", format="mixed")
            for part in self.PARTS:
                out[f"{col}_{part}"] = getattr(ts.dt, part).astype("float64")
        return pd.DataFrame(out, index=frame.index).to_numpy()

    def get_feature_names_out(self, input_features=None):
        cols = getattr(self, "columns_", input_features or [])
        return np.asarray([f"{c}_{p}" for c in cols for p in self.PARTS], dtype=object)


def column_kind(s: pd.Series) -> str:
    """``numeric``, ``datetime`` or ``text``: how a derived feature reads a column. Text that
    parses as numbers (or dates) for 90% of its first `KIND_SAMPLE` present values counts as
    numbers (or dates)."""
    if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
        return "numeric"
    if pd.api.types.is_datetime64_any_dtype(s):
        return "datetime"
    present = s.dropna().head(KIND_SAMPLE)
    if present.empty:
        return "numeric"
    if pd.to_numeric(present, errors="coerce").notna().mean() >= 0.9:
        return "numeric"
    if as_dates(present).notna().mean() >= 0.9:
        return "datetime"
    return "text"


def as_dates(s: pd.Series) -> pd.Series:
    """A column as naive datetimes (unparseable -> NaT; time zones keep their wall time).

    Text is parsed with the format of its first value (fast), and values that format misses
    one by one (`format="mixed"`), so a column of mixed date formats is read all the same.
    """
    if not pd.api.types.is_datetime64_any_dtype(s):
        if pd.api.types.is_numeric_dtype(s):  # numbers are not dates here (see data.time_unit)
            return pd.Series(pd.NaT, index=s.index, dtype="datetime64[ns]")
        s = _parse_dates(s)
    if getattr(s.dt, "tz", None) is not None:
        s = s.dt.tz_localize(None)
    return s


def _parse_dates(s: pd.Series) -> pd.Series:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "could not infer format": handled below
        try:
            fast = pd.to_datetime(s, errors="coerce")
        except (ValueError, TypeError):
            fast = None
        if fast is not None and pd.api.types.is_datetime64_any_dtype(fast) \
                and not (fast.isna() & s.notna()).any():
            return fast
        mixed = pd.to_datetime(s, errors="coerce", format="mixed")
        if not pd.api.types.is_datetime64_any_dtype(mixed):  # mixed time zones
            mixed = pd.to_datetime(s, errors="coerce", format="mixed", utc=True)
    return mixed


def as_numbers(s: pd.Series) -> np.ndarray:
    """A column as float64 (unparseable -> NaN)."""
    return pd.to_numeric(s, errors="coerce").astype("float64").to_numpy()


def _frame(X: Any, columns: list[str] | None = None) -> pd.DataFrame:
    return X if isinstance(X, pd.DataFrame) else pd.DataFrame(X, columns=columns)


def _finite(values: np.ndarray) -> np.ndarray:
    out = np.asarray(values, dtype="float64")
    return np.where(np.isfinite(out), out, np.nan)


class _Derived(BaseEstimator, TransformerMixin):
    """Base of the built-in derived features: numeric output columns named by `suffixes`
    (``""`` = the feature's own name)."""

    def _kinds(self, X: pd.DataFrame, allowed: tuple[str, ...]) -> dict[str, str]:
        kinds = {}
        for col in X.columns:
            kind = column_kind(X[col])
            if kind not in allowed:
                raise FeatureError(f"column {col!r} holds {kind} values; this transform reads "
                                   + " or ".join(allowed))
            kinds[col] = kind
        return kinds

    def suffixes(self) -> list[str]:
        """Output names relative to the feature's name."""
        return [""]

    def get_feature_names_out(self, input_features=None):
        return np.asarray(self.suffixes(), dtype=object)


@contextmanager
def _evaluation_errors() -> Iterator[None]:
    """Raise an evaluation error of `configs.expression` as a FeatureError."""
    try:
        yield
    except expression.EvaluationError as err:
        raise FeatureError(str(err)) from None


def evaluate(text: str, values: dict[str, Any]) -> Any:
    """`configs.expression.evaluate` (the grammar, its functions and its evaluator live
    there), with its evaluation errors as FeatureError.

    Raises:
        ExpressionError: the text is outside the grammar.
        FeatureError: a column it names is missing, or dates are combined with numbers.
    """
    with _evaluation_errors():
        return expression.evaluate(text, values)


class Expression(_Derived):
    """A safe arithmetic expression of columns (`configs.expression`); two dates subtracted
    give days."""

    def __init__(self, expr: str = ""):
        self.expr = expr

    def fit(self, X, y=None):  # noqa: N803 - sklearn naming
        X = _frame(X)
        self.kinds_ = self._kinds(X, ("numeric", "datetime"))
        result = self._evaluate(X)
        if isinstance(result, pd.Series):
            raise FeatureError("the expression gives dates, not numbers (subtract another date "
                               "to get days, or use date_parts)")
        return self

    def _evaluate(self, X: pd.DataFrame) -> Any:
        values = {c: as_dates(X[c]) if k == "datetime" else as_numbers(X[c])
                  for c, k in self.kinds_.items() if c in X.columns}
        return evaluate(self.expr, values)

    def transform(self, X):  # noqa: N803
        X = _frame(X)
        result = self._evaluate(X)
        if isinstance(result, pd.Series):
            raise FeatureError("the expression gives dates, not numbers")
        out = np.broadcast_to(np.asarray(result, dtype="float64"), (len(X),))
        return _finite(out).reshape(-1, 1)


# Part -> period of its cycle (None: as long as the month / the year).
_CYCLE = {"quarter": 4, "month": 12, "week": 53, "day": None, "dayofweek": 7, "dayofyear": None,
          "hour": 24, "minute": 60}
_ONE_BASED = {"quarter", "month", "week", "day", "dayofyear"}


class DateParts(_Derived):
    """Parts of a date column as numbers; with `cyclical`, cyclical parts as a sine/cosine pair
    (``<part>_sin``, ``<part>_cos``) so that the last value sits next to the first."""

    def __init__(self, parts: list[str] | tuple[str, ...] = ("year", "month", "day"),
                 cyclical: bool = False):
        self.parts = parts
        self.cyclical = cyclical

    def fit(self, X, y=None):  # noqa: N803
        X = _frame(X)
        if len(X.columns) != 1:
            raise FeatureError("date_parts reads exactly one column")
        self._kinds(X, ("datetime",))
        return self

    def suffixes(self) -> list[str]:
        out: list[str] = []
        for p in self.parts:
            out += [f"{p}_sin", f"{p}_cos"] if self.cyclical and p in _CYCLE else [p]
        return out

    def transform(self, X):  # noqa: N803
        ts = as_dates(_frame(X).iloc[:, 0])
        cols = []
        for p in self.parts:
            if p == "week":
                value = ts.dt.isocalendar().week.astype("float64").to_numpy()
            elif p == "is_weekend":
                value = (ts.dt.dayofweek >= 5).astype("float64").where(ts.notna()).to_numpy()
            else:
                value = getattr(ts.dt, p).astype("float64").to_numpy()
            if not (self.cyclical and p in _CYCLE):
                cols.append(value)
                continue
            period = _CYCLE[p]
            if p == "day":
                period = ts.dt.days_in_month.astype("float64").to_numpy()
            elif p == "dayofyear":
                period = np.where(ts.dt.is_leap_year, 366.0, 365.0)
            angle = 2 * np.pi * ((value - 1 if p in _ONE_BASED else value) / period)
            cols += [np.sin(angle), np.cos(angle)]
        return np.column_stack(cols) if cols else np.empty((len(ts), 0))


class Log(_Derived):
    """log(x + offset); values where x + offset <= 0 become missing."""

    def __init__(self, offset: float = 0.0):
        self.offset = offset

    def fit(self, X, y=None):  # noqa: N803
        self._kinds(_frame(X), ("numeric",))
        return self

    def transform(self, X):  # noqa: N803
        x = as_numbers(_frame(X).iloc[:, 0]) + self.offset
        with np.errstate(all="ignore"):
            return _finite(np.log(expression.where_above(x, 0))).reshape(-1, 1)


class Power(_Derived):
    """x ** exponent, or a Yeo-Johnson / Box-Cox transform fitted on the training rows
    (scikit-learn's PowerTransformer, not standardised: scaling follows in `prep`)."""

    def __init__(self, exponent: float | None = None, method: str | None = None):
        self.exponent = exponent
        self.method = method

    def fit(self, X, y=None):  # noqa: N803
        X = _frame(X)
        self._kinds(X, ("numeric",))
        if self.method:
            from sklearn.preprocessing import PowerTransformer

            x = as_numbers(X.iloc[:, 0]).reshape(-1, 1)
            if self.method == "box-cox" and np.nanmin(x, initial=np.inf) <= 0:
                raise FeatureError("box-cox needs strictly positive values; use yeo-johnson")
            self.power_ = PowerTransformer(method=self.method, standardize=False).fit(x)
        return self

    def transform(self, X):  # noqa: N803
        x = as_numbers(_frame(X).iloc[:, 0])
        with np.errstate(all="ignore"):
            if self.method:
                if self.method == "box-cox":
                    x = expression.where_above(x, 0)
                return _finite(self.power_.transform(x.reshape(-1, 1)))
            return _finite(np.power(x, float(self.exponent))).reshape(-1, 1)


class Combine(_Derived):
    """Two columns: ``ratio`` a / b (b == 0 -> missing) or ``difference`` a - b (two dates:
    days between them)."""

    def __init__(self, op: str = "ratio"):
        self.op = op

    def fit(self, X, y=None):  # noqa: N803
        X = _frame(X)
        if X.shape[1] not in (1, 2):
            raise FeatureError(f"{self.op} reads two columns")
        self.kinds_ = self._kinds(X, ("numeric", "datetime") if self.op == "difference"
                                  else ("numeric",))
        if len(set(self.kinds_.values())) > 1:
            raise FeatureError("a date can only be combined with another date")
        return self

    def transform(self, X):  # noqa: N803
        X = _frame(X)
        a, b = X.iloc[:, 0], X.iloc[:, -1]
        dates = next(iter(self.kinds_.values())) == "datetime"
        a, b = (as_dates(a), as_dates(b)) if dates else (as_numbers(a), as_numbers(b))
        with _evaluation_errors():
            out = expression.pair(a, b, "/" if self.op == "ratio" else "-")
        return _finite(out).reshape(-1, 1)


class Bins(_Derived):
    """The bin number (0, 1, ...) of a numeric column: bin i holds values in
    [edges[i-1], edges[i]); fixed `edges`, or `n_bins` quantile / uniform bins learned on the
    training rows. Missing values stay missing."""

    def __init__(self, edges: list[float] | None = None, n_bins: int | None = None,
                 strategy: str = "quantile"):
        self.edges = edges
        self.n_bins = n_bins
        self.strategy = strategy

    def fit(self, X, y=None):  # noqa: N803
        X = _frame(X)
        self._kinds(X, ("numeric",))
        if self.edges is not None:
            self.edges_ = [float(e) for e in self.edges]
            return self
        x = as_numbers(X.iloc[:, 0])
        x = x[~np.isnan(x)]
        if not len(x):
            raise FeatureError("no values to learn bins from")
        if self.strategy == "quantile":
            inner = np.quantile(x, np.linspace(0, 1, self.n_bins + 1)[1:-1])
        else:
            inner = np.linspace(x.min(), x.max(), self.n_bins + 1)[1:-1]
        self.edges_ = sorted({float(e) for e in inner})
        return self

    def transform(self, X):  # noqa: N803
        x = as_numbers(_frame(X).iloc[:, 0])
        codes = np.searchsorted(np.asarray(self.edges_), x, side="right").astype("float64")
        return np.where(np.isnan(x), np.nan, codes).reshape(-1, 1)


class Clip(_Derived):
    """A numeric column limited to [low, high]: fixed bounds, or quantiles of the training rows."""

    def __init__(self, low: float | None = None, high: float | None = None,
                 quantiles: list[float] | None = None):
        self.low = low
        self.high = high
        self.quantiles = quantiles

    def fit(self, X, y=None):  # noqa: N803
        X = _frame(X)
        self._kinds(X, ("numeric",))
        if self.quantiles is None:
            self.low_, self.high_ = self.low, self.high
            return self
        x = as_numbers(X.iloc[:, 0])
        x = x[~np.isnan(x)]
        if not len(x):
            raise FeatureError("no values to learn clipping bounds from")
        lo, hi = np.quantile(x, list(self.quantiles))
        self.low_, self.high_ = float(lo), float(hi)
        return self

    def transform(self, X):  # noqa: N803
        x = as_numbers(_frame(X).iloc[:, 0])
        lo = -np.inf if self.low_ is None else self.low_
        hi = np.inf if self.high_ is None else self.high_
        return np.clip(x, lo, hi).reshape(-1, 1)


def _as_text(X: Any) -> pd.DataFrame:
    """Values as strings with missing as its own value (categories for the encoders)."""
    frame = _frame(X).astype(object)
    return frame.where(frame.isna(), frame.astype(str)).fillna(MISSING)


class Frequency(_Derived):
    """The share of training rows holding the same value (missing is a value of its own);
    values never seen in training get 0."""

    def fit(self, X, y=None):  # noqa: N803
        shares = _as_text(X).iloc[:, 0].value_counts(normalize=True)
        self.shares_ = {str(k): float(v) for k, v in shares.items()}
        return self

    def transform(self, X):  # noqa: N803
        col = _as_text(X).iloc[:, 0]
        return col.map(self.shares_).fillna(0.0).to_numpy(dtype="float64").reshape(-1, 1)


class TargetEncode(_Derived):
    """A categorical column as the smoothed mean target of its category (scikit-learn's
    TargetEncoder; binary: share of the positive class, multiclass: one column per class).

    Leakage: `fit_transform` -- what a Pipeline calls while training -- encodes each training
    row with an encoder fitted on the *other* folds (`cv` shuffled folds, seeded), so no row
    sees its own target; `transform` (the holdout, cross-validation folds, scoring) uses the
    encoder fitted on all training rows. Cross-validation refits the whole Pipeline per fold,
    so a validation fold's targets never reach its encoder.
    """

    def __init__(self, smooth: Any = "auto", cv: int = 5, task: str = "binary", seed: int = 0):
        self.smooth = smooth
        self.cv = cv
        self.task = task
        self.seed = seed

    def _encoder(self) -> Any:
        from sklearn.model_selection import KFold, StratifiedKFold
        from sklearn.preprocessing import TargetEncoder

        folds = KFold if self.task == "regression" else StratifiedKFold
        return TargetEncoder(smooth=self.smooth, cv=folds(self.cv, shuffle=True,
                                                           random_state=self.seed),
                             target_type="continuous" if self.task == "regression" else "auto")

    def fit(self, X, y=None):  # noqa: N803
        self.fit_transform(X, y)
        return self

    def fit_transform(self, X, y=None, **fit_params):  # noqa: N803
        if y is None:
            raise FeatureError("target encoding needs the target")
        self.encoder_ = self._encoder()
        return self.encoder_.fit_transform(_as_text(X), y)

    def transform(self, X):  # noqa: N803
        return self.encoder_.transform(_as_text(X))

    def suffixes(self) -> list[str]:
        classes = getattr(self.encoder_, "classes_", None)
        if self.task == "multiclass" and classes is not None:
            return [str(c) for c in classes]
        return [""]


def _outputs(transformer: Any, out: Any, index: pd.Index, name: str) -> pd.DataFrame:
    """A derived feature's output as a frame named ``<name>`` or ``<name>_<suffix>``."""
    if hasattr(out, "toarray"):
        out = out.toarray()
    if isinstance(out, pd.DataFrame | pd.Series):
        out = out.to_numpy()
    arr = np.asarray(out)
    if arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2 or arr.shape[0] != len(index):
        raise FeatureError(f"the transformer returned shape {arr.shape} for {len(index)} rows")
    if isinstance(transformer, _Derived):
        suffixes = transformer.suffixes()
    elif arr.shape[1] == 1:
        suffixes = [""]
    else:
        try:
            suffixes = [str(n) for n in transformer.get_feature_names_out()]
        except Exception:  # noqa: BLE001 - optional in the API: fall back to positions
            suffixes = []
        if len(suffixes) != arr.shape[1]:
            suffixes = [str(i) for i in range(arr.shape[1])]
    names = [name if not s else f"{name}_{s}" for s in suffixes]
    if len(names) != arr.shape[1]:
        raise FeatureError(f"the transformer returned {arr.shape[1]} columns, expected "
                           f"{len(names)}")
    return pd.DataFrame(arr, columns=names, index=index)


class DeriveFeatures(BaseEstimator, TransformerMixin):
    """The first step of a Pipeline with derived features: the role columns (`keep`) as they
    are, plus each derived feature computed from its source columns.

    `steps` are ``(name, transformer, source columns, config key)``; each transformer is cloned
    and fitted on the training rows (``fit_transform`` with the target, so a target encoder
    cross-fits). `outputs` (name -> output columns, found by the features step on the training
    part) fixes the columns each feature gives, so every cross-validation fold and every
    scoring batch yields the same columns (a column a fold cannot produce is missing, then
    imputed).
    """

    def __init__(self, steps: list | tuple = (), keep: list | tuple = (),
                 outputs: dict[str, list[str]] | None = None):
        self.steps = steps
        self.keep = keep
        self.outputs = outputs

    def fit(self, X, y=None):  # noqa: N803
        self.fit_transform(X, y)
        return self

    def fit_transform(self, X, y=None, **fit_params):  # noqa: N803
        X = _frame(X)
        self.fitted_: list[tuple[str, Any, list[str], str]] = []
        self.names_: dict[str, list[str]] = {}
        parts = [X[list(self.keep)]]
        for name, transformer, columns, key in self.steps:
            t = clone(transformer)
            with _Failures(key, name, "fitting"):
                Xs = X[list(columns)]
                out = t.fit_transform(Xs, y) if hasattr(t, "fit_transform") else \
                    t.fit(Xs, y).transform(Xs)
                frame = self._fixed(name, _outputs(t, out, X.index, name))
            self.fitted_.append((name, t, list(columns), key))
            self.names_[name] = list(frame.columns)
            parts.append(frame)
        return pd.concat(parts, axis=1)

    def _fixed(self, name: str, frame: pd.DataFrame) -> pd.DataFrame:
        if self.outputs is None or name not in self.outputs:
            return frame
        return frame.reindex(columns=self.outputs[name])

    def transform(self, X):  # noqa: N803
        X = _frame(X)
        parts = [X[list(self.keep)]]
        for name, t, columns, key in self.fitted_:
            with _Failures(key, name, "applying"):
                parts.append(self._fixed(name, _outputs(t, t.transform(X[columns]), X.index,
                                                        name)))
        return pd.concat(parts, axis=1)

    def get_feature_names_out(self, input_features=None):
        return np.asarray([*self.keep, *(n for names in self.names_.values() for n in names)],
                          dtype=object)


class _Failures:
    """Turn any failure inside a derived feature into a FeatureError naming its config key."""

    def __init__(self, key: str, name: str, doing: str):
        self.key, self.name, self.doing = key, name, doing

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, err, tb) -> Literal[False]:
        if err is None or not isinstance(err, Exception):
            return False
        if isinstance(err, FeatureError):
            raise FeatureError(f"{self.key} ({self.name}): {err}") from None
        if isinstance(err, KeyError):
            raise FeatureError(f"{self.key} ({self.name}): column {err} is not in the data") \
                from None
        raise FeatureError(f"{self.key} ({self.name}): {self.doing} failed: "
                           f"{type(err).__name__}: {err}") from None


_SCALERS = {"standard": StandardScaler, "minmax": MinMaxScaler, "robust": RobustScaler}


def _numeric_steps(config: Config) -> list[tuple[str, object]]:
    f = config.features
    steps: list[tuple[str, object]] = [("impute", SimpleImputer(strategy=f.numeric_imputation))]
    if f.scaling != "none":
        steps.append(("scale", _SCALERS[f.scaling]()))
    return steps


def _categorical_steps(config: Config) -> list[tuple[str, object]]:
    f = config.features
    return [
        ("as_str", ToString()),
        ("impute", SimpleImputer(strategy=f.categorical_imputation, fill_value=MISSING)),
        ("onehot", OneHotEncoder(
            handle_unknown=f.one_hot.handle_unknown,
            min_frequency=f.one_hot.min_frequency,
            max_categories=f.one_hot.max_categories,
            sparse_output=False,
        )),
    ]


def build_preprocessor(config: Config, roles: FeatureRoles, derived_numeric: Sequence[str] = (),
                       derived_categorical: Sequence[str] = ()) -> ColumnTransformer:
    """The ColumnTransformer for the roles (and derived outputs), as the config describes it:
    numeric columns and numeric derived outputs imputed and scaled, categorical ones one-hot
    encoded, datetime columns expanded into six numbers (imputed with the training median)."""
    dt_steps = [("parts", DatetimeParts()), ("impute", SimpleImputer(strategy="median"))]
    transformers = []
    if roles.numeric:
        transformers.append(("numeric", Pipeline(_numeric_steps(config)), roles.numeric))
    if roles.categorical:
        transformers.append(("categorical", Pipeline(_categorical_steps(config)),
                             roles.categorical))
    if roles.datetime:
        transformers.append(("datetime", Pipeline(dt_steps), roles.datetime))
    if derived_numeric:
        transformers.append(("derived", Pipeline(_numeric_steps(config)), list(derived_numeric)))
    if derived_categorical:
        transformers.append(("derived_categorical", Pipeline(_categorical_steps(config)),
                             list(derived_categorical)))
    return ColumnTransformer(transformers, remainder="drop", verbose_feature_names_out=True)


def _builtin(d: Derived, config: Config) -> Any:
    """The transformer of one `features.derived` entry."""
    spec = getattr(d, d.transform)
    match d.transform:
        case "expr":
            return Expression(spec)
        case "date_parts":
            return DateParts(list(spec.parts), spec.cyclical)
        case "log":
            return Log(spec.offset)
        case "power":
            return Power(spec.exponent, spec.method)
        case "ratio" | "difference":
            return Combine(d.transform)
        case "bins":
            return Bins(spec.edges, spec.n_bins, spec.strategy)
        case "clip":
            return Clip(spec.min, spec.max, spec.quantiles)
        case "frequency":
            return Frequency()
        case "target_encoding":
            return TargetEncode(spec.smooth, spec.cv, config.data.task, config.candidates.seed)
    raise FeatureError(f"unknown transform {d.transform!r}")  # the schema allows no other


_TRANSFORMER_API = ("fit", "transform", "get_params", "set_params")


def custom_transformer(config: Config, index: int) -> Any:
    """Import, check and instantiate `features.custom[index]` (nothing is fitted or called
    besides the constructor with the config's params).

    Raises:
        ConfigError: the module is not listed, the class cannot be imported, lacks the
            scikit-learn transformer API (fit, transform, get_params, set_params), or refuses
            the params.
    """
    from regrow.configs.schema import ConfigError
    from regrow.tasks.model.imports import allowed_class

    spec: CustomTransformer = config.features.custom[index]
    where = f"features.custom.{index}"
    cls = allowed_class(config, spec.transformer, f"{where}.transformer")
    missing = [m for m in _TRANSFORMER_API if not callable(getattr(cls, m, None))]
    if missing:
        raise ConfigError(f"{where}.transformer: {spec.transformer!r} does not follow the "
                          f"scikit-learn transformer API: no {', '.join(missing)} method "
                          "(derive from sklearn.base.BaseEstimator and TransformerMixin)")
    try:
        return cls(**spec.params)
    except TypeError as err:
        raise ConfigError(f"{where}.params: {spec.transformer} does not take these params: "
                          f"{err}") from None


def derived_steps(config: Config) -> list[tuple[str, Any, list[str], str]]:
    """``(name, unfitted transformer, source columns, config key)`` of every derived and
    custom feature, in config order.

    Raises:
        ConfigError: a custom transformer fails its checks (see `custom_transformer`).
    """
    f = config.features
    steps = [(d.name, _builtin(d, config), d.sources, f"features.derived.{i}")
             for i, d in enumerate(f.derived)]
    steps += [(c.name, custom_transformer(config, i), list(c.columns), f"features.custom.{i}")
              for i, c in enumerate(f.custom)]
    return steps


def check_transformers(config: Config) -> None:
    """Resolve every custom transformer now (fail fast, before any run starts).

    Raises:
        ConfigError: see `custom_transformer`.
    """
    derived_steps(config)


def describe(d: Derived) -> str:
    """One line saying what a derived feature computes."""
    spec = getattr(d, d.transform)
    match d.transform:
        case "expr":
            return f"expr: {spec}"
        case "date_parts":
            return (f"date_parts of {spec.column}: {', '.join(spec.parts)}"
                    + (" (cyclical as sin/cos)" if spec.cyclical else ""))
        case "log":
            return f"log({spec.column}" + (f" + {spec.offset:g})" if spec.offset else ")")
        case "power":
            return (f"{spec.column} ** {spec.exponent:g}" if spec.exponent is not None
                    else f"{spec.method}({spec.column}), fitted")
        case "ratio":
            return f"ratio {spec[0]} / {spec[1]}"
        case "difference":
            return f"difference {spec[0]} - {spec[1]}"
        case "bins":
            return (f"bins of {spec.column} at edges {spec.edges}" if spec.edges is not None
                    else f"{spec.n_bins} {spec.strategy} bins of {spec.column}, fitted")
        case "clip":
            return (f"clip {spec.column} to quantiles {spec.quantiles}, fitted"
                    if spec.quantiles else f"clip {spec.column} to [{spec.min}, {spec.max}]")
        case "frequency":
            return f"frequency of {spec}, fitted"
        case "target_encoding":
            return (f"target encoding of {spec.column} (smooth {spec.smooth}, cross-fitted in "
                    f"{spec.cv} folds)")
    return d.transform


def check_columns(config: Config, frame: pd.DataFrame) -> None:
    """Every column a derived or custom feature reads exists, and no feature's name is
    already a column of the data.

    Raises:
        FeatureError: naming the config key, the feature and the column.
    """
    f, have = config.features, set(frame.columns)
    shown = ", ".join(map(str, list(frame.columns)[:30])) + (" ..." if len(have) > 30 else "")
    entries = [(f"features.derived.{i}", d.name, d.sources) for i, d in enumerate(f.derived)]
    entries += [(f"features.custom.{i}", c.name, c.columns) for i, c in enumerate(f.custom)]
    for key, name, sources in entries:
        for col in sources:
            if col not in have:
                raise FeatureError(f"{key} ({name}): column {col!r} is not in the data "
                                   f"(columns: {shown})")
        if name in have:
            raise FeatureError(f"{key}: name {name!r} is already a column of the data; "
                               "choose another name")


@dataclass(frozen=True)
class DerivedFeature:
    """A derived or custom feature as fitted on the training part."""

    key: str
    name: str
    transform: str
    sources: list[str]
    role: str
    outputs: list[str]


@dataclass(frozen=True)
class FeatureColumn:
    """One column the preprocessing receives, with statistics on the training part."""

    column: str
    sources: list[str]
    transform: str
    role: str
    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    missing_share: float
    distinct: int | None = None


@dataclass(frozen=True)
class FeatureSet:
    """What the features step made: roles, derived features, the column table, the width
    after preprocessing and the time it took; `prep`, the preprocessing fitted on those
    training rows (reused by `tasks.model.train` for the final refit; not part of any record)."""

    roles: FeatureRoles
    derived: list[DerivedFeature]
    columns: list[FeatureColumn]
    model_inputs: int
    rows: int
    seconds: float
    prep: Any = field(default=None, repr=False, compare=False)

    def outputs(self, role: str) -> list[str]:
        """Derived output columns with this role (numeric / categorical)."""
        return [o for d in self.derived if d.role == role for o in d.outputs]

    def summary(self) -> str:
        """``12 columns (4 derived) -> 31 model inputs``."""
        n, cols = sum(len(d.outputs) for d in self.derived), len(self.columns)
        return (f"{cols} column{'s' if cols != 1 else ''} ({n} derived) -> {self.model_inputs} "
                f"model input{'s' if self.model_inputs != 1 else ''} on {self.rows:,} training "
                "rows")

    def table(self) -> list[dict[str, Any]]:
        """The column table as JSON-able rows (statistics rounded)."""
        def r(v: float | None) -> float | None:
            return None if v is None else float(f"{v:.6g}")
        return [{"column": c.column, "sources": ", ".join(c.sources), "transform": c.transform,
                 "role": c.role, "mean": r(c.mean), "std": r(c.std), "min": r(c.min),
                 "max": r(c.max), "missing_share": round(c.missing_share, 4),
                 "distinct": c.distinct} for c in self.columns]

    def to_dict(self, table_columns: list[str]) -> dict[str, Any]:
        """``features.json``: the roles (as before), the table's columns, the derived features,
        the column table, the width after preprocessing and the seconds."""
        return {**self.roles.__dict__, "columns": table_columns,
                "derived": [d.__dict__ for d in self.derived], "table": self.table(),
                "model_inputs": self.model_inputs, "rows": self.rows, "seconds": self.seconds}

    def to_markdown(self) -> str:
        """The column table in markdown."""
        def fmt(v: Any) -> str:
            return "-" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)
        head = ["column", "sources", "transform", "role", "mean", "std", "min", "max",
                "missing", "distinct"]
        lines = [f"{self.summary()}, fitted in {self.seconds:.3f} s.", "",
                 "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for row in self.table():
            cells = [row["column"], row["sources"], row["transform"], row["role"],
                     *(fmt(row[k]) for k in ("mean", "std", "min", "max")),
                     f"{row['missing_share']:.1%}", fmt(row["distinct"])]
            lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
        return "\n".join(lines)


def _stats(values: pd.Series, numeric: bool) -> dict[str, Any]:
    missing = float(values.isna().mean()) if len(values) else 0.0
    if not numeric:
        return {"mean": None, "std": None, "min": None, "max": None, "missing_share": missing,
                "distinct": int(values.nunique(dropna=True))}
    x = pd.to_numeric(values, errors="coerce").astype("float64")
    x = x[np.isfinite(x)]

    def num(v: float) -> float | None:
        return None if pd.isna(v) else float(v)
    return {"mean": num(x.mean()), "std": num(x.std()), "min": num(x.min()),
            "max": num(x.max()), "missing_share": missing, "distinct": None}


def _table(config: Config, roles: FeatureRoles, derived: list[DerivedFeature],
           frame: pd.DataFrame) -> list[FeatureColumn]:
    f = config.features
    scaled = f"{f.numeric_imputation} imputation" + (f", {f.scaling} scaling"
                                                     if f.scaling != "none" else "")
    rows = [FeatureColumn(c, [c], "as is", f"numeric ({scaled})", **_stats(frame[c], True))
            for c in roles.numeric]
    rows += [FeatureColumn(c, [c], "as is", "categorical (one-hot)", **_stats(frame[c], False))
             for c in roles.categorical]
    if roles.datetime:
        parts = DatetimeParts().fit(frame[roles.datetime])
        expanded = pd.DataFrame(parts.transform(frame[roles.datetime]),
                                columns=parts.get_feature_names_out(), index=frame.index)
        for col in roles.datetime:
            rows += [FeatureColumn(f"{col}_{p}", [col], f"datetime part: {p}",
                                   "numeric (median imputation, not scaled)",
                                   **_stats(expanded[f"{col}_{p}"], True))
                     for p in DatetimeParts.PARTS]
    for d in derived:
        role = f"numeric ({scaled})" if d.role == "numeric" else "categorical (one-hot)"
        rows += [FeatureColumn(o, d.sources, d.transform, role,
                               **_stats(frame[o], d.role == "numeric")) for o in d.outputs]
    return rows


def _fitted_width(prep: Any, frame: pd.DataFrame) -> int:
    """Fit the preprocessing on `frame`; the number of columns it makes. Named outputs are
    counted without transforming the rows (each candidate's Pipeline transforms them anyway);
    a step that cannot name its outputs is counted on the transformed rows."""
    prep.fit(frame)
    try:
        return len(prep.get_feature_names_out())
    except (AttributeError, ValueError, TypeError):
        return prep.transform(frame).shape[1]


def build_features(config: Config, frame: pd.DataFrame, y: np.ndarray | None = None) -> FeatureSet:
    """Build the feature stage from the config and fit it on `frame` (the training part only):
    roles, every derived and custom feature (`y`, the encoded target, for target encoding),
    and the preprocessing, recording each column the preprocessing receives with statistics.

    Raises:
        FeatureError: a column that does not exist, a transform that does not fit the data, or
            preprocessing that fails on the result.
        ConfigError: a custom transformer fails its checks.
    """
    started = time.perf_counter()
    check_columns(config, frame)
    roles = resolve_roles(config, frame)
    steps = derived_steps(config)
    derived: list[DerivedFeature] = []
    out = frame[roles.passthrough]
    if steps:
        derive = DeriveFeatures(steps, roles.passthrough)
        out = derive.fit_transform(frame, y)
        specs = [(d.role, describe(d)) for d in config.features.derived]
        specs += [(c.role, f"{c.transformer}({', '.join(f'{k}={v!r}' for k, v in c.params.items())})")
                  for c in config.features.custom]
        for (name, _, cols, key), (role, text) in zip(derive.fitted_, specs, strict=True):
            clash = [o for o in derive.names_[name] if o in frame.columns]
            if clash:
                raise FeatureError(f"{key} ({name}): output column {clash[0]!r} is already a "
                                   "column of the data; choose another name")
            derived.append(DerivedFeature(key, name, text, cols, role, derive.names_[name]))
    prep = build_preprocessor(config, roles,
                              [o for d in derived if d.role == "numeric" for o in d.outputs],
                              [o for d in derived if d.role == "categorical" for o in d.outputs])
    try:
        width = _fitted_width(prep, out)
    except (ValueError, TypeError) as err:
        raise FeatureError(f"features: preprocessing failed on the training part: "
                           f"{type(err).__name__}: {err}") from None
    columns = _table(config, roles, derived, out)
    return FeatureSet(roles, derived, columns, int(width), len(frame),
                      round(time.perf_counter() - started, 4), prep)


def feature_steps(config: Config, features: FeatureSet) -> list[tuple[str, Any]]:
    """Fresh, unfitted ``derive`` (when there are derived features) and ``prep`` steps of a
    candidate's Pipeline, with the output columns the features step found fixed."""
    steps: list[tuple[str, Any]] = []
    if features.derived:
        steps.append(("derive", DeriveFeatures(
            derived_steps(config), features.roles.passthrough,
            {d.name: list(d.outputs) for d in features.derived})))
    steps.append(("prep", build_preprocessor(config, features.roles, features.outputs("numeric"),
                                             features.outputs("categorical"))))
    return steps
