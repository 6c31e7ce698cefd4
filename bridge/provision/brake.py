"""The brake on mass removals from live writes (after Entra's accidental-deletion prevention).

A plan over a rule file's ``safety`` threshold is quarantined (:mod:`bridge.provision.planning`);
live writes (SCIM now, any feed that provisions through :class:`~bridge.provision.projection.
Projector`) have no plan to review, so their removals are counted per target over a sliding
``safety.window``. Past the threshold (``max_removals``, or ``max_removals_percent`` of the
people the rule file holds in scope now) the excess removals are *held*: written to the outbox
as quarantined rows of one open run of kind ``held`` per target, until ``bridge approve RUN``
sends them or ``bridge reject RUN`` cancels them. The write itself succeeds (the identity
provider never sees an error) and additions are never held.

The brake counts *people* (those whose removals went through in the window): one person's
removals go or wait together, and the percentage is of people, as the threshold's base is.
Only removals that went through count: held ones wait for a decision, and approved ones were
let through by an admin on purpose.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from bridge.rules.engine import REMOVALS
from bridge.rules.engine import Intent
from bridge.rules.engine import IntentKind
from bridge.rules.model import RuleFile
from bridge.rules.model import RuleSet
from bridge.rules.model import Safety
from bridge.rules.plan import PersonOutcome
from bridge.rules.plan import Plan
from bridge.rules.plan import build_plan
from bridge.store import feed_people
from bridge.store import journal
from bridge.store import outbox
from bridge.store import projections
from bridge.store import runs

log = logging.getLogger("bridge.provision")

REMOVAL_KINDS = frozenset(kind.value for kind in REMOVALS)
ACTOR = "brake"
"""Who a held run is recorded as opened by."""


# -- the functional core ----------------------------------------------------------------------


def allowance(safety: Safety, managed: int) -> int | None:
    """How many people one window may remove by live writes: the stricter of ``max_removals``
    and ``max_removals_percent`` of ``managed`` (at the limit passes, as in a plan); None when
    the rule file sets no limit.

    The percent form always lets one person a window through: one leaver of a small rule file
    is not a mass removal (``max_removals: 0`` holds every removal)."""
    limits: list[int] = []
    if safety.max_removals is not None:
        limits.append(safety.max_removals)
    if safety.max_removals_percent is not None:
        # a hair of tolerance so 10 % of 40 is 4, not 3.9999…
        share = math.floor(safety.max_removals_percent * managed / 100 + 1e-9)
        limits.append(max(1, share))
    return min(limits) if limits else None


def split(
    intents: list[dict[str, Any]], removed: set[str], allowed: int, *, counted: int | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    """(sent, held, people counted after). ``counted``: how many people's removals went in the
    window (default ``len(removed)``); ``removed``: those of them this write names (updated in
    place). A removal goes when its person is already counted or the window has room for one
    more person (``counted < allowed``), else it is held; additions always go. Order is kept
    within each part."""
    count = len(removed) if counted is None else counted
    sent: list[dict[str, Any]] = []
    held: list[dict[str, Any]] = []
    for intent in intents:
        person = str(intent["person"])
        if intent["kind"] not in REMOVAL_KINDS or person in removed:
            sent.append(intent)
        elif count < allowed:
            removed.add(person)
            count += 1
            sent.append(intent)
        else:
            held.append(intent)
    return sent, held, count


UNDONE_BY = {
    "suspend_account": "reactivate_account",
    "suspend_enrolment": "enrol",
    "unenrol": "enrol",
    "remove_cohort_member": "add_cohort_member",
}
"""The intent that undoes a removal (the same ``ref``): the identity provider restored them."""


def superseded(held: list[dict[str, Any]], later: list[dict[str, Any]]) -> list[int]:
    """The ids of the held rows a later row of the same person and target undoes: approving
    them would remove what the identity provider has restored since."""
    newest: dict[tuple[str, str, str, Any], int] = {}
    for row in later:
        key = (row["target"], row["ordering_key"], row["intent"]["kind"], row["intent"].get("ref"))
        newest[key] = max(newest.get(key, 0), int(row["id"]))
    found = []
    for row in held:
        intent = row["intent"]
        undo = UNDONE_BY.get(intent["kind"])
        if undo is None:
            continue
        key = (row["target"], row["ordering_key"], undo, intent.get("ref"))
        if newest.get(key, 0) > int(row["id"]):
            found.append(int(row["id"]))
    return found


def window_text(safety: Safety) -> str:
    seconds = int(safety.window.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds // 60}m"


def held_summary(
    previous: dict[str, Any] | None,
    rule_file: RuleFile,
    held: list[dict[str, Any]],
    *,
    passed: int,
    allowed: int,
    managed: int,
    now: datetime,
) -> dict[str, Any]:
    """A held run's summary with ``held`` added: what ``bridge runs`` shows of it."""
    summary = dict(previous or {})
    counts = {k: dict(v) for k, v in (summary.get("counts") or {}).items()}
    for intent in held:
        entry = counts.setdefault(intent["kind"], {"count": 0})
        entry["count"] = int(entry["count"]) + 1
    summary.update(
        {
            "target": rule_file.target,
            "rule_file": rule_file.name,
            "held": int(summary.get("held", 0)) + len(held),
            "removed_in_window": passed,
            "allowed": allowed,
            "managed": managed,
            "window": window_text(rule_file.safety),
            "max_removals": rule_file.safety.max_removals,
            "max_removals_percent": rule_file.safety.max_removals_percent,
            "last_held_at": now.isoformat(),
            "counts": counts,
        }
    )
    return summary


