"""Every model of a state directory in one view: `regrow status` without a config, and the
``regrow-fleet`` Prefect artifact each drift check refreshes.

The view reads the monitoring store alone, in a fixed handful of queries for all models at
once (a query per kind of record, each grouped by model), never a query per model, and
imports no MLflow, Prefect or pandas. So the champion is the one the store's alias history
records (`tasks.registry.governance` appends every move regrow makes to it, in the same
critical section as the move); a move made outside regrow (the MLflow UI's alias editor)
shows only after `regrow status CONFIG`, a promotion or a rollback records it.

Which models: every model with a row in the store (alias moves, trainings, drift checks,
retrain requests), and every model of a config that ``regrow up`` serves (the control plane's
state file names them), even before its first training.

A model *needs a person* (`ATTENTION`, the order of the rows: these first) when the store
says one of the things below; each is defined from existing records only.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from regrow.tasks.policy.lease import PROMOTED_CRASHED, dead_work
from regrow.tasks.policy.retrain import CIRCUIT_OPEN, FAILED_STATUSES, IN_FLIGHT, NO_GAIN
from regrow.tasks.registry.bake import BAKING
from regrow.tasks.store.database import (
    Store,
    alias_history,
    bakes,
    circuit_resets,
    drift_checks,
    iso,
    now,
    retrain_requests,
    training_leases,
    training_runs,
)

SHADOW_REASON = "shadow:"  # a challenger move's reason in a shadow trial (tasks.registry.challenger)
CHAMPION, CHALLENGER = "champion", "challenger"  # the aliases regrow manages (governance)
CHAMPION_SOURCE = "alias_history"
# The gate's verdicts as a training records them (tasks/model/gate.py).
PASSED, REJECTED = "promote", "reject"
DEFAULT_STALE_AFTER = "30d"
ARTIFACT_KEY = "regrow-fleet"

# Why a model needs a person: code -> what the store shows. The order is the order of
# urgency in which a row lists them.
ATTENTION: dict[str, str] = {
    "circuit_open": "the retrain circuit breaker is open: the policy answered the newest "
                    "request since the last reset `circuit_open`, or (for a served config) as "
                    "many trainings in a row as its retrain.circuit_breaker_after promoted "
                    "nothing; `regrow reset-circuit` closes it",
    "degraded": "the newest drift check with enough data found the primary metric degraded "
                "against the reference (realized on labels, or estimated without them)",
    "failing_checks": "the newest drift check found its signals persistent (a retrain is due) "
                      "and no retrain followed: its request was refused (cooling down, over "
                      "budget, circuit open) or none was asked (`regrow watch --no-retrain`)",
    "approval_waiting": "a version passed its gate and waits as challenger for a person "
                        "(`regrow approve` / the Prefect UI form), outside any bake period",
    "training_failed": "the newest training failed or crashed (bad data, an error, a process "
                       "that died) and promoted nothing",
    "no_champion": "trainings or checks are recorded but no champion (the first gate refused "
                   "every candidate), and no training is in flight",
    "stale_champion": "the champion was promoted longer ago than the stale limit (`--stale-after`, "
                      "default 30d) and no training is in flight",
}


@dataclass
class ModelRow:
    """One model's line of the fleet view (JSON-able through `to_dict`)."""

    model: str
    config: str | None = None
    champion: str | None = None
    champion_since: str | None = None
    champion_age_seconds: float | None = None
    challenger: str | None = None
    bake: dict[str, Any] | None = None
    last_check: dict[str, Any] | None = None
    open_requests: list[dict[str, Any]] = field(default_factory=list)
    circuit: dict[str, Any] = field(default_factory=dict)
    approvals: list[dict[str, Any]] = field(default_factory=list)
    last_training: dict[str, Any] | None = None
    needs_person: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)


