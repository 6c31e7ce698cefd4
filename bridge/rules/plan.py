"""A plan over a whole population: what would change, who needs attention, is it safe (pure).

The caller (``bridge plan``, a nightly reconcile) runs the engine for every stored person and
rule file and hands one :class:`PersonOutcome` per (person, rule file) to :func:`build_plan`,
which counts, finds duplicate LMS identifiers and unknown role codes, and applies each rule
file's safety thresholds. :func:`render_text` shows the plan terraform-style;
:func:`plan_to_json` / :func:`plan_from_json` are the plan file ``bridge apply PLANFILE`` reads.
No database, no clock, no I/O: the timestamp is handed in.

Plan JSON, format ``bridge-plan/1``
-----------------------------------

A single JSON object. Keys are always present (``null`` where noted); consumers must ignore
keys they do not know (the provision layer adds its own, e.g. a ``fingerprint`` of the
intents for stale-plan detection), producers add keys only in a backwards-compatible way, and
anything incompatible gets a new ``format``.

``format``
    The string ``"bridge-plan/1"``.
``generated_at``
    When the plan was computed (the caller's timestamp, ISO 8601 text, copied as given).
``rules_version``
    The content hash of the rules directory the plan was computed from (``RuleSet.version``).
    ``bridge apply`` should refuse a plan whose rules version is no longer current.
``population``
    How many stored people the plan looked at.
``only``
    ``null``, or the sorted list of assignment ids / rule-file names the plan was restricted to.
    A restricted plan holds only those rules' intents, plus the account creation (or
    reactivation) of the same rule file that a kept enrolment needs; rule files with no
    selected rule are left out of ``rules``, ``attention`` and ``safety``.
``status``
    ``"no-changes"`` (no intents), ``"changes"``, or ``"quarantined"`` (a rule file crossed a
    safety threshold: the plan needs an admin's approval before it is applied).
``exit_code``
    What ``bridge plan`` exits with: ``0`` no changes, ``2`` changes (also when quarantined).
    (``1``, an error, never appears in a plan.)
``counts``
    An object with one key per *action*, every action always present, in this order:
    ``create_account``, ``update_account`` (both count ``upsert_account`` intents, split on
    ``data.create``), ``reactivate_account``, ``enrol``, ``add_cohort_member``,
    ``suspend_enrolment``, ``unenrol``, ``remove_cohort_member``, ``suspend_account``. Each value
    is ``{"kind": intent kind, "count": int, "examples": [label, ...]}`` with up to 3 distinct
    person labels (those with the smallest person ids). ``kind`` is the action itself except
    for the two account actions, whose kind is ``upsert_account``: sum the entries of a kind
    to count its intents.
``rules``
    An object: rule id (an assignment id, or a rule-file name for account intents) →
    ``{"rule_file": name, "counts": {action: int}}``; ``counts`` holds non-zero actions only.
    Every rule of the planned rule files is listed (so a rule that matched nobody shows up
    with empty counts), in rule-set order, then rules known only from projected state (a rule
    deleted from its file whose people are being suspended), sorted.
``attention``
    A list of ``{"person", "label", "rule_file", "kind", "reason"}``, sorted by kind, reason,
    label, person. ``kind`` is ``"problem"`` (a missing required value, a transform that failed: the
    engine's problems; such a person gets no intents), ``"duplicate"`` (two in-scope people
    map to the same ``idnumber`` / ``username`` / ``email`` of one target, usernames and
    emails compared case-insensitively; reason e.g. ``duplicate idnumber E123 also used by
    jane.smith``; everyone holding the value is listed, each naming the others; their intents
    are *not* held back) or
    ``"unknown-role-code"`` (an in-scope person holds a role code that no condition of any rule
    file mentions; reason e.g. ``unknown role code ben_choice_2026 (did you mean
    BEN_CHOICE_2026?)``; ``rule_file`` is ``null``, as the code is unknown to every file).
``safety``
    One object per planned rule file, in rule-set order: ``{"rule_file", "target",
    "removals", "projected", "removals_percent", "max_removals", "max_removals_percent",
    "verdict", "reason"}``. ``removals`` counts the intents of kinds ``suspend_enrolment``,
    ``unenrol``, ``remove_cohort_member``, ``suspend_account``; ``projected`` is how many
    people the LMS currently holds under the rule file (the percentage's base);
    ``removals_percent`` is ``removals * 100 / projected`` (``null`` when nothing is projected
    and nothing removed; 100 when there are removals but nothing projected, so that such
    inconsistent input quarantines rather than passes); the limits are ``null`` when not set;
    ``verdict`` is ``"quarantined"`` when removals > max_removals or removals_percent >
    max_removals_percent (at the limit is ``"ok"``), else ``"ok"``; ``reason`` says why, for
    people.
``intents``
    Every intent to enqueue, each exactly ``Intent.as_dict()``: ``{"kind", "person",
    "target", "rule", "ref"?, "data"?}``. Ordered by person id, then by intent kind (account
    creation before enrolments before removals, the engine's order), then as the engine
    produced them, so that the same inputs always give the same file.
"""

