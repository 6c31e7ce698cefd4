"""Findings: a RuleError at an element's Mark, narrowed to the key holding the offending text."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from bridge.rules.loader import Node
from bridge.rules.loader import read_yaml
from bridge.rules.model import Mark
from bridge.rules.model import RuleError
from bridge.rules.model import Severity


class Report(Protocol):
    """How a check reports a problem (``Checker.add``): at an element's Mark, narrowed to
    ``keys`` under it; a warning does not stop the rules from loading."""

    def __call__(
        self,
        mark: Mark,
        message: str,
        *,
        text: str = "",
        hint: str = "",
        keys: tuple[str, ...] = (),
        source_text: bool = False,
        severity: Severity = Severity.error,
    ) -> None: ...


@dataclass
class Finding:
    """A RuleError at an element's Mark, with the key under it that holds the offending text."""

    error: RuleError
    keys: tuple[str, ...] = ()
    source_text: bool = False  # the offending text is a value: show it as the file spells it


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


def narrow(findings: list[Finding], paths: dict[str, Path]) -> list[RuleError]:
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
        out.append(
            RuleError(node.mark, error.message, text=text, hint=error.hint, severity=error.severity)
        )
    return out
