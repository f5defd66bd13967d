"""Notifications through Prefect's own machinery.

- **Events.** Every move of ``champion`` (by the gate, an approval, a person, a bake), every
  verdict of the retrain policy and the gate, every drift check and each decision a person may
  care about is emitted as a Prefect event on the model's resource (``regrow.model.<name>``;
  names in `regrow.tasks.policy.notices.EVENTS`), in the order they happened, its payload the
  notice: kind, subject, one sentence with the numbers and a link, every link, the numbers
  themselves. Emitting never fails a training, a drift check or a command: inside a run any
  error is a warning in the run's log; a command that moves a model outside a run
  (`regrow promote`, `rollback`, `reset-circuit`) sends its event to the configured Prefect
  API and waits for it, and says in one line when it could not (the move stands).
- **Automations.** For a config with a ``notify`` section, `regrow serve` (or `regrow notify`)
  creates one automation per kind it names on the Prefect server: a reactive `EventTrigger` on
  that kind's event for the model's resource, ``threshold`` 1 and ``within`` the quiet window
  (none for a move of champion: each is sent),
  evaluated per resource (``for_each``), whose `SendNotification` action renders the notice's
  subject and sentence into the configured notification block (Slack, Microsoft Teams, e-mail,
  a generic webhook, ...). The server's triggers and actions services do the rest, so a block
  that cannot deliver fails an action on the server, never a run here.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from typing import TYPE_CHECKING, Any
from uuid import UUID

from regrow.flows import dispatch
from regrow.tasks.policy import notices as nt

if TYPE_CHECKING:
    from regrow.configs.schema import LoadedConfig

log = logging.getLogger("regrow.notify")
AUTOMATION_TAG = "regrow-notify"
# A block id for automation files written before the block exists (infra/automations.yaml):
# replace it with the id of yours (`prefect block inspect <type>/<name>`).
PLACEHOLDER_BLOCK_ID = UUID(int=0)
BODY = "{{ event.payload.message }}"
SUBJECT = "{{ event.payload.subject }}"


class NotifySetupError(RuntimeError):
    """The automations cannot be set up (the block is missing or sends no notifications)."""


def _warn(message: str) -> None:
    """A warning in the current run's log (the Prefect UI), or the process log outside runs."""
    try:
        from prefect.logging import get_run_logger

        get_run_logger().warning(message)
    except Exception:  # noqa: BLE001 - no run context: the plain logger
        log.warning(message)


def never_raises(fn):
    """Run a notice-building function; any error becomes a warning and None."""

    @functools.wraps(fn)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - a notice never fails the work it reports
            _warn(f"notification {fn.__name__} not emitted: {type(err).__name__}: "
                  f"{nt.redact(str(err).splitlines()[0] if str(err) else '')}")
            return None

    return guarded


@never_raises
def announce(notice: nt.Notice) -> str | None:
    """Emit a notice as its Prefect event; returns the event id (None when events are off)."""
    return dispatch.emit(notice.event, notice.model, notice.payload())


def announce_now(notice: nt.Notice) -> str | None:
    """Send a notice of a command that ran outside any flow run (`regrow promote`, `rollback`,
    `reset-circuit`) to the configured Prefect API, waiting until the server has it.

    Never raises: returns None when the event was sent, else the one-line warning to print
    (no Prefect server configured or answering; the move it tells of stands)."""
    try:
        dispatch.emit_now(notice.event, notice.model, notice.payload())
        return None
    except Exception as err:  # noqa: BLE001 - telling never undoes the move it tells of
        why = str(err) if isinstance(err, dispatch.NotSent) else f"{type(err).__name__}: {err}"
        return nt.redact(f"the {notice.event} event was not sent: "
                         f"{' '.join(why.split())}")


def command_notice(build, *args: Any) -> str | None:
    """`announce_now` the notice `build(*args)` makes; a notice that cannot be built is a
    warning too."""
    try:
        notice = build(*args)
    except Exception as err:  # noqa: BLE001 - a notice never fails the command it reports
        return nt.redact(f"notification {getattr(build, '__name__', 'notice')} not sent: "
                         f"{type(err).__name__}: {' '.join(str(err).split())}")
    return announce_now(notice)


def flow_run_url() -> str | None:
    """The Prefect UI page of the current flow run (None outside a run or without a UI address)."""
    from prefect.context import FlowRunContext
    from prefect.utilities.urls import url_for

    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        return None
    return url_for("flow-run", obj_id=ctx.flow_run.id) or None


