"""The one config schema: a YAML file becomes one strict, frozen pydantic model.

Unknown keys are rejected and every error names the key path, so a typo in a config fails
before any data is read. Endpoints and secrets never live here: a SQL URL may reference
environment variables as ``${NAME}``, expanded when the source is opened.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from regrow.configs import expression, hooks
from regrow.configs.defaults import DEFAULTED_SECTIONS

TaskKind = Literal["binary", "multiclass", "regression"]
DType = Literal["int", "float", "number", "string", "bool", "datetime", "category"]

# Metric name -> (tasks it applies to, greater is better).
METRICS: dict[str, tuple[tuple[str, ...], bool]] = {
    "roc_auc": (("binary", "multiclass"), True),
    "f1": (("binary", "multiclass"), True),
    "accuracy": (("binary", "multiclass"), True),
    "precision": (("binary",), True),
    "recall": (("binary",), True),
    "log_loss": (("binary", "multiclass"), False),
    "rmse": (("regression",), False),
    "mae": (("regression",), False),
    "r2": (("regression",), True),
}

# Short estimator names -> (import path, tasks it serves).
ESTIMATORS: dict[str, tuple[str, tuple[str, ...]]] = {
    "logistic_regression": ("sklearn.linear_model.LogisticRegression", ("binary", "multiclass")),
    "random_forest_classifier": (
        "sklearn.ensemble.RandomForestClassifier",
        ("binary", "multiclass"),
    ),
    "extra_trees_classifier": ("sklearn.ensemble.ExtraTreesClassifier", ("binary", "multiclass")),
    "hist_gradient_boosting_classifier": (
        "sklearn.ensemble.HistGradientBoostingClassifier",
        ("binary", "multiclass"),
    ),
    "gradient_boosting_classifier": (
        "sklearn.ensemble.GradientBoostingClassifier",
        ("binary", "multiclass"),
    ),
    "decision_tree_classifier": ("sklearn.tree.DecisionTreeClassifier", ("binary", "multiclass")),
    "dummy_classifier": ("sklearn.dummy.DummyClassifier", ("binary", "multiclass")),
    "linear_regression": ("sklearn.linear_model.LinearRegression", ("regression",)),
    "ridge": ("sklearn.linear_model.Ridge", ("regression",)),
    "random_forest_regressor": ("sklearn.ensemble.RandomForestRegressor", ("regression",)),
    "extra_trees_regressor": ("sklearn.ensemble.ExtraTreesRegressor", ("regression",)),
    "hist_gradient_boosting_regressor": (
        "sklearn.ensemble.HistGradientBoostingRegressor",
        ("regression",),
    ),
    "gradient_boosting_regressor": (
        "sklearn.ensemble.GradientBoostingRegressor",
        ("regression",),
    ),
    "decision_tree_regressor": ("sklearn.tree.DecisionTreeRegressor", ("regression",)),
    "dummy_regressor": ("sklearn.dummy.DummyRegressor", ("regression",)),
}

_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+$")
_MODULE = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")

# Override keys that come from outside a config file (the Prefect UI form, webhooks, events)
# must match one of these patterns (``*`` = one key or list index), unless the config lists
# its own in ``serve.allowed_overrides``. They choose *which data* a training sees, never the
# rules it is judged by.
# SQL is not among them: ``data.source.query`` and ``data.source.table`` (and keys above them)
# come from outside only when the config lists them by their exact key (`SQL_OVERRIDES`); the
# values a query's bind parameters take (``data.source.params.<name>``) when the config lists
# ``data.source.params.*`` or the parameter's own key. A path from outside must lie inside
# ``data.source.allowed_paths`` (`check_external_path`).
SAFE_OVERRIDES: tuple[str, ...] = ("data.source.path", "split.cutoff")

# Keys whose value is SQL (or reaches it): allowed from outside only when listed exactly.
SQL_OVERRIDES: tuple[str, ...] = ("data.source.query", "data.source.table")
# Keys that set the limits outside values are checked against: never from outside.
LIMIT_OVERRIDES: tuple[str, ...] = ("data.source.allowed_paths",)

# Keys that never come from outside, nor anything above or below them: the rules a candidate
# is judged by, the policy, the registry, and every import path (code that would run).
FORBIDDEN_OVERRIDES: tuple[str, ...] = (
    "gate", "retrain", "promotion", "monitoring", "registry", "serve", "modules",
    "candidates.estimators.*.estimator", "features.custom.*.transformer")
_IMPORT_PATH_KEYS = {"candidates.estimators.*.estimator": "an estimator import path",
                     "features.custom.*.transformer": "a transformer import path"}
_IDENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


class Strict(BaseModel):
    """Base for every config section: unknown keys rejected, instances frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class FileSource(Strict):
    """A CSV or Parquet file. A relative path is resolved against the config file's folder."""

    kind: Literal["file"] = "file"
    path: str
    format: Literal["csv", "parquet"] | None = Field(
        default=None, description="Inferred from the suffix when omitted."
    )
    encoding: str = "utf-8"
    chunksize: int = Field(default=200_000, gt=0, description="Rows per chunk when reading CSV.")
    allowed_paths: list[str] | None = Field(
        default=None, description="Folders a path from outside (a webhook's or the UI form's "
        "data.source.path override, a served scoring or data-arrived input_path) must lie in, "
        "symlinks followed; relative to the config's folder, ${VAR} expanded. Default: the "
        "folder of data.source.path. A person at the CLI is not limited.")

    @property
    def resolved_format(self) -> str:
        """The file format, from `format` or the path's suffix."""
        if self.format:
            return self.format
        suffix = Path(self.path).suffix.lower()
        return "parquet" if suffix in {".parquet", ".pq"} else "csv"


class SqlSource(Strict):
    """A table or query behind a SQLAlchemy URL (``${ENV_VAR}`` references are expanded)."""

    kind: Literal["sql"]
    url: str = Field(description="SQLAlchemy URL; use ${NAME} for secrets kept in the environment.")
    table: str | None = None
    query: str | None = Field(default=None, description="SQL of this config only; use :name "
                              "for the values of `params`, which are bound, never formatted "
                              "into the text.")
    params: dict[str, str | int | float | bool | None] = Field(
        default_factory=dict, description="Bind parameters of the query, name -> default value "
        "(used as :name). Outside requests may set one through the override "
        "data.source.params.<name> when serve.allowed_overrides lists it (or "
        "data.source.params.*).")
    chunksize: int = Field(default=50_000, gt=0)
    allowed_paths: list[str] = Field(
        default_factory=list, description="Folders a served scoring or data-arrived input_path "
        "from outside must lie in (relative to the config's folder, ${VAR} expanded); default "
        "none: files from outside are refused.")

    @field_validator("params")
    @classmethod
    def _param_names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
                raise ValueError(f"{name!r} is not a bind parameter name (letters, digits, _)")
        return value

    @model_validator(mode="after")
    def _one_of_table_or_query(self) -> SqlSource:
        if (self.table is None) == (self.query is None):
            raise ValueError("give exactly one of 'table' or 'query'")
        return self


class DataConfig(Strict):
    """Where the table comes from and what is predicted."""

    source: Annotated[FileSource | SqlSource, Field(discriminator="kind")] = Field(
        description="A file (`kind: file`, the default; a path alone is enough) or a SQL "
        "table or query (`kind: sql`, the default when a `url` is given).")
    target: str
    task: TaskKind = Field(description="Left out: inferred from the target column when the "
                           "config file is read (`regrow config show` prints it and why).")
    time_column: str | None = None
    id_column: str | None = None
    positive_label: str | int | float | bool | None = Field(
        default=None, description="Binary only: the class scored as positive (default: the larger)."
    )
    time_unit: Literal["auto", "year", "s", "ms", "ns", "date"] = Field(
        default="auto", description="How a numeric time column is read: calendar years, epoch "
        "seconds / milliseconds / nanoseconds, or dates (text, or integers like 20150301). "
        "auto: text is parsed as dates; integers are read as years (1000-2999), YYYYMMDD dates, "
        "or epoch s / ms / ns when their range says so unambiguously, else a config error.")

    @field_validator("source", mode="before")
    @classmethod
    def _source_kind(cls, value: Any) -> Any:
        # `source: data.csv` and a mapping without `kind` say which kind they are
        if isinstance(value, str):
            return {"kind": "file", "path": value}
        if isinstance(value, dict) and "kind" not in value:
            return {"kind": "sql" if "url" in value else "file", **value}
        return value


