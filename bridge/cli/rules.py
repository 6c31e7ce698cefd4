"""The rules: checked against the schemas and the targets, loaded into a book, and
``bridge rules check|test``."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from bridge.cli.settings import load_schemas
from bridge.cli.settings import load_settings
from bridge.config import Settings
from bridge.rules.book import RuleBook
from bridge.rules.check import blocking
from bridge.rules.check import check_directory
from bridge.rules.check import errors_as_json
from bridge.rules.check import load_lms_catalogue
from bridge.rules.check import render_errors
from bridge.rules.fixtures import fixture_files
from bridge.rules.fixtures import render_report
from bridge.rules.fixtures import run_fixtures
from bridge.rules.model import RuleError
from bridge.rules.model import RuleErrors
from bridge.rules.model import RuleSet
from bridge.schemas import Catalog
from bridge.store.population import stored_role_codes


def check_rules(
    directory: Path,
    catalog: Catalog,
    lms: Any = None,
    *,
    with_warnings: bool = False,
    role_codes: bool = False,
    held_role_codes: frozenset[str] | None = None,
) -> tuple[RuleSet | None, list[RuleError]]:
    """``check_directory`` plus the checks only the target adapters know (rest, scim options);
    warnings too with ``with_warnings`` (they never make the rule set None).

    The role codes of the conditions are checked only when asked (``role_codes``, as
    ``bridge rules check`` does, with the codes people stored hold): a rule book loading has
    read no database to tell a real code from a typo, and loads what ``rules check`` passes.
    """
    ruleset, errors = check_directory(
        directory,
        catalog,
        lms,
        with_warnings=with_warnings,
        role_codes=role_codes,
        held_role_codes=held_role_codes,
    )
    if ruleset is not None:
        from bridge.targets import rest
        from bridge.targets import scim

        for target in ruleset.targets.values():
            problems: list[str] = []
            if target.kind == "rest":
                problems = rest.validate_options(target.options, target.credentials)
            elif target.kind == "scim":
                problems = scim.validate_options(target.options)
            errors += [
                RuleError(
                    target.mark, f"target {target.name!r}: {problem}", hint="see rules/examples/"
                )
                for problem in problems
            ]
    return (ruleset if not blocking(errors) else None), errors


def rule_book(settings: Settings, catalog: Catalog) -> RuleBook:
    """The rules of ``BRIDGE_RULES``, checked against the schemas; RuleErrors if broken."""
    book = RuleBook(settings.rules_dir, lambda directory: check_rules(directory, catalog))
    if settings.rules_dir.is_dir():
        book.load()
    else:
        logging.getLogger("bridge.rules").warning(
            "no rules directory at %s: SCIM only, nothing is projected to an LMS",
            settings.rules_dir,
        )
    return book


@click.group(name="rules")
def rules_group() -> None:
    """Check and test the YAML rule files."""


@rules_group.command(name="check")
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.option(
    "--catalogue",
    type=click.Path(exists=True, path_type=Path),
    help="LMS courses/cohorts/paths (YAML or JSON) to check refs against.",
)
@click.option("--json", "as_json", is_flag=True, help="Problems as a JSON list.")
def rules_check(path: Path | None, catalogue: Path | None, as_json: bool) -> None:
    """Report every problem of the rule files at once (file:line:col, text, hint); exit 1 on any.

    Role codes in conditions are checked against the declared catalogue (role_codes) and the
    codes held by the people of BRIDGE_DATABASE_URL, when that database exists (it is only
    read, never created).
    """
    settings = load_settings()
    catalog = load_schemas(settings)
    try:
        lms = load_lms_catalogue(catalogue) if catalogue else None
    except RuleErrors as exc:
        raise click.ClickException(render_errors(exc.errors)) from exc
    held = stored_role_codes(settings.database_url, catalog.user)
    ruleset, errors = check_rules(
        path or settings.rules_dir,
        catalog,
        lms,
        with_warnings=True,
        role_codes=True,
        held_role_codes=held,
    )
    failed = bool(blocking(errors))
    if as_json:
        click.echo(json.dumps(errors_as_json(errors), indent=2))
    elif failed:
        click.echo(render_errors(errors))
    else:
        if errors:  # warnings only: shown, and the rules are fine to load
            click.echo(render_errors(errors))
        files = len(ruleset.files) if ruleset else 0
        click.echo(f"ok: {files} rule file(s), version {ruleset.version if ruleset else '-'}")
    sys.exit(1 if failed else 0)


@rules_group.command(name="test")
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.option("-v", "--verbose", is_flag=True, help="Show the intents of passing tests too.")
@click.option(
    "--coverage-threshold", type=float, default=None, help="Fail below this % of rules exercised."
)
def rules_test(path: Path | None, verbose: bool, coverage_threshold: float | None) -> None:
    """Run the rules' fixture files (*.test.yaml): PASS/FAIL per test, and rule coverage."""
    settings = load_settings()
    catalog = load_schemas(settings)
    directory = path or settings.rules_dir
    ruleset, errors = check_rules(directory, catalog)
    if errors or ruleset is None:
        click.echo(render_errors(errors))
        sys.exit(1)
    try:
        report = run_fixtures(ruleset, catalog, fixture_files(directory))
    except RuleErrors as exc:
        click.echo(render_errors(exc.errors))
        sys.exit(1)
    click.echo(render_report(report, verbose))
    sys.exit(0 if report.ok(coverage_threshold) else 1)
