"""The parts of a plan (pure): per-person outcomes in, counts, attention items, safety verdicts out.

``ACTIONS`` names what a plan counts (intent kinds, upserts split into create and update);
:func:`bridge.rules.plan.build_plan` fills these, :mod:`bridge.rules.plan_render` and
:mod:`bridge.rules.plan_json` show and store them.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
from typing import Any

from bridge.rules.engine import Intent
from bridge.rules.engine import IntentKind
from bridge.rules.engine import Problem

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
    person: str
    label: str
    rule_file: str | None
    kind: str
    reason: str


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
    intents: list[Intent]

    @property
    def people_needing_attention(self) -> int:
        return len({item.person for item in self.attention})

    def count(self, action: str) -> int:
        found = self.counts.get(action)
        return found.count if found is not None else 0
