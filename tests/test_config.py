"""Config schema: shipped configs load; bad configs fail naming the key path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from regrow.configs.schema import ConfigError, json_schema, load_config, parse_config
from tests.helpers import BINARY_CONFIG, REGRESSION_CONFIG, merge

SHIPPED = sorted((Path(__file__).resolve().parent.parent / "configs").glob("*.yaml"))


def test_there_are_shipped_configs():
    assert SHIPPED, "configs/ holds no YAML"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_config_loads(path: Path):
    loaded = load_config(path)
    assert loaded.config.registry.model_name
    assert len(loaded.sha256) == 64


def test_test_configs_are_valid():
    assert parse_config(BINARY_CONFIG).data.task == "binary"
    assert parse_config(REGRESSION_CONFIG).gate.primary_metric == "rmse"


@pytest.mark.parametrize(
    ("patch", "needle"),
    [
        ({"data": {"targte": "x"}}, "data.targte: unknown key"),
        ({"gate": {"max_regression": "a lot"}}, "gate.max_regression"),
        ({"data": {"task": "ranking"}}, "data.task"),
        ({"gate": {"primary_metric": "rmse"}}, "gate.primary_metric: metric 'rmse' does not apply"),
        ({"gate": {"floors": {"auc": 0.5}}}, "gate.floors.auc: unknown metric"),
        ({"candidates": {"estimators": []}}, "candidates.estimators"),
        ({"candidates": {"cv_folds": 1}}, "candidates.cv_folds"),
        ({"split": {"holdout_fraction": 1.5}}, "split.holdout_fraction"),
        ({"data": {"source": {"kind": "sql", "url": "sqlite://", "path": None}}},
         "exactly one of 'table' or 'query'"),
        ({"data": {"source": {"kind": "ftp"}}}, "data.source"),
        ({"expectations": {"ranges": {"age": {"min": 5, "max": 1}}}}, "expectations.ranges.age"),
        ({"features": {"categorical": ["amount"]}}, "listed in both 'numeric' and 'categorical'"),
        ({"registry": None}, "registry: Field required"),
    ],
)
def test_bad_config_names_the_key(patch, needle):
    with pytest.raises(ConfigError) as info:
        parse_config(merge(BINARY_CONFIG, patch), "model.yaml")
    assert needle in str(info.value)
    assert str(info.value).startswith("model.yaml:")


def test_estimator_must_fit_task():
    bad = merge(BINARY_CONFIG, {})
    bad["candidates"]["estimators"][0]["estimator"] = "ridge"
    with pytest.raises(ConfigError, match=r"candidates.estimators.0.estimator: 'ridge' does not serve"):
        parse_config(bad)


def test_unknown_estimator_short_name():
    bad = merge(BINARY_CONFIG, {})
    bad["candidates"]["estimators"][0]["estimator"] = "xgboostish"
    with pytest.raises(ConfigError, match="unknown estimator 'xgboostish'"):
        parse_config(bad)


def test_config_is_frozen():
    cfg = parse_config(BINARY_CONFIG)
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="frozen"):
        cfg.data.target = "other"  # type: ignore[misc]


def test_missing_file_and_bad_yaml(tmp_path: Path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML: line 2, column 1") as err:
        load_config(bad)
    assert str(err.value).startswith(str(bad)) and "<unicode string>" not in str(err.value)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just a string\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(scalar)


def test_overrides_apply_and_are_recorded(tmp_path: Path):
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(BINARY_CONFIG))
    loaded = load_config(path, {"split.holdout_fraction": 0.3,
                                "candidates.estimators.0.params.C": 2.0})
    assert loaded.config.split.holdout_fraction == 0.3
    assert loaded.config.candidates.estimators[0].params["C"] == 2.0
    assert "overrides" in loaded.text
    assert loaded.sha256 != load_config(path).sha256


def test_one_gate_key_set_on_a_config_without_a_gate_keeps_the_task_defaults(tmp_path: Path):
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in REGRESSION_CONFIG.items() if k != "gate"}))
    bare = load_config(path).config.gate
    loaded = load_config(path, {"gate.min_improvement": 0}).config.gate
    assert loaded.min_improvement == 0 and bare.min_improvement is None
    assert loaded.model_dump(exclude={"min_improvement"}) == \
        bare.model_dump(exclude={"min_improvement"})
    assert bare.primary_metric == "r2" and bare.max_regression > 0  # the task's, not the schema's


def test_split_cutoff_is_a_time_from_the_file_and_from_set(tmp_path: Path):
    """A cutoff is an ISO date or time, or a whole number read by data.time_unit; YAML's dates
    (`cutoff: 2024-06-01`, `--set split.cutoff=2024-06-01`) are times too. Anything else is
    refused by the schema, so `--set` and the webhook get the same sentence."""
    import datetime as dt

    from regrow.configs.schema import parse_override

    def cutoff(value):
        return parse_config(merge(BINARY_CONFIG, {"split": {"cutoff": value}})).split.cutoff

    assert cutoff("2024-06-01T12:00:00") == "2024-06-01T12:00:00"
    assert cutoff(dt.date(2024, 6, 1)) == "2024-06-01" and cutoff(2015) == "2015"
    assert cutoff(parse_override("split.cutoff=2024-06-01")[1]) == "2024-06-01"
    for bad in ("'; DROP TABLE x; --", "yesterday", "2024-13-01", "1.5e9"):
        with pytest.raises(ConfigError, match=r"split.cutoff: not a date or time"):
            cutoff(bad)
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(BINARY_CONFIG))
    with pytest.raises(ConfigError, match=r"split.cutoff: not a date or time.*DROP TABLE"):
        load_config(path, {"split.cutoff": "'; DROP TABLE x; --"})
    with pytest.raises(ConfigError, match="data.time_unit year reads times as numbers"):
        parse_config(merge(BINARY_CONFIG, {"data": {"time_unit": "year"},
                                           "split": {"cutoff": "2024-06-01"}}))


def test_override_values_are_checked_by_the_schema_and_named_by_key():
    from regrow.configs.schema import OverrideInvalid, check_override_values

    cfg = parse_config(BINARY_CONFIG)
    assert check_override_values(cfg, {"split.cutoff": "2024-02-01"}).split.cutoff == "2024-02-01"
    with pytest.raises(OverrideInvalid) as info:
        check_override_values(cfg, {"split.cutoff": "'; DROP TABLE x; --",
                                    "data.source.path": "b.csv"})
    (key, text), = info.value.problems
    assert key == "split.cutoff" and text.startswith("split.cutoff: not a date or time")
    with pytest.raises(OverrideInvalid) as info:
        check_override_values(cfg, {"split.holdout_fraction": 7})
    assert info.value.problems[0][0] == "split.holdout_fraction"
    with pytest.raises(OverrideInvalid) as info:  # a path through a value
        check_override_values(cfg, {"split.cutoff.x": 1})
    assert info.value.problems[0][0] == "split.cutoff.x"


def test_recorded_text_keeps_env_references_and_masks_literal_credentials(tmp_path: Path):
    from regrow.configs.schema import mask_credentials, masked_overrides, unmask_like

    sql = merge(BINARY_CONFIG, {"data": {"source": {
        "kind": "sql", "path": None, "table": "events",
        "url": "postgresql+psycopg://analyst:hunter2@db.internal:5432/sales?sslmode=require"}}})
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(sql))
    loaded = load_config(path)
    assert "hunter2" in loaded.text and "hunter2" not in loaded.recorded_text
    assert "postgresql+psycopg://analyst:***@db.internal:5432/sales" in loaded.recorded_text
    assert loaded.config.data.source.url.endswith("hunter2@db.internal:5432/sales?sslmode=require")
    env = "url: postgresql://${PGUSER}:${PGPASSWORD}@db/x?password=${PW}\n"
    assert mask_credentials(env) == env  # references stay as written
    assert mask_credentials("u: https://h/x?token=abc&a=1") == "u: https://h/x?token=***&a=1"
    assert masked_overrides({"data.source.url": "mysql://root:toor@h/db", "split.cutoff": 3}) \
        == {"data.source.url": "mysql://root:***@h/db", "split.cutoff": 3}
    assert unmask_like(loaded.recorded_text, loaded.text) == loaded.text


def test_resolve_path_expands_env(tmp_path: Path, monkeypatch):
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(BINARY_CONFIG))
    loaded = load_config(path)
    monkeypatch.setenv("DATA_DIR", "/data/x")
    assert str(loaded.resolve_path("${DATA_DIR}/t.csv")) == "/data/x/t.csv"
    assert loaded.resolve_path("t.csv") == tmp_path / "t.csv"
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    with pytest.raises(ConfigError, match="NOT_SET_ANYWHERE"):
        loaded.resolve_path("${NOT_SET_ANYWHERE}/t.csv")


def test_json_schema_is_complete():
    schema = json_schema()
    json.dumps(schema)
    assert set(schema["required"]) >= {"data", "candidates", "gate", "registry"}
    assert "Expectations" in schema["$defs"]


# ------------------------------------------------------------ overrides and import paths

def test_outside_overrides_only_touch_allowed_keys():
    from regrow.configs.schema import OverrideRefused, check_external_overrides, refused_overrides

    cfg = parse_config(BINARY_CONFIG)
    check_external_overrides(cfg, {"split.cutoff": "2024-02-01", "data.source.path": "x.csv"})
    problems = refused_overrides(cfg, {
        "gate.max_regression": 0.5, "retrain.cooldown": "1s",
        "candidates.estimators.0.estimator": "subprocess.Popen", "candidates": {},
        "promotion.mode": "auto", "features.scaling": "none"})
    assert len(problems) == 6
    text = "\n".join(problems)
    assert "gate.max_regression: never overridable" in text
    assert "candidates.estimators.0.estimator: never overridable" in text
    assert "candidates: never overridable" in text  # replacing the parent replaces the path
    assert "features.scaling: not in serve.allowed_overrides" in text
    with pytest.raises(OverrideRefused, match="retrain.cooldown"):
        check_external_overrides(cfg, {"retrain.cooldown": "1s"})
    wider = parse_config(merge(BINARY_CONFIG, {"serve": {"allowed_overrides": [
        "split.cutoff", "candidates.estimators.*.params.C"]}}))
    assert refused_overrides(wider, {"candidates.estimators.0.params.C": 0.5}) == []
    assert refused_overrides(wider, {"data.source.path": "x.csv"})  # the list replaces the default


@pytest.mark.parametrize("pattern", ["gate", "gate.floors.roc_auc", "*", "candidates",
                                     "candidates.estimators", "candidates.estimators.*",
                                     "candidates.*.*.estimator", "serve.allowed_overrides",
                                     "modules", "retrain.*"])
def test_a_config_cannot_allow_the_rules_to_come_from_outside(pattern: str):
    bad = merge(BINARY_CONFIG, {"serve": {"allowed_overrides": [pattern]}})
    with pytest.raises(ConfigError, match="may never be overridden from outside"):
        parse_config(bad)


def test_estimators_come_only_from_sklearn_or_listed_modules():
    bad = merge(BINARY_CONFIG, {})
    bad["candidates"]["estimators"][0]["estimator"] = "subprocess.Popen"
    with pytest.raises(ConfigError, match="'subprocess.Popen' is neither a short name nor a class "
                       "from scikit-learn"):
        parse_config(bad)
    bad["modules"] = ["subprocess"]  # listed: the schema lets the path through ...
    cfg = parse_config(bad)
    from regrow.tasks.model.train import check_estimators, make_estimator

    with pytest.raises(ConfigError, match="is not a scikit-learn estimator class"):
        check_estimators(cfg)  # ... but it is no estimator class, and nothing was called
    fn = merge(BINARY_CONFIG, {})
    fn["candidates"]["estimators"][0]["estimator"] = "sklearn.utils.all_estimators"
    with pytest.raises(ConfigError, match="is not a scikit-learn estimator class"):
        check_estimators(parse_config(fn))
    wrong = merge(BINARY_CONFIG, {})
    wrong["candidates"]["estimators"][0].update(estimator="sklearn.preprocessing.StandardScaler",
                                                params={}, grid={})
    cfg = parse_config(wrong)
    from regrow.tasks.model.train import TrainingError

    with pytest.raises(TrainingError, match="is not a classifier"):
        make_estimator(cfg.candidates.estimators[0], cfg)
    ok = merge(BINARY_CONFIG, {})
    ok["candidates"]["estimators"][0].update(estimator="sklearn.svm.SVC", params={}, grid={})
    cfg = parse_config(ok)
    assert type(make_estimator(cfg.candidates.estimators[0], cfg)).__name__ == "SVC"


def test_refused_overrides_read_as_one_sentence():
    from regrow.configs.schema import SAFE_OVERRIDES, OverrideRefused, check_external_overrides

    cfg = parse_config(BINARY_CONFIG)
    with pytest.raises(OverrideRefused) as info:
        check_external_overrides(cfg, {"candidates.estimators.0.estimator": "subprocess.Popen",
                                       "candidates.estimators.0.params": {"args": ["touch", "x"]},
                                       "gate.max_regression": 0.5, "split.cutoff": "2024-02-01"})
    err = info.value
    assert err.refused == ["candidates.estimators.0.estimator", "gate.max_regression",
                           "candidates.estimators.0.params"]
    assert err.allowed == list(SAFE_OVERRIDES)
    assert str(err) == (
        "overrides refused: candidates.estimators.0.estimator and gate.max_regression are never "
        "allowed from outside (an estimator import path and under gate); "
        "candidates.estimators.0.params is not in serve.allowed_overrides. This config allows "
        "only data.source.path and split.cutoff "
        "(serve.allowed_overrides); keys under gate, retrain, promotion, monitoring, registry, "
        "serve, modules and estimator or transformer import paths are never allowed.")
    check_external_overrides(cfg, {"split.cutoff": "2024-02-01", "data.source.path": "b.csv"})
    check_external_overrides(cfg, None)
    with pytest.raises(OverrideRefused, match="exact key"):  # SQL only when listed exactly
        check_external_overrides(cfg, {"data.source.query": "select 1"})