# ----------------------------------------------------------------------- training decisions

def _training_links(ctx: Any, version: str | None, report: str = "gate/decision.json") -> nt.Links:
    from regrow.tasks.registry.card import CARD_HTML
    from regrow.tasks.registry.mlflow_registry import artifact_link, run_url, version_url

    reg, run = ctx.registry, flow_run_url()
    try:
        return nt.Links(run=run, mlflow=run_url(reg, ctx.run_id) if ctx.run_id else None,
                        report=artifact_link(reg, ctx.run_id, report) if ctx.run_id else None,
                        card=version_url(reg, ctx.model_name, version, CARD_HTML)
                        if version else None)
    except Exception:  # noqa: BLE001 - MLflow unreachable (perhaps why the run failed): tell anyway
        return nt.Links(run=run)


def _scores(evals: Any) -> tuple[str, float | None, float | None]:
    """(primary metric, candidate's value, champion's value on the same holdout)."""
    champion = evals.champion.value if evals.champion is not None else None
    return evals.candidate.primary, evals.candidate.value, champion


@never_raises
def training_done(ctx: Any, decision: Any, reg: Any, evals: Any, approval: Any = None) -> None:
    """After a training reached a verdict: the gate rejected it, a person (or the timeout)
    rejected it, or it became champion (and the circuit breaker, if this rejection opened it).
    `approval`: the person's decision (`flows.steps.Approval`), None when the gate decided. A
    ``no_gain`` verdict (the champion stays, as good as the candidate) is told by the run's
    state and record, not as a notice."""
    metric, candidate, champion = _scores(evals)
    links = _training_links(ctx, reg.version)
    if reg.promoted:
        announce(nt.promoted(ctx.model_name, reg.version, reg.champion_before, metric, candidate,
                             champion, (reg.approval or {}).get("approver"), links))
    elif getattr(reg, "shadow", False):
        announce(nt.challenger_started(ctx.model_name, reg.version, reg.champion_before or "",
                                       metric, candidate, champion,
                                       ctx.loaded.config.promotion.shadow.windows, links))
    elif decision.passed and approval is not None and not approval.approved:
        announce(nt.approval_rejected(ctx.model_name, reg.version, reg.champion_after,
                                      approval.approver, approval.reason,
                                      approval.how == "timeout", links))
    elif not decision.passed and decision.verdict != "no_gain":  # no gain: nothing to tell
        failed = [r.rule for r in decision.rules if not r.passed]
        announce(nt.gate_rejected(ctx.model_name, reg.version, metric, candidate,
                                  decision.champion_version, champion, failed, links))
        circuit_check(ctx.store, ctx.model_name, ctx.loaded.config.retrain, links)


@never_raises
def training_failed(ctx: Any, err: BaseException) -> None:
    """A training failed (an exception) or crashed (interrupted, terminated)."""
    how = "failed" if isinstance(err, Exception) else "crashed"
    text = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
    links = _training_links(ctx, None, "validation/report.md")
    if type(err).__name__ != "ValidationFailed":  # no report: the run and the MLflow run
        links = nt.Links(run=links.run, mlflow=links.mlflow)
    announce(nt.training_failed(ctx.model_name, how, text.splitlines()[0], ctx.trigger.kind, links))
    if ctx.row_id:
        circuit_check(ctx.store, ctx.model_name, ctx.loaded.config.retrain, links)


@never_raises
def training_crashed(ctx: Any, row: dict[str, Any]) -> None:
    """A training whose process died (found by its expired lease), told once: when regrow
    closes its MLflow run."""
    from regrow.tasks.registry.mlflow_registry import run_url

    links = nt.Links(mlflow=run_url(ctx.registry, row["run_id"]) if row.get("run_id") else None)
    announce(nt.training_failed(ctx.model_name, "crashed", row.get("detail") or "the process died",
                                row.get("trigger") or "unknown", links))


@never_raises
def approval_waiting(ctx: Any, decision: Any, reg: Any, evals: Any) -> None:
    """A candidate passed the gate and waits for a person."""
    metric, candidate, champion = _scores(evals)
    announce(nt.approval_waiting(ctx.model_name, reg.version, reg.champion_before, metric,
                                 candidate, champion, ctx.loaded.config.promotion.timeout,
                                 decision.borderline, _training_links(ctx, reg.version)))


