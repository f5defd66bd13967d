"""Derived features and custom transformers: each transform on small frames with known
outputs, the expression grammar, config and data errors, and the fitted model."""

from __future__ import annotations

import math
import re
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from regrow.configs import expression
from regrow.configs.schema import ConfigError, parse_config
from regrow.tasks.data import features as fe
from regrow.tasks.model import evaluate as ev
from regrow.tasks.model import train as tr
from tests.helpers import BINARY_CONFIG, STAYS_CONFIG, binary_frame, merge, stays_frame

NAN = np.nan


def out(transformer, frame: pd.DataFrame, y=None) -> np.ndarray:
    """Fit on `frame` and transform it; the output as a float array."""
    transformer.fit(frame, y)
    return np.asarray(transformer.transform(frame), dtype=float)


def same(a, b) -> None:
    np.testing.assert_allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float),
                               rtol=1e-9, atol=1e-12, equal_nan=True)


def derived_config(*derived: dict, **features) -> object:
    return parse_config(merge(BINARY_CONFIG, {"features": {"derived": list(derived), **features}}))


# -- the expression grammar ---------------------------------------------------------------

NUMS = pd.DataFrame({"a": [1.0, 2.0, 4.0, NAN], "b": [2.0, 0.0, 8.0, 1.0],
                     "my col": [1.0, 1.0, 1.0, 1.0]})


@pytest.mark.parametrize("expr, expected", [
    ("a / b", [0.5, NAN, 0.5, NAN]),                      # division by zero -> missing
    ("a + b * 2 - 1", [4.0, 1.0, 19.0, NAN]),
    ("-a ** 2", [-1.0, -4.0, -16.0, NAN]),
    ("log(a) + sqrt(b)", [math.sqrt(2), math.log(2), math.log(4) + math.sqrt(8), NAN]),
    ("log(b)", [math.log(2), NAN, math.log(8), 0.0]),     # log(0) -> missing, never -inf
    ("where(a > 1, a, -a)", [-1.0, 2.0, 4.0, NAN]),
    ("a >= 2", [0.0, 1.0, 1.0, NAN]),                     # missing stays missing
    ("max(a, b, 3)", [3.0, 3.0, 8.0, NAN]),
    ("clip(b, 1, 5)", [2.0, 1.0, 5.0, 1.0]),
    ("fillna(a, 0) + isnull(a)", [1.0, 2.0, 4.0, 1.0]),
    ("abs(b - 4) + col(\"my col\")", [3.0, 5.0, 5.0, 4.0]),
    ("round(a / 3, 1)", [0.3, 0.7, 1.3, NAN]),
    ("log1p(a) - log1p(a) + floor(2.5) + ceil(0.2) + sign(-3)", [2.0, 2.0, 2.0, NAN]),
])
def test_expression_values(expr: str, expected: list[float]):
    same(out(fe.Expression(expr), NUMS[expression.columns(expr)]).ravel(), expected)


def test_expression_dates_subtract_to_days_and_compare():
    frame = pd.DataFrame({"arrival": ["2024-03-01", "2024-12-30", None],
                          "departure": pd.to_datetime(["2024-03-04", "2025-01-02", "2024-01-01"])})
    same(out(fe.Expression("departure - arrival"), frame).ravel(), [3.0, 3.0, NAN])
    same(out(fe.Expression("(departure - arrival) / 7"), frame).ravel(), [3 / 7, 3 / 7, NAN])
    same(out(fe.Expression("departure > arrival"), frame).ravel(), [1.0, 1.0, NAN])
    for bad, why in [("departure + 1", "combined with another date"),
                     ("log(departure - arrival) + log(arrival)", "takes numbers, not dates"),
                     ("departure", "gives dates")]:
        with pytest.raises(fe.FeatureError, match=why):
            out(fe.Expression(bad), frame[expression.columns(bad)])


def test_expression_text_column_is_refused():
    with pytest.raises(fe.FeatureError, match="column 'c' holds text"):
        out(fe.Expression("c * 2"), pd.DataFrame({"c": ["x", "y", "z"]}))


def test_expression_columns_in_order_of_use():
    assert expression.columns('b / a + log(col("my col")) - a') == ["b", "a", "my col"]


