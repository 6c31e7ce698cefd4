"""``bridge rules check``: what is wrong with a rule set as a whole, each at file:line:col.

The loader refuses what is wrong with a file on its own (YAML, keys, types, filter syntax).
This module finds what is wrong against the SCIM schemas, the targets, the LMS catalogue and
the other rules: unknown attributes, operators an attribute type refuses, unknown targets or
courses, duplicate ids, shadowed and conflicting assignments. Attribute and filter semantics
are scim2-models' (``Path`` and ``ScimFilter`` bound to the User model); only the reasoning
between rules (implication, contradiction) is written here, deliberately conservative: it
reports a shadowed or impossible rule only when the filters' shapes prove it.
"""

from __future__ import annotations

import difflib
import json
import re
import textwrap
from collections.abc import Iterator
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from datetime import datetime
from inspect import isclass
from pathlib import Path
from typing import Any

import yaml
from scim2_models import AttributeBinding
from scim2_models import BaseModel
from scim2_models import Extension
from scim2_models import Path as ScimPath
from scim2_models import SCIMException
from scim2_models import ScimFilter
from scim2_models.path import STRING_OPERATORS
from scim2_models.path import AttrPath
from scim2_models.path import CompareOperator
from scim2_models.path import Comparison
from scim2_models.path import FilterNode
from scim2_models.path import LogicalExpr
from scim2_models.path import LogicalOperator
from scim2_models.path import Not
from scim2_models.path import Present
from scim2_models.path import ValuePath
from scim2_models.path import coerce_value

from bridge.rules.loader import TARGETS_FILE
from bridge.rules.loader import Node
from bridge.rules.loader import load_ruleset
from bridge.rules.loader import parse_rule_file
from bridge.rules.loader import parse_targets
from bridge.rules.loader import read_yaml
from bridge.rules.model import Assignment
from bridge.rules.model import AssignmentKind
from bridge.rules.model import FieldMapping
from bridge.rules.model import Mark
from bridge.rules.model import RuleError
from bridge.rules.model import RuleErrors
from bridge.rules.model import RuleFile
from bridge.rules.model import RuleSet
from bridge.rules.model import Target
from bridge.schemas import USER_SCHEMA
from bridge.schemas import Catalog

_REF_KEY = {
    AssignmentKind.enrolment: "course",
    AssignmentKind.cohort: "cohort",
    AssignmentKind.path: "path",
}

# What each target kind can hold (shared/LMS.md): Moodle has enrolments and cohorts but no
# learning paths in core; Canvas enrols into courses and has no cohorts; an LMS behind a `scim`
# target takes accounts only ("none of them enrols through SCIM").
_TARGET_HOLDS: dict[str, frozenset[AssignmentKind]] = {
    "moodle": frozenset({AssignmentKind.enrolment, AssignmentKind.cohort}),
    "canvas": frozenset({AssignmentKind.enrolment}),
    "scim": frozenset(),
    "rest": frozenset(AssignmentKind),
}
_CORE_PREFIX = f"{USER_SCHEMA}:"
_EQUALITY = (CompareOperator.eq, CompareOperator.ne)


@dataclass(frozen=True)
class LmsCatalogue:
    """What exists in the LMS: course, cohort and learning-path idnumbers or shortnames."""

    courses: frozenset[str] = frozenset()
    cohorts: frozenset[str] = frozenset()
    paths: frozenset[str] = frozenset()

    def refs(self, kind: AssignmentKind) -> frozenset[str]:
        return {
            AssignmentKind.enrolment: self.courses,
            AssignmentKind.cohort: self.cohorts,
            AssignmentKind.path: self.paths,
        }[kind]


# --- the User schema, as scim2-models binds it ---------------------------------------------


@dataclass(frozen=True)
class _Problem:
    """Something wrong with a filter or a path, before we know where it was written."""

    message: str
    hint: str
    attr: str = ""  # the unknown attribute (lowercase), to skip those a bad alias explains


@dataclass(frozen=True)
class _Atom:
    """One term of a conjunction, keyed so that two spellings of the same test are equal."""

    kind: str
    urn: str
    op: str = ""
    value: object = None
    single: bool = False  # the attribute holds one value (so `eq a and eq b` is impossible)
    shown: str = field(default="", compare=False)


