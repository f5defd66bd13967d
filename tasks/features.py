"""Feature roles and the preprocessing half of every candidate Pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, RobustScaler, StandardScaler

from configs.schema import Config

# An inferred text column with more distinct values than this share of rows is an identifier,
# not a category: one-hot encoding it would only memorise rows.
ID_LIKE_SHARE = 0.5


class FeatureError(ValueError):
    """The feature spec does not fit the data."""


@dataclass(frozen=True)
class FeatureRoles:
    """Which raw columns feed the model, and how."""

    numeric: list[str]
    categorical: list[str]
    datetime: list[str]
    notes: list[str] = field(default_factory=list)

    @property
    def inputs(self) -> list[str]:
        """Every raw column the pipeline reads, in a stable order."""
        return [*self.numeric, *self.categorical, *self.datetime]


def resolve_roles(config: Config, frame: pd.DataFrame) -> FeatureRoles:
    """Combine the listed roles with dtype inference for unlisted columns.

    Raises:
        FeatureError: no feature columns remain.
    """
    f, d = config.features, config.data
    numeric, categorical, dt = list(f.numeric), list(f.categorical), list(f.datetime)
    notes: list[str] = []
    if f.infer:
        taken = {*numeric, *categorical, *dt, *f.drop, d.target}
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
    roles = FeatureRoles(numeric, categorical, dt, notes)
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


_SCALERS = {"standard": StandardScaler, "minmax": MinMaxScaler, "robust": RobustScaler}


def build_preprocessor(config: Config, roles: FeatureRoles) -> ColumnTransformer:
    """The ColumnTransformer for the roles, as the config describes it."""
    f = config.features
    num_steps: list[tuple[str, object]] = [("impute", SimpleImputer(strategy=f.numeric_imputation))]
    if f.scaling != "none":
        num_steps.append(("scale", _SCALERS[f.scaling]()))
    cat_steps = [
        ("as_str", ToString()),
        ("impute", SimpleImputer(strategy=f.categorical_imputation, fill_value="__missing__")),
        ("onehot", OneHotEncoder(
            handle_unknown=f.one_hot.handle_unknown,
            min_frequency=f.one_hot.min_frequency,
            max_categories=f.one_hot.max_categories,
            sparse_output=False,
        )),
    ]
    dt_steps = [("parts", DatetimeParts()), ("impute", SimpleImputer(strategy="median"))]
    transformers = []
    if roles.numeric:
        transformers.append(("numeric", Pipeline(num_steps), roles.numeric))
    if roles.categorical:
        transformers.append(("categorical", Pipeline(cat_steps), roles.categorical))
    if roles.datetime:
        transformers.append(("datetime", Pipeline(dt_steps), roles.datetime))
    return ColumnTransformer(transformers, remainder="drop", verbose_feature_names_out=True)