@pytest.mark.parametrize("expr, problem", [
    ('__import__("os").system("x")', "only the listed functions"),
    ('__import__("os")', "unknown function '__import__'"),
    ("a.real", "attribute access"),
    ("a[0]", "subscripts"),
    ("(lambda: 1)()", "only the listed functions"),
    ("'text'", "only numbers are allowed as constants"),
    ("a // b", "operator // is not allowed"),
    ("a and b", "and/or"),
    ("a if b else 1", "use where"),
    ("open(a)", "unknown function 'open'"),
    ("log(a, b)", "log() takes 1 argument(s), got 2"),
    ("log(x=a)", "keyword arguments"),
    ("1 < a < 3", "only one comparison"),
    ("a +", "not a valid expression"),
    ("True + a", "only numbers are allowed"),
    ("x" * 1001, "at most 1000 characters"),
])
def test_expression_grammar_refuses(expr: str, problem: str):
    with pytest.raises(expression.ExpressionError, match=re.escape(problem)):
        expression.parse(expr)


def test_round_digits_must_be_a_number():
    with pytest.raises(fe.FeatureError, match="digits must be a number"):
        out(fe.Expression("round(a, b)"), NUMS[["a", "b"]])


# -- the other transforms -----------------------------------------------------------------

def test_date_parts_plain_and_cyclical():
    # Monday 2024-01-01 06:00, Sunday 2024-12-29 18:00, missing
    frame = pd.DataFrame({"t": ["2024-01-01 06:00", "2024-12-29 18:00", None]})
    plain = fe.DateParts(["year", "quarter", "month", "week", "day", "dayofweek", "dayofyear",
                          "hour", "minute", "is_weekend"])
    same(out(plain, frame), [[2024, 1, 1, 1, 1, 0, 1, 6, 0, 0],
                             [2024, 4, 12, 52, 29, 6, 364, 18, 0, 1],
                             [NAN] * 10])
    cyc = fe.DateParts(["year", "month", "hour", "dayofweek"], cyclical=True)
    assert cyc.suffixes() == ["year", "month_sin", "month_cos", "hour_sin", "hour_cos",
                              "dayofweek_sin", "dayofweek_cos"]
    got = out(cyc, frame)
    december = 2 * np.pi * 11 / 12
    same(got[:2], [[2024, 0, 1, 1, 0, 0, 1],
                   [2024, np.sin(december), np.cos(december), -1, 0,
                    np.sin(2 * np.pi * 6 / 7), np.cos(2 * np.pi * 6 / 7)]])
    assert np.isnan(got[2]).all()
    # December sits next to January on the circle, not eleven units away
    assert np.hypot(got[0, 1] - got[1, 1], got[0, 2] - got[1, 2]) < 0.6
    with pytest.raises(fe.FeatureError, match="holds numeric values; this transform reads datetime"):
        out(fe.DateParts(["year"]), pd.DataFrame({"t": [20240101, 20240102]}))


def test_log_power_ratio_difference():
    x = pd.DataFrame({"x": [0.0, math.e - 1, -5.0]})
    same(out(fe.Log(offset=1.0), x).ravel(), [0.0, 1.0, NAN])
    same(out(fe.Power(exponent=2), pd.DataFrame({"x": [1.0, 2.0, -3.0]})).ravel(), [1, 4, 9])
    same(out(fe.Power(exponent=0.5), pd.DataFrame({"x": [4.0, -4.0]})).ravel(), [2.0, NAN])
    from sklearn.preprocessing import PowerTransformer

    skewed = pd.DataFrame({"x": [1.0, 2.0, 3.0, 10.0, 100.0]})
    expected = PowerTransformer(standardize=False).fit_transform(skewed.to_numpy())
    same(out(fe.Power(method="yeo-johnson"), skewed), expected)
    with pytest.raises(fe.FeatureError, match="box-cox needs strictly positive values"):
        out(fe.Power(method="box-cox"), x)
    ab = pd.DataFrame({"a": [6.0, 1.0, NAN], "b": [3.0, 0.0, 1.0]})
    same(out(fe.Combine("ratio"), ab).ravel(), [2.0, NAN, NAN])
    same(out(fe.Combine("difference"), ab).ravel(), [3.0, 1.0, NAN])
    dates = pd.DataFrame({"a": ["2024-01-10", "2024-01-01"], "b": ["2024-01-01", "2024-01-01"]})
    same(out(fe.Combine("difference"), dates).ravel(), [9.0, 0.0])
    with pytest.raises(fe.FeatureError, match="reads numeric"):
        out(fe.Combine("ratio"), dates)