def _atoms(node: FilterNode) -> Iterator[Comparison | Present | ValuePath]:
    if isinstance(node, LogicalExpr):
        for term in node.terms:
            yield from _atoms(term)
    elif isinstance(node, Not):
        yield from _atoms(node.expr)
    elif isinstance(node, Comparison | Present | ValuePath):
        yield node


def _short(urn: str) -> str:
    """``userName`` for the core schema, the qualified name for extensions."""
    return urn[len(_CORE_PREFIX) :] if urn.lower().startswith(_CORE_PREFIX.lower()) else urn


def _detail(exc: Exception) -> str:
    detail = getattr(exc, "detail", None) or str(exc)
    return str(detail).replace(_CORE_PREFIX, "")


def _field_names(model: type[BaseModel]) -> dict[str, str]:
    """Python field name → SCIM attribute name, ``schemas`` and extensions left out."""
    names = {}
    for name, info in model.model_fields.items():
        root = model.get_field_root_type(name)
        if name == "schemas" or (isclass(root) and issubclass(root, Extension)):
            continue
        names[name] = info.serialization_alias or name
    return names


def _extension_hint(attr_path: AttrPath, qualified: str) -> str:
    full = f"{qualified}.{attr_path.sub_attr}" if attr_path.sub_attr else qualified
    return (
        f"{attr_path.attr} belongs to the extension {qualified.rsplit(':', 1)[0]}: write {full}, "
        f"or add the alias `{attr_path.attr}: {qualified}` under aliases:"
    )


def _complex_model(binding: AttributeBinding) -> type[BaseModel] | None:
    target = binding.target_type
    return target if isclass(target) and issubclass(target, BaseModel) else None


