"""The rules: checked against the schemas and the targets, loaded into a book, and
``bridge rules check|test|docs|schema``."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from bridge.cli.settings import load_schemas
from bridge.cli.settings import load_settings
from bridge.config import Settings
from bridge.rules import docs
from bridge.rules import json_schema
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

    Exit 0 when the rules load (warnings are shown, and allowed), 1 on an error.
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
    """Run the rules' fixture files (*.test.yaml): PASS/FAIL per test, and rule coverage.

    Exit 0 when every test passes (and coverage reaches --coverage-threshold), 1 when one
    fails, coverage falls short, or the rules or a fixture file do not load.
    """
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


_EXIT = re.compile(r"\bExit")
DEFAULT_EXIT = "0 done; 1 an error (the message says why)."


def _commands(group: click.Group, ctx: click.Context) -> Iterator[tuple[str, click.Command]]:
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is None:
            continue
        path = f"{ctx.command_path} {name}"
        child = click.Context(command, parent=ctx, info_name=name)
        if isinstance(command, click.Group):
            yield from _commands(command, child)
        else:
            yield path, command


def _exit_sentences(text: str) -> str | None:
    """The paragraph's tail that says what a command exits with (``Exit 0 …``), one line."""
    for paragraph in re.split(r"\n\s*\n", text):
        found = _EXIT.search(paragraph)
        if found is not None:
            return " ".join(paragraph[found.start() :].split())
    return None


def exit_codes(root: click.Group, name: str = "bridge") -> str:
    """Every command's exit codes, as its help (else its module's docstring) states them."""
    lines = ["| command | exit codes |", "| --- | --- |"]
    for path, command in _commands(root, click.Context(root, info_name=name)):
        module = sys.modules.get(getattr(command.callback, "__module__", ""), None)
        said = _exit_sentences(command.help or "") or _exit_sentences(
            (module.__doc__ or "") if module is not None else ""
        )
        text = (said or DEFAULT_EXIT).replace("``", "`").replace("|", "\\|")
        lines.append(f"| `{path}` | {text} |")
    lines.append("")
    lines.append("Every command exits 2 on a usage error (an unknown option, a missing argument).")
    return "\n".join(lines)


def generated_sections(settings: Settings) -> dict[str, str]:
    """The reference's generated sections: ``bridge.rules.docs`` and the exit codes."""
    found = docs.sections(load_schemas(settings))
    root = click.get_current_context().find_root().command
    if isinstance(root, click.Group):
        found["exit-codes"] = exit_codes(root)
    return found


@rules_group.command(name="docs")
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--check", is_flag=True, help="Change nothing: exit 1 if a file is out of date.")
def rules_docs(files: tuple[Path, ...], check: bool) -> None:
    """The generated parts of the rule-language reference: keys, transforms, attributes (from
    BRIDGE_SCHEMAS), target fields, intent kinds.

    Without FILES, prints them. With FILES (rules/README.md), rewrites each section marked
    `<!-- BEGIN GENERATED: NAME … -->` … `<!-- END GENERATED: NAME -->` in place; with
    --check, only says which are out of date. Exit 0 up to date (or written), 1 out of date
    or a file without markers.
    """
    generated = generated_sections(load_settings())
    if not files:
        click.echo(docs.render(generated), nl=False)
        return
    failed = False
    for path in files:
        text = path.read_text(encoding="utf-8")
        try:
            if not docs.marked(text):
                raise docs.DocsError("marks no generated section")
            filled = docs.fill(text, generated)
        except docs.DocsError as exc:
            click.echo(f"{path}: {exc}", err=True)
            failed = True
            continue
        if filled == text:
            click.echo(f"{path}: up to date")
        elif check:
            click.echo(f"{path}: out of date: run `bridge rules docs {path}`", err=True)
            failed = True
        else:
            path.write_text(filled, encoding="utf-8")
            click.echo(f"{path}: written")
    sys.exit(1 if failed else 0)


@rules_group.command(name="schema")
@click.argument("name", required=False, type=click.Choice(sorted(json_schema.FILES)))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write every schema to this directory (schemas/json).",
)
@click.option("--check", is_flag=True, help="With --out: change nothing, exit 1 if out of date.")
def rules_schema(name: str | None, out: Path | None, check: bool) -> None:
    """JSON Schemas (draft 2020-12) of a rule file (rules), targets.yaml (targets) and the plan
    file (bridge-plan-1), for editors with the YAML language server and for CI.

    Prints NAME (default: rules). With --out DIR, writes each as DIR/NAME.schema.json; with
    --check too, only says which are out of date. Exit 0, or 1 when one is out of date.
    """
    found = json_schema.schemas()
    if out is None:
        if check:
            raise click.UsageError("--check needs --out DIR")
        click.echo(json_schema.dump(found[name or "rules"]), nl=False)
        return
    stale = False
    for key, schema in found.items():
        if name is not None and key != name:
            continue
        path = out / json_schema.FILES[key]
        text = json_schema.dump(schema)
        current = path.read_text(encoding="utf-8") if path.is_file() else None
        if current == text:
            click.echo(f"{path}: up to date")
        elif check:
            click.echo(f"{path}: out of date: run `bridge rules schema --out {out}`", err=True)
            stale = True
        else:
            out.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            click.echo(f"{path}: written")
    sys.exit(1 if stale else 0)