def test_bins_and_clip():
    x = pd.DataFrame({"x": [-1.0, 0.0, 5.0, 10.0, 20.0, NAN]})
    same(out(fe.Bins(edges=[0, 10]), x).ravel(), [0, 1, 1, 2, 2, NAN])
    quantile = fe.Bins(n_bins=2).fit(pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0]}))
    assert quantile.edges_ == [2.5]
    same(quantile.transform(pd.DataFrame({"x": [1.0, 2.5, 9.0]})).ravel(), [0, 1, 1])
    uniform = fe.Bins(n_bins=4, strategy="uniform").fit(pd.DataFrame({"x": [0.0, 8.0]}))
    assert uniform.edges_ == [2.0, 4.0, 6.0]
    same(out(fe.Clip(low=0, high=10), x).ravel(), [0, 0, 5, 10, 10, NAN])
    same(out(fe.Clip(high=6), x).ravel(), [-1, 0, 5, 6, 6, NAN])
    clip = fe.Clip(quantiles=[0.25, 0.75]).fit(pd.DataFrame({"x": np.arange(101.0)}))
    assert (clip.low_, clip.high_) == (25.0, 75.0)
    same(clip.transform(pd.DataFrame({"x": [0.0, 50.0, 1000.0]})).ravel(), [25, 50, 75])


def test_frequency_unseen_and_missing():
    freq = fe.Frequency().fit(pd.DataFrame({"c": ["a", "a", "b", None]}))
    same(freq.transform(pd.DataFrame({"c": ["a", "zz", None, "b"]})).ravel(),
         [0.5, 0.0, 0.25, 0.25])


def test_target_encoding_is_cross_fitted():
    # every row its own category: only cross-fitting keeps a row from seeing its own target
    n = 200
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, n)
    frame = pd.DataFrame({"c": [f"u{i}" for i in range(n)]})
    enc = fe.TargetEncode(cv=5, task="binary", seed=1)
    fitted = enc.fit_transform(frame, y).ravel()
    assert abs(np.corrcoef(fitted, y)[0, 1]) < 0.2  # unseen in the other folds: the prior
    refit = enc.transform(frame).ravel()            # the full fit, as scoring applies it
    assert np.corrcoef(refit, y)[0, 1] > 0.5        # what would leak without cross-fitting
    # a category that predicts the target is encoded by its rate; unseen -> overall mean
    cats = pd.DataFrame({"c": ["a"] * 50 + ["b"] * 50})
    yy = np.array([1] * 45 + [0] * 5 + [0] * 45 + [1] * 5)
    enc = fe.TargetEncode(cv=5, task="binary").fit(cats, yy)
    got = enc.transform(pd.DataFrame({"c": ["a", "b", "new"]})).ravel()
    assert got[0] > 0.8 and got[1] < 0.2 and abs(got[2] - 0.5) < 1e-9
    multi = fe.TargetEncode(cv=3, task="multiclass")
    assert multi.fit_transform(cats, np.array(["x", "y", "z"] * 33 + ["x"])).shape == (100, 3)
    assert multi.suffixes() == ["x", "y", "z"]


def test_derive_features_names_keep_and_fixed_outputs():
    frame = pd.DataFrame({"a": [1.0, 2.0], "b": [2.0, 4.0], "t": ["2024-01-01", "2024-07-01"],
                          "label": [0, 1]})
    steps = [("r", fe.Combine("ratio"), ["a", "b"], "features.derived.0"),
             ("t", fe.DateParts(["month"], cyclical=True), ["t"], "features.derived.1")]
    derive = fe.DeriveFeatures(steps, ["a"])
    got = derive.fit_transform(frame)
    assert list(got.columns) == ["a", "r", "t_month_sin", "t_month_cos"]
    same(got["r"], [0.5, 0.5])
    assert list(derive.get_feature_names_out()) == ["a", "r", "t_month_sin", "t_month_cos"]
    fixed = fe.DeriveFeatures(steps, ["a"], {"r": ["r"], "t": ["t_month_sin", "t_month_cos",
                                                              "t_extra"]})
    assert list(fixed.fit(frame).transform(frame).columns)[-1] == "t_extra"
    with pytest.raises(fe.FeatureError, match=r"features.derived.0 \(r\): column .*'b'"):
        derive.transform(frame.drop(columns=["b"]))


