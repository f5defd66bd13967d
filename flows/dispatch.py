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

from regrow.tasks.policy.notices import EVENTS

ADMITTED_EVENT = "regrow.retrain.admitted"
DRIFT_EVENT = EVENTS["drift_checked"]
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


class NotSent(RuntimeError):
    """An event that did not reach a Prefect server (none configured, or none answered)."""


def emit_now(event: str, model: str, payload: dict[str, Any], timeout: float = 10.0) -> str:
    """Send one event to the configured Prefect API now, and wait until the server has it: for
    a command that moves a model outside any flow run and ends right after (Prefect's
    background event worker would send it later, and never say whether it arrived).

    Returns:
        The event id.

    Raises:
        NotSent: no Prefect API is configured (no temporary server is started for one event),
            or the server did not take the event within `timeout` seconds.
    """
    from prefect.events import Event, Resource
    from prefect.events.clients import PrefectEventsClient
    from prefect.settings import PREFECT_API_URL
    from prefect.utilities.asyncutils import run_coro_as_sync

    api = PREFECT_API_URL.value()
    if not api:
        raise NotSent("no Prefect server is configured (PREFECT_API_URL, or `regrow up`)")
    ev = Event(event=event, resource=Resource(resource(model)), payload=payload)

    async def send() -> None:
        import asyncio

        async with asyncio.timeout(timeout):
            async with PrefectEventsClient(api_url=api, reconnection_attempts=1) as client:
                await client.emit(ev)
                socket = client._websocket  # noqa: SLF001 - a pong confirms what came before
                if socket is not None:
                    await (await socket.ping())

    import logging

    quiet = logging.getLogger("prefect.events.clients")  # its connection warning: ours says it
    level = quiet.level
    quiet.setLevel(logging.CRITICAL + 1)
    try:
        run_coro_as_sync(send())
    except Exception as err:  # noqa: BLE001 - said in one sentence by the caller
        why = " ".join(str(err).split()) or type(err).__name__
        raise NotSent(f"the Prefect server at {api} did not take it ({why})") from None
    finally:
        quiet.setLevel(level)
    return str(ev.id)


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
