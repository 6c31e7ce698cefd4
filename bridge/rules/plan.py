"""A plan over a whole population: what would change, who needs attention, is it safe (pure).

The caller (``bridge plan``, a nightly reconcile) runs the engine for every stored person and
rule file and hands one :class:`PersonOutcome` per (person, rule file) to :func:`build_plan`,
which counts, finds duplicate LMS identifiers and unknown role codes (one item per code), lists
the unresolved duplicate-identifier refusals it is handed (:class:`Refusal`), and applies each
rule file's safety thresholds. The caller diffs desired against what the LMS *confirmed* and hands
each intent in with where it stands (``PersonOutcome.tracked``, from a
:class:`~bridge.rules.plan_model.Ledger`): the plan's changes — what it counts, what makes it
exit 2, what ``bridge apply`` enqueues — are the intents still to make and the failed ones;
pending and waiting intents are shown, not sent again. :func:`render_text` shows the plan terraform-style;
:func:`plan_to_json` / :func:`plan_from_json` are the plan file ``bridge apply PLANFILE`` reads.
No database, no clock, no I/O: the timestamp is handed in.

The plan's parts live in :mod:`bridge.rules.plan_model`, the text in
:mod:`bridge.rules.plan_render`, the plan file (format ``bridge-plan/1``, documented there) in
:mod:`bridge.rules.plan_json`, the known role codes in :mod:`bridge.rules.rolecodes`; all are
re-exported here.
"""

from __future__ import annotations

import difflib
from bisect import insort
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from operator import itemgetter
from typing import Any

from bridge.rules.engine import REMOVALS
from bridge.rules.engine import Intent
from bridge.rules.engine import IntentKind
from bridge.rules.model import RuleFile
from bridge.rules.model import RuleSet
from bridge.rules.plan_json import FORMAT
from bridge.rules.plan_json import plan_from_json
from bridge.rules.plan_json import plan_to_json
from bridge.rules.plan_model import _ACTION_NAMES
from bridge.rules.plan_model import ACTIONS
from bridge.rules.plan_model import APPLIED
from bridge.rules.plan_model import EXAMPLES
from bridge.rules.plan_model import FAILED
from bridge.rules.plan_model import PENDING
from bridge.rules.plan_model import STATES
from bridge.rules.plan_model import TO_MAKE
from bridge.rules.plan_model import WAITING
from bridge.rules.plan_model import ActionCount
from bridge.rules.plan_model import AttentionItem
from bridge.rules.plan_model import Confirmed
from bridge.rules.plan_model import Ledger
from bridge.rules.plan_model import PersonOutcome
from bridge.rules.plan_model import Plan
from bridge.rules.plan_model import QueuedRow
from bridge.rules.plan_model import Refusal
from bridge.rules.plan_model import RuleCount
from bridge.rules.plan_model import SafetyVerdict
from bridge.rules.plan_model import Tracked
from bridge.rules.plan_model import action_of
from bridge.rules.plan_model import confirmed_view
from bridge.rules.plan_render import ATTENTION_LINES
from bridge.rules.plan_render import render_text
from bridge.rules.plan_render import summary_line
from bridge.rules.rolecodes import ROLE_CODES_ATTRIBUTE
from bridge.rules.rolecodes import RoleCodeTally
from bridge.rules.rolecodes import UnknownRoleCode
from bridge.rules.rolecodes import known_role_codes
from bridge.rules.rolecodes import unknown_role_codes

__all__ = [
    "ACTIONS",
    "ATTENTION_LINES",
    "APPLIED",
    "ActionCount",
    "AttentionItem",
    "Confirmed",
    "DUPLICATE_ATTRIBUTES",
    "EXAMPLES",
    "FAILED",
    "FORMAT",
    "Ledger",
    "PENDING",
    "PersonOutcome",
    "Plan",
    "QueuedRow",
    "ROLE_CODES_ATTRIBUTE",
    "Refusal",
    "RuleCount",
    "STATES",
    "SafetyVerdict",
    "TO_MAKE",
    "Tracked",
    "UnknownRoleCode",
    "WAITING",
    "action_of",
    "build_plan",
    "confirmed_view",
    "kept_intents",
    "known_role_codes",
    "plan_from_json",
    "plan_to_json",
    "render_text",
    "select_rules",
    "summary_line",
    "unknown_role_codes",
]


DUPLICATE_ATTRIBUTES = ("idnumber", "username", "email")
"""Account attributes that must be unique per target; username and email compare case-folded."""
_FOLDED_ATTRIBUTES = frozenset({"username", "email"})


_KIND_ORDER = {kind: index for index, kind in enumerate(IntentKind)}
_ATTENTION_ORDER = {
    "problem": 0,
    "blocked": 1,
    "duplicate-refused": 2,
    "duplicate": 3,
    "unknown-role-code": 4,
}
_REMOVAL_ACTIONS = frozenset(kind.value for kind in REMOVALS)
_ADDITIONS = frozenset({IntentKind.enrol, IntentKind.add_cohort_member})


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


def _tracked(outcome: PersonOutcome) -> list[Tracked]:
    """Each intent of an outcome with where it stands (still to make when not looked up)."""
    if outcome.tracked:
        return outcome.tracked
    return [Tracked(intent, label=outcome.label) for intent in outcome.intents]


