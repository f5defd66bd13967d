"""Governance: alias meaning, history, manual promotion, rollback, moves made outside regrow,
and the bake period that rolls a bad champion back by itself -- on a real Prefect test server,
real MLflow stores and the monitoring store on SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from regrow.configs.schema import load_config
from regrow.flows.monitoring import drift_check_flow, score_flow
from regrow.flows.training import train_flow
from regrow.tasks.monitoring.scoring import record_labels
from regrow.tasks.registry import bake as baking
from regrow.tasks.registry import governance as gov
from regrow.tasks.registry.mlflow_registry import CHALLENGER, CHAMPION, Registry
from regrow.tasks.store.database import Store
from regrow.tasks.store.settings import Settings
from tests.helpers import BINARY_CONFIG, binary_frame, merge, write_case
from tests.procs import pg_database

pytestmark = pytest.mark.usefixtures("prefect_harness")
ROOT = Path(__file__).resolve().parent.parent
MODEL = BINARY_CONFIG["registry"]["model_name"]


def _stores() -> tuple[Registry, Store]:
    settings = Settings.from_env()
    return Registry(settings), Store(settings.database_url)


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres",
                                                                marks=pytest.mark.postgres)])
def trained(request, tmp_path_factory):
    """v1 a good champion, v2 trained on shuffled labels (rejected by the gate); monitoring store
    and MLflow on SQLite, or both on PostgreSQL."""
    mp = pytest.MonkeyPatch()
    home = tmp_path_factory.mktemp(f"gov-{request.param}")
    mp.setenv("REGROW_HOME", str(home / "state"))
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    mp.delenv("REGROW_DATABASE_URL", raising=False)
    with pg_database() if request.param == "postgres" else contextlib.nullcontext() as url:
        if url:
            mp.setenv("REGROW_DATABASE_URL", url)
            mp.setenv("MLFLOW_TRACKING_URI", url)
        good = write_case(home / "good", binary_frame(1500, seed=1), BINARY_CONFIG)
        bad = write_case(home / "bad", binary_frame(1500, seed=1, shuffle_labels=True),
                         BINARY_CONFIG)
        first = train_flow(str(good), reason="first")
        second = train_flow(str(bad), reason="shuffled labels")
        yield {"good": good, "bad": bad, "first": first, "second": second, "home": home,
               "env": {k: os.environ[k] for k in ("REGROW_HOME", "REGROW_DATABASE_URL",
                                                  "MLFLOW_TRACKING_URI") if k in os.environ}}
        Store(Settings.from_env().database_url).dispose()
    mp.undo()


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items()
            if k not in ("REGROW_DATABASE_URL", "MLFLOW_TRACKING_URI")}
    full.update(env)
    return subprocess.run([sys.executable, "-m", "regrow.app.cli", *args], capture_output=True,
                          text=True, env=full, cwd=ROOT, timeout=300)


def test_challenger_means_waiting_and_rejected_versions_never_hold_it(trained):
    reg, _ = _stores()
    assert trained["first"].promoted and trained["second"].decision["verdict"] == "reject"
    assert reg.alias_version(MODEL, CHAMPION) == "1"
    assert reg.alias_version(MODEL, CHALLENGER) is None


def test_promote_refuses_a_failed_gate_then_records_the_override_and_rollback_restores(trained):
    reg, store = _stores()
    with pytest.raises(gov.GovernanceError, match="did not pass its gate"):
        gov.promote(reg, store, MODEL, "2", by="alice", reason="try it")
    with pytest.raises(gov.GovernanceError, match="has no version '9'"):
        gov.promote(reg, store, MODEL, "9", by="alice", reason="typo")
    assert reg.alias_version(MODEL, CHAMPION) == "1"
    moves = gov.promote(reg, store, MODEL, "2", by="alice", reason="testing the override",
                        override_gate="known bad, for the drill")
    assert [m.describe() for m in moves] == ["champion: v1 -> v2"]
    assert reg.alias_version(MODEL, CHAMPION) == "2"
    assert reg.version_info(MODEL, "2").tags["regrow.gate_override"].startswith("by alice")
    back = gov.rollback(reg, store, MODEL, by="bob", reason="drill over")
    assert [m.describe() for m in back] == ["champion: v2 -> v1"]
    assert reg.alias_version(MODEL, CHAMPION) == "1"
    with pytest.raises(gov.GovernanceError, match="no earlier champion"):
        gov.rollback(reg, store, MODEL, by="bob", reason="nothing before v1")
    hist = gov.history(reg, store, MODEL)
    last_two = [(h.old_version, h.new_version, h.actor) for h in hist[-2:]]
    assert last_two == [("1", "2", "person:alice"), ("2", "1", "person:bob")]
    assert "GATE OVERRIDDEN" in hist[-2].reason and hist[-2].gate_verdict == "reject"
    assert hist[-1].reason.startswith("rollback from v2") and hist[-1].gate_verdict == "promote"
    assert hist[0].trigger == "manual" and hist[0].trigger_reason == "first"
    # The history agrees with MLflow: nothing to sync.
    assert gov.sync_aliases(reg, store, MODEL, "test") == []


def test_moves_made_outside_regrow_are_found_and_recorded(trained):
    reg, store = _stores()
    before = store.alias_history(MODEL, CHAMPION)
    reg.client.set_registered_model_alias(MODEL, CHAMPION, "2")  # as the MLflow UI would
    out = _cli(trained["env"], "status", str(trained["good"]))
    assert out.returncode == 0, out.stderr
    assert "MISMATCH: champion: v1 -> v2 was moved outside regrow" in out.stdout
    # A read writes nothing: the move is shown by every read until a move records it.
    assert store.alias_history(MODEL, CHAMPION) == before
    again = _cli(trained["env"], "status", str(trained["good"]))
    assert "MISMATCH: champion: v1 -> v2" in again.stdout
    assert store.alias_history(MODEL, CHAMPION) == before
    # A rollback from there records the outside move first, then goes back to the champion
    # before it.
    out = _cli(trained["env"], "rollback", str(trained["good"]), "--by", "carol", "--reason",
               "undo the UI edit")
    assert out.returncode == 0, out.stderr
    assert "champion: v2 -> v1" in out.stdout
    assert reg.alias_version(MODEL, CHAMPION) == "1"
    external, rollback = store.alias_history(MODEL, CHAMPION)[-2:]
    assert (external["old_version"], external["new_version"], external["actor"]) == \
        ("1", "2", gov.EXTERNAL)
    assert (rollback["old_version"], rollback["new_version"]) == ("2", "1")
    recorded = _cli(trained["env"], "status", str(trained["good"]))
    assert "MISMATCH" not in recorded.stdout  # recorded once
    hist = _cli(trained["env"], "history", str(trained["good"]))
    assert hist.returncode == 0 and "by external" in hist.stdout and "by person:carol" in hist.stdout


def test_cli_promote_refusal_is_a_clear_error(trained):
    out = _cli(trained["env"], "promote", str(trained["good"]), "--version", "2", "--by", "dave",
               "--reason", "x")
    assert out.returncode == 2 and "did not pass its gate" in out.stderr
    assert "Traceback" not in out.stderr
    out = _cli(trained["env"], "rollback", str(trained["good"]), "--to", "7", "--by", "dave",
               "--reason", "x")
    assert out.returncode == 2 and "has no version '7'" in out.stderr


# ----------------------------------------------------------------------------- bake period

BAKED = merge(BINARY_CONFIG, {
    "registry": {"model_name": "baked"},
    "monitoring": {"reference_rows": 2000, "window": {"rows": 600, "min_rows": 300}},
    "promotion": {"bake": {"windows": 2, "tolerance": 0.02, "min_labels": 200}},
    # A retrain on fresh rows of the same world must pass to bake: the old comparison alone.
    "gate": {"require_improvement": False},
})


def _score_and_label(cfg: Path, folder: Path, seed: int, start: str):
    frame = binary_frame(600, seed=seed, start=start)
    frame["row_id"] = frame["row_id"] + seed * 100_000  # fresh ids per window
    rows = folder / f"rows-{seed}.csv"
    frame.drop(columns=["label"]).to_csv(rows, index=False)
    result = score_flow(str(cfg), str(rows))
    assert result.rows == 600
    record_labels(load_config(cfg).config, frame[["row_id", "label"]], _stores()[1])
    return result


def test_bake_rolls_a_bad_promotion_back_by_itself(home: Path, tmp_path: Path):
    good = write_case(tmp_path / "good", binary_frame(2000, seed=3), BAKED)
    bad = write_case(tmp_path / "bad", binary_frame(2000, seed=3, shuffle_labels=True), BAKED)
    assert train_flow(str(good)).promoted
    rejected = train_flow(str(bad))
    assert not rejected.promoted
    reg, store = _stores()
    moves = gov.promote(reg, store, "baked", rejected.version, by="eve", reason="drill",
                        override_gate="deliberately bad", bake=load_config(good).config.promotion.bake)
    assert reg.alias_version("baked", CHAMPION) == "2" and reg.alias_version("baked", CHALLENGER) == "2"
    assert [m.alias for m in moves] == [CHAMPION, CHALLENGER]
    scored = _score_and_label(good, tmp_path, seed=11, start="2025-01-01")
    assert scored.shadow_version == "1" and scored.shadow_rows == 600
    check = drift_check_flow(str(good), retrain=False)
    assert check.bake is not None and check.bake["state"] == baking.ROLLED_BACK
    assert reg.alias_version("baked", CHAMPION) == "1"
    assert reg.alias_version("baked", CHALLENGER) is None
    last = store.alias_history("baked", CHAMPION)[-1]
    assert (last["old_version"], last["new_version"], last["actor"]) == ("2", "1", "bake")
    assert "bake failed" in last["reason"] and "roc_auc" in last["reason"]
    assert baking.latest(store, "baked", 1)[0].state == baking.ROLLED_BACK


def test_bake_passes_a_good_promotion_and_settles_it(home: Path, tmp_path: Path):
    first = write_case(tmp_path / "a", binary_frame(2000, seed=4, noise=2.0), BAKED)
    better = write_case(tmp_path / "b", binary_frame(2000, seed=5, noise=0.3), BAKED)
    assert train_flow(str(first)).promoted
    second = train_flow(str(better))
    assert second.promoted, second.decision
    reg, store = _stores()
    assert reg.alias_version("baked", CHALLENGER) == "2"  # champion and baking
    for i, seed in enumerate((21, 22)):
        _score_and_label(first, tmp_path, seed=seed, start=f"2025-0{i + 1}-01")
        check = drift_check_flow(str(first), retrain=False)
        assert check.bake["windows_done"] == i + 1
    assert check.bake["state"] == baking.PASSED
    assert reg.alias_version("baked", CHAMPION) == "2"
    assert reg.alias_version("baked", CHALLENGER) is None