from __future__ import annotations

import difflib
import json
from bisect import insort
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from operator import itemgetter
from typing import Any

from scim2_models import SCIMException
from scim2_models import ScimFilter
from scim2_models.path import CompareOperator
from scim2_models.path import Comparison
from scim2_models.path import FilterNode
from scim2_models.path import LogicalExpr
from scim2_models.path import Not
from scim2_models.path import ValuePath

from bridge.rules.engine import REMOVALS
from bridge.rules.engine import Intent
from bridge.rules.engine import IntentKind
from bridge.rules.engine import Problem
from bridge.rules.model import RuleFile
from bridge.rules.model import RuleSet

FORMAT = "bridge-plan/1"
EXAMPLES = 3
ATTENTION_LINES = 20
DUPLICATE_ATTRIBUTES = ("idnumber", "username", "email")
"""Account attributes that must be unique per target; username and email compare case-folded."""
_FOLDED_ATTRIBUTES = frozenset({"username", "email"})
ROLE_CODES_ATTRIBUTE = "rolecodes"

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
_KIND_ORDER = {kind: index for index, kind in enumerate(IntentKind)}
_ATTENTION_ORDER = {"problem": 0, "duplicate": 1, "unknown-role-code": 2}
_REMOVAL_ACTIONS = frozenset(kind.value for kind in REMOVALS)
_ADDITIONS = frozenset({IntentKind.enrol, IntentKind.add_cohort_member})


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


# -- known role codes ---------------------------------------------------------------------------


@dataclass
class _KnownCodes:
    exact: set[str] = field(default_factory=set)
    patterns: list[tuple[CompareOperator, str]] = field(default_factory=list)

    def knows(self, code: str) -> bool:
        if code in self.exact:
            return True
        for op, value in self.patterns:
            if op == CompareOperator.sw and code.startswith(value):
                return True
            if op == CompareOperator.ew and code.endswith(value):
                return True
            if op == CompareOperator.co and value in code:
                return True
        return False


def _collect_codes(node: FilterNode, known: _KnownCodes, *, inside_role_codes: bool) -> None:
    if isinstance(node, Comparison):
        attr = node.attr_path.attr.lower()
        on_codes = attr == ROLE_CODES_ATTRIBUTE or (
            inside_role_codes and attr == "value" and node.attr_path.uri is None
        )
        if on_codes and isinstance(node.value, str):
            if node.op in (CompareOperator.sw, CompareOperator.ew, CompareOperator.co):
                known.patterns.append((node.op, node.value))
            else:
                known.exact.add(node.value)
    elif isinstance(node, ValuePath):
        _collect_codes(
            node.val_filter,
            known,
            inside_role_codes=node.attr_path.attr.lower() == ROLE_CODES_ATTRIBUTE,
        )
    elif isinstance(node, Not):
        _collect_codes(node.expr, known, inside_role_codes=inside_role_codes)
    elif isinstance(node, LogicalExpr):
        for term in node.terms:
            _collect_codes(term, known, inside_role_codes=inside_role_codes)


def _conditions(rule_file: RuleFile) -> Iterable[str]:
    if rule_file.scope.filter:
        yield rule_file.scope.filter
    for assignment in rule_file.assignments:
        yield assignment.when


def known_role_codes(ruleset: RuleSet) -> _KnownCodes:
    """Every role code a condition of any rule file compares ``roleCodes`` (any URN) with."""
    known = _KnownCodes()
    for rule_file in ruleset.files:
        for text in _conditions(rule_file):
            try:
                node = ScimFilter(text).ast
            except (SCIMException, ValueError):
                continue  # the loader reports bad filters; a plan is not the place
            _collect_codes(node, known, inside_role_codes=False)
    return known


