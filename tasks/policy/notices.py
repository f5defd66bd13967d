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

from regrow.configs.schema import NOTIFY_KINDS

KINDS: tuple[str, ...] = NOTIFY_KINDS
# Decision kind -> the Prefect event it is emitted as (on resource ``regrow.model.<name>``).
EVENTS: dict[str, str] = {
    "gate_rejected": "regrow.gate.rejected",
    "promoted": "regrow.model.promoted",
    "degradation_confirmed": "regrow.degradation.confirmed",
    "approval_waiting": "regrow.approval.waiting",
    "training_failed": "regrow.training.failed",
    "circuit_opened": "regrow.circuit.opened",
    "rolled_back": "regrow.model.rolled_back",
}
assert set(EVENTS) == set(NOTIFY_KINDS)

TITLES: dict[str, str] = {
    "gate_rejected": "gate rejected a candidate", "promoted": "new champion",
    "degradation_confirmed": "degradation confirmed", "approval_waiting": "approval waiting",
    "training_failed": "training failed", "circuit_opened": "circuit breaker open",
    "rolled_back": "rolled back",
}

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
        "candidate": candidate, "champion": champion, "approver": approver})


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
        what = (f"{perf.get('metric')} {num(perf.get('current'))} {seen} against "
                f"{num(perf.get('reference'))} at training (drop {num(perf.get('drop'))}{unit})")
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
        "tolerance": tolerance})
