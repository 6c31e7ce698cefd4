"""Overlap between assignments and mappings: shadowed and conflicting rules, in one file and
across the files of a target.

A rule is reported only when the conditions prove it (``bridge.rules.conditions``): an earlier
rule matching everyone it matches, or two rules on one ref whose settings differ and whom
somebody can match both.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from bridge.rules.attributes import UserSchema
from bridge.rules.conditions import disjuncts
from bridge.rules.conditions import implies
from bridge.rules.conditions import why_never
from bridge.rules.findings import Report
from bridge.rules.model import Assignment
from bridge.rules.model import AssignmentKind
from bridge.rules.model import FieldMapping
from bridge.rules.model import RuleFile

REF_KEY = {
    AssignmentKind.enrolment: "course",
    AssignmentKind.cohort: "cohort",
    AssignmentKind.path: "path",
}


@dataclass(frozen=True)
class Overlaps:
    """The checks that compare one rule with another, reporting through ``add``."""

    schema: UserSchema
    add: Report

    def shadowed(self, assignment: Assignment, other: Assignment) -> bool:
        if not implies(self.schema, assignment.when, other.when):
            return False
        word = REF_KEY[assignment.kind]
        same = assignment.when == other.when
        unused = (
            f"; its {', '.join(_differences(assignment, other))} are never used"
            if _differences(assignment, other)
            else ""
        )
        self.add(
            assignment.mark,
            f"{assignment.kind.value} {assignment.id!r} is shadowed by {other.id!r} at {other.mark}",
            text=assignment.when,
            hint=(
                "its condition is the same"
                if same
                else "everyone its condition matches is matched by the earlier one"
            )
            + f", so the earlier rule already puts them on {word} {assignment.ref}: "
            f"this one never adds anything{unused}; remove it, or change its {word}",
            keys=("when",),
            source_text=True,
        )
        return True

    def conflicting(
        self, assignment: Assignment, other: Assignment, elsewhere: str, *scopes: str | None
    ) -> bool:
        """Report two rules on one ref whose settings differ, unless nobody can match both."""
        differences = _differences(assignment, other)
        filters = (assignment.when, other.when, *scopes)
        if not differences or self.never(*filters):
            return False
        word = REF_KEY[assignment.kind]
        self.add(
            assignment.mark,
            f"{assignment.kind.value} {assignment.id!r} conflicts with {other.id!r} at "
            f"{other.mark}: same {word} {assignment.ref}, different {', '.join(differences)}",
            text=f"{word}: {assignment.ref}",
            hint=(
                elsewhere
                or "a person both conditions match gets the settings of whichever rule comes "
                "first, and removals always use the first one's `otherwise`"
            )
            + ": give both the same role, due, access_ends and otherwise, "
            "or merge them with `or`",
            keys=(word,),
        )
        return True

    # -- across the files of one target ----------------------------------------------------

    def across(self, target: str, files: list[RuleFile]) -> None:
        ids: dict[str, Assignment] = {}
        refs: dict[tuple[AssignmentKind, str], list[tuple[RuleFile, Assignment]]] = {}
        mappings: dict[str, tuple[RuleFile, FieldMapping]] = {}
        for rule_file in files:
            scope = rule_file.scope.filter
            seen: set[tuple[AssignmentKind, str]] = set()
            for assignment in rule_file.assignments:
                first = ids.get(assignment.id)
                if first is not None and first.mark.file != rule_file.path:
                    self.add(
                        assignment.mark,
                        f"duplicate id {assignment.id!r}: also the id of the "
                        f"{first.kind.value} at {first.mark}",
                        text=assignment.id,
                        hint=f"rule ids are unique across the rule files of target {target!r}",
                        keys=("id",),
                    )
                key = (assignment.kind, assignment.ref)
                for other_file, other in refs.get(key, []) if key not in seen else []:
                    if self.conflicting(
                        assignment,
                        other,
                        f"both {rule_file.name} and {other_file.name} drive it on "
                        f"target {target!r}, so which settings apply depends on which "
                        "file the bridge evaluates last",
                        scope,
                        other_file.scope.filter,
                    ):
                        break
                seen.add(key)
            for key in seen:
                head = next(a for a in rule_file.assignments if (a.kind, a.ref) == key)
                refs.setdefault(key, []).append((rule_file, head))
            for assignment in rule_file.assignments:
                ids.setdefault(assignment.id, assignment)
            for mapping in rule_file.mapping:
                found = mappings.get(mapping.attribute)
                if found is None:
                    continue
                other_file, other_mapping = found
                if _same_mapping(mapping, other_mapping) or self.never(
                    scope, other_file.scope.filter
                ):
                    continue
                self.add(
                    mapping.mark,
                    f"mapping {mapping.attribute!r} differs from the one in {other_file.name} at "
                    f"{other_mapping.mark}",
                    text=_describe_mapping(mapping),
                    hint=f"both files set the account's {mapping.attribute} on target "
                    f"{target!r} ({_describe_mapping(other_mapping)} there), so it would flip "
                    "between runs: map it the same way, or in one file only",
                )
            for mapping in rule_file.mapping:
                mappings.setdefault(mapping.attribute, (rule_file, mapping))

    def never(self, *filters: str | None) -> bool:
        """Whether no person can match all these filters (provably)."""
        return why_never(*(disjuncts(self.schema, f) for f in filters)) is not None


def _differences(assignment: Assignment, other: Assignment) -> list[str]:
    found = []
    if assignment.role != other.role:
        found.append(f"role ({assignment.role} vs {other.role})")
    if assignment.due_days != other.due_days:
        found.append(f"due ({_days(assignment.due_days)} vs {_days(other.due_days)})")
    if assignment.access_end_days != other.access_end_days:
        ends, other_ends = _days(assignment.access_end_days), _days(other.access_end_days)
        found.append(f"access_ends ({ends} vs {other_ends})")
    if assignment.otherwise != other.otherwise:
        found.append(f"otherwise ({assignment.otherwise.value} vs {other.otherwise.value})")
    return found


def _days(days: int | None) -> str:
    return "none" if days is None else f"{days} days"


def _signature(mapping: FieldMapping) -> tuple[object, ...]:
    transforms = tuple(
        (t.name, json.dumps(t.argument, sort_keys=True, default=str)) for t in mapping.transforms
    )
    source = mapping.source.lower() if mapping.source is not None else None
    value = json.dumps(mapping.value, sort_keys=True, default=str)
    return source, value, transforms, mapping.on_create_only


def _same_mapping(mapping: FieldMapping, other: FieldMapping) -> bool:
    return _signature(mapping) == _signature(other)


def _describe_mapping(mapping: FieldMapping) -> str:
    what = f"from {mapping.source}" if mapping.source is not None else f"value {mapping.value!r}"
    if mapping.transforms:
        what += f" via {', '.join(t.name for t in mapping.transforms)}"
    if mapping.on_create_only:
        what += " on create"
    return what