# -- the feature stage: config, data, the fitted model --------------------------------------

def test_build_features_records_the_table():
    cfg = derived_config({"name": "ratio", "ratio": ["amount", "age"]},
                         {"name": "seg_freq", "frequency": "segment"},
                         {"name": "seg_te", "target_encoding": "segment"},
                         {"name": "when", "date_parts": {"column": "ts", "parts": ["hour"]}},
                         {"name": "noise_bin", "bins": {"column": "noise", "edges": [0]},
                          "role": "categorical"})
    frame = binary_frame(300)
    fs = fe.build_features(cfg, frame, frame["label"].to_numpy())
    assert fs.roles.sources == ["ts"]  # read only by a derived feature (ts is under drop)
    assert fs.roles.inputs[-1] == "ts"
    assert [d.name for d in fs.derived] == ["ratio", "seg_freq", "seg_te", "when", "noise_bin"]
    rows = {r["column"]: r for r in fs.table()}
    assert rows["ratio"]["sources"] == "amount, age" and rows["ratio"]["transform"] == \
        "ratio amount / age"
    same(rows["ratio"]["mean"], float(f"{(frame['amount'] / frame['age']).mean():.6g}"))
    assert rows["when_hour"]["min"] == 0 and rows["when_hour"]["max"] == 23
    assert rows["noise_bin"]["distinct"] == 2 and rows["noise_bin"]["role"].startswith("categ")
    assert rows["segment"]["distinct"] == 3 and rows["amount"]["missing_share"] == 0
    # 4 numeric + 3 one-hot + 4 numeric derived + 2 one-hot bins
    assert fs.model_inputs == 13 and fs.seconds > 0
    assert "| ratio | amount, age | ratio amount / age |" in fs.to_markdown()
    record = fs.to_dict(list(frame.columns))
    assert record["numeric"] == ["amount", "age", "score", "noise"] and record["sources"] == ["ts"]
    assert record["derived"][2]["transform"].startswith("target encoding of segment")


def test_source_columns_are_not_inferred_as_features():
    cfg = parse_config(merge(BINARY_CONFIG, {"features": {
        "numeric": [], "categorical": [], "infer": True,
        "derived": [{"name": "log_amount", "log": "amount"}]}}))
    roles = fe.resolve_roles(cfg, binary_frame(100))
    assert "amount" not in roles.numeric and roles.sources == ["amount"]
    assert set(roles.numeric) == {"age", "score", "noise"}


def test_a_derived_feature_changes_the_fitted_model():
    frame = stays_frame(1200)
    with_derived = parse_config(STAYS_CONFIG)
    without = parse_config(merge(STAYS_CONFIG, {"features": {"derived": []}}))
    parts = tr.split(with_derived, frame)
    scores = {}
    for name, cfg in (("with", with_derived), ("without", without)):
        trained = tr.train(cfg, parts.train)
        scores[name] = ev.evaluate(trained.model, parts.holdout, trained.target, "r2").value
        if name == "with":
            assert list(trained.model.named_steps) == ["derive", "prep", "model"]
            nights = trained.model.named_steps["derive"].transform(parts.holdout)["nights"]
            expected = (pd.to_datetime(parts.holdout["departure"])
                        - pd.to_datetime(parts.holdout["arrival"])).dt.days
            same(nights, expected)
            coef = trained.model.named_steps["model"].coef_
            assert len(coef) == 4  # guests, nights, arr_month_sin, arr_month_cos
    assert scores["with"] > 0.95 and scores["without"] < 0.2


def test_pipeline_with_derived_features_round_trips_through_skops():
    import skops.io

    cfg = derived_config({"name": "r", "ratio": ["amount", "age"]},
                         {"name": "e", "expr": "log1p(abs(score)) * (noise > 0)"},
                         {"name": "te", "target_encoding": "segment"},
                         {"name": "p", "power": {"column": "amount", "method": "yeo-johnson"}})
    frame = binary_frame(400)
    model = tr.train(cfg, frame).model
    blob = skops.io.dumps(model)
    loaded = skops.io.loads(blob, trusted=skops.io.get_untrusted_types(data=blob))
    new = binary_frame(50, seed=4)
    same(loaded.predict_proba(new), model.predict_proba(new))