class _UserSchema:
    """Attribute paths and filters checked against ``catalog.user`` with suggestions."""

    def __init__(self, catalog: Catalog) -> None:
        user = catalog.user
        self.path_type: type[ScimPath[Any]] = ScimPath[user]  # type: ignore[valid-type]
        self.filter_type: type[ScimFilter[Any]] = ScimFilter[user]  # type: ignore[valid-type]
        self.schemas: dict[str, str] = {}  # lowercase URN → URN
        self.names: dict[str, dict[str, str]] = {}  # lowercase URN → lowercase path → path
        self.extension_names: dict[str, str] = {}  # lowercase short name → qualified path
        self.canonical: dict[str, tuple[str, ...]] = {}  # lowercase qualified path → values
        models: dict[str, type[BaseModel]] = {USER_SCHEMA: user}
        models.update(user.get_extension_models())
        for urn, model in models.items():
            self.schemas[urn.lower()] = urn
            names: dict[str, str] = {}
            for name, scim_name in _field_names(model).items():
                names[scim_name.lower()] = scim_name
                root = model.get_field_root_type(name)
                if isclass(root) and issubclass(root, BaseModel):
                    for sub in _field_names(root).values():
                        names[f"{scim_name}.{sub}".lower()] = f"{scim_name}.{sub}"
                if urn != USER_SCHEMA:
                    self.extension_names.setdefault(scim_name.lower(), f"{urn}:{scim_name}")
            self.names[urn.lower()] = names
        for schema in catalog.schemas:
            for attribute in schema.attributes or []:
                prefix = f"{schema.id}:{attribute.name}".lower()
                if attribute.canonical_values:
                    self.canonical[prefix] = tuple(str(v) for v in attribute.canonical_values)
                for sub_attribute in attribute.sub_attributes or []:
                    if sub_attribute.canonical_values:
                        values = tuple(str(v) for v in sub_attribute.canonical_values)
                        self.canonical[f"{prefix}.{sub_attribute.name}".lower()] = values

    def bind(self, attr_path: AttrPath) -> AttributeBinding | None:
        try:
            return self.path_type(str(attr_path)).resolve()
        except (SCIMException, ValueError):
            return None

    def bind_compared(self, attr_path: AttrPath) -> AttributeBinding | None:
        """The attribute a comparison compares: ``emails eq x`` compares ``emails.value``."""
        binding = self.bind(attr_path)
        model = _complex_model(binding) if binding is not None else None
        if (
            binding is not None
            and model is not None
            and binding.is_multivalued
            and "value" in model.model_fields
        ):
            return self.bind(AttrPath(attr_path.attr, "value", attr_path.uri))
        return binding

    # -- unknown attributes ----------------------------------------------------------------

    def unknown(self, attr_path: AttrPath, aliases: dict[str, str]) -> _Problem:
        written = str(attr_path)
        message = f"unknown attribute {written!r}"
        alias_note = (
            f"aliases of this file: {', '.join(sorted(aliases))}"
            if aliases
            else "an extension attribute is written with its URN, or short through `aliases:`"
        )
        if attr_path.uri is not None and attr_path.uri.lower() not in self.schemas:
            close = difflib.get_close_matches(attr_path.uri.lower(), list(self.schemas), n=1)
            known = ", ".join(self.schemas.values())
            guess = f"did you mean {self.schemas[close[0]]}? " if close else ""
            return _Problem(
                f"unknown schema {attr_path.uri!r} in {written!r}",
                f"{guess}the User schemas are {known}",
                written.lower(),
            )
        local = str(AttrPath(attr_path.attr, attr_path.sub_attr)).lower()
        if attr_path.uri is not None:
            urn = self.schemas[attr_path.uri.lower()]
            names = self.names[urn.lower()]
            close = difflib.get_close_matches(local, list(names), n=2, cutoff=0.75)
            guesses = [f"{urn}:{names[c]}" for c in close]
            hint = f"did you mean {' or '.join(guesses)}?" if guesses else ""
            hint = hint or f"{urn} defines {', '.join(sorted(set(names.values())))}"
            return _Problem(message, hint, written.lower())
        qualified = self.extension_names.get(attr_path.attr.lower())
        if qualified is not None:
            return _Problem(message, _extension_hint(attr_path, qualified), written.lower())
        core = self.names[USER_SCHEMA.lower()]
        alias_names = {alias.lower(): alias for alias in aliases}
        candidates = list(dict.fromkeys([*core, *alias_names, *self.extension_names]))
        close = difflib.get_close_matches(local, candidates, n=2, cutoff=0.75)
        if close and close[0] in self.extension_names and close[0] not in alias_names:
            qualified = self.extension_names[close[0]]
            meant = AttrPath(qualified.rsplit(":", 1)[1], attr_path.sub_attr)
            return _Problem(
                message,
                f"did you mean {meant}? {_extension_hint(meant, qualified)}",
                written.lower(),
            )
        guesses = [
            f"{alias_names[c]} (alias of {aliases[alias_names[c]]})"
            if c in alias_names
            else core.get(c, c)
            for c in close
        ]
        guess = f"did you mean {' or '.join(guesses)}? " if guesses else ""
        return _Problem(message, f"{guess}{alias_note}", written.lower())

    # -- filters ---------------------------------------------------------------------------

    def filter_problems(self, text: str, aliases: dict[str, str]) -> list[_Problem]:
        try:
            ast = ScimFilter(text).ast
        except (SCIMException, ValueError) as exc:
            return [_Problem(f"invalid SCIM filter: {_detail(exc)}", "see RFC 7644 §3.4.2.2")]
        return self.node_problems(ast, aliases, text)

    def node_problems(self, ast: FilterNode, aliases: dict[str, str], text: str) -> list[_Problem]:
        problems: list[_Problem] = []
        for atom in _atoms(ast):
            problems.extend(self._atom_problems(atom, aliases))
        if problems:
            return problems
        # The same strict check the evaluator compiles conditions with (bridge.rules.verdicts):
        # whatever it refuses must be refused here first.
        try:
            bound = self.filter_type(ast)
            bound._validate_semantics(strict=True)
        except (SCIMException, ValueError, TypeError) as exc:
            return [
                _Problem(
                    f"invalid condition: {_detail(exc)}",
                    f"scim2-models refuses {text} against the User schemas",
                )
            ]
        return []

    def _atom_problems(
        self, atom: Comparison | Present | ValuePath, aliases: dict[str, str]
    ) -> list[_Problem]:
        head = atom.attr_path
        binding = self.bind(head)
        if binding is None:
            return [self.unknown(head, aliases)]
        try:
            self.filter_type(atom)
        except (SCIMException, ValueError) as exc:
            return [_Problem(_detail(exc), _operator_hint(binding, atom))]
        if isinstance(atom, ValuePath):
            unknown = []
            for inner in _atoms(atom.val_filter):
                sub = AttrPath(head.attr, inner.attr_path.attr, head.uri)
                if self.bind(sub) is None:
                    unknown.append(self.unknown(sub, aliases))
            if unknown:
                return unknown
        if isinstance(atom, Comparison):
            compared = self.bind_compared(head)
            model = _complex_model(compared) if compared is not None else None
            if model is not None:
                subs = ", ".join(f"{head}.{s}" for s in _field_names(model).values())
                return [
                    _Problem(
                        f"complex attribute {_short(binding.urn)!r} compared as a whole",
                        f"compare one of {subs}",
                    )
                ]
            if compared is not None:
                return self._canonical(compared, atom)
        if isinstance(atom, ValuePath):
            problems = []
            for inner in _atoms(atom.val_filter):
                if isinstance(inner, Comparison):
                    sub_binding = self.bind(AttrPath(head.attr, inner.attr_path.attr, head.uri))
                    if sub_binding is not None:
                        problems.extend(self._canonical(sub_binding, inner))
            return problems
        return []

    def _canonical(self, binding: AttributeBinding, atom: Comparison) -> list[_Problem]:
        """A value outside the schema's canonicalValues never matches what the IdP sends."""
        values = self.canonical.get(binding.urn.lower())
        if not values or atom.op not in _EQUALITY:
            return []
        if not isinstance(atom.value, str):
            return []
        if binding.case_exact:
            known = atom.value in values
        else:
            known = atom.value.lower() in {v.lower() for v in values}
        if known:
            return []
        close = difflib.get_close_matches(atom.value, list(values), n=1)
        guess = f"did you mean {close[0]!r}? " if close else ""
        return [
            _Problem(
                f"{atom.value!r} is not a value of {_short(binding.urn)!r}",
                f"{guess}the schema's canonical values are {', '.join(values)} "
                "(add the value to the schema file if the source really sends it)",
            )
        ]

    # -- paths (mapping sources) -----------------------------------------------------------

    def source_problems(self, source: str, aliases: dict[str, str]) -> list[_Problem]:
        try:
            node = ScimPath(source).ast
        except (SCIMException, ValueError):
            node = None
        if not isinstance(node, AttrPath | ValuePath):
            return [
                _Problem(
                    f"{source!r} is not an attribute path",
                    'e.g. name.givenName, or emails[type eq "work"].value for one value',
                )
            ]
        if isinstance(node, ValuePath):
            designated = AttrPath(node.attr_path.attr, node.sub_attr, node.attr_path.uri)
            problems = self.node_problems(
                ValuePath(node.attr_path, node.val_filter), aliases, source
            )
            if problems:
                return problems
        else:
            designated = node
        binding = self.bind(designated)
        if binding is None:
            return [self.unknown(designated, aliases)]
        model = _complex_model(binding)
        if model is not None:
            shown = _short(binding.urn)
            subs = ", ".join(f"{shown}.{s}" for s in _field_names(model).values())
            return [
                _Problem(
                    f"complex attribute {shown!r} would reach the LMS as an object",
                    f"map one of its sub-attributes: {subs}",
                )
            ]
        return []

    # -- reasoning between filters ---------------------------------------------------------

    def _key(self, node: FilterNode) -> _Atom:
        if isinstance(node, Comparison):
            binding = self.bind_compared(node.attr_path)
            if binding is None:
                return _Atom("?", str(node).lower())
            value: object = node.value
            if isinstance(value, str) and node.op not in STRING_OPERATORS:
                try:
                    value = coerce_value(binding, value, node.op)
                except SCIMException:
                    value = node.value
            if isinstance(value, str):
                value = binding.comparable(value)
            single = not binding.is_multivalued and not binding.target_is_multivalued
            return _Atom("cmp", binding.urn.lower(), node.op.value, value, single, str(node))
        if isinstance(node, Present):
            binding = self.bind(node.attr_path)
            urn = binding.urn.lower() if binding is not None else str(node).lower()
            return _Atom("pr", urn, shown=str(node))
        return _Atom("other", str(node).lower(), shown=str(node))

    def _conjunction(self, node: FilterNode) -> frozenset[_Atom] | None:
        terms = node.terms if isinstance(node, LogicalExpr) else (node,)
        if isinstance(node, LogicalExpr) and node.op != LogicalOperator.and_:
            return None
        if any(isinstance(t, LogicalExpr) for t in terms):
            return None
        return frozenset(self._key(t) for t in terms)

    def disjuncts(self, text: str | None) -> list[frozenset[_Atom]] | None:
        """The filter as an `or` of `and`s of terms, or None when it has another shape."""
        if text is None:
            return [frozenset()]
        try:
            ast = ScimFilter(text).ast
        except (SCIMException, ValueError):
            return None
        if isinstance(ast, LogicalExpr) and ast.op == LogicalOperator.or_:
            found = [self._conjunction(term) for term in ast.terms]
        else:
            found = [self._conjunction(ast)]
        return None if any(c is None for c in found) else [c for c in found if c is not None]

    def implies(self, narrower: str, broader: str) -> bool:
        """Whether every person ``narrower`` matches is matched by ``broader`` (provably)."""
        left, right = self.disjuncts(narrower), self.disjuncts(broader)
        if left is None or right is None:
            return narrower == broader
        return all(any(r <= term for r in right) for term in left)


