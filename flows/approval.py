"""Manual promotion: the training flow pauses with a form until a person decides."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput

from regrow.configs.schema import parse_duration

if TYPE_CHECKING:  # `regrow approve/reject` import this module: keep the ML stack out of it
    from regrow.flows.steps import Approval, Evaluations, Registration, RunContext
    from regrow.tasks.model.gate import GateDecision


class PromotionDecision(RunInput):
    """The form shown in the Prefect UI (and filled by `regrow approve/reject`)."""

    approve: bool = False
    approver: str = ""
    reason: str = ""


def approval_for(ctx: RunContext, decision: GateDecision, reg: Registration,
                 evals: Evaluations) -> Approval | None:
    """None when the gate alone decides; otherwise announce the wait (`flows.events`) and pause
    until approved, rejected or timed out."""
    from regrow.flows import events as notify
    from regrow.flows.steps import Approval, needs_person

    if not needs_person(ctx, decision):
        return None
    from prefect.exceptions import FlowPauseTimeout

    promo = ctx.loaded.config.promotion
    borderline = ("Borderline: the candidate scores below the champion, within tolerance. "
                  if decision.borderline else "")
    form = PromotionDecision.with_initial_data(
        description=f"## Promote {ctx.model_name} v{reg.version} to champion?\n\n"
        f"Current champion: v{reg.champion_before or '-'}. {borderline}"
        f"MLflow run `{ctx.run_id}`.\n\n{decision.to_markdown()}\n\n"
        f"No decision within {promo.timeout} rejects the promotion.",
        approve=False, approver="", reason="")
    notify.approval_waiting(ctx, decision, reg, evals)
    try:
        answer = pause_flow_run(wait_for_input=form, timeout=int(parse_duration(promo.timeout)),
                                poll_interval=2, key=f"promote-{reg.version}")
    except FlowPauseTimeout:
        return Approval(False, "nobody", f"no decision within {promo.timeout}", "timeout")
    return Approval(bool(answer.approve), answer.approver or "unknown",
                    answer.reason or "-", "prefect-input")


def paused_run(flow_run_id):
    """The paused run to resume: the run itself, or its paused training subflow (a training
    started by a deployment runs as a subflow of the request flow).

    Raises:
        RuntimeError: neither the run nor any of its subflows is paused.
    """
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run_id)
        if run.state and run.state.is_paused():
            return run.id
        children = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id])))
    paused = [c for c in children if c.state and c.state.is_paused()]
    if not paused:
        state = run.state.name if run.state else "unknown"
        raise RuntimeError(f"flow run {flow_run_id} is {state} and waits for no decision")
    return paused[0].id
