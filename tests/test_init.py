"""`regrow init` on tables of different shapes built from data the installed packages ship
(scikit-learn's bundled sets, the demo's rainfall table): each goes init -> train -> champion
without an edit; the expectations it writes pass on the table and stop corrupted copies; a
minimal config gets the same defaults; bad input gets one sentence."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from regrow.app.cli import build_parser
from regrow.configs.defaults import default_candidates, default_gate
from regrow.configs.schema import Candidates, ConfigError, Gate, load_config
from regrow.tasks.data.ingest import ingest
from regrow.tasks.data.profile import profile_frame
from regrow.tasks.data.validate import validate


@dataclass(frozen=True)
class Table:
    """A table written for the tests, with what `init` should find in it."""

    name: str
    data: str  # the path or URL `regrow init` is given
    target: str
    task: str
    id_column: str | None
    time_column: str | None
    options: tuple[str, ...] = ()
    corruptible: bool = True


def _sklearn(loader: Any) -> pd.DataFrame:
    return loader(as_frame=True).frame


def write_tables(folder: Path) -> list[Table]:
    """Six tables: binary, multiclass (numeric and text labels), regression (file and SQL),
    with and without id and time columns, with categorical, constant and empty columns."""
    from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris, load_wine

    from regrow.app.demo import load_rainfall

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    tables = []
    cancer = _sklearn(load_breast_cancer)
    cancer.to_csv(folder / "cancer.csv", index=False)
    tables.append(Table("cancer", str(folder / "cancer.csv"), "target", "binary", None, None))

    wine = _sklearn(load_wine)
    wine.insert(0, "bottle_id", [f"B-{i:04d}" for i in rng.permutation(len(wine))])
    wine["cellar"] = rng.choice(["north", "south", "east"], len(wine))
    wine["country"] = "IT"  # constant: dropped
    wine["notes"] = np.nan  # empty: dropped
    wine.to_parquet(folder / "wine.parquet", index=False)
    tables.append(Table("wine", str(folder / "wine.parquet"), "target", "multiclass",
                        "bottle_id", None))

    diabetes = _sklearn(load_diabetes)
    diabetes.insert(0, "patient_id", 10_000 + rng.permutation(len(diabetes)))
    diabetes.insert(1, "visit_date", pd.date_range("2020-01-01", periods=len(diabetes),
                                                   freq="D").strftime("%Y-%m-%d"))
    diabetes.to_csv(folder / "diabetes.csv", index=False)
    tables.append(Table("diabetes", str(folder / "diabetes.csv"), "target", "regression",
                        "patient_id", "visit_date"))

    rain = load_rainfall()
    rain.to_csv(folder / "rainfall.csv", index=False)
    tables.append(Table("rainfall", str(folder / "rainfall.csv"), "rain", "binary", "day",
                        "date", ("--id", "day")))

    iris = load_iris(as_frame=True)
    flowers = iris.frame.drop(columns="target")
    flowers["species"] = iris.target_names[iris.target]
    flowers = flowers.sample(frac=1, random_state=0).reset_index(drop=True)
    flowers.insert(0, "measured_at", 1_600_000_000 + 3600 * np.arange(len(flowers)))
    flowers["lab"] = rng.choice(["A", "B"], len(flowers))
    flowers.to_csv(folder / "iris.csv", index=False)
    tables.append(Table("iris", str(folder / "iris.csv"), "species", "multiclass", None,
                        "measured_at"))

    db = folder / "clinic.db"
    db.unlink(missing_ok=True)
    with sqlite3.connect(db) as conn:
        diabetes.drop(columns=["visit_date"]).to_sql("visits", conn, index=False)
    tables.append(Table("clinic", f"sqlite:///{db}", "target", "regression", "patient_id",
                        None, ("--table", "visits"), corruptible=False))
    return tables


def init(table: Table, out: Path, *extra: str) -> tuple[int, str, str]:
    """`regrow init` through the command's own parser, in this process."""
    import contextlib
    import io

    args = build_parser().parse_args(["init", table.data, "--target", table.target,
                                      "--name", f"init-{table.name}", "--out", str(out),
                                      *table.options, *extra])
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = args.func(args)
    return code, stdout.getvalue(), stderr.getvalue()


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Table, Path]]:
    """Each table with the config `regrow init` wrote for it."""
    folder = tmp_path_factory.mktemp("init")
    out: dict[str, tuple[Table, Path]] = {}
    for table in write_tables(folder / "data"):
        cfg = folder / "configs" / f"{table.name}.yaml"
        code, stdout, stderr = init(table, cfg)
        assert code == 0, stderr
        assert f"wrote {cfg}" in stdout and f"next: regrow train {cfg}" in stdout
        out[table.name] = (table, cfg)
    return out