class RangeRule(Strict):
    """Inclusive bounds for a column's values; `mostly` is the share of rows that must comply."""

    min: float | None = None
    max: float | None = None
    mostly: float = Field(default=1.0, gt=0, le=1)

    @model_validator(mode="after")
    def _bounds(self) -> RangeRule:
        if self.min is None and self.max is None:
            raise ValueError("give at least one of 'min' or 'max'")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class RowCount(Strict):
    """Bounds on the number of rows in a batch."""

    min: int | None = Field(default=None, ge=0)
    max: int | None = Field(default=None, ge=0)


class CustomExpectation(Strict):
    """Any Great Expectations expectation by its snake_case name, with its arguments."""

    type: str = Field(pattern=r"^expect_[a-z0-9_]+$")
    kwargs: dict[str, Any] = Field(default_factory=dict)


class Expectations(Strict):
    """What a batch must satisfy before anything is trained on it."""

    row_count: RowCount = RowCount(min=1)
    columns: dict[str, DType] = Field(
        default_factory=dict, description="Columns that must exist, with their type."
    )
    not_null: list[str] = Field(default_factory=list)
    ranges: dict[str, RangeRule] = Field(default_factory=dict)
    allowed: dict[str, list[Any]] = Field(default_factory=dict)
    unique: list[str] = Field(default_factory=list)
    custom: list[CustomExpectation] = Field(default_factory=list)


class OneHot(Strict):
    """One-hot encoding of categorical columns; unseen categories never fail scoring."""

    handle_unknown: Literal["ignore", "infrequent_if_exist"] = "ignore"
    min_frequency: int | float | None = None
    max_categories: int | None = Field(default=None, ge=2)


_FEATURE_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"

# Date parts a `date_parts` derived feature can take; those with a cycle can be encoded as
# sine and cosine (`cyclical: true`) so that December sits next to January.
DATE_PARTS = ("year", "quarter", "month", "week", "day", "dayofweek", "dayofyear", "hour",
              "minute", "is_weekend")
CYCLICAL_PARTS = ("quarter", "month", "week", "day", "dayofweek", "dayofyear", "hour", "minute")
DatePart = Literal["year", "quarter", "month", "week", "day", "dayofweek", "dayofyear", "hour",
                   "minute", "is_weekend"]


def _column_shorthand(value: Any) -> Any:
    """``log: price`` means ``log: {column: price}``."""
    return {"column": value} if isinstance(value, str) else value


def _default_date_parts() -> list[DatePart]:
    return ["year", "month", "day", "dayofweek", "hour", "dayofyear"]


class DatePartsSpec(Strict):
    """Parts of a date or time column, as numbers (optionally as sine/cosine pairs)."""

    column: str
    parts: list[DatePart] = Field(default_factory=_default_date_parts, min_length=1)
    cyclical: bool = Field(default=False, description="Encode cyclical parts (quarter, month, "
                           "week, day, dayofweek, dayofyear, hour, minute) as <part>_sin and "
                           "<part>_cos instead of the number.")


class LogSpec(Strict):
    """Natural logarithm of (column + offset); values where that is <= 0 become missing."""

    column: str
    offset: float = 0.0


class PowerSpec(Strict):
    """column ** exponent, or a power transform fitted on the training part."""

    column: str
    exponent: float | None = None
    method: Literal["yeo-johnson", "box-cox"] | None = Field(
        default=None, description="Fitted on the training part (scikit-learn PowerTransformer, "
        "not standardised); box-cox needs strictly positive values.")

    @model_validator(mode="after")
    def _one(self) -> PowerSpec:
        if (self.exponent is None) == (self.method is None):
            raise ValueError("give exactly one of 'exponent' or 'method'")
        return self


class BinsSpec(Strict):
    """A numeric column cut into bins; the feature is the bin's number (0, 1, ...)."""

    column: str
    edges: list[float] | None = Field(default=None, min_length=1, description="Inner edges, "
                                      "increasing: bin i holds values in [edges[i-1], edges[i]).")
    n_bins: int | None = Field(default=None, ge=2, le=100, description="Bins with edges learned "
                               "on the training part (see `strategy`).")
    strategy: Literal["quantile", "uniform"] = "quantile"

    @model_validator(mode="after")
    def _one(self) -> BinsSpec:
        if (self.edges is None) == (self.n_bins is None):
            raise ValueError("give exactly one of 'edges' or 'n_bins'")
        if self.edges is not None and any(b <= a for a, b in zip(self.edges, self.edges[1:],
                                                                 strict=False)):
            raise ValueError(f"edges must be strictly increasing, got {self.edges}")
        return self


class ClipSpec(Strict):
    """A numeric column limited to bounds, fixed or quantiles of the training part."""

    column: str
    min: float | None = None
    max: float | None = None
    quantiles: list[float] | None = Field(default=None, min_length=2, max_length=2,
                                          description="[low, high] quantiles of the training part.")

    @model_validator(mode="after")
    def _bounds(self) -> ClipSpec:
        if self.quantiles is not None:
            lo, hi = self.quantiles
            if self.min is not None or self.max is not None:
                raise ValueError("give either 'quantiles' or 'min'/'max', not both")
            if not 0 <= lo < hi <= 1:
                raise ValueError(f"quantiles must be [low, high] with 0 <= low < high <= 1, "
                                 f"got {self.quantiles}")
        elif self.min is None and self.max is None:
            raise ValueError("give 'min', 'max' or 'quantiles'")
        elif self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class TargetEncodingSpec(Strict):
    """A categorical column replaced by the (smoothed) mean target of its category, with
    cross-fitting on the training rows (scikit-learn TargetEncoder)."""

    column: str
    smooth: Literal["auto"] | float = Field(default="auto", description="Shrinkage towards the "
                                            "overall mean; 'auto' uses an empirical Bayes estimate.")
    cv: int = Field(default=5, ge=2, le=20, description="Folds of the cross-fitting.")

    @field_validator("smooth")
    @classmethod
    def _non_negative(cls, value: Any) -> Any:
        if isinstance(value, float) and value < 0:
            raise ValueError("smooth must be 'auto' or a number >= 0")
        return value


TRANSFORMS: dict[str, str] = {
    "expr": "a safe arithmetic expression of columns (see the grammar)",
    "date_parts": "parts of a date/time column",
    "log": "natural log of column + offset",
    "power": "column ** exponent, or a fitted yeo-johnson / box-cox transform",
    "ratio": "[a, b]: a / b",
    "difference": "[a, b]: a - b (two dates: days)",
    "bins": "bin number of a numeric column",
    "clip": "a numeric column limited to bounds",
    "frequency": "share of training rows with the same value",
    "target_encoding": "mean target per category, cross-fitted",
}