def _contradiction(terms: frozenset[_Atom]) -> str | None:
    """Why a conjunction can match nobody, if a single-valued attribute makes it so."""
    equal: dict[str, _Atom] = {}
    for atom in sorted(terms, key=lambda a: (a.op != "eq", a.shown)):
        if atom.kind != "cmp" or not atom.single:
            continue
        if atom.op == "eq":
            other = equal.setdefault(atom.urn, atom)
            if other.value != atom.value:
                return f"`{other.shown}` and `{atom.shown}` cannot both hold"
        elif atom.op == "ne" and atom.urn in equal and equal[atom.urn].value == atom.value:
            return f"`{equal[atom.urn].shown}` and `{atom.shown}` cannot both hold"
    return None


def _never(*filters: list[frozenset[_Atom]] | None) -> str | None:
    """Why the conjunction of these filters matches nobody, or None if it may match."""
    if any(f is None for f in filters):
        return None
    combined: list[frozenset[_Atom]] = [frozenset()]
    for disjuncts in filters:
        assert disjuncts is not None
        combined = [a | b for a in combined for b in disjuncts]
        if len(combined) > 256:  # too many cases to be worth proving anything
            return None
    reasons = [_contradiction(terms) for terms in combined]
    if not reasons or any(reason is None for reason in reasons):
        return None
    return reasons[0]


