"""Conditions against the role codes that exist: the declared catalogue and the codes people hold.

A condition (a scope filter or a ``when:``) comparing ``roleCodes`` (any URN, as
``bridge.rules.rolecodes`` reads them) exactly with a code that is neither declared
(``bridge.rules.role_catalogue``) nor held by anyone stored (``bridge rules check`` reads the
database when there is one) compares with a code HR does not send: ``BEN_CHOCE_2026`` enrols
nobody. That is an error, with the nearest known code. With neither a catalogue nor stored
people to ask, the check cannot tell, and says so once per code (a warning).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field

from scim2_models import SCIMException
from scim2_models import ScimFilter
from scim2_models.path import CompareOperator
from scim2_models.path import Comparison
from scim2_models.path import FilterNode
from scim2_models.path import LogicalExpr
from scim2_models.path import Not

from bridge.rules.model import Severity
from bridge.rules.role_catalogue import EXAMPLE
from bridge.rules.role_catalogue import ROLE_CODES_FILE
from bridge.rules.rolecodes import ROLE_CODES_ATTRIBUTE
from bridge.rules.rolecodes import _KnownCodes
from bridge.rules.rolecodes import _Suggester


def _compared(node: FilterNode) -> Iterator[str]:
    if isinstance(node, Comparison):
        on_codes = node.attr_path.attr.lower() == ROLE_CODES_ATTRIBUTE
        exact = node.op in (CompareOperator.eq, CompareOperator.ne)
        if on_codes and exact and isinstance(node.value, str):
            yield node.value
    elif isinstance(node, Not):
        yield from _compared(node.expr)
    elif isinstance(node, LogicalExpr):
        for term in node.terms:
            yield from _compared(term)


def compared_codes(condition: str) -> list[str]:
    """The role codes a condition (aliases expanded) compares ``roleCodes`` with exactly
    (``eq``, ``ne``; patterns such as ``sw`` are not codes), each once, in order."""
    try:
        node = ScimFilter(condition).ast
    except (SCIMException, ValueError):
        return []  # the loader reports a filter that does not parse
    return list(dict.fromkeys(_compared(node)))


@dataclass(frozen=True)
class CodeProblem:
    """A compared role code nobody vouches for: the message, a hint and how bad it is."""

    message: str
    hint: str
    severity: Severity = Severity.error


@dataclass
class RoleCodes:
    """What the check knows: the declared codes, and those held by people stored (None when
    no database was read). A code the check cannot tell about is warned of once."""

    declared: frozenset[str]
    held: frozenset[str] | None = None
    known: frozenset[str] = field(init=False)
    warned: set[str] = field(default_factory=set, init=False)
    suggester: _Suggester = field(init=False)

    def __post_init__(self) -> None:
        self.known = self.declared | (self.held or frozenset())
        self.suggester = _Suggester(_KnownCodes(exact=set(self.known)))

    def nearest(self, code: str) -> str | None:
        """The code meant: a declared one before one people hold, as written before as
        people mistype it (case, ``-`` for ``_``: ``bridge.rules.rolecodes``)."""
        for pool in (self.declared, self.known):
            close = difflib.get_close_matches(code, sorted(pool), n=1, cutoff=0.75)
            if close:
                return close[0]
        return self.suggester.suggest(code)

    def problem(self, code: str, where: str) -> CodeProblem | None:
        """Why ``code``, compared with in ``where`` (``the scope filter``), is not a real role
        code, or None when it is one."""
        if code in self.known:
            return None
        if not self.known:
            if code in self.warned:
                return None
            self.warned.add(code)
            return CodeProblem(
                f"cannot tell whether {code} in {where} is a real role code: declare role_codes",
                f"list every code HR sends in {ROLE_CODES_FILE} next to the rule files "
                f"({EXAMPLE}); `bridge rules check` also counts the codes held by the people "
                "stored in the database (BRIDGE_DATABASE_URL)",
                Severity.warning,
            )
        suggestion = self.nearest(code)
        sources = []
        if self.declared:
            sources.append(f"the {len(self.declared)} declared in role_codes")
        if self.held:
            sources.append(f"the {len(self.held)} held by people stored")
        return CodeProblem(
            f"unknown role code {code} in {where}"
            + (f": did you mean {suggestion}?" if suggestion is not None else ""),
            f"{code} is not declared in role_codes and nobody stored holds it: the condition "
            f"compares with a code HR does not send (known: {' and '.join(sources)}); if HR "
            f"does send it, declare it in {ROLE_CODES_FILE}",
        )