class Derived(Strict):
    """One derived feature: a name and exactly one transform; it becomes a scikit-learn
    transformer inside the model's Pipeline, so scoring applies it exactly as training did."""

    name: str = Field(pattern=_FEATURE_NAME, description="The output column (several outputs "
                      "are named <name>_<suffix>).")
    role: Literal["numeric", "categorical"] = Field(
        default="numeric", description="How the output is preprocessed: numeric (imputed, "
        "scaled) or categorical (one-hot encoded).")
    expr: str | None = None
    date_parts: DatePartsSpec | None = None
    log: LogSpec | None = None
    power: PowerSpec | None = None
    ratio: list[str] | None = Field(default=None, min_length=2, max_length=2)
    difference: list[str] | None = Field(default=None, min_length=2, max_length=2)
    bins: BinsSpec | None = None
    clip: ClipSpec | None = None
    frequency: str | None = None
    target_encoding: TargetEncodingSpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _known_transform(cls, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = [k for k in data if k not in cls.model_fields]
            if unknown:
                raise ValueError(f"unknown transform {unknown[0]!r}; known transforms: "
                                 + ", ".join(TRANSFORMS))
        return data

    @field_validator("log", "target_encoding", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return _column_shorthand(value)

    @field_validator("expr")
    @classmethod
    def _grammar(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                names = expression.columns(value)
            except expression.ExpressionError as err:
                raise ValueError(str(err)) from None
            if not names:
                raise ValueError("the expression reads no column")
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> Derived:
        given = [t for t in TRANSFORMS if getattr(self, t) is not None]
        if len(given) != 1:
            raise ValueError(f"derived feature {self.name!r} needs exactly one transform (one "
                             f"of {', '.join(TRANSFORMS)}); got "
                             + (", ".join(given) if given else "none"))
        return self

    @property
    def transform(self) -> str:
        """The transform's key (``expr``, ``date_parts``, ...)."""
        return next(t for t in TRANSFORMS if getattr(self, t) is not None)

    @property
    def sources(self) -> list[str]:
        """The columns of the table this feature reads."""
        spec = getattr(self, self.transform)
        if self.transform == "expr":
            return expression.columns(spec)
        if isinstance(spec, list):
            return list(dict.fromkeys(spec))
        return [spec] if isinstance(spec, str) else [spec.column]


class CustomTransformer(Strict):
    """A transformer class of your own (scikit-learn API: fit, transform, get_params), from a
    module listed in the top-level `modules`, applied to `columns` of the table."""

    name: str = Field(pattern=_FEATURE_NAME, description="The output column, or the prefix of "
                      "several (<name>_<feature name out or index>).")
    transformer: str = Field(description="Import path of the class, e.g. mypackage.features.Lag.")
    columns: list[str] = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)
    role: Literal["numeric", "categorical"] = "numeric"

    @field_validator("transformer")
    @classmethod
    def _path(cls, value: str) -> str:
        if not _IMPORT_PATH.match(value):
            raise ValueError(f"{value!r} is not an import path like mypackage.features.MyTransformer")
        return value


class Features(Strict):
    """Feature roles and preprocessing. Unlisted columns are inferred from dtypes when
    `infer` is true (numbers -> numeric, the rest -> categorical)."""

    numeric: list[str] = Field(default_factory=list)
    categorical: list[str] = Field(default_factory=list)
    datetime: list[str] = Field(default_factory=list)
    drop: list[str] = Field(default_factory=list)
    infer: bool = Field(default=True, description="Infer roles of columns not listed above.")
    numeric_imputation: Literal["mean", "median", "most_frequent", "constant"] = "median"
    categorical_imputation: Literal["most_frequent", "constant"] = "constant"
    scaling: Literal["standard", "minmax", "robust", "none"] = "standard"
    one_hot: OneHot = OneHot()
    derived: list[Derived] = Field(
        default_factory=list, description="Features computed from columns of the table, each by "
        "one transform; they read the table's columns (also those under drop, and the time "
        "column) and are fitted on the training part only.")
    custom: list[CustomTransformer] = Field(
        default_factory=list, description="Transformers of your own, from modules listed in "
        "`modules`.")

    @model_validator(mode="after")
    def _disjoint(self) -> Features:
        seen: dict[str, str] = {}
        for role in ("numeric", "categorical", "datetime", "drop"):
            for col in getattr(self, role):
                if col in seen:
                    raise ValueError(f"column {col!r} is listed in both {seen[col]!r} and {role!r}")
                seen[col] = role
        names: dict[str, str] = {}
        for kind in ("derived", "custom"):
            for i, item in enumerate(getattr(self, kind)):
                if item.name in names:
                    raise ValueError(f"{kind}.{i}: name {item.name!r} is already used by "
                                     f"{names[item.name]}")
                if item.name in seen:
                    raise ValueError(f"{kind}.{i}: name {item.name!r} is a column listed in "
                                     f"{seen[item.name]!r}")
                names[item.name] = f"{kind}.{i}"
        return self

    def derived_sources(self) -> list[str]:
        """Every table column a derived or custom feature reads, in order of first use."""
        cols = [c for d in self.derived for c in d.sources]
        cols += [c for t in self.custom for c in t.columns]
        return list(dict.fromkeys(cols))


class Candidate(Strict):
    """One estimator to try, with fixed params and a grid searched by cross-validation."""

    name: str = Field(pattern=_IDENT.pattern)
    estimator: str = Field(description="A short name (`regrow config estimators` lists them) "
                           "or the import path of a scikit-learn estimator class, from "
                           "scikit-learn or a module listed in `modules`.")
    params: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list[Any]] = Field(default_factory=dict)

    @field_validator("estimator")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in ESTIMATORS and not _IMPORT_PATH.match(value):
            known = ", ".join(sorted(ESTIMATORS))
            raise ValueError(f"unknown estimator {value!r}; use an import path or one of: {known}")
        return value

    @field_validator("grid")
    @classmethod
    def _non_empty(cls, value: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in value.items():
            if not values:
                raise ValueError(f"grid entry {key!r} has no values")
        return value


class Candidates(Strict):
    """The estimators to try and how they are compared."""

    estimators: list[Candidate] = Field(min_length=1)
    cv_folds: int = Field(default=3, ge=2, le=20)
    seed: int = 0
    n_jobs: int = Field(default=1, description="Parallel jobs for the grid search (-1 = all cores).")
    backend: Literal["local", "dask"] = Field(
        default="local", description="Where the grid search's fits run: in this process "
        "(`n_jobs`), or on the Dask cluster whose scheduler REGROW_DASK_ADDRESS names, through "
        "scikit-learn's joblib backend for Dask (every worker thread takes fits).")
    threads: int | None = Field(
        default=None, ge=1, description="Cap on native threads (OpenMP/BLAS) while fitting; "
        "1 is often fastest for small tables or busy machines. None: the libraries' default.")

    @model_validator(mode="after")
    def _unique_names(self) -> Candidates:
        names = [c.name for c in self.estimators]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"candidate names must be unique; repeated: {dupes}")
        return self


class Split(Strict):
    """Holdout split: time-based when the data has a time column, else seeded random."""

    holdout_fraction: float = Field(default=0.2, gt=0, lt=1)
    cutoff: str | None = Field(
        default=None, description="ISO date or time (2024-06-01, 2024-06-01T12:00:00); rows at "
        "or after it form the holdout (time split). A whole number is read by data.time_unit "
        "like the time column (2015: the year 2015 under auto).")
    seed: int = 0
    stratify: bool = True

    @field_validator("cutoff", mode="before")
    @classmethod
    def _cutoff_text(cls, value: Any) -> Any:
        # YAML reads `cutoff: 2015` as a number and `cutoff: 2024-06-01` as a date (so does
        # `--set split.cutoff=2024-06-01`): both are still times, kept as text.
        if isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        if isinstance(value, int | float):
            return str(value)
        if isinstance(value, dt.date):  # a datetime is a date too
            return value.isoformat()
        return value

    @field_validator("cutoff")
    @classmethod
    def _cutoff_is_a_time(cls, value: str | None) -> str | None:
        return None if value is None else check_cutoff(value)


_WHOLE_NUMBER = re.compile(r"^-?\d+$")


def check_cutoff(text: str) -> str:
    """`text` (stripped) when it is a time the split can read: a whole number (read by
    ``data.time_unit``) or an ISO 8601 date or time.

    Raises:
        ValueError: anything else, in one sentence saying what is accepted.
    """
    value = text.strip()
    if _WHOLE_NUMBER.match(value):
        return value
    try:
        dt.datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("not a date or time: give an ISO date or time such as 2024-06-01 or "
                         "2024-06-01T12:00:00, or a whole number read by data.time_unit "
                         "(a year, YYYYMMDD or epoch seconds)") from None
    return value


class SliceFloor(Strict):
    """A floor on the primary metric within each value of a column."""

    column: str
    floor: float
    min_rows: int = Field(default=30, ge=1, description="Slices smaller than this are reported only.")


class Gate(Strict):
    """Rules a candidate must pass to become champion."""

    primary_metric: str
    floors: dict[str, float] = Field(
        default_factory=dict,
        description="Absolute bounds: a minimum for greater-is-better metrics, a maximum otherwise.",
    )
    max_regression: float = Field(
        default=0.0, ge=0, description="Largest allowed loss in the primary metric vs the champion."
    )
    require_improvement: bool = Field(
        default=True, description="With a champion, promote only on a significant gain on the "
        "same holdout: the low end of the paired bootstrap interval of candidate minus champion "
        "(both scored on identical resampled rows) above min_improvement. A candidate that "
        "passes every other rule without it gets verdict no_gain: the champion stays and the "
        "circuit breaker does not count it.")
    min_improvement: float | None = Field(
        default=None, description="Gain over the champion required to promote: of the "
        "interval's low end with require_improvement, of the point gain without it. In the "
        "metric's own units when min_improvement_kind is absolute, a fraction of the "
        "champion's holdout value when relative. null: with require_improvement, the primary "
        "metric's default minimum gain (MINIMUM_GAIN in tasks/model/gate.py: half the "
        "practical minimum drop); without it, not a rule. 0: any significant gain. Falling "
        "short is verdict no_gain.")
    min_improvement_kind: Literal["absolute", "relative"] | None = Field(
        default=None, description="absolute: gain in the metric's units; relative: gain "
        "divided by the champion's holdout value. null: absolute when min_improvement is "
        "given, else the metric's default kind.")
    improvement_confidence: float = Field(
        default=0.95, gt=0.5, lt=1, description="Level of the paired interval of the gain.")
    slices: list[SliceFloor] = Field(default_factory=list)
    bootstrap_samples: int = Field(default=200, ge=0, le=10_000)
    baseline: bool = Field(
        default=True, description="The candidate must beat a trivial model (class prior / mean "
        "of the training target) on the same holdout: by its bootstrap interval (low end above "
        "the baseline, or high end below it for lower-is-better metrics), or without bootstrap "
        "by `baseline_margin`.")
    baseline_margin: float = Field(
        default=0.01, ge=0, description="Without bootstrap: how far (in the primary metric's "
        "units) the candidate's point value must beat the trivial model.")
    trusted_rows: int = Field(
        default=5000, ge=0, description="Labelled holdout rows kept (seeded sample) with every "
        "version as its trusted evaluation set; 0 keeps none.")
    collapse_share: float = Field(
        default=0.75, gt=0, le=1, description="The champion has collapsed on the new holdout when "
        "it loses at least this share of its skill above the trivial model (measured on its own "
        "trusted set). With a candidate that has no skill either, the new labels look broken "
        "and the gate refuses.")
    trusted_max_loss: float | None = Field(
        default=0.5, ge=0, le=1, description="The candidate must keep at least 1 - this share "
        "of the champion's skill above the trivial model on the champion's trusted set (its own "
        "holdout): 0.5 refuses a candidate that keeps less than half of it there. Not applied "
        "when the champion has collapsed on the new holdout (a concept change, see "
        "collapse_share). null: the trusted-set scores are reported only.")

    @model_validator(mode="after")
    def _kind_with_minimum(self) -> Gate:
        if self.min_improvement is None and self.min_improvement_kind is not None:
            raise ValueError("gate.min_improvement_kind needs a min_improvement: give both, "
                             "or neither for the primary metric's default minimum gain")
        return self


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """``"90s"``, ``"15m"``, ``"6h"``, ``"7d"``, ``"2w"`` -> seconds.

    Raises:
        ValueError: not a number followed by one of s, m, h, d, w.
    """
    m = _DURATION.match(str(text))
    if not m:
        raise ValueError(f"{text!r} is not a duration like 90s, 15m, 6h, 7d or 2w")
    return float(m.group(1)) * _UNIT_SECONDS[m.group(2)]


class Window(Strict):
    """The current window a drift check looks at: the latest `rows` scored rows, or the rows
    scored within `period` (e.g. ``7d``)."""

    rows: int | None = Field(default=5000, ge=1, description="The latest this many scored rows.")
    period: str | None = Field(default=None, description="Or: the rows scored within this "
                               "period, e.g. 7d.")
    min_rows: int = Field(default=500, ge=1, description="Below this: 'insufficient data'.")

    @model_validator(mode="after")
    def _one(self) -> Window:
        if self.period is not None:
            parse_duration(self.period)
        if (self.rows is None) == (self.period is None):
            raise ValueError("give exactly one of 'rows' or 'period'")
        return self


class Persistence(Strict):
    """Ask for a retrain only when drift was seen in `k` of the last `n` checks."""

    k: int = Field(default=2, ge=1, description="Checks among the last n that must see drift.")
    n: int = Field(default=3, ge=1, description="How many recent checks count.")

    @model_validator(mode="after")
    def _k_le_n(self) -> Persistence:
        if self.k > self.n:
            raise ValueError(f"k ({self.k}) cannot exceed n ({self.n})")
        return self


# Drift methods whose thresholds `thresholds_mode: calibrated` computes, with the default
# effect-size floor of each (see tasks/monitoring/calibration.py).
CALIBRATED_MIN_EFFECT = {"wasserstein": 0.05, "jensenshannon": 0.05}


class DriftRules(Strict):
    """How feature and prediction drift are measured and when they count."""

    numeric_method: Literal["wasserstein", "ks", "psi", "jensenshannon", "kl_div"] = Field(
        default="wasserstein", description="Distance between reference and window of a "
        "numeric column.")
    numeric_threshold: float = Field(default=0.1, gt=0, description="Fixed mode: a numeric "
                                     "column drifted above this distance.")
    categorical_method: Literal["jensenshannon", "psi", "chisquare", "kl_div"] = Field(
        default="jensenshannon", description="Distance of a categorical column.")
    categorical_threshold: float = Field(default=0.1, gt=0, description="Fixed mode: a "
                                         "categorical column drifted above this distance.")
    thresholds: dict[str, float] = Field(default_factory=dict,
                                         description="Per-column threshold overrides.")
    thresholds_mode: Literal["calibrated", "fixed"] = Field(
        default="calibrated",
        description="calibrated: per-column thresholds from a bootstrap null of the reference "
                    "at the window size; fixed: numeric_threshold / categorical_threshold.")
    alpha: float = Field(default=0.01, gt=0, lt=1,
                         description="Calibrated mode: chance that an undrifted window flags "
                                     "any column (Bonferroni over features + prediction).")
    min_effect: dict[str, float] = Field(
        default_factory=lambda: dict(CALIBRATED_MIN_EFFECT),
        description="Calibrated mode: per-method floor of the threshold.")
    drift_share: float = Field(default=0.5, gt=0, le=1,
                               description="Share of (weighted) columns drifted = dataset drift.")
    weight_by_importance: bool = Field(default=False, description="Weigh columns by the "
                                       "champion's feature importance in drift_share.")
    prediction_drift: bool = Field(default=True, description="Also compare the champion's "
                                   "predictions between reference and window.")
    max_rows: int = Field(default=100_000, ge=1000,
                          description="Rows compared per side (seeded sample above this).")

    @field_validator("min_effect")
    @classmethod
    def _floors(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(CALIBRATED_MIN_EFFECT))
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; calibrated methods: "
                             f"{sorted(CALIBRATED_MIN_EFFECT)}")
        bad = {k: v for k, v in value.items() if not 0 <= v < 1}
        if bad:
            raise ValueError(f"floors must be in [0, 1), got {bad}")
        return {**CALIBRATED_MIN_EFFECT, **value}  # unnamed methods keep their default