def _operator_hint(binding: AttributeBinding, atom: FilterNode) -> str:
    name = _short(binding.urn)
    target = binding.target_type
    if isinstance(atom, ValuePath):
        if not binding.is_multivalued:
            return (
                f"[…] selects among the values of a multi-valued attribute: compare {name} directly"
            )
        return "check the filter inside […] against the sub-attributes"
    ordering = isinstance(atom, Comparison) and atom.op not in _EQUALITY
    if ordering and isclass(target) and issubclass(target, bool):
        return f"a boolean takes eq, ne or pr: {name} eq true"
    if isclass(target) and issubclass(target, bool):
        return f"write booleans unquoted: {name} eq true"
    if isclass(target) and issubclass(target, datetime):
        return f'a dateTime is quoted: {name} gt "2026-01-31T00:00:00Z"'
    if isclass(target) and issubclass(target, str):
        return f'quote text: {name} eq "…"'
    return "RFC 7644 §3.4.2.2 lists the operators each attribute type takes"


# --- the checks ------------------------------------------------------------------------------


@dataclass
class _Finding:
    """A RuleError at an element's Mark, with the key under it that holds the offending text."""

    error: RuleError
    keys: tuple[str, ...] = ()
    source_text: bool = False  # the offending text is a value: show it as the file spells it