class _RoleCodeChecker:
    """Unknown-role-code reasons, computed once per distinct code (people share codes)."""

    def __init__(self, known: _KnownCodes) -> None:
        self.known = known
        self.candidates = sorted(known.exact)
        self.folded: dict[str, str] = {}
        for code in self.candidates:
            self.folded.setdefault(code.casefold(), code)
        self.cache: dict[str, str | None] = {}

    def reason(self, code: str) -> str | None:
        if code in self.cache:
            return self.cache[code]
        reason: str | None = None
        if not self.known.knows(code):
            suggestion = self.folded.get(code.casefold())
            if suggestion is None:
                close = difflib.get_close_matches(
                    code.casefold(), list(self.folded), n=1, cutoff=0.75
                )
                suggestion = self.folded[close[0]] if close else None
            reason = f"unknown role code {code}"
            if suggestion is not None:
                reason += f" (did you mean {suggestion}?)"
        self.cache[code] = reason
        return reason


# -- building -----------------------------------------------------------------------------------


def _select(ruleset: RuleSet, only: set[str] | None) -> tuple[list[RuleFile], set[str] | None]:
    """The rule files a plan covers, and the rule ids whose intents it keeps (None: all)."""
    if only is None:
        return list(ruleset.files), None
    names: set[str] = set()
    for rule_file in ruleset.files:
        names.add(rule_file.name)
        names.update(assignment.id for assignment in rule_file.assignments)
    unknown = sorted(set(only) - names)
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, sorted(names), n=1)
            hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ValueError(
            f"only: no rule file or assignment named {', '.join(hints)}; "
            f"known: {', '.join(sorted(names))}"
        )
    files = [f for f in ruleset.files if f.name in only or any(a.id in only for a in f.assignments)]
    return files, set(only)


def _kept(outcome: PersonOutcome, rules: set[str] | None) -> list[Intent]:
    """The outcome's intents of the selected rules, plus the account creation they depend on.

    With ``only``, an enrolment into a new person's course still needs the account to exist:
    the account creation / reactivation of the same rule file is kept alongside it.
    """
    if rules is None or outcome.rule_file in rules:
        return outcome.intents
    kept = [intent for intent in outcome.intents if intent.rule in rules]
    if not any(intent.kind in _ADDITIONS for intent in kept):
        return kept
    needed = [
        intent
        for intent in outcome.intents
        if intent.rule == outcome.rule_file
        and (
            intent.kind == IntentKind.reactivate_account
            or (intent.kind == IntentKind.upsert_account and intent.data.get("create"))
        )
    ]
    if not needed:
        return kept
    kept.extend(needed)
    kept.sort(key=lambda intent: _KIND_ORDER[intent.kind])
    return kept


def _duplicate_items(
    duplicates: Mapping[tuple[str, str, str], Mapping[str, tuple[str, str, Any]]],
) -> Iterable[AttentionItem]:
    """Everyone sharing an identifier, each told who else holds it (by person id order)."""
    for (_, attribute, _), holders in duplicates.items():
        people = sorted(holders)
        for person in people:
            label, rule_file, raw = holders[person]
            others = [holders[other][0] for other in people if other != person]
            shown = ", ".join(others[:EXAMPLES])
            if len(others) > EXAMPLES:
                shown += f" and {len(others) - EXAMPLES} more"
            yield AttentionItem(
                person,
                label,
                rule_file,
                "duplicate",
                f"duplicate {attribute} {raw} also used by {shown}",
            )


def _in_order(chunks: list[tuple[str, list[Intent]]]) -> list[Intent]:
    """Intents by person, then kind (account before enrolments before removals), else as given.

    Sorting whole outcomes rather than single intents keeps this cheap; only a person with
    several rule files needs their intents merged.
    """
    chunks.sort(key=itemgetter(0))
    planned: list[Intent] = []
    index, total = 0, len(chunks)
    while index < total:
        person, intents = chunks[index]
        index += 1
        if index < total and chunks[index][0] == person:
            merged = list(intents)
            while index < total and chunks[index][0] == person:
                merged.extend(chunks[index][1])
                index += 1
            merged.sort(key=lambda intent: _KIND_ORDER[intent.kind])
            planned.extend(merged)
        else:
            planned.extend(intents)
    return planned