@pytest.mark.parametrize("scaling", ["standard", "robust"])
def test_final_refit_reuses_the_fitted_preprocessing_and_makes_the_search_s_model(scaling):
    """Without derived features the best candidate is refitted on the features step's fitted
    preprocessing: the same predictions as GridSearchCV's own refit of the whole Pipeline."""
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import Pipeline

    cfg = parse_config(merge(BINARY_CONFIG, {"features": {"scaling": scaling}}))
    frame = binary_frame(600)
    frame.loc[frame.index % 7 == 0, "age"] = NAN  # the imputer's fitted median matters
    frame.loc[frame.index % 11 == 0, "segment"] = None
    parts = tr.split(cfg, frame)
    y = parts.train["label"].to_numpy()
    feats = fe.build_features(cfg, parts.train, y)
    trained = tr.train(cfg, parts.train, feats)
    assert trained.model.named_steps["prep"] is feats.prep
    cand = next(c for c in cfg.candidates.estimators if c.name == trained.best.name)
    search = GridSearchCV(
        Pipeline([*fe.feature_steps(cfg, feats), ("model", tr.make_estimator(cand, cfg))]),
        [{f"model__{k}": v for k, v in cand.grid.items()}], scoring="roc_auc",
        cv=tr._cv(cfg, y), refit=True).fit(parts.train[feats.roles.inputs], y)
    assert {k.removeprefix("model__"): v for k, v in search.best_params_.items()} == \
        trained.best.best_params
    same(trained.model.predict_proba(parts.holdout), search.predict_proba(parts.holdout))
    with_derived = tr.train(derived_config({"name": "r", "ratio": ["amount", "age"]}),
                            parts.train)  # derived features: the search's own refit
    assert list(with_derived.model.named_steps) == ["derive", "prep", "model"]


@pytest.mark.parametrize("derived, where, problem", [
    ({"name": "x", "sqrt": "amount"}, "features.derived.0",
     "unknown transform 'sqrt'; known transforms: expr, date_parts"),
    ({"name": "x"}, "features.derived.0", "needs exactly one transform"),
    ({"name": "x", "log": "amount", "ratio": ["a", "b"]}, "features.derived.0",
     "needs exactly one transform"),
    ({"name": "x", "expr": "amount.real"}, "features.derived.0.expr", "attribute access"),
    ({"name": "x", "expr": "system(amount)"}, "features.derived.0.expr",
     "unknown function 'system'"),
    ({"name": "x", "expr": "2 + 3"}, "features.derived.0.expr", "reads no column"),
    ({"name": "x", "log": "label"}, "features.derived.0 (x)", "reads the target 'label'"),
    ({"name": "amount", "log": "age"}, "features", "name 'amount' is a column listed in 'numeric'"),
    ({"name": "x y", "log": "age"}, "features.derived.0.name", "should match pattern"),
    ({"name": "x", "bins": {"column": "a", "edges": [2, 1]}}, "features.derived.0.bins",
     "strictly increasing"),
    ({"name": "x", "power": {"column": "a", "exponent": 2, "method": "box-cox"}},
     "features.derived.0.power", "exactly one of 'exponent' or 'method'"),
    ({"name": "x", "date_parts": {"column": "ts", "parts": ["fortnight"]}},
     "features.derived.0.date_parts.parts.0", "Input should be 'year'"),
])
def test_config_errors_name_the_key(derived: dict, where: str, problem: str):
    with pytest.raises(ConfigError) as info:
        derived_config(derived)
    assert f"{where}: " in str(info.value) and problem in str(info.value), str(info.value)


def test_duplicate_names_are_refused():
    with pytest.raises(ConfigError, match="derived.1: name 'x' is already used by derived.0"):
        derived_config({"name": "x", "log": "age"}, {"name": "x", "log": "amount"})