def _kept(outcome: PersonOutcome, rules: set[str] | None) -> list[Tracked]:
    """The outcome's intents of the selected rules, plus the account creation they depend on.

    With ``only``, an enrolment into a new person's course still needs the account to exist:
    the account creation / reactivation of the same rule file is kept alongside it.
    """
    every = _tracked(outcome)
    if rules is None or outcome.rule_file in rules:
        return every
    kept = [entry for entry in every if entry.intent.rule in rules]
    if not any(entry.intent.kind in _ADDITIONS for entry in kept):
        return kept
    needed = [
        entry
        for entry in every
        if entry.intent.rule == outcome.rule_file
        and (
            entry.intent.kind == IntentKind.reactivate_account
            or (entry.intent.kind == IntentKind.upsert_account and entry.intent.data.get("create"))
        )
    ]
    if not needed:
        return kept
    kept.extend(needed)
    kept.sort(key=lambda entry: _KIND_ORDER[entry.intent.kind])
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


def _unknown_code_item(found: UnknownRoleCode) -> AttentionItem:
    """One item per unknown code: everyone holding it, a few by name, the nearest known code."""
    return AttentionItem(
        None,
        None,
        None,
        "unknown-role-code",
        found.reason(),
        people=found.people,
        details={
            "code": found.code,
            "count": found.count,
            "examples": list(found.examples),
            "suggestion": found.suggestion,
        },
    )


def _refusal_item(refusal: Refusal) -> AttentionItem:
    """A write refused for a duplicate identifier: both records, the attribute and value."""
    return AttentionItem(
        None,
        None,
        None,
        "duplicate-refused",
        refusal.reason(),
        people=refusal.people,
        details=refusal.as_dict(),
    )


def _in_order(chunks: list[tuple[str, list[Tracked]]]) -> list[Tracked]:
    """Intents by person, then kind (account before enrolments before removals), else as given.

    Sorting whole outcomes rather than single intents keeps this cheap; only a person with
    several rule files needs their intents merged.
    """
    chunks.sort(key=itemgetter(0))
    planned: list[Tracked] = []
    index, total = 0, len(chunks)
    while index < total:
        person, intents = chunks[index]
        index += 1
        if index < total and chunks[index][0] == person:
            merged = list(intents)
            while index < total and chunks[index][0] == person:
                merged.extend(chunks[index][1])
                index += 1
            merged.sort(key=lambda entry: _KIND_ORDER[entry.intent.kind])
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
    refusals: Sequence[Refusal] = (),
) -> Plan:
    """Count, check and judge every person's outcome in one pass (linear in the outcomes).

    ``projected_counts[rule_file]`` is how many people the LMS currently holds under the rule
    file (the base of the removal percentage). ``only`` restricts the plan to assignment ids
    and rule-file names (ValueError on a name the rules do not know): other rules' intents are
    dropped, except the account creation a kept enrolment needs, and rule files with no
    selected rule are left out entirely (attention and safety included).

    Counts, examples, safety and the status cover the intents ``bridge apply`` would enqueue
    (still to make, or failed); pending and waiting ones go to ``Plan.in_flight``. Each
    ``PersonOutcome.blocked`` reason becomes an attention item of kind ``blocked``; each
    unknown role code held by in-scope people one item of kind ``unknown-role-code``; each of
    ``refusals`` (the store's unresolved duplicate-identifier refusals) one item of kind
    ``duplicate-refused``, whatever ``only`` says (they belong to no rule file).
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
    chunks: list[tuple[str, list[Tracked]]] = []  # (person, that outcome's intents to apply)
    held: list[tuple[str, list[Tracked]]] = []  # (person, its pending and waiting intents)
    blocked_seen: set[tuple[str, str]] = set()
    # (target, attribute, value) → the first in-scope person holding it, and when a second
    # person turns up, everyone holding it: person → (label, rule file, value as mapped)
    owners: dict[tuple[str, str, str], tuple[str, str, str, Any]] = {}
    duplicates: dict[tuple[str, str, str], dict[str, tuple[str, str, Any]]] = {}
    codes = RoleCodeTally(ruleset)
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
        for why in outcome.blocked:
            if (person, why) not in blocked_seen:
                blocked_seen.add((person, why))
                attention.append(AttentionItem(person, label, rule_file_name, "blocked", why))
        entries = _kept(outcome, selected_rules)
        applied: list[Tracked] = []
        waits: list[Tracked] = []
        for entry in entries:
            if entry.state not in APPLIED:
                waits.append(entry)
                continue
            applied.append(entry)
            intent = entry.intent
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
        if applied:
            chunks.append((person, applied))
        if waits:
            held.append((person, waits))
        if outcome.role_codes and (outcome.in_scope or outcome.eligible):
            codes.add(person, label, outcome.role_codes)
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

    attention.extend(_duplicate_items(duplicates))
    attention.extend(_unknown_code_item(found) for found in codes.unknown())
    attention.extend(_refusal_item(refusal) for refusal in refusals)
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
        key=lambda item: (
            _ATTENTION_ORDER[item.kind],
            item.reason,
            item.label or "",
            item.person or "",
        )
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
        tracked=planned,
        in_flight=_in_order(held),
    )


def select_rules(ruleset: RuleSet, only: set[str] | None) -> set[str] | None:
    """The rule ids and rule-file names ``only`` keeps (None: everything); ValueError if unknown."""
    return _select(ruleset, only)[1]


def kept_intents(outcome: PersonOutcome, rules: set[str] | None) -> list[Intent]:
    """The intents of an outcome a plan restricted to ``rules`` keeps (see ``_kept``)."""
    return [entry.intent for entry in _kept(outcome, rules)]