def circuit_check(store: Any, model: str, retrain: Any, links: nt.Links) -> None:
    """Announce the circuit breaker when the training just recorded opened it."""
    from regrow.tasks.policy import retrain as policy
    streak = policy.rejection_streak(store, model)
    if streak == retrain.circuit_breaker_after:
        announce(nt.circuit_opened(model, streak, retrain.circuit_breaker_after, None,
                                   nt.Links(run=links.run, mlflow=links.mlflow)))


def request_retrain(store: Any, model: str, retrain: Any, *, kind: str, reason: str,
                    ref: str | None, before: Any = None) -> Any:
    """The policy's one door (`tasks.policy.retrain.request_retrain`), announcing its verdict
    (`retrain_answered`) and a request the open circuit breaker refused. `before(answer)` runs
    first: what led to the request is told before its answer (a drift check's degradation)."""
    from regrow.tasks.policy import retrain as policy

    answer = policy.request_retrain(store, model, retrain, kind=kind, reason=reason, ref=ref)
    if before is not None:
        before(answer)
    retrain_answered(model, answer, kind, reason)
    circuit_refused(store, model, retrain, answer.verdict, kind)
    return answer


@never_raises
def retrain_answered(model: str, answer: Any, kind: str, reason: str) -> None:
    """The retrain policy's verdict on a request: admitted, coalesced or refused."""
    announce(nt.retrain_answered(model, answer.request_id, kind, reason, answer.verdict,
                                 answer.detail, nt.Links(run=flow_run_url())))


def circuit_reset(model: str, person: str, reason: str) -> str | None:
    """A person reset the circuit breaker (a command: `announce_now`); returns the warning to
    print when the event was not sent."""
    return command_notice(nt.circuit_reset, model, person, reason, nt.Links())


def person_moved(registry: Any, model: str, moves: list[Any], person: str, reason: str,
                 override: str | None = None) -> str | None:
    """A person moved champion (`regrow promote`, `regrow rollback`: the moves governance made);
    returns the warning to print when the event was not sent."""
    from regrow.tasks.registry.governance import CHAMPION, ROLLBACK

    moved = next((m for m in moves if m.alias == CHAMPION), None)
    if moved is None or moved.new_version is None:
        return None
    links = _version_links(registry, model, moved.new_version, moved.run_id)
    if moved.reason.startswith(ROLLBACK):
        return command_notice(nt.rolled_back_by_hand, model, moved.old_version or "-",
                              moved.new_version, person, reason, links)
    baking = any(m.alias != CHAMPION and m.new_version == moved.new_version for m in moves)
    return command_notice(nt.promoted_by_hand, model, moved.new_version, moved.old_version,
                          person, reason, override, baking, links)


def _version_links(registry: Any, model: str, version: str, run_id: str | None) -> nt.Links:
    """The version's model card and its MLflow run (none when MLflow cannot say)."""
    from regrow.tasks.registry.card import CARD_HTML
    from regrow.tasks.registry.mlflow_registry import run_url, version_url

    try:
        return nt.Links(mlflow=run_url(registry, run_id) if run_id else None,
                        card=version_url(registry, model, version, CARD_HTML))
    except Exception:  # noqa: BLE001 - the move is told without its links
        return nt.Links()


@never_raises
def circuit_refused(store: Any, model: str, retrain: Any, verdict: str, kind: str) -> None:
    """A retrain request met an open circuit breaker."""
    from regrow.tasks.policy import retrain as policy
    if verdict != policy.CIRCUIT_OPEN:
        return
    announce(nt.circuit_opened(model, policy.rejection_streak(store, model),
                               retrain.circuit_breaker_after, kind, nt.Links(run=flow_run_url())))


# ----------------------------------------------------------------------- monitoring decisions

def _check_links(env: Any, version: str, report: str | None, mlflow_run: str | None) -> nt.Links:
    from pathlib import Path

    from regrow.tasks.registry.card import CARD_HTML
    from regrow.tasks.registry.mlflow_registry import version_url

    mlflow = mlflow_run if mlflow_run and mlflow_run.startswith(("http://", "https://")) else None
    return nt.Links(run=flow_run_url(), mlflow=mlflow,
                    report=Path(report).as_uri() if report else mlflow,
                    card=version_url(env.registry, env.model, version, CARD_HTML))


@never_raises
def drift_checked(env: Any, version: str, check_id: int | None, assessment: Any,
                  report: str | None, mlflow_run: str | None, payload: dict[str, Any]) -> None:
    """Every drift check, as soon as it is recorded (before its bake judgement and any retrain
    it asks for). `payload`: the check's facts (`flows.monitoring.drift_payload`)."""
    announce(nt.drift_checked(env.model, version, check_id, assessment.verdict,
                              assessment.reasons, payload,
                              _check_links(env, version, report, mlflow_run)))


