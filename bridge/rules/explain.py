"""``bridge explain PERSON``: why the rules want what they want for one person (pure).

For each rule file: the scope filter and its verdict, the pilot admission, each mapping
(attribute ← source path: source value → result, or the problem), each assignment (id,
file:line, condition, verdict, and what the LMS confirmed), and the resulting intents — the
diff of desired against what the LMS *confirmed*, each with where it stands (still to make,
failed, pending in the outbox, waiting on its target: the same :class:`Ledger` as ``bridge
plan``, so the two always agree). The caller evaluates the conditions (the verdicts), admits
or not (:func:`bridge.rules.pilot.admission`, with the plan's draw), reads the links and the
outbox, and runs the engine — ``Planner.explain`` is the plan restricted to one person; this
module only lines the evidence up. Conditions are shown with the rule file's aliases put back
(``roleCodes eq "X"`` rather than the full URN path); the JSON carries both forms.

JSON (``explanation_to_json``, format ``bridge-explain/1``): ``{"format", "person", "label",
"rules_version", "rule_files": [...]}``, one entry per rule file in rule-set order:
``{"rule_file", "path", "target", "scope": {"filter", "expanded", "verdict"},
"pilot": {"settings" (null without a pilot), "admitted", "reason"}, "in_scope", "active",
"mapping": [{"attribute", "source", "expanded_source", "source_value", "result", "problem",
"required", "on_create_only", "evaluated"}], "assignments": [{"id", "kind", "ref", "where"
(file:line), "condition", "expanded_condition", "verdict" (true / false / null: not
evaluated), "otherwise", "confirmed" (the LMS's entry: ``{"status", "at", "due", …}`` or
null)}], "lms": {"looked_up" (false: no link evidence was given), "lms_user_id",
"has_account", "account_at", "confirmed_at" (the account's, else the last confirmation),
"active"}, "waiting" (why the target's intents wait, or null),
"blocked" (a dead letter holding the person's intents back, or null), "intents":
[Intent.as_dict() + {"state", "outbox"?, "blocked_by"?, "waiting"?} as in ``bridge-plan/1``],
"problems": [{"person", "rule", "reason"}]}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from functools import partial
from typing import Any

from scim2_models import Path
from scim2_models import SCIMException
from scim2_models.path import AttrPath

from bridge.rules.aliases import rewrite_filter
from bridge.rules.aliases import rewrite_path
from bridge.rules.engine import Desired
from bridge.rules.engine import Intent
from bridge.rules.engine import Problem
from bridge.rules.engine import Verdicts
from bridge.rules.engine import state_key
from bridge.rules.model import RuleFile
from bridge.rules.model import RuleSet
from bridge.rules.plan_model import Confirmed
from bridge.rules.plan_model import Ledger
from bridge.rules.plan_model import Tracked

FORMAT = "bridge-explain/1"


@dataclass
class MappingLine:
    attribute: str
    source: str | None
    """The SCIM path as written (aliases put back); None for a constant."""
    expanded_source: str | None
    source_value: Any
    result: Any
    problem: str | None
    required: bool
    on_create_only: bool
    evaluated: bool
    """False when the person is out of scope (the engine maps only in-scope people)."""


@dataclass
class AssignmentLine:
    id: str
    kind: str
    ref: str
    where: str
    """``file:line`` of the assignment in its rule file."""
    condition: str
    expanded_condition: str
    verdict: bool | None
    """None when the caller did not evaluate the condition."""
    otherwise: str
    confirmed: dict[str, Any] | None = None
    """What the LMS confirmed for it (``status``, ``at``, ``due``…); None: nothing (or not read)."""


@dataclass
class FileExplanation:
    rule_file: str
    path: str
    target: str
    scope_filter: str | None
    expanded_scope_filter: str | None
    scope_verdict: bool | None
    """None when the rule file has no scope filter (everyone) or it was not evaluated."""
    pilot: dict[str, Any] | None
    admitted: bool
    admission_reason: str
    in_scope: bool
    active: bool
    mappings: list[MappingLine] = field(default_factory=list)
    assignments: list[AssignmentLine] = field(default_factory=list)
    intents: list[Intent] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    tracked: list[Tracked] = field(default_factory=list)
    """Each intent with where it stands, in the order of ``intents``."""
    lms: Confirmed | None = None
    """What the target's LMS confirmed for the person (None: no link)."""
    looked_up: bool = False
    """Whether the caller read the links (else ``lms`` says nothing)."""
    waiting: str | None = None
    blocked: str | None = None


@dataclass
class Explanation:
    person_id: str
    label: str
    rules_version: str
    files: list[FileExplanation] = field(default_factory=list)


