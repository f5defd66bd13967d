"""One import namespace: the wheel installs `regrow` (and `regrow.flows`, `regrow.tasks`,
`regrow.configs`) and nothing else at the top level; a project with its own `flows/` and
`tasks/` packages keeps them; the Python API runs the real flows; models registered before
the rename still load."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import BINARY_CONFIG, binary_frame, merge, write_case

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory) -> Path:
    """A fresh venv with the built wheel installed (no editable finder); the dependencies come
    from this environment's site-packages through a path entry, not reinstalled."""
    tmp = tmp_path_factory.mktemp("wheel")
    uv = Path(sys.executable).with_name("uv")
    built = subprocess.run([str(uv), "build", "-q", "--wheel", "--out-dir", str(tmp / "dist"),
                            str(ROOT)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr
    wheel = next((tmp / "dist").glob("regrow-*.whl"))
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    got = subprocess.run([str(uv), "pip", "install", "-q", "--no-deps", "--python",
                          str(venv / "bin" / "python"), str(wheel)], capture_output=True,
                         text=True, timeout=600)
    assert got.returncode == 0, got.stderr
    return venv


def _site(venv: Path) -> Path:
    return next((venv / "lib").glob("python3*/site-packages"))


def test_wheel_puts_only_regrow_at_the_top_level(wheel_venv: Path):
    top = {p.name for p in _site(wheel_venv).iterdir()} - {"deps.pth", "__pycache__"}
    assert top == {"regrow", "regrow-0.1.0.dist-info"}, top
    inside = {p.name for p in (_site(wheel_venv) / "regrow").iterdir()}
    assert {"__init__.py", "flows", "tasks", "configs"} <= inside
    assert (_site(wheel_venv) / "regrow" / "configs" / "rainfall.yaml").is_file()
    assert (_site(wheel_venv) / "regrow" / "tasks" / "store" / "migrations" / "versions").is_dir()


def test_a_project_with_its_own_flows_and_tasks_keeps_them(wheel_venv: Path, tmp_path: Path):
    for name in ("flows", "tasks", "configs"):  # a Prefect project's usual layout
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"MINE = {name!r}\n")
    probe = (
        "import flows, tasks, configs, regrow, regrow.app.cli, regrow.tasks.store.database\n"
        "assert (flows.MINE, tasks.MINE, configs.MINE) == ('flows', 'tasks', 'configs')\n"
        "assert 'site-packages' in regrow.app.cli.__file__, regrow.app.cli.__file__\n"
        "import sys\n"
        "heavy = [m for m in ('prefect', 'mlflow', 'sklearn', 'evidently') if m in sys.modules]\n"
        "print('OK', sorted(regrow.__all__), heavy)\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([str(wheel_venv / "bin" / "python"), "-c", probe], cwd=tmp_path,
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ("OK ['labels', 'retrain', 'score', 'status', 'train', 'watch'] "
                                  "[]"), out.stdout  # importing the API imports nothing heavy
    cli = subprocess.run([str(wheel_venv / "bin" / "regrow"), "config", "check",
                          str(_site(wheel_venv) / "regrow" / "configs" / "rainfall.yaml")],
                         cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120)
    assert cli.returncode == 0 and cli.stdout.startswith("OK "), cli.stderr


@pytest.mark.usefixtures("prefect_harness")
def test_python_api_trains_scores_labels_watches_and_reports(home: Path, tmp_path: Path):
    import regrow

    frame = binary_frame(1200, seed=2)
    cfg = write_case(tmp_path / "m", frame.iloc[:800], merge(BINARY_CONFIG, {
        "registry": {"model_name": "api-model"},
        "monitoring": {"window": {"rows": 300, "min_rows": 100}}}))
    trained = regrow.train(cfg, reason="from a notebook")
    assert trained.promoted and trained.champion_after == "1"
    later = frame.iloc[800:]
    scored = regrow.score(cfg, later.drop(columns=["label"]))  # a DataFrame
    assert scored.rows == 400 and scored.version == "1"
    got = regrow.labels(cfg, later[["row_id", "label"]])
    assert (got.received, got.matched) == (400, 400)
    check = regrow.watch(cfg, retrain=False)
    assert check.assessment["window_rows"] == 300
    info = regrow.status(cfg)
    assert info["champion"] == "1" and info["model"] == "api-model"
    answer = regrow.retrain(cfg, "again", actor="notebook")  # through the policy
    print("RETRAIN", answer.verdict, answer.detail, answer.training and answer.training.skipped)
    assert answer.verdict == "cooling_down" and answer.training is None


@pytest.mark.parametrize("old_module", ["tasks.features", "regrow.tasks.features"])
def test_a_model_saved_under_the_old_module_names_still_loads(tmp_path: Path, old_module: str):
    """Models regrow 0.1.0 registered name their transformers `tasks.features.*`; those of the
    flat `tasks/` layout, `regrow.tasks.features.*`."""
    import mlflow.sklearn
    import skops.io
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    from regrow.tasks.data import features

    frame = binary_frame(300)
    text = Pipeline([("s", features.ToString()), ("o", OneHotEncoder(sparse_output=False))])
    model = Pipeline([("prep", ColumnTransformer([("c", text, ["segment"]),
                                                  ("n", "passthrough", ["amount"])])),
                      ("m", LogisticRegression())])
    model.fit(frame[["segment", "amount"]], frame["label"])
    features.ToString.__module__ = old_module  # as that layout wrote it
    # While saving, the old name must resolve as it did in that layout: the same aliases.
    from regrow.tasks.registry.mlflow_registry import legacy_module_names

    try:
        with legacy_module_names():
            trusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
            assert f"{old_module}.ToString" in trusted
            mlflow.sklearn.save_model(model, tmp_path / "old", serialization_format="skops",
                                      skops_trusted_types=trusted)
    finally:
        features.ToString.__module__ = "regrow.tasks.data.features"
    expected = model.predict_proba(frame[["segment", "amount"]])
    frame[["segment", "amount"]].to_parquet(tmp_path / "rows.parquet")
    np.save(tmp_path / "expected.npy", expected)
    # Outside the repository, where no top-level `tasks` package exists (as for an installed
    # regrow), the old names resolve only through the aliases, and only during the load.
    probe = (
        "import sys, numpy as np, pandas as pd, mlflow.sklearn\n"
        "from regrow.tasks.registry.mlflow_registry import legacy_module_names\n"
        "assert 'tasks' not in sys.modules\n"
        "with legacy_module_names():\n"
        "    loaded = mlflow.sklearn.load_model('old')\n"
        f"assert 'tasks' not in sys.modules and {old_module!r} not in sys.modules\n"
        "got = loaded.predict_proba(pd.read_parquet('rows.parquet'))\n"
        "np.testing.assert_array_equal(got, np.load('expected.npy'))\n"
        "print('LOADED', type(loaded.steps[0][1].transformers_[0][1].steps[0][1]).__module__)\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "true"
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True,
                         text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "LOADED regrow.tasks.data.features"