class PerformanceRule(Strict):
    """Performance against the reference (holdout) performance: realized on matured labels,
    estimated without labels (binary classifiers) when fewer than `min_labels` have matured.

    A window is degraded when the drop of the primary metric is significant (the low end of
    its interval, made from the window's own rows, is above zero) and larger than the
    practical minimum `tolerance`; a drop whose interval's low end is above `severe` times the
    minimum asks for a retrain at once (see docs/concepts/drift.md for the defaults' cases)."""

    min_labels: int = Field(default=200, ge=1,
                            description="Matured labels a window needs for realized performance.")
    tolerance: float | None = Field(
        default=None, ge=0, description="The practical minimum: a smaller drop of the primary "
        "metric never counts, however significant. In the metric's own units when "
        "tolerance_kind is absolute (0.02 = two AUC points), a fraction of the reference value "
        "when relative (0.05 = 5% worse). null: the metric's default (0.02 absolute for "
        "roc_auc, accuracy, f1, precision, recall and r2; 5% relative for log_loss, rmse, mae).")
    tolerance_kind: Literal["absolute", "relative"] | None = Field(
        default=None, description="absolute: drop in the metric's units; relative: drop "
        "divided by the absolute reference value. null: absolute when tolerance is given, "
        "else the metric's default kind.")
    confidence: float = Field(
        default=0.95, gt=0.5, lt=1, description="Level of the drop's two-sided interval: the "
        "drop is significant when the interval's low end is above zero.")
    bootstrap_samples: int = Field(
        default=200, ge=0, le=10_000, description="Resamples of the window's labelled rows "
        "(realized) or draws of its labels from the calibrated probabilities (estimated) "
        "that make the drop's interval; 0: no interval, the point drop against tolerance.")
    severe: float | None = Field(
        default=2.0, ge=1, description="A drop whose interval's low end is above this many "
        "times tolerance asks for a retrain on one check, without waiting for persistence; "
        "null: never.")
    immediate: float | None = Field(
        default=None, gt=0, description="A point drop at least this large (same units as "
        "tolerance) asks for a retrain on one check, without waiting for persistence; "
        "null = never.")
    estimate: bool = Field(
        default=True, description="Without enough matured labels, estimate the primary metric "
        "of a binary classifier from its calibrated probabilities (CBPE).")

    @model_validator(mode="after")
    def _kind_with_tolerance(self) -> PerformanceRule:
        if self.tolerance is None and self.tolerance_kind is not None:
            raise ValueError("monitoring.performance.tolerance_kind needs a tolerance: give "
                             "both, or neither for the primary metric's default minimum")
        return self