def _safety(rule_file: RuleFile, removals: int, projected: int) -> SafetyVerdict:
    limits = rule_file.safety
    # removals with nothing projected (inconsistent input) count as all of it: fail safe
    percent: float | None = (
        removals * 100 / projected if projected > 0 else (100.0 if removals else None)
    )
    reasons = []
    if limits.max_removals is not None and removals > limits.max_removals:
        reasons.append(f"{removals} removals exceed max_removals {limits.max_removals}")
    if (
        limits.max_removals_percent is not None
        and percent is not None
        and percent > limits.max_removals_percent
    ):
        base = f"of {projected} projected" if projected else "with nothing projected"
        reasons.append(
            f"{removals} removals are {percent:.1f}% {base}, "
            f"above max_removals_percent {limits.max_removals_percent:g}"
        )
    if reasons:
        verdict, reason = "quarantined", "; ".join(reasons)
    else:
        verdict = "ok"
        shown = f" ({percent:.1f}%)" if percent is not None else ""
        bounds = []
        if limits.max_removals is not None:
            bounds.append(f"max {limits.max_removals}")
        if limits.max_removals_percent is not None:
            bounds.append(f"max {limits.max_removals_percent:g}%")
        limit_text = ", ".join(bounds) if bounds else "no limits set"
        reason = f"{removals} removals of {projected} projected{shown}; {limit_text}"
    return SafetyVerdict(
        rule_file=rule_file.name,
        target=rule_file.target,
        removals=removals,
        projected=projected,
        removals_percent=percent,
        max_removals=limits.max_removals,
        max_removals_percent=(
            float(limits.max_removals_percent) if limits.max_removals_percent is not None else None
        ),
        verdict=verdict,
        reason=reason,
    )