# -- the shell: in the transaction of the write --------------------------------------------------


def enqueue(
    conn: Any,
    rule_file: RuleFile,
    rules_version: str,
    intents: Iterable[dict[str, Any]],
    *,
    now: datetime,
    journal_seq: int | None,
) -> int:
    """Enqueue a live write's intents (``Intent.as_dict()``) for one rule file, holding the
    removals past the threshold; how many rows were written (held ones included)."""
    found = list(intents)
    if not any(intent["kind"] in REMOVAL_KINDS for intent in found):
        return outbox.enqueue(conn, found, now=now, journal_seq=journal_seq)
    managed = projections.count_in_scope(conn, rule_file.name)
    allowed = allowance(rule_file.safety, managed)
    if allowed is None:
        return outbox.enqueue(conn, found, now=now, journal_seq=journal_seq)
    target = rule_file.target
    outbox.lock_target(conn, target)
    since = now - rule_file.safety.window
    people = {str(i["person"]) for i in found if i["kind"] in REMOVAL_KINDS}
    counted = outbox.removers_since(conn, target, since, REMOVAL_KINDS)
    removed = outbox.removers_among(conn, target, since, REMOVAL_KINDS, people)
    sent, held, passed_now = split(found, removed, allowed, counted=counted)
    written = outbox.enqueue(conn, sent, now=now, journal_seq=journal_seq)
    if not held:
        return written
    run = runs.open_held(conn, target)
    summary = held_summary(
        run["summary"] if run else None,
        rule_file,
        held,
        passed=passed_now,
        allowed=allowed,
        managed=managed,
        now=now,
    )
    if run is None:
        run_id = uuid.uuid4().hex[:12]
        runs.create(
            conn,
            run_id,
            kind=runs.HELD,
            status="quarantined",
            rules_version=rules_version,
            summary=summary,
            now=now,
            actor=ACTOR,
        )
        log.warning(
            "brake on target %s: live writes removed %d people within %s, the threshold "
            "(%d allowed: max_removals %s, max_removals_percent %s of %d managed); %d further "
            "removal(s) held in run %s: bridge approve RUN or bridge reject RUN",
            target,
            passed_now,
            window_text(rule_file.safety),
            allowed,
            rule_file.safety.max_removals,
            rule_file.safety.max_removals_percent,
            managed,
            len(held),
            run_id,
        )
    else:
        run_id = str(run["id"])
        runs.resummarise(conn, run_id, summary)  # the previous summary keeps its actor
    return written + outbox.enqueue(
        conn,
        held,
        now=now,
        journal_seq=journal_seq,
        run_id=run_id,
        status=outbox.QUARANTINED,
    )


def drop_superseded(conn: Any, run: dict[str, Any]) -> int:
    """Before a held run is released (``bridge approve``): its rows that a later write undid
    are cancelled, never sent; how many (also kept in the run's summary as ``superseded``)."""
    held = [
        row for row in outbox.of_run(conn, str(run["id"])) if row["status"] == outbox.QUARANTINED
    ]
    if not held:
        return 0
    later: list[dict[str, Any]] = []
    first = min(int(row["id"]) for row in held)
    for target in sorted({str(row["target"]) for row in held}):
        people = [str(row["ordering_key"]) for row in held if row["target"] == target]
        later.extend(outbox.later_of(conn, target, people, first))
    dropped = outbox.cancel(conn, superseded(held, later))
    if dropped:
        summary = {**(run.get("summary") or {}), "superseded": dropped}
        runs.resummarise(conn, str(run["id"]), summary)
    return dropped


