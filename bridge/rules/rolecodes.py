"""Known role codes (pure): the declared catalogue, every code the conditions mention, and a
suggestion for the rest.

The known codes are the rule set's role-code catalogue (``RuleSet.role_codes``: every code HR
may send, those that drive nothing such as ``EMPLOYEE`` included) plus every code a condition
of any rule file compares ``roleCodes`` with (exactly, or by ``sw`` / ``ew`` / ``co``); without
a catalogue, only the latter. :class:`RoleCodeTally` counts who holds each unknown code — one
finding per code, with how many people hold it, a few of them and the nearest known code —
for the plan's attention list and ``bridge quality`` alike.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from collections.abc import Sequence
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
from bridge.rules.plan_model import EXAMPLES

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
    """The declared catalogue, plus every role code a condition of any rule file compares
    ``roleCodes`` (any URN) with."""
    known = _KnownCodes(exact=set(ruleset.role_codes))
    for rule_file in ruleset.files:
        for text in _conditions(rule_file):
            try:
                node = ScimFilter(text).ast
            except (SCIMException, ValueError):
                continue  # the loader reports bad filters; a plan is not the place
            _collect_codes(node, known, inside_role_codes=False)
    return known


def _spelling(code: str) -> str:
    """A code as people mistype it: case, and ``-`` / space / ``.`` for ``_``, ignored."""
    return "".join("_" if c in "-. " else c for c in code.casefold())


class _Suggester:
    """The nearest known exact code to an unknown one (people share codes: asked once each)."""

    def __init__(self, known: _KnownCodes) -> None:
        self.by_spelling: dict[str, str] = {}
        for code in sorted(known.exact):
            self.by_spelling.setdefault(_spelling(code), code)

    def suggest(self, code: str) -> str | None:
        spelled = _spelling(code)
        found = self.by_spelling.get(spelled)
        if found is not None:
            return found
        close = difflib.get_close_matches(spelled, list(self.by_spelling), n=1, cutoff=0.75)
        return self.by_spelling[close[0]] if close else None


def _plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


@dataclass(frozen=True)
class UnknownRoleCode:
    """One role code nobody declared or mentions, and who holds it."""

    code: str
    people: tuple[str, ...]
    """The person ids holding it, sorted."""
    examples: tuple[str, ...]
    """How admins know the first few of them (those with the smallest ids)."""
    suggestion: str | None
    """The nearest known code (a typo, a hyphen for an underscore), if any."""

    @property
    def count(self) -> int:
        return len(self.people)

    def reason(self) -> str:
        """``unknown role code X held by 3 people (a, b, c): did you mean Y?``"""
        shown = list(self.examples)
        if self.count > len(shown):
            shown.append(f"+{self.count - len(shown)} more")
        text = (
            f"unknown role code {self.code} held by "
            f"{_plural(self.count, 'person', 'people')} ({', '.join(shown)})"
        )
        return text + (f": did you mean {self.suggestion}?" if self.suggestion else "")


class RoleCodeTally:
    """Who holds which unknown role code, fed one person at a time (linear, pure).

    A person is counted once however many rule files they are planned under.
    """

    def __init__(self, ruleset: RuleSet, *, examples: int = EXAMPLES) -> None:
        self.known = known_role_codes(ruleset)
        self.examples = examples
        self._verdict: dict[str, bool] = {}
        self._holders: dict[str, dict[str, str]] = {}  # unknown code → person → label
        self._seen: set[str] = set()

    def add(self, person: str, label: str, codes: Iterable[str]) -> None:
        if person in self._seen:
            return
        self._seen.add(person)
        for raw in codes:
            code = str(raw)
            known = self._verdict.get(code)
            if known is None:
                known = self._verdict[code] = self.known.knows(code)
            if not known:
                self._holders.setdefault(code, {}).setdefault(person, label)

    def unknown(self) -> list[UnknownRoleCode]:
        """One finding per unknown code, the most widely held first, then by code."""
        suggester = _Suggester(self.known)
        found = []
        for code, holders in self._holders.items():
            people = tuple(sorted(holders))
            found.append(
                UnknownRoleCode(
                    code=code,
                    people=people,
                    examples=tuple(holders[p] for p in people[: self.examples]),
                    suggestion=suggester.suggest(code),
                )
            )
        found.sort(key=lambda item: (-item.count, item.code))
        return found


def unknown_role_codes(
    ruleset: RuleSet, holders: Iterable[tuple[str, str, Sequence[str]]]
) -> list[UnknownRoleCode]:
    """The unknown role codes of ``(person id, label, role codes)``, one finding per code."""
    tally = RoleCodeTally(ruleset)
    for person, label, codes in holders:
        tally.add(person, label, codes)
    return tally.unknown()
