"""The User schemas as scim2-models binds them: attribute paths and filters checked, with hints.

Attribute and filter semantics are scim2-models' (``Path`` and ``ScimFilter`` bound to the User
model); this module turns what they refuse into a message and a suggestion (did you mean, the
extension's URN, an alias, the canonical values, the operators a type takes).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from inspect import isclass
from typing import Any

from scim2_models import AttributeBinding
from scim2_models import BaseModel
from scim2_models import Extension
from scim2_models import Path as ScimPath
from scim2_models import SCIMException
from scim2_models import ScimFilter
from scim2_models.path import AttrPath
from scim2_models.path import CompareOperator
from scim2_models.path import Comparison
from scim2_models.path import FilterNode
from scim2_models.path import LogicalExpr
from scim2_models.path import Not
from scim2_models.path import Present
from scim2_models.path import ValuePath

from bridge.schemas import USER_SCHEMA
from bridge.schemas import Catalog

_CORE_PREFIX = f"{USER_SCHEMA}:"
_EQUALITY = (CompareOperator.eq, CompareOperator.ne)


@dataclass(frozen=True)
class Problem:
    """Something wrong with a filter or a path, before we know where it was written."""

    message: str
    hint: str
    attr: str = ""  # the unknown attribute (lowercase), to skip those a bad alias explains


def _atoms(node: FilterNode) -> Iterator[Comparison | Present | ValuePath]:
    if isinstance(node, LogicalExpr):
        for term in node.terms:
            yield from _atoms(term)
    elif isinstance(node, Not):
        yield from _atoms(node.expr)
    elif isinstance(node, Comparison | Present | ValuePath):
        yield node


def short_name(urn: str) -> str:
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


class UserSchema:
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

    def unknown(self, attr_path: AttrPath, aliases: dict[str, str]) -> Problem:
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
            return Problem(
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
            return Problem(message, hint, written.lower())
        qualified = self.extension_names.get(attr_path.attr.lower())
        if qualified is not None:
            return Problem(message, _extension_hint(attr_path, qualified), written.lower())
        core = self.names[USER_SCHEMA.lower()]
        alias_names = {alias.lower(): alias for alias in aliases}
        candidates = list(dict.fromkeys([*core, *alias_names, *self.extension_names]))
        close = difflib.get_close_matches(local, candidates, n=2, cutoff=0.75)
        if close and close[0] in self.extension_names and close[0] not in alias_names:
            qualified = self.extension_names[close[0]]
            meant = AttrPath(qualified.rsplit(":", 1)[1], attr_path.sub_attr)
            return Problem(
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
        return Problem(message, f"{guess}{alias_note}", written.lower())

    # -- filters ---------------------------------------------------------------------------

    def filter_problems(self, text: str, aliases: dict[str, str]) -> list[Problem]:
        try:
            ast = ScimFilter(text).ast
        except (SCIMException, ValueError) as exc:
            return [Problem(f"invalid SCIM filter: {_detail(exc)}", "see RFC 7644 §3.4.2.2")]
        return self.node_problems(ast, aliases, text)

    def node_problems(self, ast: FilterNode, aliases: dict[str, str], text: str) -> list[Problem]:
        problems: list[Problem] = []
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
                Problem(
                    f"invalid condition: {_detail(exc)}",
                    f"scim2-models refuses {text} against the User schemas",
                )
            ]
        return []

    def _atom_problems(
        self, atom: Comparison | Present | ValuePath, aliases: dict[str, str]
    ) -> list[Problem]:
        head = atom.attr_path
        binding = self.bind(head)
        if binding is None:
            return [self.unknown(head, aliases)]
        try:
            self.filter_type(atom)
        except (SCIMException, ValueError) as exc:
            return [Problem(_detail(exc), _operator_hint(binding, atom))]
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
                    Problem(
                        f"complex attribute {short_name(binding.urn)!r} compared as a whole",
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

    def _canonical(self, binding: AttributeBinding, atom: Comparison) -> list[Problem]:
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
            Problem(
                f"{atom.value!r} is not a value of {short_name(binding.urn)!r}",
                f"{guess}the schema's canonical values are {', '.join(values)} "
                "(add the value to the schema file if the source really sends it)",
            )
        ]

    # -- paths (mapping sources) -----------------------------------------------------------

    def source_problems(self, source: str, aliases: dict[str, str]) -> list[Problem]:
        try:
            node = ScimPath(source).ast
        except (SCIMException, ValueError):
            node = None
        if not isinstance(node, AttrPath | ValuePath):
            return [
                Problem(
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
            shown = short_name(binding.urn)
            subs = ", ".join(f"{shown}.{s}" for s in _field_names(model).values())
            return [
                Problem(
                    f"complex attribute {shown!r} would reach the LMS as an object",
                    f"map one of its sub-attributes: {subs}",
                )
            ]
        return []


def _operator_hint(binding: AttributeBinding, atom: FilterNode) -> str:
    name = short_name(binding.urn)
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
