"""Drift (pure): what an LMS holds for one person against what it confirmed (``links``).

:func:`compare` turns one person's confirmed state and the account and enrolments the LMS
holds into :class:`Drift` items, each with its reason and, where the bridge owns the state,
the intent that re-asserts it: an account deleted by hand is created again (and re-enrolled),
one suspended by hand reactivated, a mapped field changed by hand written back, an enrolment
removed or suspended by hand enrolled again, one reactivated by hand suspended again, a cohort
membership removed by hand added again. What the bridge does not own (an enrolment or cohort
membership it never made) is reported only. The comparison is the same for every LMS; what it
calls the LMS and how it compares mapped fields come with ``Managed`` (one per target kind).
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from bridge.rules.engine import Intent
from bridge.rules.engine import IntentKind
from bridge.rules.engine import state_key
from bridge.rules.model import Assignment
from bridge.rules.model import AssignmentKind
from bridge.rules.model import RuleSet
from bridge.rules.plan import Ledger
from bridge.rules.plan import PersonOutcome
from bridge.targets.moodle_reconcile import Participants
from bridge.targets.moodle_ws import USER_FIELDS
from bridge.targets.moodle_ws import text

ACCOUNT_MISSING = "account-missing"
ACCOUNT_SUSPENDED = "account-suspended"
ACCOUNT_REACTIVATED = "account-reactivated"
ACCOUNT_GONE = "account-missing-suspended"
FIELD = "field"
ENROLMENT_REMOVED = "enrolment-removed"
ENROLMENT_SUSPENDED = "enrolment-suspended"
ENROLMENT_REACTIVATED = "enrolment-reactivated"
ENROLMENT_GONE = "enrolment-missing-suspended"
COHORT_REMOVED = "cohort-member-removed"
ADDED_BY_HAND = "added-by-hand"
NOT_OWNED = "not-owned"
UNCHECKED = "unchecked"

_ALWAYS_READ = frozenset({"username", "firstname", "lastname", "email", "idnumber"})
"""User fields Moodle's answer always carries (``idnumber``: left out when empty)."""
_NOT_COMPARED = frozenset({"auth", "password", "suspended"})


@dataclass(frozen=True)
class Drift:
    """One difference between what an LMS holds and what it confirmed to the bridge."""

    kind: str
    target: str
    reason: str
    person: str | None = None
    label: str | None = None
    ref: str | None = None
    owned: bool = True
    """False: the bridge does not own it; reported, never touched."""
    intent: Intent | None = None
    """What re-asserts the bridge's state (None: report only)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "target": self.target,
            "person": self.person,
            "label": self.label,
            "ref": self.ref,
            "owned": self.owned,
            "reason": self.reason,
            "action": self.intent.kind.value if self.intent is not None else None,
        }


FieldDrift = Callable[[Mapping[str, Any], Mapping[str, Any], Mapping[str, str]], dict[str, str]]
"""(confirmed account, the account the LMS holds, renames) → mapped name → the value held."""


@dataclass(frozen=True)
class Managed:
    """What the rules manage in one target: the rule file accounts belong to, each course
    and cohort (by state key) with its rule and who the LMS holds in it."""

    target: str
    account_rule_file: str
    assignments: Mapping[str, Assignment]
    courses: Mapping[str, Participants]
    """Course ref → its participants (courses the LMS has)."""
    rule_file_of: Mapping[str, str] = field(default_factory=dict)
    """Assignment id → the rule file it is in."""
    profile_fields: Mapping[str, str] = field(default_factory=dict)
    """Attribute → the custom profile field's short name (``options.profile_fields``)."""
    cohorts: Mapping[str, Participants] = field(default_factory=dict)
    """Cohort ref → its members (cohorts the LMS has)."""
    lms: str = "Moodle"
    """What the reasons call the LMS."""
    fields: FieldDrift | None = None
    """How mapped fields are compared (None: Moodle's, :func:`field_drift`)."""

    def holders(self, assignment: Assignment) -> Participants | None:
        """Who the LMS holds in an assignment's course or cohort (None: not read)."""
        held = self.cohorts if assignment.kind == AssignmentKind.cohort else self.courses
        return held.get(assignment.ref)


def _expected(name: str, value: Any) -> str:
    written = text(value).strip()
    return written.lower() if name == "username" else written