class Monitoring(Strict):
    """Drift watch: reference, window, rules, persistence, schedule."""

    reference_rows: int = Field(default=20_000, ge=100,
                                description="Seeded sample of training rows kept as reference.")
    window: Window = Window()
    drift: DriftRules = DriftRules()
    performance: PerformanceRule = PerformanceRule()
    persistence: Persistence = Persistence()
    schedule: str | None = Field(default=None, description="Cron for the drift-check deployment.")
    keep_reports_days: int = Field(default=30, ge=1, description="Days a drift check's local "
                                   "HTML report is kept: `regrow prune` removes older ones.")


class RetrainPolicy(Strict):
    """The one door every retrain request passes."""

    cooldown: str = Field(default="6h", description="After a training, requests wait this "
                          "long before another is admitted.")
    max_trainings: int = Field(default=4, ge=1, description="Trainings admitted per "
                               "budget_period.")
    budget_period: str = Field(default="1d", description="The period max_trainings counts in.")
    circuit_breaker_after: int = Field(default=3, ge=1,
                                       description="Consecutive gate rejections that open it.")
    stale_after: str = Field(default="2h", description="An in-flight training older than this "
                             "is considered dead and no longer coalesces requests.")
    on: Literal["performance", "drift", "any"] = Field(
        default="performance", description="What asks a drift check for a retrain: performance "
        "degradation (realized, or estimated without labels; drift alone is a warning), drift "
        "(feature drift, prediction drift or realized performance drop), or any of them.")

    catch_up: bool = Field(
        default=True, description="After a retrain a drift check asked for promoted a model "
        "whose gain over the champion it replaced cleared the practical minimum drop "
        "(monitoring.performance; the low end of its paired interval), the next check with "
        "labelled rows on the new champion asks for one more retrain: that training and its "
        "holdout straddled the change, and newer rows may gain more. It ends when a retrain "
        "promotes nothing.")

    @field_validator("cooldown", "budget_period", "stale_after")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration(value)
        return value


class Bake(Strict):
    """After a promotion the previous champion keeps scoring, as a shadow, for `windows` drift
    checks with matured labels; if the new champion is worse on them by more than `tolerance`
    (in the primary metric's units), regrow rolls back by itself."""

    windows: int = Field(ge=1, description="Drift-check windows with enough labels to judge.")
    tolerance: float = Field(default=0.0, ge=0, description="Allowed shortfall of the new "
                             "champion against the previous one, in the primary metric's units.")
    min_labels: int = Field(default=100, ge=1,
                            description="Labelled rows a window needs to count for the bake.")


class ShadowTrial(Strict):
    """A challenger in shadow (``promotion.mode: shadow``): a candidate that passed the gate
    scores live batches beside the champion; once `windows` drift-check windows each hold at
    least `min_labels` matured labels that both scored, the paired comparison over them
    decides (`tasks.registry.challenger`)."""

    windows: int = Field(default=3, ge=1, description="Drift-check windows with enough "
                         "matured labels (scored by both versions) the challenger is judged on.")
    min_labels: int = Field(default=100, ge=1, description="Labelled rows scored by both "
                            "versions a window needs to count.")
    min_gain: float = Field(default=0.0, ge=0, description="The challenger takes over when "
                            "the low end of its pooled paired gain over the champion (primary "
                            "metric's units, positive = better) is above this; otherwise it is "
                            "retired.")
    confidence: float = Field(default=0.9, gt=0, lt=1, description="Two-sided level of the "
                              "interval of that gain (paired bootstrap per window, pooled).")
    bootstrap_samples: int = Field(default=200, ge=0, description="Paired resamples per window "
                                   "(0: no interval; the gain itself must then exceed min_gain).")


class Promotion(Strict):
    """Who moves the champion alias after a passing gate.

    ``auto``: the gate decides. ``manual``: a person approves every promotion (Prefect UI form
    or ``regrow approve``). ``manual_if_borderline``: a person decides only when the candidate
    passes within tolerance (scores below the champion, inside ``gate.max_regression``).
    ``shadow``: a passing candidate becomes ``challenger`` and scores live batches beside the
    champion; it takes over when it beats the champion on matured labels (``shadow``), else it
    is retired. With no champion yet the gate decides alone.
    """

    mode: Literal["auto", "manual", "manual_if_borderline", "shadow"] = "auto"
    shadow: ShadowTrial = Field(default_factory=ShadowTrial,
                                description="How a challenger in shadow is judged (mode shadow).")
    timeout: str = Field(default="24h", description="No decision by then = rejected.")
    bake: Bake | None = Field(default=None, description="Bake period with automatic rollback.")

    @field_validator("timeout")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration(value)
        return value


class Serve(Strict):
    """How `regrow serve` deploys this model."""

    collision_strategy: Literal["enqueue", "cancel_new"] = Field(
        default="enqueue", description="A training asked while one runs: queue it or drop it.")
    scoring_cron: str | None = Field(default=None, description="Cron for scheduled scoring.")
    retrain_cron: str | None = Field(default=None, description="Cron for scheduled retrain "
                                     "requests (they pass the retrain policy).")
    data_arrived: Literal["score_and_check", "retrain"] = Field(
        default="score_and_check", description="What a data-arrived webhook starts.")
    allowed_overrides: list[str] = Field(
        default_factory=lambda: list(SAFE_OVERRIDES),
        description="Config keys that the Prefect UI form, webhooks and events may override "
        "(dotted, `*` matches one key or list index). Keys under gate, retrain, promotion, "
        "monitoring, registry, serve, modules and estimator or transformer import paths are "
        "never allowed, nor data.source.allowed_paths. SQL (data.source.query, "
        "data.source.table) only when listed by its exact key: whoever can send a webhook "
        "then runs any SQL the source's user may; prefer data.source.params.<name>.")

    @field_validator("allowed_overrides")
    @classmethod
    def _never_rules(cls, value: list[str]) -> list[str]:
        for pattern in value:
            if not re.match(r"^[A-Za-z0-9_*]+(\.[A-Za-z0-9_*]+)*$", pattern):
                raise ValueError(f"{pattern!r} is not a dotted key pattern like split.cutoff")
            blocked = forbidden_override(pattern)
            if blocked:
                raise ValueError(f"{pattern!r} may never be overridden from outside "
                                 f"(it reaches {blocked!r})")
        return value


# What regrow tells: each kind is a Prefect event (tasks/policy/notices.py names the events and
# words them) that the automations `regrow serve` creates can send through a notification block.
# Every move of `champion` (promoted, rolled_back) and every decision a person should hear of is
# sent by default; the frequent ones (each policy verdict, each drift check) only when named.
NOTIFY_DEFAULT: tuple[str, ...] = ("gate_rejected", "promoted", "degradation_confirmed",
                                   "approval_waiting", "training_failed", "circuit_opened",
                                   "rolled_back", "approval_rejected", "circuit_reset",
                                   "challenger_promoted", "challenger_retired")
