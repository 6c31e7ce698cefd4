"""The checker: one pass over a rule set, each file on its own, then the files of each target.

Targets, aliases, scopes, mappings, safety limits, assignment references, duplicate ids,
shadowed and conflicting assignments, values a Moodle site refuses (``bridge.rules.moodle_site``),
mapping keys the target has no field for (``bridge.rules.target_fields``), role codes nobody
declared or holds (``bridge.rules.role_conditions``); each problem a Finding at the element at
fault, an error or a warning (loads, but is shown).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from dataclasses import field

from scim2_models import Path as ScimPath
from scim2_models import SCIMException
from scim2_models.path import AttrPath

from bridge.rules.attributes import UserSchema
from bridge.rules.attributes import short_name
from bridge.rules.catalogue import LmsCatalogue
from bridge.rules.conditions import Atom
from bridge.rules.conditions import disjuncts
from bridge.rules.conditions import why_never
from bridge.rules.findings import Finding
from bridge.rules.model import Assignment
from bridge.rules.model import AssignmentKind
from bridge.rules.model import FieldMapping
from bridge.rules.model import Mark
from bridge.rules.model import RuleError
from bridge.rules.model import RuleFile
from bridge.rules.model import RuleSet
from bridge.rules.model import Severity
from bridge.rules.model import Target
from bridge.rules.moodle_site import MoodleSite
from bridge.rules.overlap import REF_KEY
from bridge.rules.overlap import Overlaps
from bridge.rules.role_conditions import RoleCodes
from bridge.rules.role_conditions import compared_codes
from bridge.rules.target_fields import target_fields
from bridge.schemas import USER_SCHEMA

# What each target kind can hold (shared/LMS.md): Moodle has enrolments and cohorts but no
# learning paths in core; Canvas enrols into courses and has no cohorts; an LMS behind a `scim`
# target takes accounts only ("none of them enrols through SCIM").
_TARGET_HOLDS: dict[str, frozenset[AssignmentKind]] = {
    "moodle": frozenset({AssignmentKind.enrolment, AssignmentKind.cohort}),
    "canvas": frozenset({AssignmentKind.enrolment}),
    "scim": frozenset(),
    "rest": frozenset(AssignmentKind),
}


@dataclass
class Checker:
    """One pass over a rule set: each file on its own, then the files of each target."""

    ruleset: RuleSet
    schema: UserSchema
    lms: LmsCatalogue | None
    check_targets: bool = True
    held_role_codes: frozenset[str] | None = None  # by people stored; None: no database read
    check_role_codes: bool = True  # the conditions' role codes against those that exist
    found: list[Finding] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)  # of the file at hand, for messages
    overlaps: Overlaps = field(init=False)
    role_codes: RoleCodes = field(init=False)

    def __post_init__(self) -> None:
        self.overlaps = Overlaps(self.schema, self.add)
        self.role_codes = RoleCodes(self.ruleset.role_codes, self.held_role_codes)

    def add(
        self,
        mark: Mark,
        message: str,
        *,
        text: str = "",
        hint: str = "",
        keys: tuple[str, ...] = (),
        source_text: bool = False,
        severity: Severity = Severity.error,
    ) -> None:
        message = _unalias(message, self.aliases)
        error = RuleError(mark, message, text=text, hint=hint, severity=severity)
        self.found.append(Finding(error, keys, source_text))

    def run(self) -> list[Finding]:
        names: dict[str, RuleFile] = {}
        for rule_file in self.ruleset.files:
            first = names.setdefault(rule_file.name, rule_file)
            if first is not rule_file:
                self.add(
                    rule_file.mark,
                    f"rule file name {rule_file.name!r} is also used by {first.path}",
                    text=rule_file.name,
                    hint="plans, the journal and `bridge explain` name a rule file by it: "
                    "give each file its own",
                    keys=("name",),
                )
            self.file(rule_file)
        self.aliases = {}
        for lms in self.ruleset.targets.values():
            if lms.kind == "moodle":
                MoodleSite(lms, self.add).options()
        by_target: dict[str, list[RuleFile]] = {}
        for rule_file in self.ruleset.files:
            by_target.setdefault(rule_file.target, []).append(rule_file)
        for target, files in by_target.items():
            self.overlaps.across(target, files)
        return self.found

    # -- one file --------------------------------------------------------------------------

    def file(self, rule_file: RuleFile) -> None:
        self.aliases = {}
        target = self.ruleset.targets.get(rule_file.target)
        if target is None and self.check_targets:
            known = sorted(self.ruleset.targets)
            close = difflib.get_close_matches(rule_file.target, known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            hint += (
                f"targets.yaml defines {', '.join(known)}"
                if known
                else "targets.yaml (next to the rule files) defines no target"
            )
            self.add(
                rule_file.mark,
                f"unknown target {rule_file.target!r}",
                text=rule_file.target,
                hint=hint,
                keys=("target",),
            )
        bad_aliases = self.check_aliases(rule_file)
        aliases = self.aliases = rule_file.aliases
        scope = rule_file.scope
        scope_ok = True
        if scope.filter is not None:
            problems = [
                p
                for p in self.schema.filter_problems(scope.filter, aliases)
                if p.attr not in bad_aliases
            ]
            scope_ok = not problems
            for problem in problems:
                self.add(
                    scope.mark,
                    f"{problem.message} in the scope filter",
                    text=scope.filter,
                    hint=problem.hint,
                    keys=("filter",),
                    source_text=True,
                )
            if scope_ok:
                self.codes(scope.filter, scope.mark, "the scope filter", ("filter",))
            reason = why_never(disjuncts(self.schema, scope.filter)) if scope_ok else None
            if reason:
                self.add(
                    scope.mark,
                    "the scope filter can never match: nobody would be in scope",
                    text=scope.filter,
                    hint=f"{_unalias(reason, aliases)}; did you mean `or`?",
                    keys=("filter",),
                    source_text=True,
                )
        for mapping in rule_file.mapping:
            self.mapping(rule_file, mapping, target, bad_aliases)
        self.assignments(rule_file, target, bad_aliases, scope_ok)
        safety = rule_file.safety
        if safety.max_removals is not None and safety.max_removals < 0:
            self.add(
                rule_file.mark,
                f"max_removals {safety.max_removals} is negative: every plan would be quarantined",
                text=str(safety.max_removals),
                hint="the number of removals a plan may make before it waits for approval",
                keys=("safety", "max_removals"),
            )
        percent = safety.max_removals_percent
        if percent is not None and not 0 <= percent <= 100:
            self.add(
                rule_file.mark,
                f"max_removals_percent {percent} is not a percentage",
                text=str(percent),
                hint="0 to 100: the share of the people in scope a plan may remove",
                keys=("safety", "max_removals_percent"),
            )

    def check_aliases(self, rule_file: RuleFile) -> set[str]:
        """Check each alias once; answer the unknown attributes they explain (lowercase)."""
        bad: set[str] = set()
        core = self.schema.names[USER_SCHEMA.lower()]
        for alias, target in rule_file.aliases.items():
            try:
                node = ScimPath(target).ast
            except (SCIMException, ValueError):
                node = None
            text = f"{alias}: {target}"
            if not isinstance(node, AttrPath):
                bad.add(alias.lower())
                self.add(
                    rule_file.mark,
                    f"alias {alias!r} must name an attribute, not {target!r}",
                    text=text,
                    hint="an alias stands for an attribute path such as "
                    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
                    keys=("aliases", alias),
                )
                continue
            binding = self.schema.bind(node)
            if binding is None:
                bad.add(target.lower())
                problem = self.schema.unknown(node, {})
                self.add(
                    rule_file.mark,
                    f"alias {alias!r} names an {problem.message}",
                    text=text,
                    hint=problem.hint,
                    keys=("aliases", alias),
                )
            elif alias.lower() in core and short_name(binding.urn).lower() != alias.lower():
                self.add(
                    rule_file.mark,
                    f"alias {alias!r} hides the User attribute {core[alias.lower()]!r}",
                    text=text,
                    hint=f"conditions and mappings naming {alias} would read {target}: "
                    "choose an alias name the schemas do not use",
                    keys=("aliases", alias),
                )
        return bad

    def mapping(
        self, rule_file: RuleFile, mapping: FieldMapping, target: Target | None, bad: set[str]
    ) -> None:
        where = f"mapping {mapping.attribute!r}"
        if mapping.source is not None:
            for problem in self.schema.source_problems(mapping.source, rule_file.aliases):
                if problem.attr in bad:
                    continue
                self.add(
                    mapping.mark,
                    f"{problem.message} in {where}",
                    text=mapping.source,
                    hint=problem.hint,
                    keys=("from",),
                    source_text=True,
                )
        elif mapping.value is None or mapping.value == "" or mapping.value == []:
            blocked = " and, being required, holds every person back" if mapping.required else ""
            self.add(
                mapping.mark,
                f"{where} sets nothing: it has no `from:` and an empty `value:`{blocked}",
                text=mapping.attribute,
                hint="give it `from: <attribute>` or a constant `value:`",
                keys=("value",),
            )
        if mapping.required and any(t.name == "default" for t in mapping.transforms):
            self.add(
                mapping.mark,
                f"{where} is required, but its `default` transform always supplies a value",
                text=mapping.attribute,
                hint="required sends a person without the value to the attention list; "
                "a default means that never happens: keep one of the two",
                keys=("required",),
            )
        if mapping.attribute == "email" and any(t.name == "ascii" for t in mapping.transforms):
            self.add(
                mapping.mark,
                f"{where} folds addresses to ASCII: józef@example.com would become another "
                "mailbox, jozef@example.com",
                text="ascii",
                hint="remove `ascii` from its transforms; an address the LMS refuses is a data "
                "problem to fix in the HR system or the IdP",
                keys=("transforms",),
            )
        fields = target_fields(target) if target is not None else None
        unknown = fields.problem(mapping.attribute) if fields is not None else None
        if unknown is not None:
            self.add(
                mapping.mark,
                unknown.message,
                text=mapping.attribute,
                hint=unknown.hint,
                severity=unknown.severity,
            )
        if target is not None and target.kind == "moodle":
            MoodleSite(target, self.add).mapping(mapping)

    def assignments(
        self, rule_file: RuleFile, target: Target | None, bad: set[str], scope_ok: bool
    ) -> None:
        scope = disjuncts(self.schema, rule_file.scope.filter) if scope_ok else None
        ids: dict[str, Assignment] = {}
        by_key: dict[tuple[AssignmentKind, str], list[Assignment]] = {}
        for assignment in rule_file.assignments:
            self.condition(rule_file, assignment, bad, scope)
            self.reference(assignment, target)
            self.access_end(assignment)
            first = ids.setdefault(assignment.id, assignment)
            if first is not assignment:
                self.add(
                    assignment.mark,
                    f"duplicate id {assignment.id!r}: also the id of the {first.kind.value} "
                    f"at {first.mark}",
                    text=assignment.id,
                    hint="intents and the journal name a rule by its id: give each its own",
                    keys=("id",),
                )
            earlier = by_key.setdefault((assignment.kind, assignment.ref), [])
            for other in earlier:
                if self.overlaps.shadowed(assignment, other) or self.overlaps.conflicting(
                    assignment, other, ""
                ):
                    break
            earlier.append(assignment)

    def access_end(self, assignment: Assignment) -> None:
        ends, due = assignment.access_end_days, assignment.due_days
        if ends is None or due is None or ends >= due:
            return
        self.add(
            assignment.mark,
            f"{assignment.kind.value} {assignment.id!r} ends access after {ends} days, "
            f"before its due date ({due} days)",
            text=f"access_ends: {ends}",
            hint="a learner cannot finish once access has ended: make access_ends later than "
            "due, or leave it out (access then never ends)",
            keys=("access_ends",),
            source_text=True,
            severity=Severity.warning,
        )

    def condition(
        self,
        rule_file: RuleFile,
        assignment: Assignment,
        bad: set[str],
        scope: list[frozenset[Atom]] | None,
    ) -> None:
        where = f"the condition of {assignment.kind.value} {assignment.id!r}"
        problems = [
            p
            for p in self.schema.filter_problems(assignment.when, rule_file.aliases)
            if p.attr not in bad
        ]
        for problem in problems:
            self.add(
                assignment.mark,
                f"{problem.message} in {where}",
                text=assignment.when,
                hint=problem.hint,
                keys=("when",),
                source_text=True,
            )
        if problems:
            return
        self.codes(assignment.when, assignment.mark, where, ("when",))
        when = disjuncts(self.schema, assignment.when)
        message, reason = f"{where} can never match", why_never(when)
        hint = f"{reason}; did you mean `or`?"
        in_scope = rule_file.scope.filter is not None and scope is not None
        if reason is None and in_scope and why_never(scope) is None:
            reason = why_never(when, scope)
            message += " anyone in the file's scope"
            hint = f"{reason} (the scope is {rule_file.scope.filter})"
        if reason is not None:
            self.add(
                assignment.mark,
                message,
                text=assignment.when,
                hint=_unalias(hint, rule_file.aliases),
                keys=("when",),
                source_text=True,
            )

    def codes(self, condition: str, mark: Mark, where: str, keys: tuple[str, ...]) -> None:
        """Each role code a condition compares ``roleCodes`` with, against the known codes."""
        if not self.check_role_codes:
            return
        for code in compared_codes(condition):
            problem = self.role_codes.problem(code, where)
            if problem is not None:
                self.add(
                    mark,
                    problem.message,
                    text=condition,
                    hint=problem.hint,
                    keys=keys,
                    source_text=True,
                    severity=problem.severity,
                )

    def reference(self, assignment: Assignment, target: Target | None) -> None:
        word = REF_KEY[assignment.kind]
        holds = _TARGET_HOLDS.get(target.kind) if target is not None else None
        if target is not None and holds is not None and assignment.kind not in holds:
            kinds = " and ".join(sorted(f"{k.value}s" for k in holds)) or "accounts only"
            self.add(
                assignment.mark,
                f"target {target.name!r} is a {target.kind} LMS, which has no {word}s",
                text=f"{word}: {assignment.ref}",
                hint=f"a {target.kind} target takes {kinds}; drive this from another target",
                keys=(word,),
            )
        if self.lms is None:
            return
        known = self.lms.refs(assignment.kind)
        if assignment.ref in known:
            return
        by_lower = {ref.lower(): ref for ref in known}
        close = difflib.get_close_matches(assignment.ref.lower(), list(by_lower), n=1)
        hint = (
            f"did you mean {by_lower[close[0]]!r}?"
            if close
            else f"the LMS catalogue lists {len(known)} {word}(s)"
        )
        self.add(
            assignment.mark,
            f"unknown {word} {assignment.ref!r}: not in the LMS catalogue",
            text=assignment.ref,
            hint=hint,
            keys=(word,),
        )


def _unalias(text: str, aliases: dict[str, str]) -> str:
    """Attribute paths written back as the file's aliases for them (conditions are expanded)."""
    for alias, target in sorted(aliases.items(), key=lambda item: -len(item[1])):
        text = re.sub(re.escape(target) + r"(?![A-Za-z0-9_$-])", alias, text, flags=re.IGNORECASE)
    return text
