"""``bridge targets``: the LMS targets of the rules, and ``check`` (their preflight)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from bridge.cli.database import database
from bridge.cli.rules import check_rules
from bridge.cli.settings import load_schemas
from bridge.cli.settings import load_settings
from bridge.provision.preflight import run_preflight
from bridge.provision.resources import now_utc
from bridge.rules.book import RuleBook
from bridge.rules.check import render_errors
from bridge.rules.model import RuleErrors
from bridge.rules.model import RuleSet
from bridge.store.engine import Database
from bridge.targets.base import Target
from bridge.targets.base import TargetConfigError
from bridge.targets.preflight import ERROR
from bridge.targets.preflight import Finding
from bridge.targets.preflight import Verdict
from bridge.targets.registry import make_target

PASSED, FAILED, UNREACHABLE = 0, 1, 2


def exit_code(verdicts: list[Verdict]) -> int:
    """0 when every checked target passes, 1 when one fails, else 2 when one is unreachable."""
    if any(not v.passed and not v.unreachable for v in verdicts):
        return FAILED
    return UNREACHABLE if any(v.unreachable for v in verdicts) else PASSED


def _unbuilt(ruleset: RuleSet, name: str, error: TargetConfigError) -> Verdict:
    """A target that cannot be built here (a credential's variable unset, bad options)."""
    config = ruleset.targets[name]
    finding = Finding(
        name,
        "config",
        False,
        str(error),
        where=str(config.mark),
        fix="set the environment variables its credentials name, or fix its options in "
        "targets.yaml",
    )
    return Verdict(name, (finding,))


async def check_targets(
    db: Database, ruleset: RuleSet, names: list[str], env: Mapping[str, str]
) -> list[Verdict]:
    built: dict[str, Target] = {}
    unbuilt: dict[str, Verdict] = {}
    for name in names:
        try:
            built[name] = make_target(ruleset.targets[name], env)
        except TargetConfigError as exc:
            unbuilt[name] = _unbuilt(ruleset, name, exc)
    try:
        checked = await run_preflight(db, ruleset, built, now=now_utc)
    finally:
        for target in built.values():
            await target.aclose()
    return [checked[name] if name in checked else unbuilt[name] for name in names]


def _mark(finding: Finding) -> str:
    if finding.ok and finding.severity == ERROR:
        return "[green]✓[/green]"
    if finding.severity == ERROR:
        return "[red]✗[/red]"
    return "[yellow]![/yellow]"


def _verdict_line(verdict: Verdict) -> str:
    if verdict.unreachable:
        return f"! target {verdict.target} is unreachable: {verdict.reason()}"
    if verdict.passed:
        warned = len(verdict.warnings)
        return f"✓ target {verdict.target} passes preflight" + (
            f" ({warned} warning(s))" if warned else ""
        )
    return (
        f"✗ target {verdict.target} fails preflight: {len(verdict.blocking)} problem(s) to fix; "
        "its intents wait until it passes"
    )


def render(verdicts: list[Verdict], ruleset: RuleSet, console: Console) -> None:
    for verdict in verdicts:
        config = ruleset.targets[verdict.target]
        table = Table(
            "",
            "check",
            "subject",
            "message",
            "where",
            "fix",
            title=f"target {verdict.target} ({config.kind}, {config.base_url})",
            title_justify="left",
        )
        for finding in verdict.findings:
            table.add_row(
                _mark(finding),
                finding.check,
                finding.subject or "",
                finding.message,
                finding.where or "",
                finding.fix,
            )
        console.print(table)
        console.print(_verdict_line(verdict), markup=False, highlight=False)


@click.group(name="targets")
def targets_group() -> None:
    """The LMS targets the rules drive."""


@targets_group.command(name="check")
@click.argument("name", required=False)
@click.option(
    "--rules",
    "rules_dir",
    type=click.Path(path_type=Path),
    help="Rules directory (default BRIDGE_RULES).",
)
@click.option("--json", "as_json", is_flag=True, help="The findings as one JSON document.")
def check_command(name: str | None, rules_dir: Path | None, as_json: bool) -> None:
    """Check that each target (or NAME) can take what the rules will send it, and say what
    to fix: the credential, web-service functions, auth plugin, courses, cohorts, profile
    fields. Records each verdict for the relay, ``plan``, ``explain`` and ``errors``.

    Exit 0 when every checked target passes, 1 when one fails (or cannot be built), 2 when
    one is unreachable and none fails.
    """
    settings = load_settings()
    catalog = load_schemas(settings)
    book = RuleBook(rules_dir or settings.rules_dir, lambda d: check_rules(d, catalog))
    try:
        ruleset = book.load()
    except RuleErrors as exc:
        click.echo(render_errors(exc.errors), err=True)
        sys.exit(FAILED)
    if not ruleset.targets:
        raise click.ClickException("no targets: rules/targets.yaml names none")
    if name is not None and name not in ruleset.targets:
        known = ", ".join(sorted(ruleset.targets))
        raise click.ClickException(f"no target {name!r} (the targets are: {known})")
    names = [name] if name is not None else sorted(ruleset.targets)
    with database(settings) as db:
        verdicts = asyncio.run(check_targets(db, ruleset, names, os.environ))
    if as_json:
        document = {"targets": [verdict.as_dict() for verdict in verdicts]}
        click.echo(json.dumps(document, indent=2, default=str))
    else:
        render(verdicts, ruleset, Console(soft_wrap=False))
    sys.exit(exit_code(verdicts))