@never_raises
def degradation_confirmed(env: Any, version: str, assessment: Any, report: str | None,
                          mlflow_run: str | None, retrain: Any) -> None:
    """A drift check that confirmed degradation (its signals persisted under `retrain.on`),
    told before the retrain policy's answer to the request it makes (`retrain`: that answer,
    None when the check asks for no retrain). `mlflow_run`: where the check's MLflow run is
    (`registry.run_link`); `report`: its HTML."""
    from regrow.tasks.monitoring import assess as monitor

    if not assessment.persistent:
        return
    cfg = env.loaded.config
    perf = assessment.performance
    immediate = cfg.monitoring.performance.immediate
    if perf is not None and perf.severe:
        confirmed = f"one check (a severe drop: {perf.describe()})"
    elif immediate is not None and perf is not None and perf.drop is not None \
            and perf.drop >= immediate:
        confirmed = f"one check (a drop of at least {immediate:g})"
    else:
        k, n = cfg.monitoring.persistence.k, cfg.monitoring.persistence.n
        confirmed = "one check" if n == 1 else f"{k} of the last {n} checks"
    answer = ("no retrain asked (this check ran without retraining)" if retrain is None
              else f"the retrain policy answered {retrain.verdict}")
    links = _check_links(env, version, report, mlflow_run)
    announce(nt.degradation_confirmed(env.model, version, monitor.performance_payload(perf),
                                      assessment.drift_share, assessment.drifted_columns,
                                      confirmed, answer, links))


@never_raises
def rolled_back(env: Any, version: str, bake: Any, judged: Any) -> None:
    """A baking champion was rolled back to the version it replaced."""
    from regrow.tasks.registry.card import CARD_HTML
    from regrow.tasks.registry.mlflow_registry import version_url

    links = nt.Links(run=flow_run_url(),
                     card=version_url(env.registry, env.model, bake.previous_version, CARD_HTML))
    announce(nt.rolled_back(env.model, version, bake.previous_version, judged.metric,
                            judged.champion, judged.shadow, judged.labelled_rows, bake.tolerance,
                            links))


@never_raises
def challenger_decided(env: Any, kind: str, version: str, champion_version: str, metric: str,
                       verdict: Any) -> None:
    """A challenger in shadow took over or was retired (`flows.challenger_judgement`)."""
    from regrow.tasks.registry.card import CARD_HTML
    from regrow.tasks.registry.mlflow_registry import version_url

    links = nt.Links(run=flow_run_url(),
                     card=version_url(env.registry, env.model, version, CARD_HTML))
    announce(nt.challenger_decided(kind, env.model, version, champion_version, metric,
                                   verdict.gain, verdict.low, verdict.high, verdict.windows_done,
                                   verdict.reason, links))


# ----------------------------------------------------------------------- automations

def automation(kind: str, block_id: UUID, window_seconds: float, model: str | None = None):
    """The automation that sends one decision kind through a notification block: for one
    model, or (``model=None``) for every model, each with its own quiet window.

    Prefect's reactive trigger with ``threshold=1`` fires on the first event and then counts
    nothing until ``within`` has passed; ``for_each`` keeps one such window per resource, that
    is per model. A kind that moves ``champion`` has no window: every move is sent.
    """
    from prefect.automations import AutomationCore, EventTrigger, Posture, SendNotification

    target = f"regrow.model.{model}" if model else "regrow.model.*"
    who = model or "every regrow model"
    if not nt.EVENTS_TABLE[kind].quiet:
        window_seconds = 0
    how_often = (f"at most one message per model every {window_seconds:g} s" if window_seconds
                 else "a message for every event")
    return AutomationCore(
        name=f"regrow notify {kind}" + (f" {model}" if model else ""),
        description=f"regrow: the {nt.EVENTS[kind]} events ({nt.TITLES[kind]}) of {who} "
                    f"through a notification block, {how_often}.",
        tags=["regrow", AUTOMATION_TAG] + ([f"model:{model}"] if model else []),
        trigger=EventTrigger(expect={nt.EVENTS[kind]}, match={"prefect.resource.id": target},
                             for_each={"prefect.resource.id"}, posture=Posture.Reactive,
                             threshold=1, within=dt.timedelta(seconds=window_seconds)),
        actions=[SendNotification(block_document_id=block_id, subject=SUBJECT, body=BODY)])