@dataclass
class _Checker:
    """One pass over a rule set: each file on its own, then the files of each target."""

    ruleset: RuleSet
    schema: _UserSchema
    lms: LmsCatalogue | None
    check_targets: bool = True
    found: list[_Finding] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)  # of the file at hand, for messages

    def add(
        self,
        mark: Mark,
        message: str,
        *,
        text: str = "",
        hint: str = "",
        keys: tuple[str, ...] = (),
        source_text: bool = False,
    ) -> None:
        message = _unalias(message, self.aliases)
        self.found.append(
            _Finding(RuleError(mark, message, text=text, hint=hint), keys, source_text)
        )

    def run(self) -> list[_Finding]:
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
        by_target: dict[str, list[RuleFile]] = {}
        for rule_file in self.ruleset.files:
            by_target.setdefault(rule_file.target, []).append(rule_file)
        self.aliases = {}
        for target, files in by_target.items():
            self.across(target, files)
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
            reason = _never(self.schema.disjuncts(scope.filter)) if scope_ok else None
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
            elif alias.lower() in core and _short(binding.urn).lower() != alias.lower():
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
        if target is not None and target.kind == "moodle" and mapping.attribute == "username":
            self.moodle_username(mapping)

    def moodle_username(self, mapping: FieldMapping) -> None:
        # LMS.md: core_user_create_users refuses usernames that are not lowercase.
        if mapping.source is None:
            lowercase = not isinstance(mapping.value, str) or mapping.value == mapping.value.lower()
        else:
            cases = [t.name for t in mapping.transforms if t.name in ("lower", "upper")]
            lowercase = bool(cases) and cases[-1] == "lower"
        if not lowercase:
            self.add(
                mapping.mark,
                "Moodle usernames must be lowercase: mapping 'username' may produce capitals",
                text=mapping.source or str(mapping.value),
                hint="add `transforms: [trim, lower]` (Moodle refuses the whole account batch)",
            )

    def assignments(
        self, rule_file: RuleFile, target: Target | None, bad: set[str], scope_ok: bool
    ) -> None:
        scope = self.schema.disjuncts(rule_file.scope.filter) if scope_ok else None
        ids: dict[str, Assignment] = {}
        by_key: dict[tuple[AssignmentKind, str], list[Assignment]] = {}
        for assignment in rule_file.assignments:
            self.condition(rule_file, assignment, bad, scope)
            self.reference(assignment, target)
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
                if self.shadowed(assignment, other) or self.conflicting(assignment, other, ""):
                    break
            earlier.append(assignment)

    def condition(
        self,
        rule_file: RuleFile,
        assignment: Assignment,
        bad: set[str],
        scope: list[frozenset[_Atom]] | None,
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
        when = self.schema.disjuncts(assignment.when)
        message, reason = f"{where} can never match", _never(when)
        hint = f"{reason}; did you mean `or`?"
        in_scope = rule_file.scope.filter is not None and scope is not None
        if reason is None and in_scope and _never(scope) is None:
            reason = _never(when, scope)
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

    def reference(self, assignment: Assignment, target: Target | None) -> None:
        word = _REF_KEY[assignment.kind]
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

    def shadowed(self, assignment: Assignment, other: Assignment) -> bool:
        if not self.schema.implies(assignment.when, other.when):
            return False
        word = _REF_KEY[assignment.kind]
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
        word = _REF_KEY[assignment.kind]
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
            + ": give both the same role, due and otherwise, or merge them with `or`",
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
        return _never(*(self.schema.disjuncts(f) for f in filters)) is not None


def _unalias(text: str, aliases: dict[str, str]) -> str:
    """Attribute paths written back as the file's aliases for them (conditions are expanded)."""
    for alias, target in sorted(aliases.items(), key=lambda item: -len(item[1])):
        text = re.sub(re.escape(target) + r"(?![A-Za-z0-9_$-])", alias, text, flags=re.IGNORECASE)
    return text


def _differences(assignment: Assignment, other: Assignment) -> list[str]:
    found = []
    if assignment.role != other.role:
        found.append(f"role ({assignment.role} vs {other.role})")
    if assignment.due_days != other.due_days:
        found.append(f"due ({_days(assignment.due_days)} vs {_days(other.due_days)})")
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


def _order(finding: _Finding) -> Mark:
    return finding.error.mark


def check_ruleset(
    ruleset: RuleSet, catalog: Catalog, lms_catalogue: LmsCatalogue | None = None
) -> list[RuleError]:
    """Every semantic problem of a loaded rule set, sorted by file, line and column.

    Pure: each error is at the Mark of the element at fault (an assignment, a mapping, the
    file); ``check_directory`` narrows it to the exact key when it can re-read the file.
    """
    findings = _Checker(ruleset, _UserSchema(catalog), lms_catalogue).run()
    return [f.error for f in sorted(findings, key=_order)]


# --- a rules directory -------------------------------------------------------------------------


def _display(path: Path, base: Path) -> str:
    """The name the loader gives a file (``load_ruleset``'s ``relative_to``)."""
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)