# -- aliases put back ---------------------------------------------------------------------------


def _alias_table(aliases: Mapping[str, str]) -> dict[tuple[str | None, str, str | None], str]:
    table: dict[tuple[str | None, str, str | None], str] = {}
    for alias, path in aliases.items():
        try:
            node = Path(path).ast
        except (SCIMException, ValueError):
            continue
        if isinstance(node, AttrPath):
            key = (node.uri.lower() if node.uri else None, node.attr.lower(), node.sub_attr)
            table.setdefault(key, alias)
    return table


def _contract_attr(
    attr_path: AttrPath, table: Mapping[tuple[str | None, str, str | None], str]
) -> AttrPath:
    uri = attr_path.uri.lower() if attr_path.uri else None
    alias = table.get((uri, attr_path.attr.lower(), attr_path.sub_attr))
    if alias is not None:
        return AttrPath(alias)
    alias = table.get((uri, attr_path.attr.lower(), None))
    if alias is not None:
        return AttrPath(alias, attr_path.sub_attr)
    return attr_path


def contract_filter(text: str, aliases: Mapping[str, str]) -> str:
    """A filter as an admin writes it: long URN paths replaced by the file's aliases."""
    table = _alias_table(aliases)
    if not table:
        return text
    return rewrite_filter(text, partial(_contract_attr, table=table))


def contract_path(text: str, aliases: Mapping[str, str]) -> str:
    """An attribute path with long URN paths replaced by the file's aliases."""
    table = _alias_table(aliases)
    if not table:
        return text
    return rewrite_path(text, partial(_contract_attr, table=table))


# -- building -----------------------------------------------------------------------------------


def _pilot(rule_file: RuleFile) -> dict[str, Any] | None:
    pilot = rule_file.scope.pilot
    if pilot is None:
        return None
    return {
        "max_people": pilot.max_people,
        "sample_percent": pilot.sample_percent,
        "seed": pilot.seed,
        "ends": pilot.ends.isoformat() if pilot.ends is not None else None,
    }


def _mapping_problem(attribute: str, problems: list[Problem]) -> str | None:
    for problem in problems:
        if problem.reason.startswith(f"{attribute}: ") or problem.reason.startswith(
            f"missing required {attribute} "
        ):
            return problem.reason
    return None


def _explain_file(
    rule_file: RuleFile,
    verdicts: Verdicts,
    admitted: bool,
    admission_reason: str,
    desired: Desired,
    intents: list[Intent],
    *,
    person_id: str,
    label: str,
    ledger: Ledger | None,
    confirmed: Mapping[str, Confirmed | None] | None,
) -> FileExplanation:
    aliases = rule_file.aliases
    scope_text = rule_file.scope.filter
    if admitted and scope_text and verdicts.get(scope_text) is False:
        raise ValueError(
            f"{rule_file.name}: admitted by the pilot but outside the scope filter "
            "(bridge.rules.pilot.admission never says so)"
        )
    explained = FileExplanation(
        rule_file=rule_file.name,
        path=rule_file.path,
        target=rule_file.target,
        scope_filter=contract_filter(scope_text, aliases) if scope_text else None,
        expanded_scope_filter=scope_text,
        scope_verdict=verdicts.get(scope_text) if scope_text else None,
        pilot=_pilot(rule_file),
        admitted=admitted,
        admission_reason=admission_reason,
        in_scope=desired.in_scope,
        active=desired.active,
        intents=list(intents),
        problems=list(desired.problems),
        looked_up=confirmed is not None,
        lms=confirmed.get(rule_file.target) if confirmed is not None else None,
    )
    if ledger is None:
        explained.tracked = [Tracked(intent, label=label) for intent in intents]
    else:
        explained.tracked = [ledger.track(intent, label) for intent in intents]
        explained.waiting = ledger.waiting.get(rule_file.target)
        explained.blocked = ledger.blocked_reason(rule_file.target, person_id)
    trace = {attribute: (source, result) for attribute, source, result in desired.mapping_trace}
    for mapping in rule_file.mapping:
        traced = trace.get(mapping.attribute)
        problem = _mapping_problem(mapping.attribute, desired.problems)
        source_value, result = traced if traced is not None else (None, None)
        explained.mappings.append(
            MappingLine(
                attribute=mapping.attribute,
                source=contract_path(mapping.source, aliases) if mapping.source else None,
                expanded_source=mapping.source,
                source_value=source_value if mapping.source else mapping.value,
                result=result,
                problem=problem,
                required=mapping.required,
                on_create_only=mapping.on_create_only,
                evaluated=desired.in_scope,
            )
        )
    for assignment in rule_file.assignments:
        explained.assignments.append(
            AssignmentLine(
                id=assignment.id,
                kind=assignment.kind.value,
                ref=assignment.ref,
                where=f"{assignment.mark.file}:{assignment.mark.line}",
                condition=contract_filter(assignment.when, aliases),
                expanded_condition=assignment.when,
                verdict=verdicts.get(assignment.when),
                otherwise=assignment.otherwise.value,
                confirmed=(
                    explained.lms.assignment(state_key(assignment))
                    if explained.lms is not None
                    else None
                ),
            )
        )
    return explained


