"""``bridge revert``: the inverse of a change, a run or everything since a time, shown or applied."""

from __future__ import annotations

from datetime import UTC
from datetime import datetime

import click

from bridge.cli.database import database
from bridge.cli.plans import PlanCommand
from bridge.cli.plans import actor
from bridge.cli.plans import detailed_exitcode
from bridge.cli.plans import plan_exit
from bridge.cli.rules import rule_book
from bridge.cli.settings import load_schemas
from bridge.cli.settings import load_settings
from bridge.cli.settings import store_options
from bridge.provision import Provisioner
from bridge.provision.revert import Reverter
from bridge.provision.revert import RevertError


@click.command(name="revert", cls=PlanCommand)
@detailed_exitcode
@click.argument("seq", type=int, required=False)
@click.option("--run", "run_id", default=None, help="Undo an applied plan (its inverse intents).")
@click.option(
    "--since",
    default=None,
    help="Undo every change since this ISO time (e.g. 2026-11-28T09:00:00+00:00).",
)
@click.option("--person", default=None, help="Only this person (id, externalId or userName).")
@click.option(
    "--apply", "do_apply", is_flag=True, help="Apply the plan (otherwise it is only shown)."
)
def revert_command(
    detailed: bool,
    seq: int | None,
    run_id: str | None,
    since: str | None,
    person: str | None,
    do_apply: bool,
) -> None:
    """Plan the inverse of a change, a run or everything since a time; --apply to carry it out.

    Exit 0 when it ran, 1 on conflicts or errors; with --detailed-exitcode 0 nothing to
    revert, 2 changes (shown, or applied), 1 conflicts or errors.
    """
    settings = load_settings()
    when = None
    if since is not None:
        try:
            when = datetime.fromisoformat(since)
        except ValueError as exc:
            raise click.BadParameter(f"not an ISO time: {since}", param_hint="--since") from exc
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
    catalog = load_schemas(settings)
    book = rule_book(settings, catalog)
    with database(settings) as db:
        reverter = Reverter(Provisioner(db, catalog, rules=book.current, **store_options(settings)))
        try:
            plan = reverter.plan(seq=seq, run=run_id, since=when, person=person)
        except RevertError as exc:
            raise click.ClickException(str(exc)) from exc
        click.echo(plan.render())
        if do_apply and plan.steps and not plan.conflicts:
            written = reverter.apply(plan, actor=actor())
            click.echo(
                f"applied: journal seqs {', '.join(map(str, written)) or '-'}; the relay carries it to the LMS"
            )
    plan_exit(plan.exit_code, detailed)