def automations_file(block_id: UUID = PLACEHOLDER_BLOCK_ID, window_seconds: float = 3600,
                     model: str | None = None,
                     kinds: tuple[str, ...] | list[str] = nt.DEFAULT_KINDS):
    """The automations as ``prefect automation create --from-file`` reads them (a mapping with
    ``automations``: a list of JSON-able automations); by default those of the kinds
    ``notify.on`` names when left out (every move of champion among them)."""
    return {"automations": [automation(k, block_id, window_seconds, model).model_dump(mode="json")
                            for k in kinds]}


def create_block_hint(slug: str, name: str) -> str:
    """Python that creates the block ``<slug>/<name>`` as written: its class with every
    required field (``name`` is the block's own name, the others ``'<field>'`` placeholders to
    replace), saved under `name`. Empty when no installed block type has that slug."""
    import prefect.blocks.notifications  # noqa: F401 - registers the notification blocks
    from prefect.blocks.core import Block
    from prefect.utilities.dispatch import lookup_type

    try:
        cls = lookup_type(Block, slug)
    except KeyError:
        return ""
    fields = ", ".join(f"{f}={name if f == 'name' else f'<{f}>'!r}"
                       for f, info in cls.model_fields.items() if info.is_required())
    return (f"from {cls.__module__} import {cls.__name__}; "
            f"{cls.__name__}({fields}).save({name!r})")


def block_id(ref: str, where: str) -> UUID:
    """The id of the notification block document ``<type>/<name>``.

    Raises:
        NotifySetupError: no such block on the server, or it is not a notification block.
    """
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL

    slug, name = ref.split("/", 1)
    try:
        with get_client(sync_client=True) as client:
            doc = client.read_block_document_by_name(name=name, block_type_slug=slug,
                                                     include_secrets=False)
    except ObjectNotFound:
        hint = create_block_hint(slug, name)
        python = (f" or in Python, replacing each '<...>' with its value: `{hint}`" if hint
                  else "")
        raise NotifySetupError(
            f"{where}: notify.block {ref!r} does not exist on the Prefect server at "
            f"{PREFECT_API_URL.value() or 'the temporary local server'}; create it first, with "
            f"`prefect block create {slug}` (a form in the Prefect UI){python}"
        ) from None
    capabilities = doc.block_schema.capabilities if doc.block_schema else []
    if "notify" not in capabilities:
        raise NotifySetupError(f"{where}: notify.block {ref!r} is a {slug} block, which sends no "
                               "notifications; name a notification block such as "
                               "slack-webhook/<name>, ms-teams-webhook/<name> or "
                               "custom-webhook/<name>")
    return doc.id


def describe_sync(loaded: LoadedConfig, names: list[str]) -> str:
    """One line: what a model's notifications are now."""
    cfg = loaded.config
    model = cfg.registry.model_name
    if cfg.notify is None:
        return f"{model}: no notifications (the config has no notify section)"
    return (f"{model}: notifications through {cfg.notify.block} for {', '.join(cfg.notify.on)}, "
            f"at most one per kind every {cfg.notify.window} ({len(names)} automations)")


def _same(existing: Any, wanted: Any) -> bool:
    keys = {"name", "description", "enabled", "tags", "trigger", "actions"}
    return existing.model_dump(mode="json", include=keys) == wanted.model_dump(mode="json",
                                                                               include=keys)


def sync_automations(loaded: LoadedConfig) -> list[str]:
    """Make the server's regrow notification automations of one model what its config says:
    create the missing ones, replace changed ones, delete those of kinds no longer named (all
    of them when the config has no ``notify``). An unchanged automation is kept, and with it
    its quiet window.

    Returns:
        The names of the model's notification automations now on the server.

    Raises:
        NotifySetupError: see `block_id`.
    """
    from prefect import get_client

    cfg = loaded.config
    model = cfg.registry.model_name
    wanted = []
    if cfg.notify is not None:
        bid = block_id(cfg.notify.block, str(loaded.path))
        wanted = [automation(k, bid, cfg.notify.window_seconds, model) for k in cfg.notify.on]
    with get_client(sync_client=True) as client:
        mine = [a for a in client.read_automations()
                if AUTOMATION_TAG in a.tags and f"model:{model}" in a.tags]
        kept = set()
        for found in mine:
            match = next((w for w in wanted if _same(found, w)), None)
            if match is not None and match.name not in kept:
                kept.add(match.name)
            else:
                client.delete_automation(found.id)
        for w in wanted:
            if w.name not in kept:
                client.create_automation(w)
    return [w.name for w in wanted]