def test_missing_column_and_name_clash_are_feature_errors():
    frame = binary_frame(100)
    cfg = derived_config({"name": "nights", "expr": "checkout - arrival"})
    with pytest.raises(fe.FeatureError, match=r"features.derived.0 \(nights\): column 'checkout' "
                       r"is not in the data \(columns: row_id, ts, amount"):
        fe.build_features(cfg, frame)
    # score: a column of the data, not listed as a feature
    cfg = parse_config(merge(BINARY_CONFIG, {"features": {
        "numeric": ["amount"], "derived": [{"name": "score", "log": "amount"}]}}))
    with pytest.raises(fe.FeatureError, match="name 'score' is already a column of the data"):
        fe.build_features(cfg, frame)


# -- custom transformers --------------------------------------------------------------------

USER_MODULE = textwrap.dedent('''
    import numpy as np
    from sklearn.base import BaseEstimator, TransformerMixin

    class Scale(BaseEstimator, TransformerMixin):
        def __init__(self, factor=1.0):
            self.factor = factor

        def fit(self, X, y=None):
            self.n_features_in_ = X.shape[1]
            return self

        def transform(self, X):
            return np.asarray(X, dtype=float) * self.factor

        def get_feature_names_out(self, input_features=None):
            return np.asarray([f"x{i}" for i in range(self.n_features_in_)], dtype=object)

    class FitOnly(BaseEstimator):
        def fit(self, X, y=None):
            return self

    def make_features(X):
        return X
''')


@pytest.fixture(scope="module")
def user_module(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("user")
    (folder / "regrow_user_feats.py").write_text(USER_MODULE)
    sys.path.insert(0, str(folder))
    yield "regrow_user_feats"
    sys.path.remove(str(folder))


def custom_config(user_module: str, transformer: str, params: dict | None = None,
                  modules: list[str] | None = None):
    return parse_config(merge(BINARY_CONFIG, {
        "modules": [user_module] if modules is None else modules,
        "features": {"custom": [{"name": "scaled", "transformer": f"{user_module}.{transformer}",
                                 "columns": ["amount", "age"], "params": params or {}}]}}))


def test_custom_transformer_from_a_listed_module(user_module: str):
    cfg = custom_config(user_module, "Scale", {"factor": 2.0})
    frame = binary_frame(200)
    fs = fe.build_features(cfg, frame)
    (d,) = fs.derived
    assert d.outputs == ["scaled_x0", "scaled_x1"] and d.sources == ["amount", "age"]
    assert d.transform == f"{user_module}.Scale(factor=2.0)"
    model = tr.train(cfg, frame, fs).model
    derived = model.named_steps["derive"].transform(frame.head(3))
    same(derived["scaled_x0"], frame["amount"].head(3) * 2)


def test_custom_transformer_checks(user_module: str):
    with pytest.raises(ConfigError, match=r"features.custom.0.transformer: '.*Scale' is not a "
                       r"class from scikit-learn \(sklearn.\*\) or from a module listed"):
        custom_config(user_module, "Scale", modules=[])
    bad = [("FitOnly", {}, "features.custom.0.transformer: .* does not follow the scikit-learn "
                           "transformer API: no transform"),
           ("make_features", {}, "features.custom.0.transformer: .* is not a class"),
           ("Nowhere", {}, "features.custom.0.transformer: cannot import"),
           ("Scale", {"power": 3}, "features.custom.0.params: .* does not take these params")]
    for name, params, problem in bad:
        with pytest.raises(ConfigError, match=problem):
            fe.check_transformers(custom_config(user_module, name, params))
    sklearn_one = parse_config(merge(BINARY_CONFIG, {"features": {"custom": [
        {"name": "spline", "transformer": "sklearn.preprocessing.SplineTransformer",
         "columns": ["score"], "params": {"n_knots": 4, "degree": 2}}]}}))
    fs = fe.build_features(sklearn_one, binary_frame(100))
    assert fs.derived[0].outputs == [f"spline_score_sp_{i}" for i in range(5)]


# -- where a config's modules come from ----------------------------------------------------

def _module_with_a_mark(folder, name: str, marker) -> None:
    """A module whose import writes `marker`, with a transformer and an estimator class."""
    (folder / f"{name}.py").write_text(textwrap.dedent(f'''
        from pathlib import Path
        Path({str(marker)!r}).write_text("imported")
        from sklearn.linear_model import LogisticRegression as Estimator
        from sklearn.preprocessing import StandardScaler as Scale
    '''))


def _listing(name: str) -> object:
    return parse_config(merge(BINARY_CONFIG, {
        "modules": [name],
        "candidates": {"estimators": [{"name": "own", "estimator": f"{name}.Estimator"}]},
        "features": {"custom": [{"name": "scaled", "transformer": f"{name}.Scale",
                                 "columns": ["amount"]}]}}))


def test_listed_modules_never_come_from_the_working_directory(tmp_path, monkeypatch):
    """`python -m` puts the working directory first on sys.path: a module of a listed name
    lying there is never imported (not even as a side effect of the lookup)."""
    import importlib.util

    from regrow.tasks.model.imports import config_folder

    cwd, beside = tmp_path / "cwd", tmp_path / "models"
    cwd.mkdir()
    beside.mkdir()
    _module_with_a_mark(cwd, "regrow_evilmod", tmp_path / "evil-imported")
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "path", ["", str(cwd), *sys.path])
    assert importlib.util.find_spec("regrow_evilmod") is not None  # a plain import would run it
    config = _listing("regrow_evilmod")
    with config_folder(beside):
        with pytest.raises(ConfigError, match=r"candidates.estimators.0.estimator: cannot import "
                           r"estimator 'regrow_evilmod.Estimator': No module named "
                           r"'regrow_evilmod' in the installed environment or .*models \(the "
                           r"working directory is not searched\)"):
            tr.check_estimators(config)
        with pytest.raises(ConfigError, match=r"features.custom.0.transformer: cannot import "
                           r"'regrow_evilmod.Scale': No module named 'regrow_evilmod'"):
            fe.check_transformers(config)
    assert not (tmp_path / "evil-imported").exists()
    assert "regrow_evilmod" not in sys.modules