def field_drift(
    account: Mapping[str, Any], user: Mapping[str, Any], renames: Mapping[str, str]
) -> dict[str, str]:
    """Mapped attributes whose value in the LMS differs from the one it confirmed: name →
    the value held. A custom profile field Moodle does not return is not compared (the site
    may not define it, LMS.md); nor are ``auth`` and ``password`` (written on create only)."""
    custom = {str(c.get("shortname")): c.get("value") for c in user.get("customfields") or []}
    drift: dict[str, str] = {}
    for name, value in account.items():
        if name in _NOT_COMPARED or value is None:
            continue
        if name in USER_FIELDS:
            if name not in user and name not in _ALWAYS_READ:
                continue
            held = text(user.get(name))
        else:
            short = str(renames.get(name, name))
            if short not in custom:
                continue
            held = text(custom[short])
        if held != _expected(name, value):
            drift[name] = held
    return drift


def _enrol_data(assignment: Assignment) -> dict[str, Any]:
    if assignment.kind == AssignmentKind.cohort:
        return {"kind": assignment.kind.value}
    data: dict[str, Any] = {"kind": assignment.kind.value, "role": assignment.role}
    if assignment.due_days is not None:
        data["due_days"] = assignment.due_days
    if assignment.access_end_days is not None:
        data["access_end_days"] = assignment.access_end_days
    return data


def compare(
    person: str,
    lms_user_id: str | None,
    confirmed: Mapping[str, Any],
    user: Mapping[str, Any] | None,
    managed: Managed,
) -> list[Drift]:
    """One person's drift in one LMS (pure): ``confirmed`` is the ``links`` document,
    ``user`` the account the LMS holds under ``lms_user_id`` (None: none, or deleted)."""
    target = managed.target
    account = {k: v for k, v in (confirmed.get("account") or {}).items() if v is not None}
    label = str(account.get("username") or account.get("idnumber") or person)
    active = confirmed.get("active", True) is not False
    found: list[Drift] = []

    def drift(kind: str, reason: str, intent: Intent | None = None, **more: Any) -> None:
        found.append(Drift(kind, target, reason, person, label, intent=intent, **more))

    def intent(
        kind: IntentKind, rule: str, ref: str | None = None, data: dict[str, Any] | None = None
    ) -> Intent:
        return Intent(kind, person, target, rule, ref, data or {})

    rule_file = managed.account_rule_file
    lms = managed.lms
    where = f"{lms} user {lms_user_id}" if lms_user_id else f"its {lms} account"
    if lms_user_id is None or user is None:
        if not active:
            drift(ACCOUNT_GONE, f"{where} was deleted by hand; the bridge holds it suspended")
            return found
        data = {"create": True, "attributes": account}
        drift(
            ACCOUNT_MISSING,
            f"{where} was deleted by hand: created again",
            intent(IntentKind.upsert_account, rule_file, data=data),
        )
    else:
        if bool(user.get("suspended")) and active:
            drift(
                ACCOUNT_SUSPENDED,
                f"{where} was suspended by hand: reactivated",
                intent(IntentKind.reactivate_account, rule_file),
            )
        elif not user.get("suspended") and not active:
            drift(
                ACCOUNT_REACTIVATED,
                f"{where} was reactivated by hand; the bridge holds it suspended: suspended again",
                intent(IntentKind.suspend_account, rule_file, data={"reason": "reconcile"}),
            )
        changed = (managed.fields or field_drift)(account, user, managed.profile_fields)
        if changed:
            update = intent(
                IntentKind.upsert_account,
                rule_file,
                data={"create": False, "attributes": {k: account[k] for k in changed}},
            )
            for name, held in changed.items():
                drift(
                    FIELD,
                    f"{name} is {held!r} in {lms}, the bridge set {_expected(name, account[name])!r}: written back",
                    update,
                    ref=name,
                )
    assignments = confirmed.get("assignments") or {}
    for key, assignment in sorted(managed.assignments.items()):
        participants = managed.holders(assignment)
        if participants is None:
            continue
        if assignment.kind == AssignmentKind.cohort:
            found += _cohort_drift(
                person,
                label,
                lms_user_id,
                user,
                assignment,
                participants,
                assignments.get(key),
                target,
            )
            continue
        holds = (
            participants.status(int(lms_user_id))
            if user is not None and lms_user_id and lms_user_id.isdigit()
            else None
        )
        entry = assignments.get(key)
        status = entry.get("status") if isinstance(entry, Mapping) else None
        course = assignment.ref
        if status == "active" and holds != "active":
            enrol = intent(IntentKind.enrol, assignment.id, course, _enrol_data(assignment))
            if user is None:
                drift(
                    ENROLMENT_REMOVED,
                    f"enrolment in {course} went with the account: enrolled again",
                    enrol,
                    ref=course,
                )
            elif holds is None:
                drift(
                    ENROLMENT_REMOVED,
                    f"enrolment in {course} was removed by hand: enrolled again",
                    enrol,
                    ref=course,
                )
            else:
                drift(
                    ENROLMENT_SUSPENDED,
                    f"enrolment in {course} was suspended by hand: reactivated",
                    enrol,
                    ref=course,
                )
        elif status == "suspended" and holds == "active":
            data = {"kind": assignment.kind.value}
            drift(
                ENROLMENT_REACTIVATED,
                f"enrolment in {course} was reactivated by hand; the bridge holds it suspended: suspended again",
                intent(IntentKind.suspend_enrolment, assignment.id, course, data),
                ref=course,
            )
        elif status == "suspended" and holds is None and user is not None:
            drift(
                ENROLMENT_GONE,
                f"enrolment in {course} was removed by hand; the bridge holds it suspended (progress kept): left alone",
                ref=course,
            )
        elif status is None and holds is not None:
            drift(
                ADDED_BY_HAND,
                f"enrolled by hand in {course} ({holds}): the bridge did not make this enrolment; left alone",
                ref=course,
                owned=False,
            )
    return found


