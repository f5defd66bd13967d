"""How an admitted retrain request reaches a training run.

- ``inline`` (the embedded default): the training flow runs right here, in this process.
- ``events`` (served mode, set by ``regrow serve`` / ``REGROW_DISPATCH=events``): a Prefect
  event ``regrow.retrain.admitted`` on resource ``regrow.model.<name>`` is emitted; the training
  deployment's trigger turns it into a flow run with parameters templated from the payload.
  No payload names a config file: each deployment runs the config it was served with.
"""

from __future__ import annotations

import os
from typing import Any

ADMITTED_EVENT = "regrow.retrain.admitted"
DRIFT_EVENT = "regrow.drift.checked"
DATA_EVENT = "regrow.data.arrived"


def mode() -> str:
    """``inline`` or ``events`` (``REGROW_DISPATCH``)."""
    value = os.environ.get("REGROW_DISPATCH", "inline").strip().lower()
    if value not in {"inline", "events"}:
        raise ValueError(f"REGROW_DISPATCH must be 'inline' or 'events', got {value!r}")
    return value


def resource(model: str) -> dict[str, str]:
    """The Prefect event resource of a model."""
    return {"prefect.resource.id": f"regrow.model.{model}", "prefect.resource.name": model}


def emit(event: str, model: str, payload: dict[str, Any]) -> str | None:
    """Emit a regrow event for a model; returns the event id (None if events are off)."""
    from prefect.events import emit_event

    ev = emit_event(event=event, resource=resource(model), payload=payload)
    return str(ev.id) if ev is not None else None


def admitted_payload(request_id: int, kind: str, reason: str, ref: str | None,
                     overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The payload of ``regrow.retrain.admitted`` (the training trigger templates from it).

    It names no file: the training deployment runs the config it was served with
    (`flows.binding`), and checks `overrides` against that config's allowed keys."""
    return {"request_id": request_id, "kind": kind, "reason": reason, "ref": ref or "",
            "overrides": overrides or {}}


def emit_admitted(model: str, request_id: int, kind: str, reason: str, ref: str | None,
                  overrides: dict[str, Any] | None = None) -> str | None:
    """Announce an admitted retrain request; the training deployment's trigger picks it up."""
    return emit(ADMITTED_EVENT, model, admitted_payload(request_id, kind, reason, ref, overrides))