NOTIFY_KINDS: tuple[str, ...] = (*NOTIFY_DEFAULT, "challenger_started", "retrain_admitted",
                                 "retrain_coalesced", "retrain_refused", "drift_checked")
_BLOCK_REF = re.compile(r"^[a-z0-9][a-z0-9-]*/[a-z0-9][a-z0-9-]*$")


class Notify(Strict):
    """Who hears about what: the Prefect notification block the messages go through, the
    decision kinds that send one, and the quiet window (at most one message per model and
    kind within it)."""

    block: str = Field(description="The Prefect notification block, as <block type>/<block "
                       "name>, e.g. slack-webhook/ml-alerts (`prefect block ls` lists them).")
    on: list[str] = Field(default_factory=lambda: list(NOTIFY_DEFAULT),
                          description="Kinds that send a message; default: "
                          + ", ".join(NOTIFY_DEFAULT) + " (every move of champion included); "
                          "also: " + ", ".join(k for k in NOTIFY_KINDS if k not in NOTIFY_DEFAULT)
                          + ".")
    window: str = Field(default="1h", description="Quiet window: after a message, the same "
                        "model and kind send nothing more until it has passed (0s: every "
                        "event); a move of champion (promoted, rolled_back) is always sent.")

    @field_validator("block")
    @classmethod
    def _block_ref(cls, value: str) -> str:
        if not _BLOCK_REF.match(value):
            raise ValueError(f"{value!r} is not a Prefect block reference like "
                             "slack-webhook/ml-alerts (<block type>/<block name>: lowercase "
                             "letters, digits and dashes)")
        return value

    @field_validator("on")
    @classmethod
    def _kinds(cls, value: list[str]) -> list[str]:
        unknown = [k for k in value if k not in NOTIFY_KINDS]
        if unknown:
            raise ValueError(f"unknown decision kind(s) {', '.join(map(repr, unknown))}; "
                             f"known kinds: {', '.join(NOTIFY_KINDS)}")
        if not value:
            raise ValueError(f"name at least one decision kind ({', '.join(NOTIFY_KINDS)}), "
                             "or leave out the notify section")
        return list(dict.fromkeys(value))

    @field_validator("window")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration(value)
        return value

    @property
    def window_seconds(self) -> float:
        """The quiet window in seconds."""
        return parse_duration(self.window)


class Registry(Strict):
    """Where the model lives in the MLflow registry."""

    model_name: str = Field(pattern=_IDENT.pattern)


def _segments_meet(a: list[str], b: list[str]) -> bool:
    """True when one dotted pattern is a prefix of the other (``*`` matches any one key)."""
    return all(x == y or "*" in (x, y) for x, y in zip(a, b, strict=False))


def forbidden_override(key: str) -> str | None:
    """The forbidden key that `key` (a key or pattern) would reach, or None if it reaches none.

    A key reaches a forbidden one when either is a prefix of the other: overriding
    ``candidates`` would replace an estimator's import path as surely as overriding the path.
    """
    parts = key.split(".")
    for blocked in FORBIDDEN_OVERRIDES:
        if _segments_meet(parts, blocked.split(".")):
            return blocked
    return None


def _matches(key: str, pattern: str) -> bool:
    k, p = key.split("."), pattern.split(".")
    return len(k) == len(p) and all(x == y or y == "*" for x, y in zip(k, p, strict=True))


class Config(Strict):
    """One model: its data, checks, features, candidates, split, gate and registry name."""

    description: str = ""
    modules: list[str] = Field(
        default_factory=list,
        description="Python modules (besides scikit-learn) whose estimator classes candidates "
        "and whose transformer classes features.custom may name by import path; nothing else "
        "is ever imported from a config.")
    data: DataConfig
    expectations: Expectations = Expectations()
    features: Features = Features()
    candidates: Candidates
    split: Split = Split()
    gate: Gate
    registry: Registry
    monitoring: Monitoring = Monitoring()
    retrain: RetrainPolicy = RetrainPolicy()
    promotion: Promotion = Promotion()
    serve: Serve = Serve()
    notify: Notify | None = Field(default=None, description="Messages to people through a "
                                  "Prefect notification block (created by `regrow serve`).")

    @model_validator(mode="before")
    @classmethod
    def _default_sections(cls, data: Any) -> Any:
        # A left-out `candidates` or `gate` gets its task's defaults (configs/defaults.py,
        # which `regrow init` writes too); without a valid task there is nothing to choose by.
        if not isinstance(data, dict):
            return data
        section = data.get("data")
        task = section.get("task") if isinstance(section, dict) else None
        missing = [k for k in DEFAULTED_SECTIONS if k not in data]
        if isinstance(task, str) and task in get_args(TaskKind) and missing:
            data = {**data, **{k: DEFAULTED_SECTIONS[k](task) for k in missing}}
        gate = data.get("gate")
        if isinstance(task, str) and task in get_args(TaskKind) and isinstance(gate, dict) \
                and "primary_metric" not in gate:
            # a gate section that only sets other keys (`--set gate.min_improvement=0` on a
            # config without one) keeps the rest of the task's default gate
            data = {**data, "gate": {**DEFAULTED_SECTIONS["gate"](task), **gate}}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        task = self.data.task
        metric = self.gate.primary_metric
        for where, name in [("gate.primary_metric", metric)] + [
            (f"gate.floors.{m}", m) for m in self.gate.floors
        ]:
            if name not in METRICS:
                raise ValueError(f"{where}: unknown metric {name!r}; known: {sorted(METRICS)}")
            if task not in METRICS[name][0]:
                raise ValueError(f"{where}: metric {name!r} does not apply to task {task!r}")
        for m in self.modules:
            if not _MODULE.match(m):
                raise ValueError(f"modules: {m!r} is not a module name like mypackage.models")
        for i, cand in enumerate(self.candidates.estimators):
            if cand.estimator not in ESTIMATORS and not self.module_allowed(cand.estimator):
                raise ValueError(
                    f"candidates.estimators.{i}.estimator: {cand.estimator!r} is neither a short "
                    "name nor a class from scikit-learn (sklearn.*) or from a module listed in "
                    "'modules'")
            if cand.estimator in ESTIMATORS and task not in ESTIMATORS[cand.estimator][1]:
                raise ValueError(
                    f"candidates.estimators.{i}.estimator: {cand.estimator!r} "
                    f"does not serve task {task!r}"
                )
        if self.data.target in self.feature_columns_listed():
            raise ValueError(f"features: the target {self.data.target!r} is listed as a feature")
        for i, t in enumerate(self.features.custom):
            if not self.module_allowed(t.transformer):
                raise ValueError(
                    f"features.custom.{i}.transformer: {t.transformer!r} is not a class from "
                    "scikit-learn (sklearn.*) or from a module listed in 'modules'")
        for kind in ("derived", "custom"):
            for i, item in enumerate(getattr(self.features, kind)):
                cols = item.sources if kind == "derived" else item.columns
                if self.data.target in cols:
                    raise ValueError(
                        f"features.{kind}.{i} ({item.name}): reads the target "
                        f"{self.data.target!r}; a feature computed from the target leaks it "
                        "into the model (target_encoding of another column is the safe form)")
        if self.data.positive_label is not None and task != "binary":
            raise ValueError("data.positive_label applies to binary tasks only")
        cut, unit = self.split.cutoff, self.data.time_unit
        if cut is not None and unit in ("year", "s", "ms", "ns") and not _WHOLE_NUMBER.match(cut):
            raise ValueError(f"split.cutoff: {cut!r} is not a whole number, but data.time_unit "
                             f"{unit} reads times as numbers; give the cutoff in that unit")
        return self

    def module_allowed(self, import_path: str) -> bool:
        """True when an import path lies in scikit-learn or in a module the config lists."""
        module = import_path.rpartition(".")[0]
        return any(module == m or module.startswith(m + ".") for m in ("sklearn", *self.modules))

    def feature_columns_listed(self) -> list[str]:
        """Columns the config names as model inputs (not counting inferred ones)."""
        f = self.features
        return [*f.numeric, *f.categorical, *f.datetime]


class ConfigError(ValueError):
    """A config file that cannot be used; the message names each key path and problem."""


