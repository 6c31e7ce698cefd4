"""A schedule as written in YAML (a rule file's ``schedule:``, a feed's ``export.schedule``):
its plain values for ``bridge.schedule`` and that module's problems placed at the key each is
about, as rule errors with file:line:col."""

from __future__ import annotations

from typing import TYPE_CHECKING
from typing import Any

from bridge.rules.model import RuleError
from bridge.schedule import Problem

if TYPE_CHECKING:  # the loader imports this module: its Node only annotates here
    from bridge.rules.loader import Node


def plain(node: Node) -> Any:
    """The plain values of a schedule; a time written unquoted (``at: 02:00``, which YAML 1.1
    reads as the sexagesimal number 120) is kept as written."""
    if isinstance(node.value, dict):
        return {key: plain(child) for key, child in node.value.items()}
    if isinstance(node.value, list):
        return [plain(child) for child in node.value]
    if isinstance(node.value, int | float) and ":" in node.text:
        return node.text
    return node.value


def report(node: Node, problems: list[Problem], errors: list[RuleError]) -> None:
    """Each problem as a rule error at the key its path names below ``node`` (or as deep as
    the path exists)."""
    for problem in problems:
        at = node
        for key in problem.path:
            child = at.value.get(key) if isinstance(at.value, dict) else None
            if child is None:
                break
            at = child
        errors.append(RuleError(at.mark, problem.message, text=at.text, hint=problem.hint))
