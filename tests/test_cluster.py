"""Candidate search on a real Dask cluster (`distributed.LocalCluster`, two worker processes):
the same scores, winner and model as a local search, and clear errors when it cannot run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import BINARY_CONFIG, REGRESSION_CONFIG, binary_frame, merge, regression_frame

ROOT = Path(__file__).resolve().parents[1]

GRID = {"estimators": [
    {"name": "logreg", "estimator": "logistic_regression", "params": {"max_iter": 300},
     "grid": {"C": [0.01, 0.1, 1.0, 10.0]}},
    {"name": "forest", "estimator": "random_forest_classifier",
     "params": {"n_estimators": 15}, "grid": {"max_depth": [3, 6]}}]}


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None, silence_logs=40) as made:
        yield made


def _config(base, patch):
    from regrow.configs.schema import parse_config

    return parse_config(merge(base, patch))


def _train(config, frame):
    from regrow.tasks.model import train as tr
    parts = tr.split(config, frame)
    return tr.train(config, parts.train), parts


@pytest.mark.parametrize("case", ["binary", "regression"])
def test_dask_search_matches_the_local_one(cluster, monkeypatch, case):
    from distributed import Client, get_task_stream

    if case == "binary":
        frame, base, patch = binary_frame(1200, seed=3), BINARY_CONFIG, {"candidates": GRID}
    else:
        frame, base, patch = regression_frame(1200, seed=3), REGRESSION_CONFIG, {}
    local_cfg = _config(base, patch)
    dask_cfg = _config(base, merge(patch, {"candidates": {"backend": "dask"}}))
    local, parts = _train(local_cfg, frame)

    monkeypatch.setenv("REGROW_DASK_ADDRESS", cluster.scheduler_address)
    with Client(cluster.scheduler_address, set_as_default=False) as watcher, \
            get_task_stream(watcher) as stream:
        remote, _ = _train(dask_cfg, frame)
    fits = sum(len(c.grid and next(iter(c.grid.values())) or [None]) for c in
               dask_cfg.candidates.estimators) * dask_cfg.candidates.cv_folds
    assert len(stream.data) >= fits  # the cross-validation fits ran on the cluster's workers
    assert {t["worker"] for t in stream.data} <= set(cluster.scheduler_info["workers"])
    assert remote.backend["backend"] == "dask" and remote.backend["workers"] == 2

    # The same fits with the same seeds: the same scores and winner. A forest's trees are summed
    # in whatever order the workers finish them, so floats may differ in the last bit (1e-16).
    assert [(s.name, s.best_params) for s in remote.candidates] == \
        [(s.name, s.best_params) for s in local.candidates]
    for r, lo in zip(remote.candidates, local.candidates, strict=True):
        assert r.cv_score == pytest.approx(lo.cv_score, rel=1e-12, abs=1e-12)
        assert r.cv_std == pytest.approx(lo.cv_std, rel=1e-9, abs=1e-12)
    assert remote.best.name == local.best.name
    X = parts.holdout[local.roles.inputs]
    np.testing.assert_allclose(remote.model.predict(X), local.model.predict(X), rtol=1e-12)


def test_backend_without_an_address_or_a_scheduler_is_a_sentence(monkeypatch):
    from regrow.tasks.model import cluster as cl
    cfg = _config(BINARY_CONFIG, {"candidates": {"backend": "dask"}})
    monkeypatch.delenv(cl.ADDRESS_ENV, raising=False)
    with pytest.raises(cl.ClusterError, match="REGROW_DASK_ADDRESS is not set"):
        _train(cfg, binary_frame(300))
    from tests.procs import free_port

    monkeypatch.setenv(cl.ADDRESS_ENV, f"tcp://127.0.0.1:{free_port()}")
    monkeypatch.setenv(cl.CONNECT_TIMEOUT_ENV, "2")
    with pytest.raises(cl.ClusterError, match="did not answer within 2 s"):
        _train(cfg, binary_frame(300))


def test_config_rejects_an_unknown_backend():
    from regrow.configs.schema import ConfigError

    with pytest.raises(ConfigError, match="candidates.backend"):
        _config(BINARY_CONFIG, {"candidates": {"backend": "spark"}})


@pytest.mark.slow
def test_cli_train_on_a_missing_cluster_exits_2_with_one_sentence(tmp_path: Path):
    from tests.helpers import write_case

    cfg = write_case(tmp_path / "case", binary_frame(400), merge(BINARY_CONFIG, {
        "candidates": {"backend": "dask"}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REGROW_", "PREFECT_"))}
    env.update(REGROW_HOME=str(tmp_path / "home"), REGROW_WARM="off", PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-m", "regrow.app.cli", "train", str(cfg)],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert out.returncode == 2, out.stderr
    assert "error: candidates.backend is 'dask' but REGROW_DASK_ADDRESS is not set" in out.stderr
    assert "Traceback" not in out.stderr