def _rule_paths(directory: Path) -> list[Path]:
    return [p for p in sorted(directory.glob("*.yaml")) if not p.name.endswith(".test.yaml")]


def _parse_each(directory: Path, base: Path) -> tuple[RuleSet, bool]:
    """The files that parse cleanly on their own, and whether targets.yaml did.

    When the loader refuses the set, the semantic checks still run on these, so that one
    YAML typo does not hide the other problems until the next run.
    """
    files: list[RuleFile] = []
    targets: dict[str, Target] = {}
    targets_ok = True
    for path in _rule_paths(directory):
        errors: list[RuleError] = []
        display = _display(path, base)
        root = read_yaml(path, display, errors)
        if path.name == TARGETS_FILE:
            targets = parse_targets(root, display, errors) if root is not None else {}
            targets_ok = not errors
            continue
        parsed = parse_rule_file(root, display, errors) if root is not None else None
        if parsed is not None and not errors:
            files.append(parsed)
    return RuleSet(tuple(files), targets, ""), targets_ok


def _find(node: Node, mark: Mark) -> Node | None:
    if node.mark == mark:
        return node
    children = (
        node.value.values()
        if isinstance(node.value, dict)
        else node.value
        if isinstance(node.value, list)
        else ()
    )
    for child in children:
        if isinstance(child, Node) and (found := _find(child, mark)) is not None:
            return found
    return None


def _narrow(findings: list[_Finding], paths: dict[str, Path]) -> list[RuleError]:
    """Move each error from its element's Mark to the key holding the offending text."""
    roots: dict[str, Node | None] = {}
    out = []
    for finding in findings:
        error = finding.error
        path = paths.get(error.mark.file)
        if path is None:
            out.append(error)
            continue
        if error.mark.file not in roots:
            roots[error.mark.file] = read_yaml(path, error.mark.file, [])
        root = roots[error.mark.file]
        node = _find(root, error.mark) if root is not None else None
        if node is None:
            out.append(error)
            continue
        for key in finding.keys:
            if not isinstance(node.value, dict) or key not in node.value:
                break
            node = node.value[key]
        text = error.text
        if finding.source_text and isinstance(node.value, str):
            text = node.value
        out.append(RuleError(node.mark, error.message, text=text, hint=error.hint))
    return out


def check_directory(
    directory: Path,
    catalog: Catalog,
    lms_catalogue: LmsCatalogue | None = None,
    *,
    relative_to: Path | None = None,
) -> tuple[RuleSet | None, list[RuleError]]:
    """Load and check a rules directory: the rule set (None if the loader refused it) and
    every problem, structural and semantic, sorted by file, line and column.

    Files are named relative to ``relative_to`` (default: the working directory), as the
    loader names them.
    """
    base = relative_to or Path.cwd()
    ruleset: RuleSet | None
    try:
        ruleset = load_ruleset(directory, relative_to=base)
    except RuleErrors as exc:
        structural = list(exc.errors)
        partial, targets_ok = _parse_each(directory, base)
        checker = _Checker(partial, _UserSchema(catalog), lms_catalogue, targets_ok)
        findings = checker.run()
        ruleset = None
    else:
        structural = []
        findings = _Checker(ruleset, _UserSchema(catalog), lms_catalogue).run()
    paths = {_display(p, base): p for p in _rule_paths(directory)}
    errors = structural + _narrow(findings, paths)
    return ruleset, sorted(errors, key=lambda e: e.mark)


# --- the LMS catalogue ---------------------------------------------------------------------------

_CATALOGUE_KEYS = ("courses", "cohorts", "paths")
_ENTRY_KEYS = ("idnumber", "shortname")


def _node_mark(display: str, node: yaml.Node) -> Mark:
    return Mark(display, node.start_mark.line + 1, node.start_mark.column + 1)


