"""The role-code catalogue: the codes HR may send, as declared next to the rules.

Declared under ``role_codes:`` in ``role-codes.yaml`` (next to the rule files; not a rule file)
or in any rule file, each entry a code or ``{code: X, note: "..."}``; the rule set's catalogue
(``RuleSet.role_codes``) is the union. ``bridge.rules.role_conditions`` checks the conditions
against it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from bridge.rules.model import Mark
from bridge.rules.model import RuleError
from bridge.rules.model import Severity

if TYPE_CHECKING:  # the loader imports this module: its Node only annotates here
    from bridge.rules.loader import Node

ROLE_CODES_FILE = "role-codes.yaml"
"""The file of a rules directory that declares role codes only (not a rule file)."""

ROLE_CODES_KEY = "role_codes"
_ENTRY_KEYS = ("code", "note")
EXAMPLE = "role_codes: [BEN_CHOICE_2026, MANAGER, {code: EMPLOYEE, note: everyone}]"


@dataclass(frozen=True)
class DeclaredCode:
    """One role code of a ``role_codes:`` list, where it was written."""

    code: str
    mark: Mark


def _entry(item: Node, errors: list[RuleError]) -> DeclaredCode | None:
    node = item
    if isinstance(item.value, dict):
        for key, child in item.value.items():
            if key not in _ENTRY_KEYS:
                errors.append(
                    RuleError(
                        child.mark,
                        f"unknown key {key!r} in a role code",
                        text=key,
                        hint="a role code is `CODE` or {code: CODE, note: why it exists}",
                    )
                )
        note = item.value.get("note")
        if note is not None and not isinstance(note.value, str):
            errors.append(RuleError(note.mark, "a role code's note is text", text=note.text))
        found = item.value.get("code")
        if found is None:
            errors.append(
                RuleError(item.mark, "a role code needs `code:`", hint="{code: MANAGER, note: …}")
            )
            return None
        node = found
    if not isinstance(node.value, str):
        errors.append(
            RuleError(
                node.mark,
                "a role code is text",
                text=node.text or str(node.value),
                hint='quote it: `- "2026"`' if node.value is not None else EXAMPLE,
            )
        )
        return None
    code = node.value
    if not code.strip() or code != code.strip():
        errors.append(
            RuleError(
                node.mark,
                f"role code {code!r} is empty or has spaces around it",
                text=code,
                hint="role codes compare exactly, spaces included: write the code as HR sends it",
            )
        )
        return None
    return DeclaredCode(code, node.mark)


def read_declaration(node: Node | None, errors: list[RuleError]) -> list[DeclaredCode]:
    """The codes of a ``role_codes:`` value (a list), problems appended to ``errors``."""
    if node is None or node.value is None:
        return []
    if not isinstance(node.value, list):
        errors.append(
            RuleError(
                node.mark,
                "role_codes must be a list of role codes",
                text=node.text or str(node.value),
                hint=EXAMPLE,
            )
        )
        return []
    found = [_entry(item, errors) for item in node.value]
    return [declared for declared in found if declared is not None]


def read_role_codes_file(root: Node, errors: list[RuleError]) -> list[DeclaredCode]:
    """``role-codes.yaml``: a mapping with ``role_codes:`` only."""
    if not isinstance(root.value, dict) or ROLE_CODES_KEY not in root.value:
        errors.append(
            RuleError(
                root.mark,
                f"{ROLE_CODES_FILE} declares role codes: it needs a `role_codes:` list",
                hint=EXAMPLE,
            )
        )
        return []
    for key, child in root.value.items():
        if key != ROLE_CODES_KEY:
            errors.append(
                RuleError(
                    child.mark,
                    f"unknown key {key!r} in {ROLE_CODES_FILE}",
                    text=key,
                    hint=f"{ROLE_CODES_FILE} holds `role_codes:` only; rules go in rule files",
                )
            )
    return read_declaration(root.value[ROLE_CODES_KEY], errors)


def declared_in(file_name: str, root: Node, errors: list[RuleError]) -> list[DeclaredCode]:
    """The role codes a file of a rules directory declares: all of ``role-codes.yaml``, or a
    rule file's ``role_codes:``."""
    if file_name == ROLE_CODES_FILE:
        return read_role_codes_file(root, errors)
    if isinstance(root.value, dict):
        return read_declaration(root.value.get(ROLE_CODES_KEY), errors)
    return []


def catalogue(declared: list[DeclaredCode], errors: list[RuleError]) -> frozenset[str]:
    """The declared codes as a set; a code declared twice is a warning at its second place."""
    first: dict[str, DeclaredCode] = {}
    for entry in sorted(declared, key=lambda d: d.mark):
        earlier = first.setdefault(entry.code, entry)
        if earlier is not entry:
            errors.append(
                RuleError(
                    entry.mark,
                    f"role code {entry.code} is declared twice (also at {earlier.mark})",
                    text=entry.code,
                    hint="declare each code once",
                    severity=Severity.warning,
                )
            )
    return frozenset(first)
