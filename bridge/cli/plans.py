"""Plans: ``bridge plan`` computes one (or shows a run's), ``apply`` enqueues it, ``approve``
releases a quarantined or held run and ``reject`` cancels one, ``explain`` says why one person
gets what they get."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from bridge.cli.database import database
from bridge.cli.rules import check_rules
from bridge.cli.settings import load_schemas
from bridge.cli.settings import load_settings
from bridge.cli.settings import store_options
from bridge.cli.targets import check_targets
from bridge.config import Settings
from bridge.provision import Provisioner
from bridge.provision.brake import RunError
from bridge.provision.brake import reject
from bridge.provision.brake import stored_plan
from bridge.provision.planning import PlanError
from bridge.provision.planning import Planner
from bridge.provision.resources import now_utc
from bridge.rules.book import RuleBook
from bridge.rules.check import render_errors
from bridge.rules.explain import explanation_to_json
from bridge.rules.explain_render import render_explanation
from bridge.rules.model import RuleErrors
from bridge.rules.plan import plan_to_json
from bridge.rules.plan import render_text

DETAILED_EXITCODE = "--detailed-exitcode"
CHANGES = 2
"""The exit code of a plan with changes, under ``--detailed-exitcode`` only."""


class PlanCommand(click.Command):
    """A command that shows a plan, with Terraform's exit codes: 0 when it ran, whatever the
    plan; with ``--detailed-exitcode`` 0 no changes, 2 changes, 1 any error — a bad option or
    setting included, which click and ``BadSetting`` would otherwise exit 2 with."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        with _errors_exit_1(DETAILED_EXITCODE in args):
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: click.Context) -> Any:
        with _errors_exit_1(bool(ctx.params.get("detailed"))):
            return super().invoke(ctx)


@contextmanager
def _errors_exit_1(detailed: bool) -> Iterator[None]:
    try:
        yield
    except click.ClickException as exc:
        if detailed and exc.exit_code == CHANGES:
            raise click.ClickException(exc.format_message()) from exc  # exit 1
        raise


detailed_exitcode = click.option(
    DETAILED_EXITCODE,
    "detailed",
    is_flag=True,
    help="Exit 0 no changes, 2 changes present, 1 error (default: 0 whenever it ran).",
)


def plan_exit(code: int, detailed: bool) -> None:
    """End a plan command: ``code`` is the detailed one (0 none, 1 error, 2 changes)."""
    sys.exit(code if detailed or code != CHANGES else 0)


def actor() -> str:
    """Who a change made from the command line is journalled as."""
    import getpass

    return f"cli:{getpass.getuser()}"


MISSING_RULES_FIX = (
    "set BRIDGE_RULES to the directory of the rule files (rules/*.yaml), or run where ./rules is"
)


@contextmanager
def planner(
    settings: Settings, rules_dir: Path | None = None, *, create: bool = False
) -> Iterator[Planner]:
    """The rules, the schemas and the database a plan is made with; a missing directory or
    database is a one-line error. ``create``: a command that writes may create the database."""
    catalog = load_schemas(settings)
    directory = rules_dir or settings.rules_dir
    if not directory.is_dir():
        where = f"{directory} (in {Path.cwd()})" if not directory.is_absolute() else directory
        raise click.ClickException(f"no rules directory at {where}: {MISSING_RULES_FIX}")
    book = RuleBook(directory, lambda d: check_rules(d, catalog))
    try:
        book.load()
    except RuleErrors as exc:
        click.echo(render_errors(exc.errors), err=True)
        sys.exit(1)
    with database(settings, create=create) as db:
        provisioner = Provisioner(db, catalog, rules=book.current, **store_options(settings))
        yield Planner(db, provisioner.store, catalog, book.current, now_utc)


@click.command(name="plan", cls=PlanCommand)
@detailed_exitcode
@click.option(
    "--rules",
    "rules_dir",
    type=click.Path(path_type=Path),
    help="Rules directory (default BRIDGE_RULES).",
)
@click.option("--json", "as_json", is_flag=True, help="The plan as JSON (format bridge-plan/1).")
@click.option("--only", default=None, help="Comma-separated rule ids or rule-file names.")
@click.option(
    "--out", type=click.Path(path_type=Path), help="Save the plan (JSON) for `bridge apply`."
)
@click.option(
    "--run",
    "run_id",
    default=None,
    help="Show the intents a run wrote as a plan (a held run: the removals it holds).",
)
def plan_command(
    detailed: bool,
    rules_dir: Path | None,
    as_json: bool,
    only: str | None,
    out: Path | None,
    run_id: str | None,
) -> None:
    """Desired vs what the LMS confirmed, over every stored person.

    Changes are the intents still to make and those whose delivery failed (dead letters);
    intents pending in the outbox or waiting on their target are shown, not counted.
    With --run, the intents one run wrote instead (what `bridge approve` would release).

    Exit 0 when the plan was made, whatever it holds, 1 on an error; with
    --detailed-exitcode (Terraform's convention) 0 no changes, 2 changes present, 1 error.
    """
    if run_id is not None:
        _run_plan(run_id, rules_dir, as_json, detailed)
        return
    selected = {item.strip() for item in only.split(",") if item.strip()} if only else None
    with planner(load_settings(), rules_dir) as plans:
        try:
            computed = plans.compute(only=selected)
        except PlanError as exc:
            raise click.ClickException(str(exc)) from exc
        document = plan_to_json(computed.plan)
        document["fingerprint"] = computed.fingerprint
    if out is not None:
        out.write_text(json.dumps(document, indent=1, default=str), encoding="utf-8")
    if as_json:
        click.echo(json.dumps(document, indent=2, default=str))
    else:
        click.echo(render_text(computed.plan, color=sys.stdout.isatty()))
        if out is not None:
            click.echo(f"saved to {out}; apply it with: bridge apply {out}")
    plan_exit(computed.plan.exit_code, detailed)


