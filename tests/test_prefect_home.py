"""The ready Prefect home (regrow.runtime.prefect_home): built once by starting a real Prefect server,
copied into new homes only, and a server started on a seeded home answers with its block types
already registered."""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

import pytest

from regrow.runtime import prefect_home as ph
from regrow.runtime.prefect_home import seed_prefect_home
from regrow.tasks.store.settings import configure_process_env
from tests.procs import start_prefect_server, stop


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A template built from scratch in a cache of its own."""
    cache = tmp_path_factory.mktemp("cache")
    saved = os.environ.get(ph.CACHE_ENV)
    os.environ[ph.CACHE_ENV] = str(cache)
    try:
        built, seconds = ph.build_template()
        assert seconds > 0 and built.parent == cache
        assert ph.build_template() == (built, 0.0)  # kept: built once per Prefect version
        yield built
    finally:
        if saved is None:
            os.environ.pop(ph.CACHE_ENV, None)
        else:
            os.environ[ph.CACHE_ENV] = saved


def test_the_template_is_a_checkpointed_database_and_the_block_memo(template: Path):
    assert sorted(p.name for p in template.iterdir()) == sorted(ph.KEPT)
    assert (template / ph.DB_FILE).stat().st_size > 100_000
    assert "block_auto_registration" in (template / "memo_store.toml").read_text()


def test_seed_fills_a_new_home_and_never_an_existing_one(template: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(ph.CACHE_ENV, str(template.parent))
    fresh = tmp_path / "fresh" / "prefect"
    assert ph.seed(fresh)
    assert (fresh / ph.DB_FILE).read_bytes() == (template / ph.DB_FILE).read_bytes()
    used = tmp_path / "used"
    used.mkdir()
    (used / ph.DB_FILE).write_bytes(b"someone's runs")
    assert not ph.seed(used)
    assert (used / ph.DB_FILE).read_bytes() == b"someone's runs"
    assert not (used / "memo_store.toml").exists()
    monkeypatch.setenv(ph.CACHE_ENV, str(tmp_path / "empty-cache"))  # nothing built there
    assert not ph.seed(tmp_path / "other")
    assert not (tmp_path / "other" / ph.DB_FILE).exists()


def test_only_regrow_s_own_home_is_seeded_and_only_when_a_server_starts(template: Path,
                                                                         tmp_path: Path):
    saved = dict(os.environ)  # configure_process_env sets more than these
    try:
        os.environ[ph.CACHE_ENV] = str(template.parent)
        for key in ("PREFECT_HOME", "PREFECT_API_URL", "PREFECT_API_DATABASE_CONNECTION_URL"):
            os.environ.pop(key, None)
        os.environ["REGROW_HOME"] = str(tmp_path / "home")
        settings = configure_process_env()
        assert not settings.prefect_home.exists()  # a command that starts no server
        assert seed_prefect_home(settings)
        assert (settings.prefect_home / ph.DB_FILE).is_file()
        os.environ["PREFECT_HOME"] = str(tmp_path / "the-user-s-own")
        assert not seed_prefect_home(settings)
        os.environ["REGROW_HOME"] = str(tmp_path / "elsewhere")
        os.environ.pop("PREFECT_HOME")
        os.environ["PREFECT_API_DATABASE_CONNECTION_URL"] = "postgresql://x@127.0.0.1/p"
        settings = configure_process_env()
        assert not seed_prefect_home(settings)
        assert not (settings.prefect_home / ph.DB_FILE).exists()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_a_server_on_a_seeded_home_answers_with_its_block_types(template: Path,
                                                               tmp_path: Path):
    home = tmp_path / "prefect"
    assert ph.seed(home)
    proc, url = start_prefect_server(home, 120, **{ph.CACHE_ENV: str(template.parent)})
    try:
        req = urllib.request.Request(f"{url}/block_types/filter",
                                     data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as res:
            slugs = {b["slug"] for b in json.loads(res.read())}
        assert {"secret", "webhook"} <= slugs, slugs
    finally:
        stop(proc)


def test_mlflow_store_template_seeds_only_regrow_s_own_new_database(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import sqlite3

    from mlflow import MlflowClient

    from regrow.tasks.registry import mlflow_registry as rg
    from regrow.tasks.store.settings import Settings

    monkeypatch.setenv(ph.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    built, seconds = rg.build_store_template()
    assert seconds > 0 and built.is_relative_to(tmp_path / "cache")
    assert rg.build_store_template() == (built, 0.0)

    monkeypatch.setenv("REGROW_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env()
    assert rg.seed_store(settings)
    db = settings.home / rg.STORE_FILE
    with sqlite3.connect(db) as con:
        (location,) = con.execute(
            "SELECT artifact_location FROM experiments WHERE experiment_id = 0").fetchone()
    assert location == str(tmp_path / "mlruns" / "0")  # as MLflow would have set it here
    # The seeded database is one MLflow uses as its own: runs, versions and aliases.
    reg = rg.Registry(settings)
    run_id = reg.start_run("seeded", "a run", {"k": "v"})
    client = MlflowClient(settings.tracking_uri, settings.tracking_uri)
    client.create_registered_model("seeded")
    version = client.create_model_version("seeded", f"runs:/{run_id}/model", run_id=run_id)
    client.set_registered_model_alias("seeded", "champion", version.version)
    assert client.get_model_version_by_alias("seeded", "champion").run_id == run_id

    before = db.read_bytes()
    assert not rg.seed_store(settings)  # an existing database is never replaced
    assert db.read_bytes() == before
    monkeypatch.setenv("REGROW_HOME", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'theirs.db'}")
    assert not rg.seed_store(Settings.from_env())  # a store the user named is MLflow's to make
    assert not (tmp_path / "theirs.db").exists()
    monkeypatch.setenv(ph.CACHE_ENV, str(tmp_path / "empty-cache"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert not rg.seed_store(Settings.from_env())  # no template: MLflow migrates as before
    assert not (tmp_path / "elsewhere" / rg.STORE_FILE).exists()