def _error_lines(err: ValidationError) -> list[tuple[str, str]]:
    """(key path, sentence) per problem; the path is empty for a problem of the whole config
    (whose sentence then starts with the key it is about)."""
    lines = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"] if not str(p).startswith("function-after"))
        path = re.sub(r"\.(file|sql)\b", "", path)  # drop the discriminator tag from paths
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (not allowed here)"
        got = e.get("input")
        detail = f" (got {got!r})" if e["type"] not in {"extra_forbidden", "missing"} else ""
        if isinstance(got, dict | list):
            detail = ""
        lines.append((path, f"{path}: {msg}{detail}" if path else f"{msg}{detail}"))
    return lines


def _format_errors(err: ValidationError) -> str:
    return "\n".join(f"  {text}" for _, text in _error_lines(err))


def parse_config(data: Any, origin: str = "<config>") -> Config:
    """Validate an already-loaded mapping into a `Config`.

    Raises:
        ConfigError: naming every bad key path and what was expected.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: the top level must be a mapping, got {type(data).__name__}")
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        n = err.error_count()
        raise ConfigError(f"{origin}: {n} problem(s)\n{_format_errors(err)}") from None


def apply_overrides(data: Any, overrides: dict[str, Any]) -> Any:
    """Set dotted keys (``split.cutoff``, ``candidates.estimators.0.params.C``) in a mapping.

    Raises:
        ConfigError: a path runs through something that is not a mapping or list.
    """
    for dotted, value in overrides.items():
        node = data
        parts = dotted.split(".")
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list) and part.isdigit() and int(part) < len(node):
                key: Any = int(part)
            elif isinstance(node, dict):
                key = part
            else:
                raise ConfigError(f"override {dotted!r}: {'.'.join(parts[:i]) or '<root>'} "
                                  "is not a mapping or list")
            if last:
                node[key] = value
            else:
                if isinstance(node, dict) and key not in node:
                    node[key] = {}
                node = node[key]
    return data


class OverrideRefused(ConfigError):
    """Overrides from outside (UI form, webhook, event) that touch keys the config does not allow.

    Attributes:
        refused: the refused keys, in the order given.
        allowed: the config's ``serve.allowed_overrides``.
    """

    def __init__(self, message: str, refused: list[str], allowed: list[str]) -> None:
        super().__init__(message)
        self.refused = refused
        self.allowed = allowed


def refused_overrides(config: Config, overrides: dict[str, Any]) -> list[str]:
    """The override keys that may not come from outside for this config, each with why."""
    allowed = config.serve.allowed_overrides
    problems = []
    for key in overrides:
        blocked = forbidden_override(key)
        if blocked:
            problems.append(f"{key}: never overridable from outside (reaches {blocked!r})")
        elif not any(_matches(key, p) for p in allowed):
            problems.append(f"{key}: not in serve.allowed_overrides {allowed}")
    return problems


def _listed(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def check_external_overrides(config: Config, overrides: dict[str, Any] | None) -> None:
    """Refuse overrides from the Prefect UI form, webhooks or events that the config does not
    allow (a person at the CLI may use ``--set`` freely; that is recorded with the run).

    Raises:
        OverrideRefused: one sentence naming every refused key, why, and the allowed keys.
    """
    allowed = list(config.serve.allowed_overrides)
    limits = [k for k in overrides or {} if not forbidden_override(k)
              and any(_segments_meet(k.split("."), b.split(".")) for b in LIMIT_OVERRIDES)]
    sql = [k for k in overrides or {} if k not in limits and not forbidden_override(k)
           and any(_segments_meet(k.split("."), q.split(".")) for q in SQL_OVERRIDES)
           and k not in allowed]
    never = [k for k in overrides or {} if forbidden_override(k)]
    unlisted = [k for k in overrides or {} if k not in never and k not in limits
                and k not in sql and not any(_matches(k, p) for p in allowed)]
    if not never and not unlisted and not limits and not sql:
        return
    why = []
    if limits:
        why.append(f"{_listed(limits)} {'is' if len(limits) == 1 else 'are'} never allowed "
                   "from outside (the limits outside paths are checked against)")
    if sql:
        why.append(f"{_listed(sql)} would take SQL from outside, which needs "
                   f"{'its' if len(sql) == 1 else 'each'} exact key in "
                   "serve.allowed_overrides (prefer data.source.params.<name>)")
    if never:
        reached = dict.fromkeys(_IMPORT_PATH_KEYS.get(b := forbidden_override(k) or "",
                                                      f"under {b}") for k in never)
        why.append(f"{_listed(never)} {'is' if len(never) == 1 else 'are'} never allowed from "
                   f"outside ({_listed(list(reached))})")
    if unlisted:
        why.append(f"{_listed(unlisted)} {'is' if len(unlisted) == 1 else 'are'} not in "
                   "serve.allowed_overrides")
    never_keys = ", ".join(k for k in FORBIDDEN_OVERRIDES if k not in _IMPORT_PATH_KEYS)
    raise OverrideRefused(
        f"overrides refused: {'; '.join(why)}. This config allows only "
        f"{_listed(allowed) if allowed else 'none'} (serve.allowed_overrides); keys under "
        f"{never_keys} and estimator or transformer import paths are never allowed.",
        [*never, *limits, *sql, *unlisted], allowed)


class PathRefused(ConfigError):
    """A path from outside (webhook, UI form, event) that lies outside the config's
    ``data.source.allowed_paths``.

    Attributes:
        where: the override key or parameter the path came in.
        path: the path as given.
    """

    def __init__(self, message: str, where: str, path: str) -> None:
        super().__init__(message)
        self.where = where
        self.path = path


def allowed_folders(loaded: LoadedConfig) -> list[Path]:
    """The folders paths from outside must lie in, resolved (symlinks followed): the config's
    ``data.source.allowed_paths``, else the folder of a file source's path (a SQL source:
    none).

    Raises:
        ConfigError: a folder references an unset ${VAR}.
    """
    src = loaded.config.data.source
    if src.allowed_paths is not None:
        return [loaded.resolve_path(f).resolve(strict=False) for f in src.allowed_paths]
    if isinstance(src, FileSource):
        return [loaded.resolve_path(src.path).resolve(strict=False).parent]
    return []


def check_external_path(loaded: LoadedConfig, path: str, where: str) -> Path:
    """`path` from outside resolved as the config resolves its paths (``${VAR}`` and ``~``
    expanded, relative to the config's folder, symlinks followed), when it lies inside one of
    `allowed_folders`.

    Raises:
        PathRefused: one sentence naming `where`, the path and the allowed folders.
    """
    folders = allowed_folders(loaded)
    shown = ", ".join(str(f) for f in folders) or "none"
    try:
        resolved = loaded.resolve_path(path).resolve(strict=False)
    except (ConfigError, OSError, RuntimeError, ValueError) as err:
        raise PathRefused(f"{where}: path {path!r} refused: {err}", where, path) from None
    if not any(resolved == f or resolved.is_relative_to(f) for f in folders):
        raise PathRefused(
            f"{where}: path {path!r} refused: it resolves to {resolved}, outside the folders "
            f"this config allows from outside ({shown}; data.source.allowed_paths)",
            where, path)
    return resolved


def check_external_inputs(loaded: LoadedConfig, overrides: dict[str, Any] | None) -> None:
    """`check_external_overrides`, then every path among the overrides inside the allowed
    folders (`check_external_path`).

    Raises:
        OverrideRefused: keys not allowed from outside.
        PathRefused: a path outside the allowed folders.
    """
    check_external_overrides(loaded.config, overrides)
    for key, value in (overrides or {}).items():
        if key == "data.source.path" and value is not None:
            check_external_path(loaded, str(value), key)


class OverrideInvalid(ConfigError):
    """Override values the config schema refuses (a webhook's, the UI form's, an event's, or
    ``--set``'s: one check for all).

    Attributes:
        problems: (override key, sentence) pairs, the sentence naming the key path and the
            problem; the key is "" for a problem that shows elsewhere in the config.
    """

    def __init__(self, message: str, problems: list[tuple[str, str]]) -> None:
        super().__init__(message)
        self.problems = problems


def _blamed(path: str, keys: list[str]) -> str:
    """The override key a problem at `path` lies under (or above), else ""."""
    for key in keys:
        if path == key or path.startswith(key + ".") or key.startswith(path + "."):
            return key
    return ""


def check_override_values(config: Config, overrides: dict[str, Any] | None) -> Config:
    """`config` with `overrides` applied, validated by the schema like a config file (the
    keys themselves are `check_external_overrides`'s business).

    Raises:
        OverrideInvalid: each problem with the override key it lies under, e.g.
            ``split.cutoff: not a date or time: ... (got 'yesterday')``.
    """
    data = config.model_dump(mode="json")
    problems: list[tuple[str, str]] = []
    for key, value in (overrides or {}).items():
        try:
            data = apply_overrides(data, {key: value})
        except ConfigError as err:
            problems.append((key, str(err)))
    if not problems:
        try:
            return Config.model_validate(data)
        except ValidationError as err:
            keys = list(overrides or {})
            for path, text in _error_lines(err):
                head = path or text.partition(":")[0]  # a config-wide rule names its key first
                problems.append((_blamed(head, keys), text))
    raise OverrideInvalid("overrides refused: " + "; ".join(text for _, text in problems),
                          problems)


def parse_override(text: str) -> tuple[str, Any]:
    """``key.path=value`` -> (key path, YAML-parsed value).

    Raises:
        ConfigError: no ``=`` in the text.
    """
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r}: expected key.path=value")
    return key.strip(), yaml.safe_load(value) if value.strip() else None


# A literal password in a URL's user info (``scheme://user:password@``) or in a query
# parameter named like one, unless it is a ``${NAME}`` reference (kept as written: the value
# lives in the environment, not in the text).
_ENV_ONLY = r"\$\{[A-Za-z_][A-Za-z0-9_]*\}"
_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@'\"]*:)(?!" + _ENV_ONLY
                           + r"@)([^\s@/'\"]+)@")
_QUERY_PASSWORD = re.compile(r"([?&](?:password|passwd|pwd|secret|token|api_?key)=)(?!"
                             + _ENV_ONLY + r"(?:[&\s'\"]|$))([^&\s'\"#]+)", re.IGNORECASE)
MASK = "***"


def mask_credentials(text: str) -> str:
    """`text` (a config, an override value) with every literal credential in a URL masked:
    ``postgresql://user:pass@host`` -> ``postgresql://user:***@host``, ``?password=x`` ->
    ``?password=***``; ``${VAR}`` references are kept as written."""
    return _QUERY_PASSWORD.sub(r"\1" + MASK, _URL_PASSWORD.sub(r"\1" + MASK + "@", text))


def masked_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    """Overrides with literal credentials in their text values masked (`mask_credentials`)."""
    return {k: mask_credentials(v) if isinstance(v, str) else v for k, v in overrides.items()}


def unmask_like(recorded: str, current: str) -> str:
    """A recorded (masked) config text with each masked URL put back from `current` (the
    config file as it is now) where the same URL, masked, is found there; other masked URLs
    stay masked."""
    found = {}
    for m in re.finditer(r"[A-Za-z][A-Za-z0-9+.\-]*://\S+", current):
        url = m.group().rstrip("'\",)")
        if mask_credentials(url) != url:
            found[mask_credentials(url)] = url
    for masked, url in sorted(found.items(), key=lambda kv: -len(kv[0])):
        recorded = recorded.replace(masked, url)
    return recorded


OVERRIDES_MARKER = "\n# overrides\n"


def overrides_block(overrides: dict[str, Any]) -> str:
    """The text appended to a config's recorded text (and hashed with it) for its overrides."""
    return OVERRIDES_MARKER + yaml.safe_dump({"overrides": dict(overrides)}, sort_keys=False)


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> LoadedConfig:
    """Read and validate a YAML config file, with optional dotted-key overrides.

    Raises:
        ConfigError: the file is missing, is not YAML, or does not match the schema.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{p}: not valid YAML: {err}") from None
    return config_from_text(text, p, overrides)


def _yaml_problem(err: yaml.YAMLError) -> str:
    """A YAML error as one line that points at the line and column (not `<unicode string>`)."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    context = getattr(err, "context", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return where + problem + (f" ({context})" if context else "")


def config_from_text(text: str, path: str | Path,
                     overrides: dict[str, Any] | None = None) -> LoadedConfig:
    """Validate a config's YAML text as if it were read from `path` (which need not exist
    any more): relative paths in it resolve against that file's folder. `regrow reproduce`
    uses it for the text a run recorded.

    Raises:
        ConfigError: the text is not YAML or does not match the schema.
    """
    p = Path(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{p}: not valid YAML: {_yaml_problem(err)}") from None
    if overrides:
        data = apply_overrides(data if isinstance(data, dict) else {}, dict(overrides))
        text += overrides_block(overrides)
    inferred = _infer_task(data, p)
    if inferred:
        data["data"]["task"] = inferred[0]
    return LoadedConfig(
        config=parse_config(data, str(p)),
        path=p.resolve(),
        sha256=hashlib.sha256(text.encode()).hexdigest(),
        text=text,
        overrides=dict(overrides or {}),
        inferred={"data.task": inferred[1]} if inferred else {},
    )


def _infer_task(data: Any, path: Path) -> tuple[str, str] | None:
    """(task, why) for a config that leaves out ``data.task`` but names a valid source and a
    target (`hooks.task_inference` reads the target); None when the task is given, or the
    config is too broken for it to matter (the schema then names every problem).

    Raises:
        ConfigError: the target cannot be read, or holds no task to learn.
    """
    section = data.get("data") if isinstance(data, dict) else None
    if not isinstance(section, dict) or "task" in section or not isinstance(
            section.get("target"), str) or hooks.task_inference is None:
        return None
    try:
        DataConfig.model_validate({**section, "task": "regression"})
    except ValidationError:
        return None
    try:
        return hooks.task_inference(section, path.resolve().parent)
    except ValueError as err:
        raise ConfigError(f"{path}: data.task is left out and cannot be inferred from the "
                          f"target: {err}") from None


class LoadedConfig(BaseModel):
    """A validated config together with the file it came from."""

    model_config = ConfigDict(frozen=True)

    config: Config
    path: Path
    sha256: str
    text: str
    overrides: dict[str, Any] = {}
    inferred: dict[str, str] = Field(default_factory=dict, description="Keys the file leaves "
                                     "out that were inferred from the data, with why.")

    @property
    def recorded_text(self) -> str:
        """`text` as it may be recorded (MLflow artifacts, tags): ``${VAR}`` references as
        written, literal URL credentials masked (`mask_credentials`)."""
        return mask_credentials(self.text)

    def with_overrides(self, overrides: dict[str, Any]) -> LoadedConfig:
        """This config (as read, without overrides) with `overrides` applied: the same file's
        text, not read again.

        Raises:
            ConfigError: an override names a missing key or a value the schema refuses.
            ValueError: this config carries overrides already.
        """
        if self.overrides:
            raise ValueError("with_overrides applies to a config read without overrides")
        return config_from_text(self.text, self.path, overrides)

    def resolve_path(self, relative: str) -> Path:
        """Resolve a config path: ``${VAR}`` and ``~`` expanded (``${REGROW_HOME}`` defaults to
        ``~/.regrow``), relative paths taken from the config file's folder.

        Raises:
            ConfigError: a referenced variable is not set.
        """
        return resolve_config_path(relative, self.path)


def resolve_config_path(relative: str, config_path: Path) -> Path:
    """A path as written in the config at `config_path`: ``${VAR}`` and ``~`` expanded
    (``${REGROW_HOME}`` defaults to ``~/.regrow``), relative to the config file's folder.

    Raises:
        ConfigError: a referenced variable is not set.
    """
    env = {"REGROW_HOME": str(Path.home() / ".regrow"), **os.environ}

    def sub(m: re.Match[str]) -> str:
        if m.group(1) not in env:
            raise ConfigError(f"{config_path}: path {relative!r} references unset ${{{m.group(1)}}}")
        return env[m.group(1)]

    p = Path(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", sub, relative)).expanduser()
    return p if p.is_absolute() else (config_path.parent / p).resolve()


def json_schema() -> dict[str, Any]:
    """The JSON schema of a config file."""
    return Config.model_json_schema()
