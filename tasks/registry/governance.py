"""Who moved which alias, and why: history, manual promotion, rollback, outside moves.

MLflow keeps no alias history (mlflow#2169), so every move regrow makes is appended to the
store's ``alias_history``. Moves made elsewhere (the MLflow UI's alias editor, another
client) are found by `outside_moves`, which every command that reads the registry calls and
shows, and recorded with actor ``external`` by the next move regrow makes (a read writes
nothing).

Aliases regrow manages:

- ``champion``: the version that serves.
- ``challenger``: a version that passed its gate and waits for a person's approval, or a new
  champion still in its bake period. Nothing else: a rejected candidate is never challenger.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

from regrow.configs.schema import Bake
from regrow.tasks.policy.lease import PROMOTED_CRASHED, exclusive
from regrow.tasks.registry import bake as baking
from regrow.tasks.registry.mlflow_registry import CHALLENGER, CHAMPION, ModelVersionInfo, Registry
from regrow.tasks.store.database import Store

MANAGED_ALIASES = (CHAMPION, CHALLENGER)
EXTERNAL = "external"
# A version whose training failed or died after registering it: never promoted.
ORPHAN_TAG, ORPHAN_REASON_TAG = "regrow.orphan", "regrow.orphan_reason"
ROLLBACK = "rollback"  # reasons of rollback moves start with this word
PASSED = "promote"     # the gate's passing verdict, as tagged on versions


class GovernanceError(ValueError):
    """A promotion or rollback that cannot be done as asked (unknown version, failed gate...)."""


@dataclass(frozen=True)
class AliasMove:
    """One alias move as recorded."""

    model: str
    alias: str
    old_version: str | None
    new_version: str | None
    reason: str
    actor: str
    run_id: str | None = None
    at: str | None = None

    def describe(self) -> str:
        """``champion: v1 -> v2`` (``none`` for an unset alias)."""
        def v(x: str | None) -> str:
            return f"v{x}" if x else "none"
        return f"{self.alias}: {v(self.old_version)} -> {v(self.new_version)}"


@contextmanager
def alias_section(registry: Registry, store: Store, model: str, where: str) -> Iterator[list[AliasMove]]:
    """The one critical section of a model's alias moves: held across processes (a lease row
    in the monitoring store, so across machines on PostgreSQL), it records any move made
    outside regrow first, then lets the caller read and move aliases with no other mover in
    between. Re-entrant. Yields the outside moves it recorded.
    """
    with exclusive(store, f"aliases:{model}", model):
        yield sync_aliases(registry, store, model, where)


def move_alias(registry: Registry, store: Store, model: str, alias: str, version: str | None,
               reason: str, actor: str, run_id: str | None = None) -> AliasMove:
    """Point `alias` at `version` (None removes it) in MLflow and append the move to the
    history, inside the model's `alias_section`.

    The MLflow change comes first: a crash between the two leaves a move that the next
    section records as ``external``, never a history entry for a move that did not happen.
    """
    with alias_section(registry, store, model, "a move"):
        old = registry.alias_version(model, alias)
        if version is None:
            registry.delete_alias(model, alias)
        else:
            registry.set_alias(model, alias, version)
        store.record_alias_move(model, alias, old, version, reason, actor, run_id)
    return AliasMove(model, alias, old, version, reason, actor, run_id)


def clear_challenger(registry: Registry, store: Store, model: str, version: str, reason: str,
                     actor: str, run_id: str | None = None) -> AliasMove | None:
    """Remove ``challenger`` when it points at `version` (it no longer waits or bakes)."""
    with alias_section(registry, store, model, "a move"):
        if registry.alias_version(model, CHALLENGER) != version:
            return None
        return move_alias(registry, store, model, CHALLENGER, None, reason, actor, run_id)


def outside_moves(registry: Registry, store: Store, model: str, where: str) -> list[AliasMove]:
    """Alias moves made outside regrow (actor ``external``), found but not recorded: a read
    (``status``, ``history``, a card, scoring, a drift check) writes nothing. The next move
    regrow makes records them first (`sync_aliases`, inside the move's critical section).

    Compares MLflow's ``champion`` and ``challenger`` with the last recorded move of each.
    """
    current = registry.aliases(model)
    recorded = store.last_alias_versions(model)
    found = []
    for alias in MANAGED_ALIASES:
        now, before = current.get(alias), recorded.get(alias)
        if now != before:
            found.append(AliasMove(model, alias, before, now,
                                   f"moved outside regrow; found by `{where}`", EXTERNAL))
    return found


def sync_aliases(registry: Registry, store: Store, model: str, where: str) -> list[AliasMove]:
    """Record the alias moves made outside regrow (`outside_moves`); returns what was found.
    Only for a writer about to move an alias itself (promotion, rollback, a training's start)."""
    found = outside_moves(registry, store, model, where)
    for move in found:
        store.record_alias_move(model, move.alias, move.old_version, move.new_version,
                                move.reason, EXTERNAL, None)
    return found


@dataclass(frozen=True)
class HistoryEntry:
    """An alias move with what is known of the version it moved to."""

    at: str
    alias: str
    old_version: str | None
    new_version: str | None
    actor: str
    reason: str
    run_id: str | None
    gate_verdict: str | None
    gate_reasons: str | None
    trigger: str | None
    trigger_reason: str | None
    trigger_ref: str | None
    approval: str | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)


def _version_facts(registry: Registry, model: str, version: str | None,
                   cache: dict[str, dict[str, str | None]]) -> dict[str, str | None]:
    empty: dict[str, str | None] = dict.fromkeys(
        ("gate_verdict", "gate_reasons", "trigger", "trigger_reason", "trigger_ref", "approval"))
    if version is None:
        return empty
    if version not in cache:
        info = registry.find_version(model, version)
        facts = dict(empty)
        if info is not None:
            tags = dict(info.tags)
            if info.run_id:
                try:
                    tags = {**registry.run_info(info.run_id)["tags"], **tags}
                except Exception:  # noqa: BLE001 - the run may be gone; keep version tags
                    pass
            facts = {"gate_verdict": tags.get("regrow.gate.verdict"),
                     "gate_reasons": tags.get("regrow.gate.reasons"),
                     "trigger": tags.get("regrow.trigger"),
                     "trigger_reason": tags.get("regrow.trigger_reason"),
                     "trigger_ref": tags.get("regrow.trigger_ref"),
                     "approval": _approval(tags)}
        cache[version] = facts
    return cache[version]


def _approval(tags: dict[str, str]) -> str | None:
    if "regrow.approval" in tags:
        return (f"{tags['regrow.approval']} by {tags.get('regrow.approver', '?')} "
                f"({tags.get('regrow.approval_via', '?')}): {tags.get('regrow.approval_reason', '-')}")
    if "regrow.gate_override" in tags:
        return f"gate overridden {tags['regrow.gate_override']}"
    return None


def history(registry: Registry, store: Store, model: str) -> list[HistoryEntry]:
    """Every alias move of a model, oldest first, with the gate record and trigger of the
    version each move pointed to."""
    cache: dict[str, dict[str, str | None]] = {}
    out = []
    for row in store.alias_history(model):
        facts = _version_facts(registry, model, row["new_version"], cache)
        at = row["at"]
        out.append(HistoryEntry(
            at=(at.replace(tzinfo=dt.UTC) if at.tzinfo is None else at).isoformat(timespec="seconds"),
            alias=row["alias"], old_version=row["old_version"], new_version=row["new_version"],
            actor=row["actor"], reason=row["reason"], run_id=row["run_id"], **facts))
    return out


def _require_version(registry: Registry, model: str, version: str) -> ModelVersionInfo:
    info = registry.find_version(model, version)
    if info is None:
        raise GovernanceError(f"model {model!r} has no version {version!r}")
    if info.tags.get(ORPHAN_TAG) == "true":
        raise GovernanceError(f"{model} v{version} is an orphan and is never promoted: "
                              f"{info.tags.get(ORPHAN_REASON_TAG, 'its training did not finish')}"
                              "; train again")
    return info


def reconcile_orphans(registry: Registry, store: Store, model: str) -> list[str]:
    """Find versions that a training registered and then failed or died before finishing
    (MLflow or the store went away after the version was made): tag each ``regrow.orphan``
    with the reason, note it on its training record when the record lacks it, and clear
    ``challenger`` when it waits on one. An orphan is never promoted (`promote`, `rollback`
    refuse it) and `regrow status` lists it. Versions that served, versions of trainings that
    still run or finished, and versions registered outside a regrow training are left alone.

    Returns:
        One line per version tagged.
    """
    rows = {r["run_id"]: r for r in store.training_runs(model, 50) if r["run_id"]}
    if not rows:
        return []
    served = {r["new_version"] for r in store.alias_history(model, CHAMPION)}
    notes = []
    for info in registry.versions(model):
        row = rows.get(info.run_id)
        if row is None or info.tags.get(ORPHAN_TAG) == "true" or "regrow.trigger" not in info.tags \
                or info.version in served \
                or row["status"] in ("running", "finished", PROMOTED_CRASHED):
            continue
        detail = (row["detail"] or "").splitlines()[0][:300] if row["detail"] else "no detail"
        why = (f"its training (MLflow run {info.run_id}) ended {row['status']} after registering "
               f"it: {detail}")
        registry.set_version_tags(model, info.version, {ORPHAN_TAG: "true",
                                                        ORPHAN_REASON_TAG: why})
        if row["version"] is None:
            store.note_training(row["id"], verdict=row["verdict"]
                                or info.tags.get("regrow.gate.verdict") or "unknown",
                                version=info.version)
        clear_challenger(registry, store, model, info.version, f"orphan: {why}",
                         "regrow:reconcile")
        notes.append(f"v{info.version} is an orphan, never to be promoted: {why}")
    return notes


def orphans(registry: Registry, model: str) -> list[ModelVersionInfo]:
    """The versions tagged as orphans (`reconcile_orphans`), oldest first."""
    return registry.versions(model, f"tags.`{ORPHAN_TAG}` = 'true'")


def promote(registry: Registry, store: Store, model: str, version: str, *, by: str, reason: str,
            override_gate: str | None = None, bake: Bake | None = None) -> list[AliasMove]:
    """A person makes `version` the champion (see `_promote`), inside the model's
    `alias_section`: racing promotions and rollbacks take turns, each seeing the last one's
    result."""
    with alias_section(registry, store, model, "regrow promote"):
        return _promote(registry, store, model, version, by=by, reason=reason,
                        override_gate=override_gate, bake=bake)


def _promote(registry: Registry, store: Store, model: str, version: str, *, by: str, reason: str,
             override_gate: str | None = None, bake: Bake | None = None) -> list[AliasMove]:
    """A person makes `version` the champion.

    A version that did not pass its gate is refused unless `override_gate` gives a reason;
    the override is tagged on the version and written into the history. With a `bake` (the
    config's ``promotion.bake``) the new champion bakes against the one it replaces.

    Raises:
        GovernanceError: no such version, already champion, or a failed gate without override.
    """
    info = _require_version(registry, model, version)
    if registry.alias_version(model, CHAMPION) == version:
        raise GovernanceError(f"{model} v{version} is already the champion")
    verdict = info.tags.get("regrow.gate.verdict")
    why = f"promoted by hand: {reason}"
    if verdict != PASSED:
        if not override_gate:
            raise GovernanceError(
                f"{model} v{version} did not pass its gate (verdict {verdict or 'unknown'}); "
                "to promote it anyway give --override-gate with a reason (it is recorded)")
        registry.set_version_tags(model, version, {"regrow.gate_override": f"by {by}: {override_gate}"})
        why += f"; GATE OVERRIDDEN (verdict was {verdict or 'unknown'}): {override_gate}"
    actor = f"person:{by}"
    before = registry.alias_version(model, CHAMPION)
    moves = [move_alias(registry, store, model, CHAMPION, version, why, actor, info.run_id)]
    if bake is not None and before is not None:
        if registry.alias_version(model, CHALLENGER) != version:
            moves.append(move_alias(registry, store, model, CHALLENGER, version,
                                    f"baking against v{before}", actor, info.run_id))
        baking.start(store, model, version, before, bake)
        return moves
    cleared = clear_challenger(registry, store, model, version, "promoted by hand", actor)
    return moves + ([cleared] if cleared else [])


def previous_champion(store: Store, model: str, current: str) -> str | None:
    """The champion before `current` was promoted: the old version of the newest move that made
    `current` champion and was not itself a rollback (so repeated rollbacks step back through
    the promotions instead of toggling)."""
    for row in reversed(store.alias_history(model, CHAMPION)):
        if row["new_version"] != current or row["reason"].startswith(ROLLBACK):
            continue
        if row["old_version"]:
            return row["old_version"]
    return None


def rollback(registry: Registry, store: Store, model: str, *, by: str, reason: str,
             to: str | None = None, actor: str | None = None) -> list[AliasMove]:
    """Put the previous champion (or version `to`) back (see `_rollback`), inside the
    model's `alias_section`."""
    with alias_section(registry, store, model, "regrow rollback"):
        return _rollback(registry, store, model, by=by, reason=reason, to=to, actor=actor)


def _rollback(registry: Registry, store: Store, model: str, *, by: str, reason: str,
              to: str | None = None, actor: str | None = None) -> list[AliasMove]:
    """Put the previous champion (or version `to`) back.

    `to` must have been champion before or have passed its gate (else use `promote` with
    ``--override-gate``).

    Raises:
        GovernanceError: no champion, no earlier champion, or an unfit target.
    """
    current = registry.alias_version(model, CHAMPION)
    if current is None:
        raise GovernanceError(f"model {model!r} has no champion to roll back")
    target = to or previous_champion(store, model, current)
    if target is None:
        raise GovernanceError(f"{model} v{current} has no earlier champion in the history; "
                              "name one with --to")
    if target == current:
        raise GovernanceError(f"{model} v{target} is already the champion")
    info = _require_version(registry, model, target)
    served = any(r["new_version"] == target for r in store.alias_history(model, CHAMPION))
    if not served and info.tags.get("regrow.gate.verdict") != PASSED:
        raise GovernanceError(f"{model} v{target} never served and did not pass its gate; use "
                              "`regrow promote --override-gate` if you mean it")
    who = actor or f"person:{by}"
    moves = [move_alias(registry, store, model, CHAMPION, target,
                        f"{ROLLBACK} from v{current} by {by}: {reason}", who, info.run_id)]
    cleared = clear_challenger(registry, store, model, current, f"rolled back to v{target}", who)
    return moves + ([cleared] if cleared else [])
