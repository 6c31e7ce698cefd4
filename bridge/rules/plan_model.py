"""The parts of a plan (pure): per-person outcomes in, counts, attention items, safety verdicts out.

``ACTIONS`` names what a plan counts (intent kinds, upserts split into create and update);
:func:`bridge.rules.plan.build_plan` fills these, :mod:`bridge.rules.plan_render` and
:mod:`bridge.rules.plan_json` show and store them.

Where each planned intent stands (the three states) lives in :mod:`bridge.rules.plan_states`,
re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
from typing import Any

from bridge.rules.engine import Intent
from bridge.rules.engine import IntentKind
from bridge.rules.engine import Problem
from bridge.rules.plan_states import APPLIED
from bridge.rules.plan_states import FAILED
from bridge.rules.plan_states import PENDING
from bridge.rules.plan_states import STATES
from bridge.rules.plan_states import TO_MAKE
from bridge.rules.plan_states import WAITING
from bridge.rules.plan_states import Confirmed
from bridge.rules.plan_states import Ledger
from bridge.rules.plan_states import QueuedRow
from bridge.rules.plan_states import Tracked
from bridge.rules.plan_states import confirmed_view

EXAMPLES = 3


ACTIONS: tuple[tuple[str, IntentKind, str, str], ...] = (
    # action, the intent kind it counts, symbol, label in the text rendering
    ("create_account", IntentKind.upsert_account, "+", "create account"),
    ("update_account", IntentKind.upsert_account, "~", "update account"),
    ("reactivate_account", IntentKind.reactivate_account, "~", "reactivate account"),
    ("enrol", IntentKind.enrol, "+", "enrol"),
    ("add_cohort_member", IntentKind.add_cohort_member, "+", "add cohort member"),
    ("suspend_enrolment", IntentKind.suspend_enrolment, "-", "suspend enrolment"),
    ("unenrol", IntentKind.unenrol, "-", "unenrol"),
    ("remove_cohort_member", IntentKind.remove_cohort_member, "-", "remove cohort member"),
    ("suspend_account", IntentKind.suspend_account, "-", "suspend account"),
)
_ACTION_NAMES = tuple(action for action, _, _, _ in ACTIONS)
_KIND_OF_ACTION = {action: kind.value for action, kind, _, _ in ACTIONS}
_SYMBOL = {action: symbol for action, _, symbol, _ in ACTIONS}


def action_of(intent: Intent) -> str:
    """The plan's name for what an intent does: upserts split into create and update."""
    if intent.kind == IntentKind.upsert_account:
        return "create_account" if intent.data.get("create") else "update_account"
    return intent.kind.value


@dataclass
class PersonOutcome:
    """What the engine decided for one person under one rule file, as the plan needs it."""

    person_id: str
    label: str
    """How admins know the person (userName, externalId)."""
    rule_file: str
    target: str
    in_scope: bool
    intents: list[Intent]
    problems: list[Problem]
    role_codes: list[str] = field(default_factory=list)
    account: dict[str, Any] = field(default_factory=dict)
    """The desired mapped account attributes (``Desired.account``), for duplicate detection."""
    tracked: list[Tracked] = field(default_factory=list)
    """Each intent with where it stands (``Ledger.track``), in the order of ``intents``;
    empty: every intent is still to make (nothing was looked up)."""
    blocked: list[str] = field(default_factory=list)
    """Why the person's intents on the rule file's target are held back (a dead letter)."""
    eligible: bool = False
    """In the scope filter but not seated by the pilot's draw: sends nothing, but their role
    codes and missing values count in the attention list (nobody vanishes from it)."""


@dataclass
class ActionCount:
    count: int = 0
    examples: list[str] = field(default_factory=list)


@dataclass
class RuleCount:
    rule_file: str
    counts: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class AttentionItem:
    """Something an admin must look at. Most are about one person under one rule file; an
    unknown role code (one item per code) or a refused duplicate names several people, and
    has no ``person`` / ``label`` of its own: ``people`` lists them all, ``details`` says more
    (documented with the plan file, :mod:`bridge.rules.plan_json`)."""

    person: str | None
    label: str | None
    rule_file: str | None
    kind: str
    reason: str
    people: tuple[str, ...] = ()
    """Every person id the item is about (``(person,)`` when it is about one person)."""
    details: dict[str, Any] = field(default_factory=dict)
    """What a machine needs to act on it, by kind (JSON values only)."""

    def __post_init__(self) -> None:
        if not self.people and self.person is not None:
            self.people = (self.person,)