def build_plan(
    ruleset: RuleSet,
    outcomes: Iterable[PersonOutcome],
    *,
    population: int,
    projected_counts: Mapping[str, int],
    generated_at: str,
    only: set[str] | None = None,
    rules_version: str,
    unique_attributes: tuple[str, ...] = DUPLICATE_ATTRIBUTES,
) -> Plan:
    """Count, check and judge every person's outcome in one pass (linear in the outcomes).

    ``projected_counts[rule_file]`` is how many people the LMS currently holds under the rule
    file (the base of the removal percentage). ``only`` restricts the plan to assignment ids
    and rule-file names (ValueError on a name the rules do not know): other rules' intents are
    dropped, except the account creation a kept enrolment needs, and rule files with no
    selected rule are left out entirely (attention and safety included).
    """
    files, selected_rules = _select(ruleset, only)
    by_name = {f.name: f for f in files}
    all_names = {f.name for f in ruleset.files}

    rules: dict[str, RuleCount] = {}
    for rule_file in files:
        whole = selected_rules is None or rule_file.name in selected_rules
        rules.setdefault(rule_file.name, RuleCount(rule_file.name))
        for assignment in rule_file.assignments:
            if whole or (selected_rules is not None and assignment.id in selected_rules):
                rules.setdefault(assignment.id, RuleCount(rule_file.name))

    # The loop below runs once per outcome (100,000s): flat dicts and local names only.
    tally: dict[tuple[str, str, str], int] = {}  # (rule file, rule, action) → n
    examples: dict[str, list[tuple[str, str]]] = {action: [] for action in _ACTION_NAMES}
    attention: list[AttentionItem] = []
    chunks: list[tuple[str, list[Intent]]] = []  # (person, that outcome's intents)
    # (target, attribute, value) → the first in-scope person holding it, and when a second
    # person turns up, everyone holding it: person → (label, rule file, value as mapped)
    owners: dict[tuple[str, str, str], tuple[str, str, str, Any]] = {}
    duplicates: dict[tuple[str, str, str], dict[str, tuple[str, str, Any]]] = {}
    codes_checked: set[str] = set()
    checker = _RoleCodeChecker(known_role_codes(ruleset))
    action_by_kind = {kind: kind.value for kind in IntentKind}
    upsert = IntentKind.upsert_account
    folded = _FOLDED_ATTRIBUTES

    for outcome in outcomes:
        rule_file_name = outcome.rule_file
        if rule_file_name not in by_name:
            if rule_file_name in all_names:
                continue  # a rule file ``only`` leaves out
            raise ValueError(f"outcome for unknown rule file {rule_file_name!r}")
        person, label = outcome.person_id, outcome.label
        for problem in outcome.problems:
            attention.append(
                AttentionItem(person, label, rule_file_name, "problem", problem.reason)
            )
        intents = outcome.intents if selected_rules is None else _kept(outcome, selected_rules)
        for intent in intents:
            kind = intent.kind
            if kind is upsert:
                action = "create_account" if intent.data.get("create") else "update_account"
            else:
                action = action_by_kind[kind]
            key3 = (rule_file_name, intent.rule, action)
            tally[key3] = tally.get(key3, 0) + 1
            # examples: the people with the smallest ids, whatever order outcomes come in
            shown = examples[action]
            if (len(shown) < EXAMPLES or person < shown[-1][0]) and all(
                person != someone for someone, _ in shown
            ):
                insort(shown, (person, label))
                del shown[EXAMPLES:]
        if intents:
            chunks.append((person, intents))
        if not outcome.in_scope:
            continue
        account = outcome.account
        for attribute in unique_attributes:
            raw = account.get(attribute)
            if raw is None or raw == "" or isinstance(raw, bool) or not isinstance(raw, str | int):
                continue
            value = str(raw).strip()
            if attribute in folded:
                value = value.casefold()
            if not value:
                continue
            key = (outcome.target, attribute, value)
            owner = owners.setdefault(key, (person, label, rule_file_name, raw))
            if owner[0] != person:
                holders = duplicates.setdefault(key, {owner[0]: owner[1:]})
                holders.setdefault(person, (label, rule_file_name, raw))
        if outcome.role_codes and person not in codes_checked:
            codes_checked.add(person)
            for code in dict.fromkeys(outcome.role_codes):
                reason = checker.reason(str(code))
                if reason is not None:
                    attention.append(
                        AttentionItem(person, label, None, "unknown-role-code", reason)
                    )

    attention.extend(_duplicate_items(duplicates))
    counts = {
        action: ActionCount(0, [label for _, label in examples[action]]) for action in _ACTION_NAMES
    }
    removals = dict.fromkeys(by_name, 0)
    extra_rules: dict[str, RuleCount] = {}
    for (rule_file_name, rule_id, action), number in tally.items():
        counts[action].count += number
        if action in _REMOVAL_ACTIONS:
            removals[rule_file_name] += number
        rule_count = rules.get(rule_id)
        if rule_count is None:
            rule_count = extra_rules.setdefault(rule_id, RuleCount(rule_file_name))
        rule_count.counts[action] = rule_count.counts.get(action, 0) + number
    for rule_id in sorted(extra_rules):
        rules.setdefault(rule_id, extra_rules[rule_id])
    for rule_count in rules.values():
        rule_count.counts = {
            a: rule_count.counts[a] for a in _ACTION_NAMES if a in rule_count.counts
        }
    planned = _in_order(chunks)
    attention.sort(
        key=lambda item: (_ATTENTION_ORDER[item.kind], item.reason, item.label, item.person)
    )
    safety = [_safety(f, removals[f.name], int(projected_counts.get(f.name, 0))) for f in files]
    if any(verdict.quarantined for verdict in safety):
        status = "quarantined"
    elif planned:
        status = "changes"
    else:
        status = "no-changes"
    return Plan(
        generated_at=generated_at,
        rules_version=rules_version,
        population=population,
        only=sorted(only) if only is not None else None,
        status=status,
        exit_code=0 if status == "no-changes" else 2,
        counts=counts,
        rules=rules,
        attention=attention,
        safety=safety,
        intents=planned,
    )


# -- text ---------------------------------------------------------------------------------------

_COLORS = {"+": "32", "~": "33", "-": "31", "bold": "1", "dim": "2", "red": "31", "green": "32"}


def _paint(text: str, style: str, color: bool) -> str:
    return f"\x1b[{_COLORS[style]}m{text}\x1b[0m" if color else text


def _examples(examples: list[str], count: int) -> str:
    if not count:
        return ""
    shown = list(examples)
    rest = count - len(shown)
    if rest > 0:
        shown.append(f"+{rest} more")
    return f"  ({', '.join(shown)})"


