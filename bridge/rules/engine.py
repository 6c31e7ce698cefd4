"""Desired LMS state of one person, and the intents that move the LMS there (pure).

``desired_state`` = f(person's SCIM JSON, one rule file, the verdicts of its conditions);
``diff`` = desired vs the last projected state → intents in a deterministic order. No
database, no clock, no I/O: conditions are evaluated by the caller (ScimFilter.match for
one person, the SQL translator for a population) and handed in as verdicts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from enum import StrEnum
from typing import Any

from bridge.rules import paths
from bridge.rules.model import Assignment
from bridge.rules.model import AssignmentKind
from bridge.rules.model import Otherwise
from bridge.rules.model import Pilot
from bridge.rules.model import RuleFile
from bridge.rules.transforms import TransformError
from bridge.rules.transforms import apply

Verdicts = Mapping[str, bool]
"""Condition text (aliases expanded) → whether the person matches it."""


class IntentKind(StrEnum):
    upsert_account = "upsert_account"
    reactivate_account = "reactivate_account"
    enrol = "enrol"
    add_cohort_member = "add_cohort_member"
    suspend_enrolment = "suspend_enrolment"
    unenrol = "unenrol"
    remove_cohort_member = "remove_cohort_member"
    suspend_account = "suspend_account"


REMOVALS = frozenset(
    {
        IntentKind.suspend_enrolment,
        IntentKind.unenrol,
        IntentKind.remove_cohort_member,
        IntentKind.suspend_account,
    }
)
_ORDER = {kind: index for index, kind in enumerate(IntentKind)}


@dataclass(frozen=True)
class Intent:
    """One change to make in the LMS, tagged with the rule that caused it."""

    kind: IntentKind
    person: str
    target: str
    rule: str
    ref: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def sort_key(self) -> tuple[int, str]:
        return _ORDER[self.kind], self.ref or ""

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind.value,
            "person": self.person,
            "target": self.target,
            "rule": self.rule,
        }
        if self.ref is not None:
            out["ref"] = self.ref
        if self.data:
            out["data"] = self.data
        return out


@dataclass(frozen=True)
class Problem:
    """Why a person needs attention (missing required value, a transform that failed…)."""

    person: str
    rule: str
    reason: str


@dataclass
class Desired:
    """What the LMS should hold for one person under one rule file."""

    in_scope: bool
    active: bool = True
    account: dict[str, Any] = field(default_factory=dict)
    create_only: dict[str, Any] = field(default_factory=dict)
    assignments: dict[str, Assignment] = field(default_factory=dict)  # state key → rule
    problems: list[Problem] = field(default_factory=list)
    mapping_trace: list[tuple[str, Any, Any]] = field(default_factory=list)


def state_key(assignment: Assignment) -> str:
    """Where an assignment lives in a projected state: ``course:BEN2026``, ``cohort:X``…"""
    prefix = {
        AssignmentKind.enrolment: "course",
        AssignmentKind.cohort: "cohort",
        AssignmentKind.path: "path",
    }
    return f"{prefix[assignment.kind]}:{assignment.ref}"


def in_sample(pilot: Pilot, key: str) -> bool:
    """Stable-hash sampling: the same person is in or out of a sample on every run."""
    if pilot.sample_percent is None:
        return True
    digest = hashlib.sha256(f"{pilot.seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % 10_000 < pilot.sample_percent * 100


def sample_rank(pilot: Pilot, key: str) -> int:
    """The order in which a capped pilot admits people (stable, not by arrival)."""
    digest = hashlib.sha256(f"rank:{pilot.seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _map_value(mapping_source: str | None, constant: Any, doc: dict[str, Any]) -> Any:
    if mapping_source is None:
        return constant
    return paths.read(doc, mapping_source)


def desired_state(
    person_id: str,
    doc: dict[str, Any],
    rules: RuleFile,
    verdicts: Verdicts,
    *,
    admitted: bool = True,
) -> Desired:
    """The LMS state one rule file asks for one person (the person's SCIM JSON in ``doc``)."""
    in_scope = admitted and (rules.scope.filter is None or verdicts.get(rules.scope.filter, False))
    desired = Desired(in_scope=in_scope)
    if not in_scope:
        return desired
    desired.active = doc.get("active") is not False
    for mapping in rules.mapping:
        try:
            value = _map_value(mapping.source, mapping.value, doc)
            source_value = value
            for transform in mapping.transforms:
                value = apply(value, transform.name, transform.argument)
        except (TransformError, ValueError, TypeError) as exc:
            reason = f"{mapping.attribute}: {exc}"
            if mapping.required:  # blocks the account, as a missing value does
                reason = f"missing required {mapping.attribute} (from {mapping.source}): {exc}"
            desired.problems.append(Problem(person_id, rules.name, reason))
            continue
        desired.mapping_trace.append((mapping.attribute, source_value, value))
        if value is None or value == "" or value == []:
            if mapping.required:
                desired.problems.append(
                    Problem(
                        person_id,
                        rules.name,
                        f"missing required {mapping.attribute} (from {mapping.source})",
                    )
                )
            continue
        (desired.create_only if mapping.on_create_only else desired.account)[mapping.attribute] = (
            value
        )
    for assignment in rules.assignments:
        if verdicts.get(assignment.when, False):
            desired.assignments.setdefault(state_key(assignment), assignment)
    return desired


def _assignment_by_key(rules: RuleFile) -> dict[str, Assignment]:
    found: dict[str, Assignment] = {}
    for assignment in rules.assignments:
        found.setdefault(state_key(assignment), assignment)
    return found


def diff(
    person_id: str, desired: Desired, projected: Mapping[str, Any] | None, rules: RuleFile
) -> tuple[list[Intent], dict[str, Any] | None]:
    """Intents that move the LMS from ``projected`` to ``desired``, and the new projection.

    A person with problems that block the account (missing required values) gets no intents:
    they land in the attention list instead of half an account in the LMS.
    """
    target, intents = rules.target, []

    def intent(
        kind: IntentKind, rule: str, ref: str | None = None, data: dict[str, Any] | None = None
    ) -> None:
        intents.append(Intent(kind, person_id, target, rule, ref, data or {}))

    if not desired.in_scope:
        if projected is None or not projected.get("active", False):
            return [], dict(projected) if projected is not None else None
        intent(IntentKind.suspend_account, rules.name, data={"reason": "out of scope"})
        return intents, {**projected, "active": False}
    if any(p.reason.startswith("missing required") for p in desired.problems):
        return [], dict(projected) if projected is not None else None

    if projected is None and not desired.active:
        return [], None  # never provisioned and inactive: nothing to create, enrol or suspend
    before: Mapping[str, Any] = projected or {}
    account = dict(before.get("account", {}))
    if projected is None:
        intent(
            IntentKind.upsert_account,
            rules.name,
            data={"create": True, "attributes": {**desired.account, **desired.create_only}},
        )
    else:
        changed = {k: v for k, v in desired.account.items() if account.get(k) != v}
        # An attribute that lost its source value is cleared in the LMS, not left stale.
        changed.update({k: None for k in account if k not in desired.account})
        if changed:
            intent(
                IntentKind.upsert_account, rules.name, data={"create": False, "attributes": changed}
            )
    account = dict(desired.account)
    was_active = bool(before.get("active", False))
    if projected is not None and desired.active and not was_active:
        intent(IntentKind.reactivate_account, rules.name)

    states: dict[str, Any] = {
        key: dict(value) for key, value in before.get("assignments", {}).items()
    }
    known = _assignment_by_key(rules)
    for key, assignment in sorted(desired.assignments.items()):
        current = states.get(key)
        if current is not None and current.get("status") == "active":
            continue
        kind = (
            IntentKind.add_cohort_member
            if assignment.kind == AssignmentKind.cohort
            else IntentKind.enrol
        )
        data: dict[str, Any] = {"kind": assignment.kind.value}
        if assignment.kind != AssignmentKind.cohort:
            data["role"] = assignment.role
            # due_days is the bridge's deadline (the relay keeps the date); only
            # access_end_days may end access in the LMS (Moodle's timeend, LMS.md).
            if assignment.due_days is not None:
                data["due_days"] = assignment.due_days
            if assignment.access_end_days is not None:
                data["access_end_days"] = assignment.access_end_days
        intent(kind, assignment.id, assignment.ref, data)
        states[key] = {
            "status": "active",
            "rule": assignment.id,
            "kind": assignment.kind.value,
            "ref": assignment.ref,
        }
    for key in sorted(states):
        state = states[key]
        if key in desired.assignments or state.get("status") != "active":
            continue
        rule = known.get(key)
        otherwise = rule.otherwise if rule is not None else Otherwise.suspend
        rule_id = rule.id if rule is not None else str(state.get("rule", "?"))
        ref = str(state.get("ref") or key.split(":", 1)[1])
        if otherwise == Otherwise.keep:
            continue
        if state.get("kind", key.split(":", 1)[0]) == AssignmentKind.cohort.value:
            intent(IntentKind.remove_cohort_member, rule_id, ref)
            del states[key]
        elif otherwise == Otherwise.unenrol:
            intent(IntentKind.unenrol, rule_id, ref, {"kind": state.get("kind", "enrolment")})
            del states[key]
        else:
            intent(
                IntentKind.suspend_enrolment, rule_id, ref, {"kind": state.get("kind", "enrolment")}
            )
            states[key] = {**state, "status": "suspended"}
    if not desired.active and (was_active or projected is None):
        intent(IntentKind.suspend_account, rules.name, data={"reason": "inactive"})
    intents.sort(key=Intent.sort_key)
    projection = {"account": account, "active": desired.active, "assignments": states}
    return intents, projection
