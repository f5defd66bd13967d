"""Notices: one sentence for each decision a person may care about, with the numbers that
matter and a link.

A notice becomes a Prefect event on the model's resource (``flows/events.py`` emits it); the
automations `regrow serve` creates send its sentence through the notification block the
config names. Nothing here imports Prefect.

No notice carries a secret: URLs lose their user and password and any query value with a
secret-like name, and the values of secret-looking environment variables (``*_SECRET``,
``*_PASSWORD``, ``*_TOKEN``, ``*_KEY`` ...) are masked in every text.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from regrow.configs.schema import NOTIFY_DEFAULT, NOTIFY_KINDS
from regrow.tasks.policy.untrusted import visible


@dataclass(frozen=True)
class Kind:
    """One kind of notice: its Prefect event (on resource ``regrow.model.<name>``), the title
    of its messages, when it is emitted, and whether the quiet window holds it back (`quiet`;
    a move of ``champion`` never is: every one is heard)."""

    event: str
    title: str
    when: str
    quiet: bool = True


# Every event regrow emits as a notice, in the order the docs list them (`docs/gen_reference.py`
# writes the reference from this table).
EVENTS_TABLE: dict[str, Kind] = {
    "promoted": Kind("regrow.model.promoted", "new champion", "a version became champion: by "
                     "the gate (payload `by`: `gate`), approved by a person in the Prefect UI or "
                     "with `regrow approve` (`approval`), or by `regrow promote` (`person`)",
                     quiet=False),
    "rolled_back": Kind("regrow.model.rolled_back", "rolled back", "champion went back to an "
                        "earlier version: its bake failed (`by`: `bake`) or `regrow rollback` "
                        "(`person`)", quiet=False),
    "challenger_promoted": Kind("regrow.challenger.promoted", "challenger took over",
                                "a challenger in shadow beat the champion on matured labels "
                                "and became champion (`promotion.mode: shadow`)", quiet=False),
    "challenger_retired": Kind("regrow.challenger.retired", "challenger retired",
                               "a challenger in shadow did not beat the champion on matured "
                               "labels and no longer scores"),
    "challenger_started": Kind("regrow.challenger.started", "challenger in shadow",
                               "a candidate passed the gate and scores in shadow beside the "
                               "champion (`promotion.mode: shadow`)"),
    "gate_rejected": Kind("regrow.gate.rejected", "gate rejected a candidate",
                          "the gate refused a candidate"),
    "approval_waiting": Kind("regrow.approval.waiting", "approval waiting", "a candidate passed "
                             "the gate and waits for a person (`promotion.mode`)"),
    "approval_rejected": Kind("regrow.approval.rejected", "promotion rejected", "a candidate "
                              "that waited for a person was rejected (`regrow reject`, the "
                              "Prefect UI) or nobody decided within `promotion.timeout`"),
    "training_failed": Kind("regrow.training.failed", "training failed", "a training failed "
                            "(bad data, an error) or crashed (payload `how`)"),
    "drift_checked": Kind("regrow.drift.checked", "drift checked", "every drift check, "
                          "whatever followed it (a bake rolled back, a retrain asked for)"),
    "degradation_confirmed": Kind("regrow.degradation.confirmed", "degradation confirmed",
                                  "a drift check asks for a retrain: its signals persisted "
                                  "under `retrain.on`"),
    "retrain_admitted": Kind("regrow.policy.admitted", "retrain admitted", "the retrain policy "
                             "admitted a request (any trigger): a training starts"),
    "retrain_coalesced": Kind("regrow.policy.coalesced", "retrain coalesced", "the retrain "
                              "policy joined a request to the training already in flight"),
    "retrain_refused": Kind("regrow.policy.refused", "retrain refused", "the retrain policy "
                            "refused a request (payload `verdict`: `cooling_down`, "
                            "`over_budget`, `circuit_open`)"),
    "circuit_opened": Kind("regrow.circuit.opened", "circuit breaker open", "the training that "
                           "opened the retrain circuit breaker, and each request it refuses"),
    "circuit_reset": Kind("regrow.circuit.reset", "circuit breaker reset",
                          "a person closed the circuit breaker (`regrow reset-circuit`)"),
}
assert set(EVENTS_TABLE) == set(NOTIFY_KINDS)
KINDS: tuple[str, ...] = NOTIFY_KINDS
DEFAULT_KINDS: tuple[str, ...] = NOTIFY_DEFAULT  # what `notify.on` names when left out
# Kind -> the Prefect event it is emitted as, and the title of its messages.
EVENTS: dict[str, str] = {k: v.event for k, v in EVENTS_TABLE.items()}
TITLES: dict[str, str] = {k: v.title for k, v in EVENTS_TABLE.items()}
# Who moved champion (`promoted` and `rolled_back` payloads' `by`).
BY_GATE, BY_APPROVAL, BY_PERSON, BY_BAKE = "gate", "approval", "person", "bake"

_SECRET_NAME = re.compile(r"secret|passw|token|api[_-]?key|access[_-]?key|private[_-]?key|"
                          r"signature|^sig$|credential|auth", re.IGNORECASE)
_URL_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://)[^/\s@]+@")
_MAX_ERROR = 300


def _secret_values() -> list[str]:
    """Values of environment variables whose names look secret (long enough to mask safely)."""
    return sorted({v for k, v in os.environ.items() if _SECRET_NAME.search(k) and len(v) >= 6},
                  key=len, reverse=True)


def redact(text: str) -> str:
    """`text` without URL credentials (``scheme://user:pass@`` -> ``scheme://***@``) and
    without the value of any secret-looking environment variable."""
    out = _URL_USERINFO.sub(r"\1***@", text)
    for value in _secret_values():
        out = out.replace(value, "***")
    return out


def safe_url(url: str | None) -> str | None:
    """A link fit to send: no user or password, no query value with a secret-like name,
    nothing a secret environment variable holds. Non-URL text is only redacted."""
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme and parts.netloc:
        host = parts.netloc.rpartition("@")[2]
        query = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
                           if not _SECRET_NAME.search(k)])
        url = urlunsplit((parts.scheme, host, parts.path, query, parts.fragment))
    return redact(url)


@dataclass(frozen=True)
class Links:
    """Where to look. `run`: the Prefect flow run (its UI page when the UI address is known);
    `mlflow`: the MLflow run; `report`: the gate record, validation report or drift report;
    `card`: the model version's model card."""

    run: str | None = None
    mlflow: str | None = None
    report: str | None = None
    card: str | None = None

    def safe(self) -> Links:
        """The same links, fit to send (`safe_url`)."""
        return Links(*(safe_url(v) for v in (self.run, self.mlflow, self.report, self.card)))

    def first(self, *names: str) -> str | None:
        """The first of the named links that is known."""
        return next((getattr(self, n) for n in names if getattr(self, n)), None)


@dataclass(frozen=True)
class Notice:
    """One decision, told in one sentence (`message`) that ends with a link, with its numbers
    (`facts`) and every link, as the event payload carries them."""

    kind: str
    model: str
    message: str
    links: Links = field(default_factory=Links)
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def event(self) -> str:
        """The Prefect event name."""
        return EVENTS[self.kind]

    @property
    def subject(self) -> str:
        """A short subject line (e-mail, Teams title)."""
        return f"regrow: {self.model}: {TITLES[self.kind]}"

    def payload(self) -> dict[str, Any]:
        """The event payload: kind, model, subject, message, links and the numbers."""
        return {"kind": self.kind, "model": self.model, "subject": self.subject,
                "message": self.message, "links": asdict(self.links), **self.facts}


def num(value: float | None, digits: int = 4) -> str:
    """A metric value for a sentence (``n/a`` when unknown)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _clean(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


def _one_line(text: str) -> str:
    """Text from a person or the data, on one line (control characters shown as escapes) and
    not longer than a sentence should be."""
    flat = visible(" ".join(str(text).split()))
    return flat if len(flat) <= _MAX_ERROR else flat[:_MAX_ERROR - 3] + "..."


def _make(kind: str, model: str, sentence: str, links: Links, link_order: tuple[str, ...],
          facts: dict[str, Any]) -> Notice:
    links = links.safe()
    link = links.first(*link_order)
    text = redact(sentence) + (f", see {link}" if link else "")
    return Notice(kind, model, text, links, {k: _clean(v) for k, v in facts.items()})


def gate_rejected(model: str, version: str, metric: str, candidate: float | None,
                  champion_version: str | None, champion: float | None, failed: list[str],
                  links: Links) -> Notice:
    """The gate refused a candidate."""
    against = (f"against champion v{champion_version}'s {num(champion)} on the same holdout"
               if champion_version else "with no champion to compare")
    after = (f"v{champion_version} keeps serving" if champion_version
             else "nothing serves yet")
    sentence = (f"The gate rejected {model} v{version}: {metric} {num(candidate)} {against} "
                f"(failed: {', '.join(failed) or 'none'}); {after}")
    return _make("gate_rejected", model, sentence, links, ("run", "report", "mlflow"), {
        "version": version, "metric": metric, "candidate": candidate,
        "champion_version": champion_version, "champion": champion, "failed_rules": failed})


def promoted(model: str, version: str, previous: str | None, metric: str,
             candidate: float | None, champion: float | None, approver: str | None,
             links: Links) -> Notice:
    """A new version became champion."""
    if previous:
        sentence = (f"{model} v{version} is the new champion, replacing v{previous}: {metric} "
                    f"{num(candidate)} against {num(champion)} on the same holdout")
    else:
        sentence = f"{model} v{version} is the first champion: {metric} {num(candidate)} on its holdout"
    if approver:
        sentence += f", approved by {approver}"
    return _make("promoted", model, sentence, links, ("card", "run", "mlflow"), {
        "version": version, "previous_version": previous, "metric": metric,
        "candidate": candidate, "champion": champion, "approver": approver,
        "by": BY_APPROVAL if approver else BY_GATE, "actor": approver or "gate"})


def promoted_by_hand(model: str, version: str, previous: str | None, person: str, reason: str,
                     override: str | None, baking: bool, links: Links) -> Notice:
    """A person made a version champion (`regrow promote`)."""
    replacing = f", replacing v{previous}" if previous else " (the first champion)"
    sentence = f"{model} v{version} is the new champion{replacing}: promoted by hand by {person}"
    sentence += f" ({_one_line(reason)})"
    if override:
        sentence += f", gate overridden: {_one_line(override)}"
    if baking:
        sentence += f"; it bakes against v{previous}"
    return _make("promoted", model, sentence, links, ("card", "mlflow"), {
        "version": version, "previous_version": previous, "by": BY_PERSON, "actor": person,
        "reason": reason, "gate_override": override, "baking": baking})


def approval_waiting(model: str, version: str, champion_version: str | None, metric: str,
                     candidate: float | None, champion: float | None, timeout: str,
                     borderline: bool, links: Links) -> Notice:
    """A candidate passed the gate and waits for a person's decision."""
    against = (f"{metric} {num(candidate)} against champion v{champion_version}'s "
               f"{num(champion)} on the same holdout" if champion_version
               else f"{metric} {num(candidate)}, no champion yet")
    sentence = (f"{model} v{version} passed the gate{' only within tolerance' if borderline else ''}"
                f" and waits for approval ({against}); no decision within {timeout} rejects it, "
                "approve or reject in the Prefect UI or with `regrow approve`")
    return _make("approval_waiting", model, sentence, links, ("run", "card", "mlflow"), {
        "version": version, "champion_version": champion_version, "metric": metric,
        "candidate": candidate, "champion": champion, "timeout": timeout,
        "borderline": borderline})


def challenger_started(model: str, version: str, champion_version: str, metric: str,
                       candidate: float | None, champion: float | None, windows: int,
                       links: Links) -> Notice:
    """A candidate passed the gate and scores in shadow beside the champion."""
    sentence = (f"{model} v{version} passed the gate ({metric} {num(candidate)} against "
                f"champion v{champion_version}'s {num(champion)} on the same holdout) and scores "
                f"in shadow; it takes over only if it beats v{champion_version} on matured "
                f"labels of {windows} window(s)")
    return _make("challenger_started", model, sentence, links, ("run", "card", "mlflow"), {
        "version": version, "champion_version": champion_version, "metric": metric,
        "candidate": candidate, "champion": champion, "windows": windows})


def challenger_decided(kind: str, model: str, version: str, champion_version: str, metric: str,
                       gain: float | None, low: float | None, high: float | None, windows: int,
                       reason: str, links: Links) -> Notice:
    """A challenger in shadow took over (``challenger_promoted``) or was retired."""
    if kind == "challenger_promoted":
        sentence = (f"{model} v{version} is the new champion, replacing v{champion_version}: "
                    f"in shadow it {reason}")
    else:
        sentence = (f"{model} challenger v{version} retired, v{champion_version} keeps serving: "
                    f"in shadow it {reason}")
    return _make(kind, model, sentence, links, ("report", "card", "mlflow"), {
        "version": version, "champion_version": champion_version, "metric": metric,
        "gain": gain, "gain_low": low, "gain_high": high, "windows": windows,
        **({"by": "shadow", "actor": "shadow"} if kind == "challenger_promoted" else {})})


def training_failed(model: str, how: str, error: str, trigger: str, links: Links) -> Notice:
    """A training failed (an error) or crashed (its process died)."""
    first = redact(" ".join(error.split()))
    if len(first) > _MAX_ERROR:
        first = first[:_MAX_ERROR - 3] + "..."
    sentence = (f"A {trigger} training of {model} {how}: {first}; the champion did not move")
    return _make("training_failed", model, sentence, links, ("run", "report", "mlflow"),
                 {"how": how, "error": first, "trigger": trigger})


def circuit_opened(model: str, streak: int, limit: int, refused_kind: str | None,
                   links: Links) -> Notice:
    """The retrain circuit breaker is open (just opened, or it refused a request)."""
    now = (f"a {refused_kind} retrain request was refused, as every one will be"
           if refused_kind else "every retrain request is refused")
    sentence = (f"The retrain circuit breaker of {model} is open: {streak} consecutive trainings "
                f"promoted nothing (limit {limit}), so {now} until someone runs "
                "`regrow reset-circuit`")
    return _make("circuit_opened", model, sentence, links, ("run", "mlflow"),
                 {"streak": streak, "limit": limit, "refused_kind": refused_kind})


def degradation_confirmed(model: str, version: str, performance: dict[str, Any] | None,
                          drift_share: float | None, drifted_columns: list[str],
                          confirmed_by: str, retrain: str, links: Links) -> Notice:
    """A drift check concluded that the champion needs retraining (`retrain.on` decides
    which signals count): its performance dropped, or its inputs drifted, persistently."""
    perf = performance or {}
    if perf.get("degraded"):
        seen = ("estimated without labels" if perf.get("estimated")
                else f"on {perf.get('labelled_rows', 0):,} labelled rows")
        unit = "" if perf.get("tolerance_kind", "absolute") == "absolute" else " (relative)"
        ci = perf.get("drop_ci")
        level = f"{perf.get('confidence', 0.95):.0%}"
        interval = f", {level} CI {num(ci[0])}..{num(ci[1])}" if ci else ""
        least = f", minimum {num(perf['tolerance'])}" if perf.get("tolerance") is not None else ""
        what = (f"{perf.get('metric')} {num(perf.get('current'))} {seen} against "
                f"{num(perf.get('reference'))} at training (drop {num(perf.get('drop'))}{unit}"
                f"{interval}{least})")
    else:
        what = (f"{len(drifted_columns)} input column(s) drifted (drifted share "
                f"{num(drift_share, 2)})")
    sentence = f"{model} v{version} has degraded: {what}, confirmed by {confirmed_by}; {retrain}"
    return _make("degradation_confirmed", model, sentence, links, ("report", "run", "mlflow"), {
        "version": version, "performance": performance, "drift_share": drift_share,
        "drifted_columns": drifted_columns, "confirmed_by": confirmed_by, "retrain": retrain})


def rolled_back(model: str, from_version: str, to_version: str, metric: str,
                champion: float | None, previous: float | None, labelled_rows: int,
                tolerance: float, links: Links) -> Notice:
    """A baking champion did worse than the one it replaced, and regrow put that one back."""
    sentence = (f"{model} rolled back from v{from_version} to v{to_version}: on {labelled_rows:,} "
                f"labelled rows of its bake v{from_version} scored {metric} {num(champion)} "
                f"against v{to_version}'s {num(previous)} (tolerance {num(tolerance)})")
    return _make("rolled_back", model, sentence, links, ("report", "card", "run", "mlflow"), {
        "from_version": from_version, "to_version": to_version, "metric": metric,
        "champion": champion, "previous": previous, "labelled_rows": labelled_rows,
        "tolerance": tolerance, "by": BY_BAKE, "actor": "bake"})


def rolled_back_by_hand(model: str, from_version: str, to_version: str, person: str,
                        reason: str, links: Links) -> Notice:
    """A person put an earlier version back (`regrow rollback`)."""
    sentence = (f"{model} rolled back from v{from_version} to v{to_version} by hand by {person} "
                f"({_one_line(reason)})")
    return _make("rolled_back", model, sentence, links, ("card", "mlflow"), {
        "from_version": from_version, "to_version": to_version, "by": BY_PERSON,
        "actor": person, "reason": reason})


def approval_rejected(model: str, version: str, champion_version: str | None, approver: str,
                      reason: str, timed_out: bool, links: Links) -> Notice:
    """A candidate that waited for a person was rejected, or nobody decided in time."""
    why = (f"nobody decided ({_one_line(reason)})" if timed_out
           else f"rejected by {approver} ({_one_line(reason)})")
    after = (f"v{champion_version} keeps serving" if champion_version else "nothing serves yet")
    sentence = f"{model} v{version} passed the gate but was not promoted: {why}; {after}"
    return _make("approval_rejected", model, sentence, links, ("run", "card", "mlflow"), {
        "version": version, "champion_version": champion_version, "approver": approver,
        "reason": reason, "timed_out": timed_out})


def circuit_reset(model: str, person: str, reason: str, links: Links) -> Notice:
    """A person closed the retrain circuit breaker (`regrow reset-circuit`)."""
    sentence = (f"The retrain circuit breaker of {model} was reset by {person} "
                f"({_one_line(reason)}): retrain requests are answered again")
    return _make("circuit_reset", model, sentence, links, ("run", "mlflow"),
                 {"actor": person, "reason": reason})


# The policy's verdicts (tasks/policy/retrain.py) -> the notice kind that tells each.
VERDICT_KINDS: dict[str, str] = {"admitted": "retrain_admitted", "coalesced": "retrain_coalesced",
                                 "cooling_down": "retrain_refused",
                                 "over_budget": "retrain_refused",
                                 "circuit_open": "retrain_refused"}


def retrain_answered(model: str, request_id: int, trigger: str, reason: str, verdict: str,
                     detail: str, links: Links) -> Notice:
    """The retrain policy answered a request: admitted, coalesced or refused."""
    kind = VERDICT_KINDS[verdict]
    said = {"retrain_admitted": "admitted: a training starts",
            "retrain_coalesced": "coalesced with the training in flight",
            }.get(kind, f"refused ({verdict.replace('_', ' ')})")
    sentence = (f"A {trigger} retrain request for {model} (#{request_id}: {_one_line(reason)}) "
                f"was {said}; {_one_line(detail)}")
    return _make(kind, model, sentence, links, ("run", "mlflow"), {
        "request_id": request_id, "trigger": trigger, "reason": reason, "verdict": verdict,
        "detail": detail})


def drift_checked(model: str, version: str, check_id: int | None, verdict: str,
                  reasons: list[str], facts: dict[str, Any], links: Links) -> Notice:
    """A drift check ran (every one; `facts`: the check's verdict, signals and numbers)."""
    said = _one_line("; ".join(reasons)) if reasons else "no signal"
    sentence = f"Drift check #{check_id} of {model} v{version}: {verdict} ({said})"
    return _make("drift_checked", model, sentence, links, ("report", "run", "mlflow"),
                 {"check_id": check_id, "version": version, "verdict": verdict,
                  "reasons": reasons, **facts})
