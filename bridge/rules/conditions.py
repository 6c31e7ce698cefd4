"""Reasoning between conditions: implication, contradiction, never matching anyone.

Written here because no library proves it; deliberately conservative: a filter is reasoned
about only when it is an ``or`` of ``and``s of comparisons, and a rule is reported as shadowed
or impossible only when the filters' shapes prove it.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field

from scim2_models import SCIMException
from scim2_models import ScimFilter
from scim2_models.path import STRING_OPERATORS
from scim2_models.path import Comparison
from scim2_models.path import FilterNode
from scim2_models.path import LogicalExpr
from scim2_models.path import LogicalOperator
from scim2_models.path import Present
from scim2_models.path import coerce_value

from bridge.rules.attributes import UserSchema


@dataclass(frozen=True)
class Atom:
    """One term of a conjunction, keyed so that two spellings of the same test are equal."""

    kind: str
    urn: str
    op: str = ""
    value: object = None
    single: bool = False  # the attribute holds one value (so `eq a and eq b` is impossible)
    shown: str = field(default="", compare=False)


def _key(schema: UserSchema, node: FilterNode) -> Atom:
    if isinstance(node, Comparison):
        binding = schema.bind_compared(node.attr_path)
        if binding is None:
            return Atom("?", str(node).lower())
        value: object = node.value
        if isinstance(value, str) and node.op not in STRING_OPERATORS:
            try:
                value = coerce_value(binding, value, node.op)
            except SCIMException:
                value = node.value
        if isinstance(value, str):
            value = binding.comparable(value)
        single = not binding.is_multivalued and not binding.target_is_multivalued
        return Atom("cmp", binding.urn.lower(), node.op.value, value, single, str(node))
    if isinstance(node, Present):
        binding = schema.bind(node.attr_path)
        urn = binding.urn.lower() if binding is not None else str(node).lower()
        return Atom("pr", urn, shown=str(node))
    return Atom("other", str(node).lower(), shown=str(node))


def _conjunction(schema: UserSchema, node: FilterNode) -> frozenset[Atom] | None:
    terms = node.terms if isinstance(node, LogicalExpr) else (node,)
    if isinstance(node, LogicalExpr) and node.op != LogicalOperator.and_:
        return None
    if any(isinstance(t, LogicalExpr) for t in terms):
        return None
    return frozenset(_key(schema, t) for t in terms)


def disjuncts(schema: UserSchema, text: str | None) -> list[frozenset[Atom]] | None:
    """The filter as an `or` of `and`s of terms, or None when it has another shape."""
    if text is None:
        return [frozenset()]
    try:
        ast = ScimFilter(text).ast
    except (SCIMException, ValueError):
        return None
    if isinstance(ast, LogicalExpr) and ast.op == LogicalOperator.or_:
        found = [_conjunction(schema, term) for term in ast.terms]
    else:
        found = [_conjunction(schema, ast)]
    return None if any(c is None for c in found) else [c for c in found if c is not None]


def implies(schema: UserSchema, narrower: str, broader: str) -> bool:
    """Whether every person ``narrower`` matches is matched by ``broader`` (provably)."""
    left, right = disjuncts(schema, narrower), disjuncts(schema, broader)
    if left is None or right is None:
        return narrower == broader
    return all(any(r <= term for r in right) for term in left)


def _contradiction(terms: frozenset[Atom]) -> str | None:
    """Why a conjunction can match nobody, if a single-valued attribute makes it so."""
    equal: dict[str, Atom] = {}
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


def why_never(*filters: list[frozenset[Atom]] | None) -> str | None:
    """Why the conjunction of these filters matches nobody, or None if it may match."""
    if any(f is None for f in filters):
        return None
    combined: list[frozenset[Atom]] = [frozenset()]
    for alternatives in filters:
        assert alternatives is not None
        combined = [a | b for a in combined for b in alternatives]
        if len(combined) > 256:  # too many cases to be worth proving anything
            return None
    reasons = [_contradiction(terms) for terms in combined]
    if not reasons or any(reason is None for reason in reasons):
        return None
    return reasons[0]
