"""The bake judgement: a new champion in its bake period is judged against the version it
replaced on each monitoring window, and rolled back when it is worse (``promotion.bake``).

It runs as the ``judge-bake`` step of every drift check (the window it judges is the one the
check just loaded), and this is the one place where a bake passes or rolls the champion back.
"""

from __future__ import annotations

from typing import Any

from regrow.flows import dispatch
from regrow.flows import events as notify
from regrow.flows.model_env import Env
from regrow.flows.steps import step
from regrow.tasks.monitoring import assess as monitor
from regrow.tasks.registry import bake as baking
from regrow.tasks.registry import governance as gov
from regrow.tasks.registry.mlflow_registry import load_reference


@step("judge-bake")
def judge_bake(env: Env, version: str, run_id: str, window) -> dict[str, Any] | None:
    """Judge the champion against its shadow on this window; roll back when it is worse."""
    bake = baking.active(env.store, env.model, version)
    if bake is None or window is None or window.empty:
        return None
    ref = load_reference(env.registry, run_id)
    shadow_rows = baking.shadow_window(env.store, env.model, bake.previous_version, window,
                                       "__prediction", "__score")
    shadow_rows = shadow_rows[shadow_rows["__label"].notna()]
    champ_rows = window[window["__row_id"].isin(shadow_rows["__row_id"])]
    labelled, champ = monitor.window_metric(env.loaded.config, ref, champ_rows)
    _, shadow = monitor.window_metric(env.loaded.config, ref, shadow_rows)
    judged = baking.judge(env.loaded.config, bake, champ, shadow, labelled, ref.metric)
    state = baking.record_window(env.store, bake, judged)
    print(f"bake of v{version} against v{bake.previous_version}: {judged.describe()} "
          f"-> {state.state}")
    payload = {"version": version, "previous_version": bake.previous_version,
               "window": judged.describe(), "state": state.state, "detail": state.detail}
    if state.state == baking.ROLLED_BACK:
        gov.rollback(env.registry, env.store, env.model, by="bake", actor="bake",
                     to=bake.previous_version, reason=f"bake failed: {state.detail}")
        dispatch.emit("regrow.bake.rolled_back", env.model, payload)
        notify.rolled_back(env, version, bake, judged)
    elif state.state == baking.PASSED:
        gov.clear_challenger(env.registry, env.store, env.model, version,
                             f"bake passed: {state.detail}", "bake")
        dispatch.emit("regrow.bake.passed", env.model, payload)
    return {**state.to_dict(), "window": judged.describe()}
