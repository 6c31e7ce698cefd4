"""``bridge rules check``: what is wrong with a rule set as a whole, each at file:line:col.

The loader refuses what is wrong with a file on its own (YAML, keys, types, filter syntax,
a malformed role-code catalogue). The checker (``bridge.rules.checker``) finds what is wrong
against the SCIM schemas (``bridge.rules.attributes``), the targets and the fields they take
(``bridge.rules.target_fields``), the LMS catalogue (``bridge.rules.catalogue``), the role
codes that exist (``bridge.rules.role_conditions``: declared, or held by the people stored,
which the caller passes in) and the other rules (``bridge.rules.conditions``,
``bridge.rules.overlap``): unknown attributes, operators an attribute type refuses, unknown
targets, courses, mapping keys or role codes, duplicate ids, shadowed and conflicting
assignments, values a Moodle site refuses. This module holds the entry points: a loaded rule
set, a rules directory, and the rendering of the errors.

Warnings (``Severity.warning``: a username Moodle may refuse, an auth plugin a stock site
lacks) never stop a rule set from loading; the entry points leave them out unless asked
(``with_warnings=True``, as ``bridge rules check`` does), so a rule book loads on errors alone.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bridge.rules.attributes import UserSchema
from bridge.rules.catalogue import LmsCatalogue
from bridge.rules.catalogue import load_lms_catalogue
from bridge.rules.checker import Checker
from bridge.rules.findings import Finding
from bridge.rules.findings import narrow
from bridge.rules.loader import TARGETS_FILE
from bridge.rules.loader import parse_rule_file
from bridge.rules.loader import parse_targets
from bridge.rules.loader import read_ruleset
from bridge.rules.loader import read_yaml
from bridge.rules.model import Mark
from bridge.rules.model import RuleError
from bridge.rules.model import RuleErrors
from bridge.rules.model import RuleFile
from bridge.rules.model import RuleSet
from bridge.rules.model import Severity
from bridge.rules.model import Target
from bridge.rules.role_catalogue import ROLE_CODES_FILE
from bridge.rules.role_catalogue import DeclaredCode
from bridge.rules.role_catalogue import catalogue
from bridge.rules.role_catalogue import declared_in
from bridge.schemas import Catalog

__all__ = [
    "LmsCatalogue",
    "blocking",
    "check_directory",
    "check_ruleset",
    "errors_as_json",
    "load_lms_catalogue",
    "render_errors",
]


def _order(finding: Finding) -> Mark:
    return finding.error.mark


def blocking(errors: Sequence[RuleError]) -> list[RuleError]:
    """The errors that stop a rule set from loading (the warnings left out)."""
    return [error for error in errors if error.severity == Severity.error]


def check_ruleset(
    ruleset: RuleSet,
    catalog: Catalog,
    lms_catalogue: LmsCatalogue | None = None,
    *,
    with_warnings: bool = False,
    role_codes: bool = True,
    held_role_codes: frozenset[str] | None = None,
) -> list[RuleError]:
    """Every semantic problem of a loaded rule set, sorted by file, line and column.

    Pure: each error is at the Mark of the element at fault (an assignment, a mapping, the
    file); ``check_directory`` narrows it to the exact key when it can re-read the file.
    ``role_codes``: check the role codes conditions compare with against the catalogue and
    ``held_role_codes`` (those people stored hold; None: no database was read).
    """
    findings = Checker(
        ruleset,
        UserSchema(catalog),
        lms_catalogue,
        held_role_codes=held_role_codes,
        check_role_codes=role_codes,
    ).run()
    errors = [f.error for f in sorted(findings, key=_order)]
    return errors if with_warnings else blocking(errors)


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
    declared: list[DeclaredCode] = []
    for path in _rule_paths(directory):
        errors: list[RuleError] = []
        display = _display(path, base)
        root = read_yaml(path, display, errors)
        if path.name == TARGETS_FILE:
            targets = parse_targets(root, display, errors) if root is not None else {}
            targets_ok = not errors
            continue
        if root is not None:
            declared += declared_in(path.name, root, errors)
        if path.name == ROLE_CODES_FILE:
            continue
        parsed = parse_rule_file(root, display, errors) if root is not None else None
        if parsed is not None and not errors:
            files.append(parsed)
    role_codes = catalogue(declared, [])
    return RuleSet(tuple(files), targets, "", role_codes), targets_ok


def check_directory(
    directory: Path,
    catalog: Catalog,
    lms_catalogue: LmsCatalogue | None = None,
    *,
    relative_to: Path | None = None,
    with_warnings: bool = False,
    role_codes: bool = True,
    held_role_codes: frozenset[str] | None = None,
) -> tuple[RuleSet | None, list[RuleError]]:
    """Load and check a rules directory: the rule set (None if the loader refused it) and
    every problem, structural and semantic, sorted by file, line and column (the warnings
    too with ``with_warnings``; they never make the rule set None).

    Files are named relative to ``relative_to`` (default: the working directory), as the
    loader names them. ``role_codes`` and ``held_role_codes``: as ``check_ruleset``; with
    neither a role-code catalogue nor codes held, a compared code is only warned of.
    """
    base = relative_to or Path.cwd()
    schema = UserSchema(catalog)
    ruleset: RuleSet | None
    try:
        ruleset, structural = read_ruleset(directory, relative_to=base)
    except RuleErrors as exc:
        structural = list(exc.errors)
        partial, targets_ok = _parse_each(directory, base)
        checker = Checker(partial, schema, lms_catalogue, targets_ok, held_role_codes, role_codes)
        findings = checker.run()
        ruleset = None
    else:
        checker = Checker(
            ruleset, schema, lms_catalogue, True, held_role_codes, check_role_codes=role_codes
        )
        findings = checker.run()
    paths = {_display(p, base): p for p in _rule_paths(directory)}
    errors = structural + narrow(findings, paths)
    if not with_warnings:
        errors = blocking(errors)
    return ruleset, sorted(errors, key=lambda e: e.mark)


# --- rendering ---------------------------------------------------------------------------------


def render_errors(errors: Sequence[RuleError]) -> str:
    """``file:line:col: message`` (``warning: message`` for a warning), the offending text
    indented, ``  hint: …``; then a count of the problems (errors) and of the warnings."""
    lines = []
    for error in errors:
        label = "warning: " if error.is_warning else ""
        lines.append(f"{error.mark}: {label}{error.message}")
        if error.text:
            lines.append(textwrap.indent(error.text, "    "))
        if error.hint:
            lines.append(textwrap.indent(f"hint: {error.hint}", "  "))
    files = {error.mark.file for error in errors}
    problems = len(blocking(errors))
    warned = len(errors) - problems
    counts = [f"{problems} problem(s)"] if problems or not warned else []
    counts += [f"{warned} warning(s)"] if warned else []
    lines.append(f"{', '.join(counts)} in {len(files)} file(s)")
    return "\n".join(lines)


def errors_as_json(errors: Sequence[RuleError]) -> list[dict[str, Any]]:
    """The errors as plain dicts (``bridge rules check --json``), each with its severity."""
    return [error.as_dict() for error in errors]