NAMES = ["cancer", "wine", "diabetes", "rainfall", "iris", "clinic"]


@pytest.mark.parametrize("name", NAMES)
def test_init_infers_task_id_and_time(written: dict[str, tuple[Table, Path]], name: str):
    table, cfg = written[name]
    config = load_config(cfg).config
    assert (config.data.task, config.data.id_column, config.data.time_column) == (
        table.task, table.id_column, table.time_column)
    text = cfg.read_text()
    assert f"task: {table.task}  # " in text  # the reason, in a comment
    written_sections = yaml.safe_load(text)
    rows = len(ingest(load_config(cfg)).frame)
    assert written_sections["candidates"] == default_candidates(table.task, rows)
    assert written_sections["gate"] == default_gate(table.task)
    roles = config.features
    assert table.target not in roles.numeric + roles.categorical
    assert not {table.id_column, table.time_column} & set(roles.numeric + roles.categorical)
    assert config.expectations.unique == ([table.id_column] if table.id_column else [])
    assert config.expectations.row_count.min and config.expectations.not_null


def test_init_drops_constant_empty_and_id_like_columns(written: dict[str, tuple[Table, Path]]):
    config = load_config(written["wine"][1]).config
    assert {"country", "notes"} <= set(config.features.drop)
    assert config.features.categorical == ["cellar"]
    assert config.expectations.allowed["cellar"] == ["east", "north", "south"]
    text = written["wine"][1].read_text()
    assert "- country  # constant ('IT')" in text and "- notes  # every value empty" in text
    rain = load_config(written["rainfall"][1]).config
    assert rain.data.id_column == "day" and rain.expectations.allowed["rain"] == [0, 1]


def test_a_column_that_copies_the_target_is_named_as_leakage():
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"x": rng.normal(size=400), "y": rng.integers(0, 2, 400)})
    frame["outcome_code"] = np.where(frame["y"] == 1, "yes", "no")
    frame["noise"] = rng.normal(size=400)
    found = profile_frame(frame, "y")
    assert len(found.warnings) == 1 and "'outcome_code'" in found.warnings[0]
    assert "leakage" in found.warnings[0]
    reg = pd.DataFrame({"a": rng.normal(size=300)})
    reg["price"] = 3 * reg["a"] + 0.001 * rng.normal(size=300)
    reg["b"] = rng.normal(size=300)
    assert [w.split("'")[1] for w in profile_frame(reg, "price").warnings] == ["a"]


def _corrupt(frame: pd.DataFrame, column: str, how: str) -> pd.DataFrame:
    bad = frame.copy()
    rows = bad.index[:5]
    if how == "type":
        bad[column] = bad[column].astype(str)
        bad.loc[rows, column] = "unknown"
    elif how == "range":
        lo, hi = bad[column].min(), bad[column].max()
        bad.loc[rows[0], column] = hi + 10 * (hi - lo) + 10
    else:
        bad[column] = bad[column].astype(float)
        bad.loc[rows, column] = np.nan
    return bad


EXPECTED_FAILURE = {"type": "expect_column_values_to_be_in_type_list",
                    "range": "expect_column_values_to_be_between",
                    "nulls": "expect_column_values_to_not_be_null"}


@pytest.mark.parametrize("name", [n for n in NAMES if n != "clinic"])
def test_expectations_pass_on_the_table_and_stop_corrupted_copies(
        written: dict[str, tuple[Table, Path]], name: str, tmp_path: Path):
    table, cfg = written[name]
    loaded = load_config(cfg)
    frame = ingest(loaded).frame
    report = validate(loaded.config, frame)
    assert report.success, report.describe_failures()
    e = loaded.config.expectations
    column = next(c for c in e.ranges if c in e.not_null and c in e.columns)
    raw = pd.read_parquet(table.data) if table.data.endswith(".parquet") else \
        pd.read_csv(table.data)
    for how, expectation in EXPECTED_FAILURE.items():
        path = tmp_path / f"{how}.csv"
        _corrupt(raw, column, how).to_csv(path, index=False)
        bad = load_config(cfg, {"data.source.path": str(path), "data.source.format": "csv"})
        result = validate(bad.config, ingest(bad).frame)
        failed = {(o.expectation, o.column) for o in result.failed}
        assert (expectation, column) in failed, (how, failed)