def _plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def summary_line(plan: Plan) -> str:
    """The last line of ``bridge plan``: ``Plan: 200 accounts to create, …; safety: ok.``"""
    people = plan.people_needing_attention
    attention = (
        f"{_plural(people, 'person needs', 'people need')} attention"
        if people
        else "0 people need attention"
    )
    quarantined = [v.rule_file for v in plan.safety if v.quarantined]
    safety = f"safety: quarantined ({', '.join(quarantined)})" if quarantined else "safety: ok"
    if not plan.intents:
        return f"No changes. {attention}; {safety}."
    count = plan.count
    parts = [
        _plural(count("create_account"), "account to create", "accounts to create"),
        f"{count('update_account')} to update",
    ]
    if count("reactivate_account"):
        parts.append(f"{count('reactivate_account')} to reactivate")
    parts.append(_plural(count("enrol"), "enrolment", "enrolments"))
    if count("add_cohort_member"):
        parts.append(_plural(count("add_cohort_member"), "cohort membership", "cohort memberships"))
    suspensions = count("suspend_enrolment") + count("suspend_account")
    parts.append(_plural(suspensions, "suspension", "suspensions"))
    parts.append(_plural(count("unenrol") + count("remove_cohort_member"), "removal", "removals"))
    return f"Plan: {', '.join(parts)}; {attention}; {safety}."


def _attention_lines(plan: Plan) -> list[str]:
    groups: dict[tuple[str, str], list[AttentionItem]] = {}
    for item in plan.attention:
        groups.setdefault((item.kind, item.reason), []).append(item)
    lines = []
    for (_, reason), items in groups.items():
        where = f"[{items[0].rule_file}] " if items[0].rule_file else ""
        if len(items) == 1:
            lines.append(f"{items[0].label}: {where}{reason}")
        else:
            labels = list(dict.fromkeys(item.label for item in items))
            shown = labels[:EXAMPLES] + (
                [f"+{len(labels) - EXAMPLES} more"] if len(labels) > EXAMPLES else []
            )
            lines.append(
                f"{where}{reason}: {_plural(len(labels), 'person', 'people')} ({', '.join(shown)})"
            )
    if len(lines) > ATTENTION_LINES:
        rest = len(lines) - ATTENTION_LINES + 1
        lines = lines[: ATTENTION_LINES - 1] + [f"+{rest} more (bridge plan --json lists all)"]
    return lines


def render_text(plan: Plan, *, color: bool = False) -> str:
    """The plan for people, terraform-style; ANSI colours when ``color``."""
    out = [
        _paint(f"Plan for rules {plan.rules_version}", "bold", color)
        + f" — {_plural(plan.population, 'person', 'people')} — generated {plan.generated_at}",
    ]
    if plan.only is not None:
        out.append(f"Only: {', '.join(plan.only)}")
    out.append("")
    width = max(len(label) for _, _, _, label in ACTIONS)
    for action, _, symbol, label in ACTIONS:
        tally = plan.counts.get(action, ActionCount())
        if not tally.count:
            continue
        line = (
            f"  {symbol} {label:<{width}}  {tally.count:>7}{_examples(tally.examples, tally.count)}"
        )
        out.append(_paint(line, symbol, color))
    if not plan.intents:
        out.append("  (nothing to do)")

    if plan.rules:
        out.append("")
        rule_width = max(len("rule"), *(len(rule) for rule in plan.rules))
        file_width = max(len("file"), *(len(r.rule_file) for r in plan.rules.values()))
        out.append(
            f"  {'rule':<{rule_width}}  {'file':<{file_width}}  {'+':>7}  {'~':>7}  {'-':>7}"
        )
        for rule_id, rule_count in plan.rules.items():
            sums = {"+": 0, "~": 0, "-": 0}
            for action, number in rule_count.counts.items():
                sums[_SYMBOL.get(action, "~")] += number
            out.append(
                f"  {rule_id:<{rule_width}}  {rule_count.rule_file:<{file_width}}  "
                f"{sums['+']:>7}  {sums['~']:>7}  {sums['-']:>7}"
            )

    if plan.attention:
        out.append("")
        people = plan.people_needing_attention
        out.append(_paint(f"Attention ({_plural(people, 'person', 'people')}):", "bold", color))
        out.extend(f"  ! {line}" for line in _attention_lines(plan))

    if plan.safety:
        out.append("")
        out.append(_paint("Safety:", "bold", color))
        for verdict in plan.safety:
            word = (
                _paint("QUARANTINED", "red", color)
                if verdict.quarantined
                else _paint("ok", "green", color)
            )
            out.append(f"  {verdict.rule_file}: {word} — {verdict.reason}")
        if plan.status == "quarantined":
            out.append("  the plan is quarantined: an admin must approve it before it is applied")

    out.append("")
    out.append(_paint(summary_line(plan), "bold", color))
    return "\n".join(out) + "\n"


