"""The challenger judgement: a challenger in shadow (``promotion.mode: shadow``) is judged
against the champion on each monitoring window, and takes over or is retired
(`tasks.registry.challenger`).

It runs as the ``judge-challenger`` step of every drift check, after the bake's judgement, on
the window the check just loaded. A takeover is a promotion: champion moves (inside the
model's alias section, only from the champion the trial was judged against) and, with
``promotion.bake``, the new champion bakes against the one it replaced as after any other
promotion.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from prefect.artifacts import create_markdown_artifact

from regrow.flows import events as notify
from regrow.flows import pages
from regrow.flows.model_env import Env
from regrow.flows.steps import step
from regrow.tasks.model.evaluate import Scored
from regrow.tasks.monitoring.assess import _labels
from regrow.tasks.registry import bake as baking
from regrow.tasks.registry import challenger as ch
from regrow.tasks.registry import governance as gov
from regrow.tasks.registry.mlflow_registry import CHALLENGER, CHAMPION, load_reference

ACTOR = "shadow"


def _scored(window: pd.DataFrame, ref: Any, task: str) -> tuple[Any, Scored]:
    y, pred, proba = _labels(window, ref, task)
    return y, Scored(pred, proba)


@step("judge-challenger")
def judge_challenger(env: Env, version: str, run_id: str, window) -> dict[str, Any] | None:
    """Judge the challenger in shadow against champion `version` on this window's matured
    rows that both scored and no earlier window counted; promote or retire it when its trial
    has its windows."""
    cfg = env.loaded.config
    if cfg.promotion.mode != "shadow" or window is None or window.empty:
        return None
    with gov.alias_section(env.registry, env.store, env.model, "judge-challenger"):
        cand = env.registry.alias_version(env.model, CHALLENGER)
        if cand is None or cand == version:
            return None
        tags = dict(env.registry.version_info(env.model, cand).tags)
        if tags.get(ch.TAG_STATE) != ch.RUNNING:
            return None
        trial = cfg.promotion.shadow
        ref = load_reference(env.registry, run_id)
        rows = window[window["__label"].notna()]
        until = tags.get(ch.TAG_UNTIL) or ""
        if until:
            rows = rows[pd.to_datetime(rows["__scored_at"], utc=True) > pd.Timestamp(until)]
        shadow = baking.shadow_window(env.store, env.model, cand, rows, "__prediction", "__score")
        champ = rows[rows["__row_id"].isin(shadow["__row_id"])]
        y, champ_scored = _scored(champ, ref, cfg.data.task)
        _, cand_scored = _scored(shadow, ref, cfg.data.task)
        result = ch.judge_window(cfg.data.task, ref.metric, y, champ_scored, cand_scored, trial,
                                 seed=cfg.split.seed)
        windows = ch.windows_of(tags)
        print(f"challenger v{cand} against champion v{version}: {result.describe(ref.metric)}")
        if not result.counted:
            return {"version": cand, "champion_version": version, "state": ch.RUNNING,
                    "windows_done": len(windows), "window": result.describe(ref.metric)}
        windows.append(result)
        verdict = ch.decide(windows, trial, ref.metric)
        newest = pd.to_datetime(champ["__scored_at"], utc=True).max().isoformat()
        env.registry.set_version_tags(env.model, cand, ch.window_tags(windows, newest, verdict))
        if verdict.state == ch.PROMOTED:
            _take_over(env, cand, version, verdict)
        elif verdict.state == ch.RETIRED:
            gov.clear_challenger(env.registry, env.store, env.model, cand,
                                 f"{ch.REASON_PREFIX} retired: {verdict.reason}", ACTOR)
    payload = {"version": cand, "champion_version": version, **verdict.to_dict(),
               "window": result.describe(ref.metric)}
    if verdict.state != ch.RUNNING:
        kind = "challenger_promoted" if verdict.state == ch.PROMOTED else "challenger_retired"
        notify.challenger_decided(env, kind, cand, version, ref.metric, verdict)
    create_markdown_artifact(
        key=pages.artifact_key("challenger", env.model),
        description=f"{env.model} challenger v{cand}: {verdict.state}",
        markdown=f"# Challenger v{cand} against champion v{version}: {verdict.state}\n\n"
        f"- this window: {result.describe(ref.metric)}\n- {verdict.reason}\n")
    return payload


def _take_over(env: Env, cand: str, champion: str, verdict: ch.Verdict) -> None:
    """Champion moves to the challenger (only from the champion it was judged against); with a
    bake configured it bakes against the one it replaced, else ``challenger`` is cleared."""
    if env.registry.alias_version(env.model, CHAMPION) != champion:
        return
    info = env.registry.version_info(env.model, cand)
    gov.move_alias(env.registry, env.store, env.model, CHAMPION, cand,
                   f"{ch.REASON_PREFIX} took over: {verdict.reason}", ACTOR, info.run_id)
    bake = env.loaded.config.promotion.bake
    if bake is not None:
        baking.start(env.store, env.model, cand, champion, bake)
        print(f"v{cand} bakes for {bake.windows} window(s) against v{champion}")
    else:
        gov.clear_challenger(env.registry, env.store, env.model, cand,
                             f"{ch.REASON_PREFIX} took over; nothing to wait for", ACTOR)
