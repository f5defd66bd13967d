"""Bad input: each case fails with a clear message, and the champion does not move."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from regrow.app.report import known_errors
from regrow.flows.training import train_flow
from regrow.tasks.registry.mlflow_registry import CHAMPION, Registry
from regrow.tasks.store.database import Store
from regrow.tasks.store.settings import Settings
from tests.helpers import BINARY_CONFIG, binary_frame, merge, write_case

pytestmark = pytest.mark.usefixtures("prefect_harness")

MODEL = BINARY_CONFIG["registry"]["model_name"]


@pytest.fixture(scope="module")
def champion_home(tmp_path_factory: pytest.TempPathFactory):
    """A state dir with a trained champion (v1), shared by every case of this module."""
    home = tmp_path_factory.mktemp("bad-input-home")
    mp = pytest.MonkeyPatch()
    mp.setenv("REGROW_HOME", str(home))
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    mp.delenv("REGROW_DATABASE_URL", raising=False)
    cfg = write_case(home / "seed", binary_frame(800), BINARY_CONFIG)
    assert train_flow(str(cfg)).champion_after == "1"
    yield home
    mp.undo()


def _frame(edit: Callable[[pd.DataFrame], pd.DataFrame | None]) -> pd.DataFrame:
    frame = binary_frame(600, seed=11)
    out = edit(frame)
    return frame if out is None else out


def _write_raw(data: bytes) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        cfg = write_case(folder, None, BINARY_CONFIG)
        (folder / "data.csv").write_bytes(data)
        return cfg
    return make


def _case(config_patch: dict | None = None, edit=None) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        frame = _frame(edit) if edit else binary_frame(600, seed=11)
        return write_case(folder, frame, merge(BINARY_CONFIG, config_patch or {}))
    return make


def _set(col: str, value) -> Callable[[pd.DataFrame], None]:
    def edit(f: pd.DataFrame) -> None:
        f[col] = value
    return edit


def _latin1_csv() -> bytes:
    text = binary_frame(300).assign(segment="Zürich").to_csv(index=False)
    return text.encode("latin-1")


CASES = {
    "unknown config key": (_case({"data": {"targte": "label"}}),
                           "data.targte: unknown key"),
    "wrong type in config": (_case({"gate": {"max_regression": "a little"}}),
                             "gate.max_regression: Input should be a valid number"),
    "missing data file": (lambda d: write_case(d, None, BINARY_CONFIG),
                          "data.source.path: file not found"),
    "empty file": (_write_raw(b""), "data.source.path: file is empty"),
    "header only, no rows": (_write_raw(b"row_id,ts,amount,age,score,noise,segment,label\n"),
                             "expect_table_row_count_to_be_between"),
    "non-UTF-8 CSV": (_write_raw(_latin1_csv()), "is not valid utf-8"),
    "missing target column": (_case(edit=lambda f: f.drop(columns=["label"])),
                              "expect_column_to_exist [label]: column is missing"),
    "missing feature column": (_case(edit=lambda f: f.drop(columns=["age"])),
                               "expect_column_to_exist [age]: column is missing"),
    "target all NaN": (_case(edit=_set("label", np.nan)),
                       "expect_column_values_to_not_be_null [label]"),
    "single class": (_case(edit=_set("label", 1)),
                     "expect_column_unique_value_count_to_be_between [label]"),
    "wrong dtype in a column": (
        _case(edit=lambda f: f.assign(amount=f["amount"].astype(str) + " EUR")),
        "expect_column_values_to_be_in_type_list [amount]"),
    "values out of range": (_case(edit=lambda f: f.assign(age=f["age"] + 200)),
                            "expect_column_values_to_be_between [age]: 600 unexpected"),
    "unreachable SQL URL": (
        _case({"data": {"source": {"kind": "sql", "path": None, "table": "events",
                                   "url": "postgresql+psycopg://postgres@127.0.0.1:9/none"}}}),
        "data.source.url: cannot reach postgresql+psycopg://postgres@127.0.0.1:9/none"),
    "unknown estimator import path": (
        _case({"candidates": {"estimators": [{"name": "x", "estimator": "sklearn.nope.Model"}]}}),
        "cannot import estimator 'sklearn.nope.Model'"),
    "bad estimator parameter": (
        _case({"candidates": {"estimators": [{"name": "lr", "estimator": "logistic_regression",
                                              "params": {"not_a_param": 1}}]}}),
        "candidates.lr.params"),
    "time column holds no times": (_case(edit=_set("ts", "yesterday-ish")),
                                   "data.time_column: 'ts' holds values that are not times"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_refused_and_champion_kept(name: str, champion_home: Path, tmp_path: Path):
    make, needle = CASES[name]
    cfg = make(tmp_path / "case")
    settings = Settings.from_env()
    history_before = Store(settings.database_url).alias_history(MODEL)
    with pytest.raises(known_errors()) as info:
        train_flow(str(cfg))
    assert needle in str(info.value), str(info.value)
    assert "Traceback" not in str(info.value)
    assert Registry(settings).alias_version(MODEL, CHAMPION) == "1"
    assert Store(settings.database_url).alias_history(MODEL) == history_before


def test_at_least_twelve_cases():
    assert len(CASES) >= 12