# -- JSON ---------------------------------------------------------------------------------------


def plan_to_json(plan: Plan) -> dict[str, Any]:
    """The plan file (format ``bridge-plan/1``, documented in this module's docstring)."""
    return {
        "format": FORMAT,
        "generated_at": plan.generated_at,
        "rules_version": plan.rules_version,
        "population": plan.population,
        "only": list(plan.only) if plan.only is not None else None,
        "status": plan.status,
        "exit_code": plan.exit_code,
        "counts": {
            action: {
                "kind": _KIND_OF_ACTION[action],
                "count": tally.count,
                "examples": list(tally.examples),
            }
            for action, tally in plan.counts.items()
        },
        "rules": {
            rule_id: {"rule_file": rule_count.rule_file, "counts": dict(rule_count.counts)}
            for rule_id, rule_count in plan.rules.items()
        },
        "attention": [
            {
                "person": item.person,
                "label": item.label,
                "rule_file": item.rule_file,
                "kind": item.kind,
                "reason": item.reason,
            }
            for item in plan.attention
        ],
        "safety": [
            {
                "rule_file": v.rule_file,
                "target": v.target,
                "removals": v.removals,
                "projected": v.projected,
                "removals_percent": v.removals_percent,
                "max_removals": v.max_removals,
                "max_removals_percent": v.max_removals_percent,
                "verdict": v.verdict,
                "reason": v.reason,
            }
            for v in plan.safety
        ],
        "intents": [intent.as_dict() for intent in plan.intents],
    }


class _Reader:
    """Typed access to the plan JSON that turns every surprise into a clear ValueError."""

    def __init__(self, data: Any, where: str) -> None:
        if not isinstance(data, dict):
            raise ValueError(f"plan file: {where} must be an object, not {_kind(data)}")
        self.data = data
        self.where = where

    def get(self, key: str, kind: type | tuple[type, ...], *, nullable: bool = False) -> Any:
        if key not in self.data:
            raise ValueError(f"plan file: {self.where} has no {key!r}")
        value = self.data[key]
        if value is None and nullable:
            return None
        ok = isinstance(value, kind) and not (
            isinstance(value, bool) and kind in (int, float, (int, float))
        )
        if not ok:
            raise ValueError(f"plan file: {self.where}.{key} has the wrong type ({_kind(value)})")
        return value


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _number(value: Any) -> float | None:
    return float(value) if value is not None else None


_INTENT_KINDS = {kind.value: kind for kind in IntentKind}


def _intent_error(index: int, raw: Any) -> ValueError:
    where = f"intents[{index}]"
    entry = _Reader(raw, where)  # raises when not an object
    kind = entry.get("kind", str)
    if kind not in _INTENT_KINDS:
        return ValueError(
            f"plan file: {where} has unknown kind {kind!r} (known: {', '.join(_INTENT_KINDS)})"
        )
    for key in ("person", "target", "rule"):
        entry.get(key, str)
    if "ref" in raw:
        entry.get("ref", str, nullable=True)
    if "data" in raw:
        entry.get("data", dict)
    return ValueError(f"plan file: {where} is not a valid intent")


