"""Known role codes (pure): every code the rule files' conditions mention, and a suggestion for the rest.

A plan flags an in-scope person's role code that no condition of any rule file compares
``roleCodes`` with (exactly, or by ``sw`` / ``ew`` / ``co``), suggesting the nearest known code.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import field

from scim2_models import SCIMException
from scim2_models import ScimFilter
from scim2_models.path import CompareOperator
from scim2_models.path import Comparison
from scim2_models.path import FilterNode
from scim2_models.path import LogicalExpr
from scim2_models.path import Not
from scim2_models.path import ValuePath

from bridge.rules.model import RuleFile
from bridge.rules.model import RuleSet

ROLE_CODES_ATTRIBUTE = "rolecodes"


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