def test_minimal_config_gets_the_defaults_init_writes(written: dict[str, tuple[Table, Path]],
                                                      tmp_path: Path, capsys):
    for name, task in (("cancer", "binary"), ("iris", "multiclass"), ("diabetes", "regression")):
        table, cfg = written[name]
        minimal = tmp_path / f"{name}.yaml"
        minimal.write_text(yaml.safe_dump({"data": {"source": table.data, "target": table.target},
                                           "registry": {"model_name": f"min-{name}"}}))
        loaded = load_config(minimal)
        assert loaded.config.data.task == task and "data.task" in loaded.inferred
        full = load_config(cfg).config
        # the same candidates; the written file also knows the table is small (threads: 1)
        assert full.candidates.threads == 1 and loaded.config.candidates.threads is None
        assert loaded.config.candidates == full.candidates.model_copy(update={"threads": None})
        assert loaded.config.gate == full.gate
        assert loaded.config.candidates == Candidates.model_validate(default_candidates(task))
        assert loaded.config.gate == Gate.model_validate(default_gate(task))
        assert loaded.config.monitoring == full.monitoring and loaded.config.retrain == full.retrain
    args = build_parser().parse_args(["config", "show", str(minimal)])
    assert args.func(args) == 0
    shown = capsys.readouterr().out
    assert "# data.task inferred from the data: target holds whole numbers with 214" in shown
    assert yaml.safe_load(shown)["gate"]["primary_metric"] == "r2"
    # strict about everything written: an unknown key is still refused, by its path
    typo = tmp_path / "typo.yaml"
    typo.write_text(minimal.read_text() + "gate: {primary_metrc: r2}\n")
    with pytest.raises(ConfigError, match=r"gate.primary_metrc: unknown key"):
        load_config(typo)
    given = tmp_path / "given.yaml"  # a task that is written is never replaced by inference
    given.write_text(minimal.read_text().replace("target: target", "target: target\n  task: "
                                                 "regression"))
    assert load_config(given).inferred == {}


def test_existing_configs_parse_as_before():
    shipped = load_config(Path(__file__).resolve().parents[1] / "configs" / "rainfall.yaml")
    assert shipped.inferred == {}
    assert [c.name for c in shipped.config.candidates.estimators] == ["logreg", "hgb"]
    assert shipped.config.gate.floors == {"roc_auc": 0.70, "f1": 0.40}


def _refused(table: Table, tmp_path: Path, *extra: str) -> str:
    code, _, stderr = init(table, tmp_path / "x.yaml", *extra)
    assert code == 2 and not (tmp_path / "x.yaml").exists()
    assert stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
    return stderr


def test_bad_input_gets_one_sentence(written: dict[str, tuple[Table, Path]], tmp_path: Path):
    cancer, wine = written["cancer"][0], written["wine"][0]
    assert "has no column 'nope'" in _refused(Table("t", cancer.data, "nope", "", None, None),
                                              tmp_path)
    one = tmp_path / "one.csv"
    pd.DataFrame({"a": [1, 2, 3], "y": [1, 1, 1]}).to_csv(one, index=False)
    assert "one value (1) in 3 rows" in _refused(Table("t", str(one), "y", "", None, None),
                                                 tmp_path)
    assert "column 'cellar' is not unique" in _refused(wine, tmp_path, "--id", "cellar")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert "file is empty" in _refused(Table("t", str(empty), "y", "", None, None), tmp_path)
    header = tmp_path / "header.csv"
    header.write_text("a,y\n")
    assert "has no rows" in _refused(Table("t", str(header), "y", "", None, None), tmp_path)
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"not parquet at all")
    assert "cannot read" in _refused(Table("t", str(junk), "y", "", None, None), tmp_path)
    assert "file not found" in _refused(Table("t", str(tmp_path / "gone.csv"), "y", "", None,
                                              None), tmp_path)
    down = Table("t", "postgresql+psycopg://postgres:secret@127.0.0.1:1/test", "y", "", None, None,
                 ("--table", "visits"))
    said = _refused(down, tmp_path)
    assert "cannot reach" in said and "secret" not in said
    assert "--table" in _refused(Table("t", "sqlite:///x.db", "y", "", None, None), tmp_path)


@pytest.mark.usefixtures("prefect_harness")
def test_each_table_trains_a_champion_without_an_edit(written: dict[str, tuple[Table, Path]],
                                                      tmp_path_factory: pytest.TempPathFactory,
                                                      monkeypatch: pytest.MonkeyPatch):
    """The written files as they are; only the search is made smaller here (the plain files
    train as well, measured in docs/how-to/init.md)."""
    from regrow.flows.training import train_flow

    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("REGROW_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("REGROW_DATABASE_URL", raising=False)
    quick = {"candidates.threads": 1, "candidates.cv_folds": 2, "gate.bootstrap_samples": 50,
             "candidates.estimators.0.grid": {}, "candidates.estimators.1.grid": {},
             "candidates.estimators.1.params.max_iter": 50}
    for name in NAMES:
        table, cfg = written[name]
        out = train_flow(str(cfg), overrides=quick, reason="first model from regrow init")
        assert out.promoted and out.champion_after == "1", (name, out.decision)
        assert out.split["method"] == ("time" if table.time_column else "random")
