"""The features step end to end: `regrow train` on a real Prefect server shows it in the
run's graph and records the feature table; `regrow score` applies the derived features
exactly as training fitted them; bad feature specs are input errors (exit 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from tests.helpers import STAYS_CONFIG, merge, stays_frame, write_case

REGROW = [sys.executable, "-m", "regrow.app.cli"]
ROOT = Path(__file__).resolve().parent.parent

USER_MODULE = textwrap.dedent('''
    import numpy as np
    from sklearn.base import BaseEstimator, TransformerMixin

    class Halve(BaseEstimator, TransformerMixin):
        def __init__(self, factor=0.5):
            self.factor = factor

        def fit(self, X, y=None):
            return self

        def transform(self, X):
            return np.asarray(X, dtype=float) * self.factor
''')

CONFIG = merge(STAYS_CONFIG, {
    "modules": ["regrow_stays_feats"],
    "features": {"custom": [{"name": "guests_half", "transformer": "regrow_stays_feats.Halve",
                             "columns": ["guests"], "params": {"factor": 0.5}}]}})


@pytest.fixture(scope="module")
def case(tmp_path_factory, prefect_server: str):
    """A trained `stays` model in its own state dir: (home, config path, cli)."""
    root = tmp_path_factory.mktemp("stays")
    (root / "user").mkdir()
    (root / "user" / "regrow_stays_feats.py").write_text(USER_MODULE)
    home = root / "home"
    cfg = write_case(root / "m", stays_frame(1200), CONFIG)

    def cli(*args: str) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PREFECT_", "MLFLOW_", "REGROW_"))}
        env.update(REGROW_HOME=str(home), PYTHONPATH=f"{ROOT}{os.pathsep}{root / 'user'}",
                   PREFECT_API_URL=prefect_server)
        return subprocess.run([*REGROW, *args], capture_output=True, text=True, env=env,
                              timeout=600, cwd=ROOT)

    out = cli("train", str(cfg), "--json")
    assert out.returncode == 0, out.stderr[-3000:]
    return home, cfg, cli, json.loads(out.stdout), root


@pytest.mark.slow
def test_train_shows_the_features_step_and_records_the_table(case, prefect_server: str):
    home, _, _, summary, _ = case
    assert summary["promoted"] and summary["holdout"]["metrics"]["r2"] > 0.95
    api = prefect_server
    runs = httpx.post(f"{api}/flow_runs/filter", timeout=10, json={
        "flow_runs": {"tags": {"all_": ["model:stays"]}}}).json()
    (run,) = [r for r in runs if r["name"].startswith("train-stays")]
    tasks = httpx.post(f"{api}/task_runs/filter", timeout=10, json={
        "flow_runs": {"id": {"any_": [run["id"]]}}}).json()
    started = {t["name"].rsplit("-", 1)[0]: t["start_time"] for t in tasks}
    assert {"split", "features", "train"} <= set(started)
    assert started["split"] < started["features"] < started["train"]
    (state,) = {t["state"]["type"] for t in tasks if t["name"].startswith("features-")}
    assert state == "COMPLETED"
    arts = httpx.post(f"{api}/artifacts/filter", timeout=10, json={
        "artifacts": {"key": {"any_": ["features-stays"]}}}).json()
    table = json.loads(arts[0]["data"]) if isinstance(arts[0]["data"], str) else arts[0]["data"]
    by_column = {row["column"]: row for row in table}
    assert by_column["nights"]["transform"] == "expr: departure - arrival"
    assert by_column["nights"]["sources"] == "departure, arrival"
    assert by_column["nights"]["min"] == 1 and by_column["nights"]["max"] == 14
    assert by_column["guests_half"]["transform"] == "regrow_stays_feats.Halve(factor=0.5)"
    assert {"arr_month_sin", "arr_month_cos", "guests"} <= set(by_column)

    from regrow.tasks.registry.mlflow_registry import Registry
    from regrow.tasks.store.settings import Settings

    os.environ["REGROW_HOME"], saved = str(home), os.environ["REGROW_HOME"]
    try:
        from regrow.tasks.registry.card import build_card
        from regrow.tasks.store.database import Store

        settings = Settings.from_env()
        reg = Registry(settings)
        record = reg.read_json_artifact(summary["run_id"], "features.json")
        info = reg.run_info(summary["run_id"])
        card = build_card(reg, Store(settings.database_url), "stays").to_markdown()
    finally:
        os.environ["REGROW_HOME"] = saved
    assert record["sources"] == ["departure", "arrival"] and record["numeric"] == ["guests"]
    assert [d["name"] for d in record["derived"]] == ["nights", "arr", "guests_half"]
    assert record["model_inputs"] == 5 and record["rows"] == summary["split"]["train_rows"]
    assert 0 < info["metrics"]["features_seconds"] < 5
    assert info["params"]["features.derived"] == "['nights', 'arr', 'guests_half']"
    assert "| arrival | source | read by derived feature(s) nights, arr |" in card
    assert "| nights | nights | expr: departure - arrival | departure, arrival | numeric |" in card
    assert "listed in features.drop" not in card  # the dropped dates are read, by derived features


@pytest.mark.slow
def test_score_applies_the_derived_features_as_trained(case, monkeypatch: pytest.MonkeyPatch):
    home, cfg, cli, _, root = case
    rows = stays_frame(60, seed=7).drop(columns=["price"])
    rows["booking"] += 10_000
    rows.to_csv(root / "rows.csv", index=False)
    scored = cli("score", str(cfg), "--input", str(root / "rows.csv"))
    assert scored.returncode == 0, scored.stderr[-3000:]
    assert "scored 60 rows" in scored.stdout and "ignored" not in scored.stdout

    monkeypatch.setenv("REGROW_HOME", str(home))
    monkeypatch.syspath_prepend(str(root / "user"))
    from regrow.tasks.monitoring.scoring import load_window
    from regrow.tasks.registry.mlflow_registry import CHAMPION, Registry
    from regrow.tasks.store.database import Store
    from regrow.tasks.store.settings import Settings

    settings = Settings.from_env()
    model = Registry(settings).load("stays", alias=CHAMPION)
    stored = load_window(Store(settings.database_url), "stays", rows=1000)
    fresh = pd.read_csv(root / "rows.csv")
    assert stored["__row_id"].tolist() == fresh["booking"].astype(str).tolist()
    assert {"arrival", "departure", "guests"} <= set(stored.columns)  # the inputs it read
    np.testing.assert_allclose(stored["__score"], model.predict(fresh), rtol=1e-12)
    derived = model.named_steps["derive"].transform(fresh)
    nights = (pd.to_datetime(fresh["departure"]) - pd.to_datetime(fresh["arrival"])).dt.days
    np.testing.assert_allclose(derived["nights"], nights)
    np.testing.assert_allclose(derived["guests_half"], fresh["guests"] * 0.5)
    month = pd.to_datetime(fresh["arrival"]).dt.month
    np.testing.assert_allclose(derived["arr_month_cos"], np.cos(2 * np.pi * (month - 1) / 12))
    # a row without a column a derived feature reads cannot be scored: exit 2, named
    fresh.drop(columns=["departure"]).to_csv(root / "no-departure.csv", index=False)
    missing = cli("score", str(cfg), "--input", str(root / "no-departure.csv"))
    assert missing.returncode == 2
    assert "missing column(s) the model needs: ['departure']" in missing.stderr


@pytest.mark.slow
def test_bad_feature_specs_exit_2_naming_the_key(case):
    _, _, cli, _, root = case
    data = stays_frame(300)
    cases = [
        ({"features": {"derived": [{"name": "x", "sqrt": "guests"}]}},
         "features.derived.0: unknown transform 'sqrt'; known transforms: expr"),
        ({"modules": []}, "features.custom.0.transformer: 'regrow_stays_feats.Halve' is not a "
                          "class from scikit-learn (sklearn.*) or from a module listed in 'modules'"),
        ({"features": {"derived": [{"name": "nights", "expr": "checkout - arrival"}]}},
         "features.derived.0 (nights): column 'checkout' is not in the data"),
    ]
    for i, (patch, sentence) in enumerate(cases):
        cfg = write_case(root / f"bad{i}", data, merge(CONFIG, patch))
        out = cli("train", str(cfg))
        assert out.returncode == 2, out.stderr[-3000:]
        assert sentence in out.stderr and "Traceback" not in out.stderr, out.stderr[-3000:]