def build_explanation(
    person_id: str,
    label: str,
    ruleset: RuleSet,
    per_file: Mapping[str, tuple[Verdicts, bool, str, Desired, list[Intent]]],
    *,
    ledger: Ledger | None = None,
    confirmed: Mapping[str, Confirmed | None] | None = None,
) -> Explanation:
    """Line up the evidence for one person, per rule file (in rule-set order).

    ``per_file[rule_file_name]`` = (the verdicts of the file's conditions, whether the scope
    admitted the person and why or why not — :func:`bridge.rules.pilot.admission`, so never
    someone outside the scope filter (a ValueError) — the engine's Desired, the intents of
    ``diff`` against what the LMS confirmed). ``ledger``: the person's outbox rows and the targets'
    health, where each intent is looked up (without it every intent is still to make);
    ``confirmed``: target → what its LMS confirmed for the person (None: no link), when the
    caller read the links. Rule files missing from ``per_file`` are left out; a name the
    rules do not know is a ValueError.
    """
    known = {rule_file.name for rule_file in ruleset.files}
    unknown = sorted(set(per_file) - known)
    if unknown:
        raise ValueError(f"no such rule file: {', '.join(unknown)}")
    explanation = Explanation(person_id, label, ruleset.version)
    for rule_file in ruleset.files:
        entry = per_file.get(rule_file.name)
        if entry is None:
            continue
        verdicts, admitted, reason, desired, intents = entry
        explanation.files.append(
            _explain_file(
                rule_file,
                verdicts,
                admitted,
                reason,
                desired,
                intents,
                person_id=person_id,
                label=label,
                ledger=ledger,
                confirmed=confirmed,
            )
        )
    return explanation


# -- text ---------------------------------------------------------------------------------------


def explanation_to_json(exp: Explanation) -> dict[str, Any]:
    """The explanation as JSON (``bridge explain --json``), format ``bridge-explain/1``."""
    return {
        "format": FORMAT,
        "person": exp.person_id,
        "label": exp.label,
        "rules_version": exp.rules_version,
        "rule_files": [
            {
                "rule_file": f.rule_file,
                "path": f.path,
                "target": f.target,
                "scope": {
                    "filter": f.scope_filter,
                    "expanded": f.expanded_scope_filter,
                    "verdict": f.scope_verdict,
                },
                "pilot": {
                    "settings": f.pilot,
                    "admitted": f.admitted,
                    "reason": f.admission_reason,
                },
                "in_scope": f.in_scope,
                "active": f.active,
                "lms": {
                    "looked_up": f.looked_up,
                    "lms_user_id": f.lms.lms_user_id if f.lms is not None else None,
                    "has_account": f.lms.has_account if f.lms is not None else False,
                    "account_at": f.lms.account_at if f.lms is not None else None,
                    "confirmed_at": f.lms.confirmed_at if f.lms is not None else None,
                    "active": f.lms.active if f.lms is not None else None,
                },
                "waiting": f.waiting,
                "blocked": f.blocked,
                "mapping": [
                    {
                        "attribute": m.attribute,
                        "source": m.source,
                        "expanded_source": m.expanded_source,
                        "source_value": m.source_value,
                        "result": m.result,
                        "problem": m.problem,
                        "required": m.required,
                        "on_create_only": m.on_create_only,
                        "evaluated": m.evaluated,
                    }
                    for m in f.mappings
                ],
                "assignments": [
                    {
                        "id": a.id,
                        "kind": a.kind,
                        "ref": a.ref,
                        "where": a.where,
                        "condition": a.condition,
                        "expanded_condition": a.expanded_condition,
                        "verdict": a.verdict,
                        "otherwise": a.otherwise,
                        "confirmed": a.confirmed,
                    }
                    for a in f.assignments
                ],
                "intents": [
                    {**entry.intent.as_dict(), **entry.details()}
                    for entry in (f.tracked or [Tracked(intent) for intent in f.intents])
                ],
                "problems": [
                    {"person": p.person, "rule": p.rule, "reason": p.reason} for p in f.problems
                ],
            }
            for f in exp.files
        ],
    }