def _cohort_drift(
    person: str,
    label: str,
    lms_user_id: str | None,
    user: Mapping[str, Any] | None,
    assignment: Assignment,
    members: Participants,
    entry: Any,
    target: str,
) -> list[Drift]:
    """A cohort membership's drift: removed by hand (or with the account) → added again;
    added by hand → reported. A cohort has no suspended members."""
    held = (
        members.status(int(lms_user_id))
        if user is not None and lms_user_id and lms_user_id.isdigit()
        else None
    )
    status = entry.get("status") if isinstance(entry, Mapping) else None
    cohort = assignment.ref
    if status == "active" and held is None:
        how = "went with the account" if user is None else "was removed by hand"
        add = Intent(
            IntentKind.add_cohort_member,
            person,
            target,
            assignment.id,
            cohort,
            _enrol_data(assignment),
        )
        reason = f"membership of cohort {cohort} {how}: added again"
        return [Drift(COHORT_REMOVED, target, reason, person, label, cohort, intent=add)]
    if status is None and held is not None:
        reason = (
            f"added by hand to cohort {cohort}: the bridge did not make this membership; left alone"
        )
        return [Drift(ADDED_BY_HAND, target, reason, person, label, cohort, owned=False)]
    return []


def outcomes_of(drifts: list[Drift], ledger: Ledger, managed: Managed) -> list[PersonOutcome]:
    """One person's drift as plan outcomes (one per rule file), each intent looked up in the
    outbox: one already on its way is pending, not enqueued again."""
    rule_file_of = managed.rule_file_of
    by_file: dict[str, list[Intent]] = {}
    seen: set[int] = set()  # by identity: one intent may answer several items
    for item in drifts:
        if item.intent is None or id(item.intent) in seen:
            continue
        seen.add(id(item.intent))
        name = rule_file_of.get(item.intent.rule, managed.account_rule_file)
        by_file.setdefault(name, []).append(item.intent)
    found = []
    for name, intents in by_file.items():
        intents.sort(key=Intent.sort_key)
        person, label = intents[0].person, drifts[0].label or intents[0].person
        found.append(
            PersonOutcome(
                person_id=person,
                label=label,
                rule_file=name,
                target=managed.target,
                in_scope=True,
                intents=intents,
                problems=[],
                tracked=[ledger.track(i, label) for i in intents],
            )
        )
    return found


def managed_of(
    ruleset: RuleSet,
    target: str,
    courses: Mapping[str, Participants],
    *,
    cohorts: Mapping[str, Participants] | None = None,
    reads: frozenset[AssignmentKind] = frozenset({AssignmentKind.enrolment}),
    lms: str = "Moodle",
    fields: FieldDrift | None = None,
) -> Managed:
    """What the rule files driving ``target`` manage there (the first names the accounts):
    the assignments of the kinds the target's reader ``reads``."""
    files = [f for f in ruleset.files if f.target == target]
    assignments: dict[str, Assignment] = {}
    rule_file_of: dict[str, str] = {}
    for rule_file in files:
        for assignment in rule_file.assignments:
            if assignment.kind in reads:
                assignments.setdefault(state_key(assignment), assignment)
            rule_file_of[assignment.id] = rule_file.name
    config = ruleset.targets[target]
    renames = config.options.get("profile_fields") or {}
    return Managed(
        target,
        files[0].name if files else target,
        assignments,
        courses,
        rule_file_of,
        {str(k): str(v) for k, v in renames.items()} if isinstance(renames, Mapping) else {},
        cohorts or {},
        lms,
        fields,
    )