def _run_plan(run_id: str, rules_dir: Path | None, as_json: bool, detailed: bool) -> None:
    """``bridge plan --run RUN``: the run's intents as a bridge-plan/1 plan, with the run."""
    with planner(load_settings(), rules_dir) as plans:
        ruleset = plans.rules()
        if ruleset is None:
            raise click.ClickException("no rules loaded")
        try:
            run, plan = stored_plan(plans.db, plans.store, ruleset, run_id, now=now_utc())
        except RunError as exc:
            raise click.ClickException(str(exc)) from exc
    document = plan_to_json(plan)
    document["run"] = {
        "id": run["id"],
        "kind": run["kind"],
        "status": run["status"],
        "summary": run.get("summary"),
    }
    if as_json:
        click.echo(json.dumps(document, indent=2, default=str))
    else:
        click.echo(f"run {run['id']} ({run['kind']}, {run['status']})")
        click.echo(render_text(plan, color=sys.stdout.isatty()))
        if run["status"] == "quarantined":
            click.echo(f"bridge approve {run['id']}  or  bridge reject {run['id']}")
    plan_exit(plan.exit_code, detailed)


@click.command(name="apply")
@click.argument("planfile", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--skip-preflight",
    is_flag=True,
    help="Enqueue even if a target fails its preflight (its intents then wait until it passes).",
)
def apply_command(planfile: Path, skip_preflight: bool) -> None:
    """Enqueue a saved plan in one transaction (quarantined when over the safety threshold).

    A failed intent goes again in its dead letter's place (same outbox row, so the person's
    order holds); pending and waiting intents are left alone. Every target the plan sends
    to is checked first (``bridge targets check``): a failing one stops the apply.
    """
    try:
        document = json.loads(planfile.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"{planfile}: not a plan file: {exc}") from exc
    if isinstance(document, dict) and document.get("source") == "reconcile":
        from bridge.cli.reconcile import apply_saved

        apply_saved(document)
        return
    with planner(load_settings()) as plans:
        if not skip_preflight:
            _preflight(plans, document)
        try:
            run_id, status, written = plans.apply(document, actor=actor())
        except PlanError as exc:
            raise click.ClickException(str(exc)) from exc
    click.echo(f"run {run_id}: {written} intent(s) {status}")
    if status == "quarantined":
        click.echo(f"over the safety threshold: review, then `bridge approve {run_id}`")


def _preflight(plans: Planner, document: dict[str, Any]) -> None:
    """Check the targets a plan sends to; exit 1 (nothing enqueued) when one fails."""
    ruleset = plans.rules()
    found = document.get("intents")
    intents: list[Any] = found if isinstance(found, list) else []
    names = sorted(
        {str(i.get("target")) for i in intents if isinstance(i, dict) and i.get("target")}
        & set(ruleset.targets if ruleset else ())
    )
    if ruleset is None or not names:
        return
    verdicts = asyncio.run(check_targets(plans.db, ruleset, names, os.environ))
    unchecked = {
        v.target for v in verdicts if any(f.check == "config" and not f.ok for f in v.findings)
    }
    for verdict in verdicts:
        if verdict.target in unchecked:
            click.echo(f"warning: {verdict.reason()} — not checked here; the relay checks it")
        elif verdict.unreachable:
            click.echo(f"warning: target {verdict.target} is unreachable; its intents will wait")
    failing = [
        v for v in verdicts if not v.unreachable and not v.passed and v.target not in unchecked
    ]
    if failing:
        for verdict in failing:
            click.echo(verdict.reason(), err=True)
        click.echo(
            "nothing enqueued: fix the target (see `bridge targets check`), or apply with "
            "--skip-preflight to let its intents wait",
            err=True,
        )
        sys.exit(1)


@click.command(name="approve")
@click.argument("run_id")
def approve_command(run_id: str) -> None:
    """Release a quarantined run (a plan over the threshold, or removals the brake held)
    to the LMS."""
    with planner(load_settings()) as plans:
        try:
            released = plans.approve(run_id, actor=actor())
        except PlanError as exc:
            raise click.ClickException(str(exc)) from exc
    click.echo(f"run {run_id} approved: {released} intent(s) released")


@click.command(name="reject")
@click.argument("run_id")
@click.option("--reason", default=None, help="Why (journalled with the decision).")
def reject_command(run_id: str, reason: str | None) -> None:
    """Cancel a quarantined or held run: its intents are never sent.

    A rejected removal is not planned away: the people are still removed in the bridge's
    store, so `bridge plan` shows the removal again as a change to make until the identity
    provider restores them (fix it there; the next write brings them back) or you apply it.
    """
    with planner(load_settings()) as plans:
        try:
            cancelled = reject(plans.db, run_id, actor=actor(), reason=reason, now=now_utc())
        except RunError as exc:
            raise click.ClickException(str(exc)) from exc
    click.echo(f"run {run_id} rejected: {cancelled} intent(s) cancelled")


@click.command(name="explain")
@click.argument("person")
@click.option("--json", "as_json", is_flag=True)
def explain_command(person: str, as_json: bool) -> None:
    """Why PERSON (id, externalId or userName) gets what they get in the LMS: each intent
    desired, pending (attempt, next try, last error) or confirmed, as `bridge plan` sees it."""
    with planner(load_settings()) as plans:
        try:
            explanation = plans.explain(person)
        except PlanError as exc:
            raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(explanation_to_json(explanation), indent=2, default=str))
    else:
        click.echo(render_explanation(explanation))