@dataclass
class Fleet:
    """The fleet view: its rows, needs-a-person first, and where they were read."""

    generated_at: str
    store: str
    champion_source: str
    stale_after_seconds: float
    models: list[ModelRow]

    @property
    def attention(self) -> int:
        """How many models need a person."""
        return sum(1 for m in self.models if m.needs_person)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (`regrow status --json` without a config)."""
        return {"generated_at": self.generated_at, "store": self.store,
                "champion_source": self.champion_source,
                "stale_after_seconds": self.stale_after_seconds,
                "needs_person": self.attention, "reasons": ATTENTION,
                "models": [m.to_dict() for m in self.models]}


def _utc(value: dt.datetime) -> dt.datetime:
    """A stored time in UTC (SQLite hands back naive UTC values)."""
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _newest(table: sa.Table, *where: Any) -> sa.Select:
    """The newest row (highest id) per model of `table`, among those matching `where`."""
    newest = sa.select(sa.func.max(table.c.id)).where(*where).group_by(table.c.model)
    return sa.select(table).where(table.c.id.in_(newest.scalar_subquery()))


def _models(conn: sa.Connection) -> set[str]:
    q = sa.union(*(sa.select(t.c.model).distinct()
                   for t in (alias_history, training_runs, drift_checks, retrain_requests)))
    return {m for (m,) in conn.execute(q)}


def _aliases(conn: sa.Connection) -> dict[str, dict[str, Any]]:
    """model -> alias -> its newest recorded move."""
    h = alias_history.c
    newest = sa.select(sa.func.max(h.id)).group_by(h.model, h.alias).scalar_subquery()
    out: dict[str, dict[str, Any]] = {}
    for r in conn.execute(sa.select(h.model, h.alias, h.new_version, h.at, h.reason)
                          .where(h.id.in_(newest))):
        out.setdefault(r.model, {})[r.alias] = r
    return out


def _checks(conn: sa.Connection) -> tuple[dict[str, Any], dict[str, Any]]:
    """model -> its newest check, and model -> its newest check that had enough data; each with
    the verdict of the retrain request it raised (if any)."""
    c, rr = drift_checks.c, retrain_requests.c
    newest = sa.select(sa.func.max(c.id)).group_by(c.model)
    with_data = sa.select(sa.func.max(c.id)).where(c.verdict != "insufficient_data") \
        .group_by(c.model)
    q = (sa.select(c.id, c.model, c.version, c.checked_at, c.window_rows, c.verdict,
                   c.drift_share, c.drifted_columns, c.performance, c.summary,
                   c.retrain_request_id, rr.verdict.label("request_verdict"))
         .select_from(drift_checks.outerjoin(retrain_requests, rr.id == c.retrain_request_id))
         .where(c.id.in_(sa.union(newest, with_data))).order_by(c.id))
    last: dict[str, Any] = {}
    judged: dict[str, Any] = {}
    for r in conn.execute(q):  # ascending: the newest of each kind is written last
        last[r.model] = r
        if r.verdict != "insufficient_data":
            judged[r.model] = r
    return last, judged


def _perf(raw: str | None) -> dict[str, Any] | None:
    perf = json.loads(raw or "null")
    if not perf:
        return None
    return {k: perf.get(k) for k in ("metric", "current", "reference", "drop", "degraded",
                                     "estimated", "labelled_rows", "tolerance_kind")}


def _check(row: Any) -> dict[str, Any]:
    summary = json.loads(row.summary or "{}")
    return {"id": row.id, "checked_at": iso(row.checked_at), "version": row.version,
            "verdict": row.verdict, "window_rows": row.window_rows,
            "drift_share": row.drift_share,
            "drifted_columns": json.loads(row.drifted_columns or "[]"),
            "persistent": bool(summary.get("persistent")),
            "performance": _perf(row.performance),
            "retrain_request": row.retrain_request_id, "request_verdict": row.request_verdict}


def _streaks(conn: sa.Connection) -> dict[str, int]:
    """model -> trainings in a row that promoted nothing since its last passing training or
    circuit reset (what the retrain policy's breaker counts: `consecutive_rejections`)."""
    t, p, r = training_runs.alias("t"), training_runs.alias("p"), circuit_resets.c
    ended = ("finished", PROMOTED_CRASHED, *FAILED_STATUSES)
    passing = sa.or_(p.c.status == PROMOTED_CRASHED,
                     sa.and_(p.c.status == "finished", p.c.verdict.not_in((REJECTED, NO_GAIN))))
    last_pass = sa.select(sa.func.coalesce(sa.func.max(p.c.id), 0)).where(
        p.c.model == t.c.model, passing).scalar_subquery()
    last_reset = sa.select(sa.func.max(r.at)).where(r.model == t.c.model).scalar_subquery()
    q = (sa.select(t.c.model, sa.func.count()).where(
        t.c.status.in_(ended), t.c.id > last_pass,
        sa.or_(t.c.verdict.is_(None), t.c.verdict != NO_GAIN),
        sa.or_(last_reset.is_(None), t.c.ended_at > last_reset)).group_by(t.c.model))
    return {m: n for m, n in conn.execute(q)}


def _dead_leases(conn: sa.Connection, at: dt.datetime) -> dict[str, str]:
    """Lease key -> why its work is dead (`tasks.policy.lease`): such work reads as crashed
    (failed, for a request) at once, as `regrow status CONFIG` shows it; nothing is written."""
    return {lease.key: why for lease in conn.execute(sa.select(training_leases))
            if (why := dead_work(lease, at)) is not None}


def _served_configs(home: Path) -> dict[str, tuple[str, Any]]:
    """model -> (config path, loaded config) of the configs the control plane serves."""
    from regrow.tasks.store.plane_state import live_part

    part = live_part(home / "run", "serve")
    if part is None:
        return {}
    from regrow.configs.schema import ConfigError, load_config

    out: dict[str, tuple[str, Any]] = {}
    for path in part.get("configs") or []:
        try:
            loaded = load_config(path)
        except ConfigError:  # edited since `regrow up`: its model still shows from the store
            continue
        out[loaded.config.registry.model_name] = (str(path), loaded.config)
    return out


def collect(store: Store, home: Path | None = None, stale_after: float | None = None,
            at: dt.datetime | None = None) -> Fleet:
    """Read every model's row from the monitoring store, in a fixed number of queries.

    Args:
        store: the monitoring store.
        home: the state directory, whose control plane (when up) names the served configs.
        stale_after: seconds after which a champion is stale (default 30 days).
        at: now (a test passes a later time).

    Raises:
        regrow.tasks.store.database.StoreUnavailable: the store cannot be reached.
    """
    from regrow.configs.schema import parse_duration

    at = at or now()
    stale = parse_duration(DEFAULT_STALE_AFTER) if stale_after is None else stale_after
    served = _served_configs(home) if home is not None else {}
    rr, tr = retrain_requests.c, training_runs.c
    with store.engine.connect() as conn:
        names = _models(conn) | set(served)
        aliases = _aliases(conn)
        last_check, judged = _checks(conn)
        open_requests: dict[str, list[Any]] = {}
        for r in conn.execute(sa.select(rr.id, rr.model, rr.kind, rr.state, rr.created_at)
                              .where(rr.state.in_(IN_FLIGHT)).order_by(rr.id)):
            open_requests.setdefault(r.model, []).append(r)
        last_request = {r.model: r for r in conn.execute(_newest(retrain_requests))}
        last_training = {r.model: r for r in conn.execute(_newest(training_runs))}
        running = {r.model for r in conn.execute(
            sa.select(tr.model).where(tr.status == "running").distinct())}
        streaks = _streaks(conn)
        resets = {m: a for m, a in conn.execute(
            sa.select(circuit_resets.c.model, sa.func.max(circuit_resets.c.at))
            .group_by(circuit_resets.c.model))}
        last_bake = {r.model: r for r in conn.execute(_newest(bakes))}
        dead = _dead_leases(conn, at)
    rows = []
    for name in sorted(names):
        row = ModelRow(model=name, config=served[name][0] if name in served else None)
        moves = aliases.get(name, {})
        champ, chall = moves.get(CHAMPION), moves.get(CHALLENGER)
        if champ is not None and champ.new_version:
            row.champion, row.champion_since = champ.new_version, iso(champ.at)
            row.champion_age_seconds = round((at - _utc(champ.at)).total_seconds(), 1)
        row.challenger = chall.new_version if chall is not None else None
        bake = last_bake.get(name)
        if bake is not None and bake.state == BAKING and bake.version == row.champion:
            row.bake = {"version": bake.version, "previous_version": bake.previous_version,
                        "windows_done": bake.windows_done, "windows": bake.windows}
        if name in last_check:
            row.last_check = _check(last_check[name])
        row.open_requests = [{"id": r.id, "kind": r.kind, "state": r.state,
                              "created_at": iso(r.created_at)}
                             for r in open_requests.get(name, []) if f"request:{r.id}" not in dead]
        row.last_training = _training(last_training.get(name), dead, row.champion)
        in_flight = bool(row.open_requests) or (name in running and row.last_training is not None
                                                and row.last_training["status"] == "running")
        row.circuit = _circuit(streaks.get(name, 0), last_request.get(name), resets.get(name),
                               served[name][1].retrain.circuit_breaker_after
                               if name in served else None)
        # a challenger in shadow (`promotion.mode: shadow`) waits for labels, not for a person
        if chall is not None and row.challenger and not chall.reason.startswith(SHADOW_REASON) \
                and (row.bake is None or row.bake["version"] != row.challenger):
            row.approvals = [{"version": row.challenger, "since": iso(chall.at),
                              "training": _waiting_training(last_training.get(name),
                                                            row.challenger, dead)}]
        row.needs_person = _attention(row, judged.get(name), in_flight, stale)
        rows.append(row)
    rows.sort(key=lambda r: (not r.needs_person, r.model))
    return Fleet(generated_at=iso(at) or "", store=_where(store.url),
                 champion_source=CHAMPION_SOURCE, stale_after_seconds=stale, models=rows)


def _where(url: str) -> str:
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "(unparsable store URL)"


def _training(r: Any, dead: dict[str, str], champion: str | None) -> dict[str, Any] | None:
    if r is None:
        return None
    status, detail = r.status, r.detail
    why = dead.get(f"training:{r.id}")
    if status == "running" and why:
        status = PROMOTED_CRASHED if r.version and r.version == champion else "crashed"
        detail = why
    return {"id": r.id, "trigger": r.trigger, "status": status, "verdict": r.verdict,
            "version": r.version, "started_at": iso(r.started_at), "ended_at": iso(r.ended_at),
            "detail": detail}


def _waiting_training(r: Any, version: str, dead: dict[str, str]) -> str | None:
    """The state of the training that registered the waiting version, when it is the newest:
    ``running`` while its run waits paused; ``crashed`` when its process died."""
    if r is None or r.version != version:
        return None
    return "crashed" if r.status == "running" and dead.get(f"training:{r.id}") else r.status


def _circuit(streak: int, last_request: Any, reset: dt.datetime | None,
             threshold: int | None) -> dict[str, Any]:
    refused = (last_request is not None and last_request.verdict == CIRCUIT_OPEN
               and (reset is None or _utc(last_request.created_at) > _utc(reset)))
    is_open = streak > 0 and (refused or (threshold is not None and streak >= threshold))
    return {"state": "open" if is_open else "closed", "streak": streak, "threshold": threshold,
            "last_reset": iso(reset)}


def _attention(row: ModelRow, judged: Any, in_flight: bool, stale: float) -> list[dict[str, str]]:
    """Why `row`'s model needs a person (`ATTENTION`), most urgent first."""
    found: dict[str, str] = {}
    if row.circuit.get("state") == "open":
        found["circuit_open"] = (f"{row.circuit['streak']} training(s) in a row promoted "
                                 "nothing; `regrow reset-circuit` after a look")
    perf = _perf(judged.performance) if judged is not None else None
    if perf and perf.get("degraded"):
        found["degraded"] = f"check #{judged.id}: {describe_performance(perf)}"
    check = row.last_check
    if check and check["persistent"] and check["request_verdict"] not in ("admitted", "coalesced"):
        found["failing_checks"] = (f"check #{check['id']} asks for a retrain; "
                                   + (f"the policy answered {check['request_verdict']}"
                                      if check["request_verdict"] else "none was asked"))
    for a in row.approvals:
        found["approval_waiting"] = f"v{a['version']} waits since {a['since']}" + (
            "; its training crashed" if a["training"] == "crashed" else "")
    t = row.last_training
    if t and t["status"] in FAILED_STATUSES:
        found["training_failed"] = f"{t['status']} ({t['trigger']}, {t['started_at']})"
    if row.champion is None and not in_flight and (t is not None or check is not None):
        found["no_champion"] = "nothing can score"
    age = row.champion_age_seconds
    if row.champion is not None and age is not None and age > stale and not in_flight:
        found["stale_champion"] = f"v{row.champion} promoted {age / 86400:.0f} days ago"
    return [{"code": code, "detail": found[code]} for code in ATTENTION if code in found]


def describe_performance(perf: dict[str, Any] | None) -> str:
    """``roc_auc 0.7100 vs 0.8600 (estimated)``: a check's primary metric against the
    reference; ``-`` without one."""
    if not perf or perf.get("metric") is None:
        return "-"

    def num(v: Any) -> str:
        return "-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)

    how = "estimated" if perf.get("estimated") else f"{perf.get('labelled_rows') or 0} labels"
    return f"{perf['metric']} {num(perf.get('current'))} vs {num(perf.get('reference'))} ({how})"


def age(seconds: float | None) -> str:
    """A duration for people: ``45s``, ``12m``, ``5h``, ``3d``."""
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{max(0, int(seconds))}s"


HEADERS = ("model", "champion", "last check", "performance", "open requests", "circuit",
           "approvals", "last training", "needs a person")


def cells(row: ModelRow) -> list[str]:
    """A row's cells under `HEADERS`, as plain text (the command line and the artifact)."""
    champ = "none" if row.champion is None else \
        f"v{row.champion} ({age(row.champion_age_seconds)})" + (
            f", baking {row.bake['windows_done']}/{row.bake['windows']}" if row.bake else "")
    c = row.last_check
    check = "-" if c is None else f"{c['verdict']} {(c['checked_at'] or '')[:16]}"
    requests = ", ".join(f"#{r['id']} {r['kind']} {r['state']}" for r in row.open_requests) or "-"
    circ = row.circuit
    circuit = circ["state"] + (f" ({circ['streak']} in a row" + (
        f" of {circ['threshold']})" if circ["threshold"] else ")") if circ["streak"] else "")
    approvals = ", ".join(f"v{a['version']}" for a in row.approvals) or "-"
    t = row.last_training
    training = "-" if t is None else " ".join(x for x in (
        t["status"], t["verdict"] or "", f"v{t['version']}" if t["version"] else "",
        (t["started_at"] or "")[:16]) if x)
    return [row.model, champ, check, describe_performance(c["performance"] if c else None),
            requests, circuit, approvals, training,
            ", ".join(n["code"] for n in row.needs_person) or "-"]