# -- a run's intents as a plan (``bridge plan --run RUN``) ---------------------------------------


def _rule_file_of(ruleset: RuleSet, intent: dict[str, Any]) -> RuleFile | None:
    """The rule file an intent came from: its rule is the file's name or one of its rules."""
    candidates = [f for f in ruleset.files if f.target == intent.get("target")]
    rule = intent.get("rule")
    for rule_file in candidates:
        if rule_file.name == rule or any(a.id == rule for a in rule_file.assignments):
            return rule_file
    return candidates[0] if candidates else None


def run_plan(
    rows: list[dict[str, Any]],
    ruleset: RuleSet,
    labels: dict[str, str],
    *,
    managed: dict[str, int],
    generated_at: str,
    rules_version: str,
) -> Plan:
    """The plan (``bridge-plan/1`` through ``plan_to_json``) of a run's outbox rows: each
    intent as a change to make, per person, judged against the safety thresholds."""
    outcomes: dict[tuple[str, str], PersonOutcome] = {}
    for row in rows:
        data = row["intent"]
        rule_file = _rule_file_of(ruleset, data)
        if rule_file is None:
            continue
        person = str(data["person"])
        intent = Intent(
            kind=IntentKind(data["kind"]),
            person=person,
            target=str(data["target"]),
            rule=str(data["rule"]),
            ref=data.get("ref"),
            data=dict(data.get("data") or {}),
        )
        outcome = outcomes.setdefault(
            (rule_file.name, person),
            PersonOutcome(
                person_id=person,
                label=labels.get(person, person),
                rule_file=rule_file.name,
                target=rule_file.target,
                in_scope=intent.kind is not IntentKind.suspend_account,
                intents=[],
                problems=[],
            ),
        )
        outcome.intents.append(intent)
    return build_plan(
        ruleset,
        outcomes.values(),
        population=len({person for _, person in outcomes}),
        projected_counts=managed,
        generated_at=generated_at,
        rules_version=rules_version,
    )


# -- the decision on a held (or any quarantined) run ---------------------------------------------


class RunError(Exception):
    """No such run, or the run is not awaiting a decision."""


def reject(db: Any, run_id: str, *, actor: str, reason: str | None, now: datetime) -> int:
    """``bridge reject RUN``: the run's quarantined rows are cancelled (never sent), the
    decision journalled with its actor and reason, the run closed as rejected; how many rows
    were cancelled. The people stay as the last write left them in the bridge: ``bridge plan``
    shows the removals again as changes to make until the identity provider restores them."""
    with db.write() as conn:
        run = runs.get(conn, run_id)
        if run is None:
            raise RunError(f"no run {run_id!r}")
        if run["status"] != "quarantined":
            raise RunError(f"run {run_id} is {run['status']}, not quarantined")
        cancelled = outbox.reject(conn, run_id)
        if not runs.reject(conn, run_id, actor=actor, now=now, reason=reason):
            raise RunError(f"run {run_id} was decided meanwhile")
        journal.append(
            conn,
            journal.Entry(
                at=now,
                actor=actor,
                op="reject",
                detail={
                    "run": run_id,
                    "kind": run["kind"],
                    "target": (run.get("summary") or {}).get("target"),
                    "reason": reason,
                    "cancelled": cancelled,
                },
            ),
        )
    return cancelled


def stored_plan(
    db: Any, store: Any, ruleset: RuleSet, run_id: str, *, now: datetime
) -> tuple[dict[str, Any], Plan]:
    """``bridge plan --run RUN``: the run and the plan of the intents it wrote (a held run:
    the removals it holds), built from its outbox rows."""
    with db.read() as conn:
        run = runs.get(conn, run_id)
        if run is None:
            raise RunError(f"no run {run_id!r}")
        if run["kind"] == feed_people.KIND:  # an export sync: what its writes enqueued
            rows = outbox.of_request(conn, run_id)
        else:
            rows = outbox.of_run(conn, run_id)
        labels: dict[str, str] = {}
        for person in dict.fromkeys(str(row["intent"]["person"]) for row in rows):
            record = store.get(conn, "User", person)
            if record is not None:
                labels[person] = record.name
        managed = {f.name: projections.count_in_scope(conn, f.name) for f in ruleset.files}
    summary = run.get("summary") or {}
    if run["kind"] == runs.HELD and isinstance(summary.get("managed"), int):
        managed[str(summary.get("rule_file"))] = int(summary["managed"])
    plan = run_plan(
        rows,
        ruleset,
        labels,
        managed=managed,
        generated_at=now.isoformat(),
        rules_version=str(run["rules_version"]),
    )
    return run, plan