def test_listed_modules_come_from_the_config_folder(tmp_path, monkeypatch):
    """A module beside the config is found (only while its config's folder is set, as every
    flow step and the command line's checks set it), even with the working directory elsewhere
    and holding a module of the same name."""
    from regrow.tasks.model.imports import config_folder

    cwd, beside = tmp_path / "cwd", tmp_path / "models"
    cwd.mkdir()
    beside.mkdir()
    _module_with_a_mark(beside, "regrow_beside", tmp_path / "beside-imported")
    _module_with_a_mark(cwd, "regrow_beside", tmp_path / "cwd-imported")
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "path", ["", str(cwd), *sys.path])
    config = _listing("regrow_beside")
    try:
        with pytest.raises(ConfigError, match="No module named 'regrow_beside' in the installed "
                           r"environment \(the working directory is not searched\)"):
            tr.check_estimators(config)  # no config folder set: the installed environment only
        with config_folder(beside):
            tr.check_estimators(config)
            fe.check_transformers(config)
            (cand,) = config.candidates.estimators
            assert tr.estimator_class(cand, config).__module__.startswith("sklearn.")
        assert (tmp_path / "beside-imported").exists()
        assert not (tmp_path / "cwd-imported").exists()
        assert sys.modules["regrow_beside"].__file__ == str(beside / "regrow_beside.py")
    finally:
        sys.modules.pop("regrow_beside", None)


def test_train_from_a_working_directory_holding_the_module_refuses_it(tmp_path):
    """The command line as a user runs it: `python -m regrow.app.cli train` started in a
    folder with a module of a listed name exits 2 naming the module, without importing it."""
    import os
    import subprocess
    from pathlib import Path

    from tests.helpers import write_case

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    _module_with_a_mark(cwd, "regrow_evilmod", tmp_path / "evil-imported")
    cfg = merge(BINARY_CONFIG, {"modules": ["regrow_evilmod"], "candidates": {"estimators": [
        {"name": "own", "estimator": "regrow_evilmod.Estimator"}]}})
    path = write_case(tmp_path / "m", binary_frame(120), cfg)
    out = subprocess.run([sys.executable, "-m", "regrow.app.cli", "train", str(path)],
                         capture_output=True, text=True, cwd=cwd, timeout=300,
                         env={**os.environ, "REGROW_HOME": str(tmp_path / "home"),
                              "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    assert out.returncode == 2, out.stdout + out.stderr
    assert "cannot import estimator 'regrow_evilmod.Estimator': No module named " \
        "'regrow_evilmod'" in out.stderr, out.stderr
    assert not (tmp_path / "evil-imported").exists()