def plan_from_json(data: Any) -> Plan:
    """Read a plan file back; ValueError, saying what is wrong, on anything but bridge-plan/1."""
    if not isinstance(data, dict):
        raise ValueError(f"not a plan file: expected a JSON object, got {_kind(data)}")
    found = data.get("format")
    if found != FORMAT:
        raise ValueError(
            f"not a plan file of format {FORMAT!r} (format is {json.dumps(found)}); "
            "make the plan again with this bridge's `bridge plan --json`"
        )
    top = _Reader(data, "plan")
    status = top.get("status", str)
    if status not in ("no-changes", "changes", "quarantined"):
        raise ValueError(f"plan file: unknown status {status!r}")
    only = top.get("only", list, nullable=True)
    counts: dict[str, ActionCount] = {}
    for action, raw in top.get("counts", dict).items():
        entry = _Reader(raw, f"counts.{action}")
        if action not in _KIND_OF_ACTION:
            raise ValueError(f"plan file: counts has unknown action {action!r}")
        examples = entry.get("examples", list)
        if not all(isinstance(label, str) for label in examples):
            raise ValueError(f"plan file: counts.{action}.examples must be labels (text)")
        counts[action] = ActionCount(entry.get("count", int), list(examples))
    rules: dict[str, RuleCount] = {}
    for rule_id, raw in top.get("rules", dict).items():
        entry = _Reader(raw, f"rules.{rule_id}")
        rule_counts = entry.get("counts", dict)
        if not all(isinstance(n, int) for n in rule_counts.values()):
            raise ValueError(f"plan file: rules.{rule_id}.counts must map actions to integers")
        rules[rule_id] = RuleCount(entry.get("rule_file", str), dict(rule_counts))
    attention: list[AttentionItem] = []
    for index, raw in enumerate(top.get("attention", list)):
        try:
            item = AttentionItem(
                raw["person"], raw["label"], raw["rule_file"], raw["kind"], raw["reason"]
            )
        except (KeyError, TypeError):
            item = None
        if (
            item is None
            or type(item.person) is not str
            or type(item.label) is not str
            or (item.rule_file is not None and type(item.rule_file) is not str)
            or type(item.kind) is not str
            or type(item.reason) is not str
        ):
            entry = _Reader(raw, f"attention[{index}]")
            for key in ("person", "label", "kind", "reason"):
                entry.get(key, str)
            entry.get("rule_file", str, nullable=True)
            raise ValueError(f"plan file: attention[{index}] is not a valid entry")
        attention.append(item)
    safety = []
    for index, raw in enumerate(top.get("safety", list)):
        entry = _Reader(raw, f"safety[{index}]")
        safety.append(
            SafetyVerdict(
                rule_file=entry.get("rule_file", str),
                target=entry.get("target", str),
                removals=entry.get("removals", int),
                projected=entry.get("projected", int),
                removals_percent=_number(
                    entry.get("removals_percent", (int, float), nullable=True)
                ),
                max_removals=entry.get("max_removals", int, nullable=True),
                max_removals_percent=_number(
                    entry.get("max_removals_percent", (int, float), nullable=True)
                ),
                verdict=entry.get("verdict", str),
                reason=entry.get("reason", str),
            )
        )
    intents: list[Intent] = []
    append = intents.append
    for index, raw in enumerate(top.get("intents", list)):
        # fast path (a plan file holds 100,000s of intents); _intent_error explains failures
        try:
            kind = _INTENT_KINDS[raw["kind"]]
            person, target, rule = raw["person"], raw["target"], raw["rule"]
            ref, data_value = raw.get("ref"), raw.get("data", {})
        except (KeyError, TypeError, AttributeError):
            raise _intent_error(index, raw) from None
        if (
            type(person) is not str
            or type(target) is not str
            or type(rule) is not str
            or (ref is not None and type(ref) is not str)
            or type(data_value) is not dict
        ):
            raise _intent_error(index, raw)
        append(Intent(kind, person, target, rule, ref, data_value))
    exit_code = top.get("exit_code", int)
    if exit_code not in (0, 2):
        raise ValueError(f"plan file: exit_code must be 0 or 2, not {exit_code}")
    return Plan(
        generated_at=top.get("generated_at", str),
        rules_version=top.get("rules_version", str),
        population=top.get("population", int),
        only=[str(name) for name in only] if only is not None else None,
        status=status,
        exit_code=exit_code,
        counts=counts,
        rules=rules,
        attention=attention,
        safety=safety,
        intents=intents,
    )


def select_rules(ruleset: RuleSet, only: set[str] | None) -> set[str] | None:
    """The rule ids and rule-file names ``only`` keeps (None: everything); ValueError if unknown."""
    return _select(ruleset, only)[1]


def kept_intents(outcome: PersonOutcome, rules: set[str] | None) -> list[Intent]:
    """The intents of an outcome a plan restricted to ``rules`` keeps (see ``_kept``)."""
    return _kept(outcome, rules)