def _entries(display: str, section: str, node: yaml.Node, errors: list[RuleError]) -> set[str]:
    found: set[str] = set()
    if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null":
        return found
    if not isinstance(node, yaml.SequenceNode):
        errors.append(
            RuleError(
                _node_mark(display, node), f"{section!r} must be a list", hint=f"{section}: [A, B]"
            )
        )
        return found
    for item in node.value:
        if (
            isinstance(item, yaml.ScalarNode)
            and item.tag != "tag:yaml.org,2002:null"
            and str(item.value).strip()
        ):
            found.add(str(item.value).strip())
            continue
        if isinstance(item, yaml.MappingNode):
            values = [
                str(v.value).strip()
                for k, v in item.value
                if isinstance(v, yaml.ScalarNode)
                and k.value in _ENTRY_KEYS
                and str(v.value).strip()
            ]
            if values:
                found.update(values)
                continue
        errors.append(
            RuleError(
                _node_mark(display, item),
                f"an entry of {section!r} must be an idnumber or shortname",
                text=str(item.value) if isinstance(item, yaml.ScalarNode) else "",
                hint="a text such as BEN-2026, or {idnumber: BEN-2026, shortname: ben26}",
            )
        )
    return found


def load_lms_catalogue(path: Path) -> LmsCatalogue:
    """What the LMS holds, from ``{courses: [...], cohorts: [...], paths: [...]}`` in YAML or
    JSON; RuleErrors at file:line:col when the file is not that."""
    display = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RuleErrors(
            [RuleError(Mark(display), f"cannot read the LMS catalogue: {exc.strerror}")]
        ) from exc
    if path.suffix.lower() == ".json":
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            lines = text.splitlines()
            line = lines[exc.lineno - 1].strip() if 0 < exc.lineno <= len(lines) else ""
            raise RuleErrors(
                [
                    RuleError(
                        Mark(display, exc.lineno, exc.colno), f"JSON syntax: {exc.msg}", text=line
                    )
                ]
            ) from exc
        # JSON allows tabs between tokens, YAML does not; valid JSON has none inside strings.
        text = text.replace("\t", " ")
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        where = exc.problem_mark
        mark = Mark(display, where.line + 1, where.column + 1) if where else Mark(display)
        raise RuleErrors([RuleError(mark, f"YAML syntax: {exc.problem}")]) from exc
    except yaml.YAMLError as exc:
        raise RuleErrors([RuleError(Mark(display), f"YAML: {exc}")]) from exc
    errors: list[RuleError] = []
    sections: dict[str, set[str]] = {key: set() for key in _CATALOGUE_KEYS}
    if not isinstance(root, yaml.MappingNode):
        mark = _node_mark(display, root) if root is not None else Mark(display, 1, 1)
        errors.append(
            RuleError(
                mark,
                "an LMS catalogue is a mapping of courses, cohorts and paths",
                hint="courses: [BEN-2026]\ncohorts: [BEN2026]\npaths: []",
            )
        )
    else:
        for key_node, value_node in root.value:
            key = str(key_node.value)
            if key not in sections:
                close = difflib.get_close_matches(key, _CATALOGUE_KEYS, n=1)
                errors.append(
                    RuleError(
                        _node_mark(display, key_node),
                        f"unknown key {key!r} in the LMS catalogue",
                        text=key,
                        hint=f"did you mean {close[0]!r}?"
                        if close
                        else f"allowed keys: {', '.join(_CATALOGUE_KEYS)}",
                    )
                )
                continue
            sections[key] |= _entries(display, key, value_node, errors)
    if errors:
        raise RuleErrors(sorted(errors, key=lambda e: e.mark))
    return LmsCatalogue(
        frozenset(sections["courses"]), frozenset(sections["cohorts"]), frozenset(sections["paths"])
    )


# --- rendering ---------------------------------------------------------------------------------


def render_errors(errors: Sequence[RuleError]) -> str:
    """``file:line:col: message``, the offending text indented, ``  hint: …``; then a count."""
    lines = []
    for error in errors:
        lines.append(f"{error.mark}: {error.message}")
        if error.text:
            lines.append(textwrap.indent(error.text, "    "))
        if error.hint:
            lines.append(textwrap.indent(f"hint: {error.hint}", "  "))
    files = {error.mark.file for error in errors}
    lines.append(f"{len(errors)} problem(s) in {len(files)} file(s)")
    return "\n".join(lines)


def errors_as_json(errors: Sequence[RuleError]) -> list[dict[str, Any]]:
    """The errors as plain dicts (``bridge rules check --json``)."""
    return [error.as_dict() for error in errors]