@dataclass(frozen=True)
class Refusal:
    """A write the SCIM server refused because an identifier is already held (409
    ``uniqueness``, RFC 7644 §3.3), still unresolved: the holder still has the value, no one
    dismissed it. Repeats of the same refusal (an IdP retrying) are one refusal with a count.
    Times are ISO 8601 text; the store reads these (``bridge.store.refusals``)."""

    id: int
    resource_type: str
    attribute: str
    """``externalId`` or ``userName``."""
    value: str
    holder_id: str | None
    """The stored record holding the value (the one that got there first)."""
    holder_user_name: str | None
    holder_external_id: str | None
    refused_id: str | None
    """The record a refused PUT or PATCH tried to change; None for a refused POST."""
    refused_user_name: str
    refused_external_id: str | None
    op: str
    """``create``, ``replace`` or ``patch`` (of the last refusal)."""
    actor: str
    """Who sent the last refused request (the token's name)."""
    request_id: str | None
    first_seen: str
    last_seen: str
    count: int = 1

    @property
    def people(self) -> tuple[str, ...]:
        """The stored records it is about: the holder, and the refused one when stored."""
        return tuple(p for p in (self.holder_id, self.refused_id) if p is not None)

    def reason(self) -> str:
        """``duplicate externalId E1: create of bob refused 2 times (last …); held by ann``."""
        times = "once" if self.count == 1 else f"{self.count} times"
        refused = _record_text(self.refused_user_name, self.refused_external_id, self.attribute)
        holder = _record_text(
            self.holder_user_name or self.holder_id or "?", self.holder_external_id, self.attribute
        )
        return (
            f"duplicate {self.attribute} {self.value}: {self.op} of {refused} refused {times} "
            f"(last {self.last_seen}, by {self.actor}); held by {holder}; fix one of the two "
            f"records, or `bridge quality dismiss {self.id}`"
        )

    def as_dict(self) -> dict[str, Any]:
        """Both records, the attribute and value, when, how often and by whom (JSON)."""
        return {
            "id": self.id,
            "resource_type": self.resource_type,
            "attribute": self.attribute,
            "value": self.value,
            "holder": {
                "id": self.holder_id,
                "userName": self.holder_user_name,
                "externalId": self.holder_external_id,
            },
            "refused": {
                "id": self.refused_id,
                "userName": self.refused_user_name,
                "externalId": self.refused_external_id,
            },
            "op": self.op,
            "actor": self.actor,
            "request_id": self.request_id,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "count": self.count,
        }


def _record_text(user_name: str, external_id: str | None, attribute: str) -> str:
    """A record as admins know it: its userName, and its externalId when that is not the
    value in dispute (it then tells two records with one userName apart)."""
    if external_id and attribute != "externalId":
        return f"{user_name} (externalId {external_id})"
    return user_name


@dataclass(frozen=True)
class SafetyVerdict:
    rule_file: str
    target: str
    removals: int
    projected: int
    removals_percent: float | None
    max_removals: int | None
    max_removals_percent: float | None
    verdict: str
    reason: str

    @property
    def quarantined(self) -> bool:
        return self.verdict == "quarantined"


@dataclass
class Plan:
    generated_at: str
    rules_version: str
    population: int
    only: list[str] | None
    status: str
    exit_code: int
    counts: dict[str, ActionCount]
    rules: dict[str, RuleCount]
    attention: list[AttentionItem]
    safety: list[SafetyVerdict]
    tracked: list[Tracked]
    """The intents ``bridge apply`` enqueues (to make, or failed: requeued in place), in order."""
    in_flight: list[Tracked] = field(default_factory=list)
    """The intents it leaves alone: pending in the outbox, or waiting on their target."""

    @property
    def intents(self) -> list[Intent]:
        """The intents ``bridge apply`` enqueues."""
        return [entry.intent for entry in self.tracked]

    def state_counts(self) -> dict[str, int]:
        """How many intents are in each state (every state present)."""
        found = dict.fromkeys(STATES, 0)
        for entry in (*self.tracked, *self.in_flight):
            found[entry.state] += 1
        return found

    @property
    def people_needing_attention(self) -> int:
        return len({person for item in self.attention for person in item.people})

    def count(self, action: str) -> int:
        found = self.counts.get(action)
        return found.count if found is not None else 0


__all__ = [
    "ACTIONS",
    "APPLIED",
    "EXAMPLES",
    "FAILED",
    "PENDING",
    "STATES",
    "TO_MAKE",
    "WAITING",
    "ActionCount",
    "AttentionItem",
    "Confirmed",
    "Ledger",
    "PersonOutcome",
    "Plan",
    "QueuedRow",
    "Refusal",
    "RuleCount",
    "SafetyVerdict",
    "Tracked",
    "action_of",
    "confirmed_view",
]
