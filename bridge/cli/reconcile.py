"""``bridge reconcile``: what the LMS holds against what it confirmed, as a plan to review,
save (``bridge apply FILE``) or apply at once."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bridge.cli.database import database
from bridge.cli.plans import PlanCommand
from bridge.cli.plans import actor
from bridge.cli.plans import detailed_exitcode
from bridge.cli.plans import plan_exit
from bridge.cli.rules import rule_book
from bridge.cli.settings import load_schemas
from bridge.cli.settings import load_settings
from bridge.provision.reconcile import Reconciled
from bridge.provision.reconcile import ReconcileError
from bridge.provision.reconcile import Reconciler
from bridge.provision.reconcile_read import read_targets
from bridge.provision.resources import now_utc
from bridge.rules.check import render_errors
from bridge.rules.model import RuleErrors
from bridge.rules.model import RuleSet
from bridge.targets.base import TargetConfigError
from bridge.targets.canvas_reconcile import CanvasReadError
from bridge.targets.moodle_ws import MoodleError
from bridge.targets.scim_reconcile import ScimReadError


async def _read(reconciler: Reconciler, ruleset: RuleSet, names: list[str]) -> Reconciled:
    return await read_targets(reconciler, ruleset, names, os.environ)


@contextmanager
def _reconciler() -> Iterator[Reconciler]:
    """A Reconciler over the configured database and rules; what stops a reconcile (broken
    rules, a target it cannot read, the LMS refusing a read) as a one-line CLI error."""
    settings = load_settings()
    catalog = load_schemas(settings)
    try:
        book = rule_book(settings, catalog)
    except RuleErrors as exc:
        raise click.ClickException(render_errors(exc.errors)) from exc
    with database(settings) as db:
        try:
            yield Reconciler(db, book.current, now_utc)
        except (ReconcileError, TargetConfigError) as exc:
            raise click.ClickException(str(exc)) from exc
        except MoodleError as exc:
            raise click.ClickException(f"reading the LMS failed: {exc.message}") from exc
        except (CanvasReadError, ScimReadError) as exc:
            raise click.ClickException(f"reading the LMS failed: {exc}") from exc


@click.command(name="reconcile", cls=PlanCommand)
@detailed_exitcode
@click.option(
    "--target",
    "target_name",
    default=None,
    help="Only this target (default: every one the rules drive).",
)
@click.option(
    "--json", "as_json", is_flag=True, help="The plan as JSON (bridge-plan/1, source: reconcile)."
)
@click.option("--apply", "do_apply", is_flag=True, help="Enqueue the re-asserting intents now.")
@click.option("--out", type=click.Path(path_type=Path), help="Save the plan (JSON) to review.")
def reconcile_command(
    detailed: bool, target_name: str | None, as_json: bool, do_apply: bool, out: Path | None
) -> None:
    """Read what the LMS holds for the people, courses and cohorts the bridge manages and
    compare it with what the LMS confirmed: accounts deleted or suspended by hand, mapped
    fields changed, enrolments removed, suspended or added by hand, cohort members removed or
    added by hand. Reads moodle (accounts, course participants, cohort members), canvas
    (the account's users, course enrollments) and scim targets (accounts).

    Bridge-owned state that drifted becomes intents (a plan: bridge-plan/1 with
    ``source: reconcile``; --apply enqueues them through the outbox, quarantined over the
    safety threshold); what the bridge does not own is reported, never touched.
    Exit 0 when it ran, drift or not; 1 on an error (also a target kind reconcile cannot
    read: moodle, canvas and scim are read; a web-service function missing from a Moodle
    token's service is named, with where to add it). With --detailed-exitcode: 0 no drift to
    re-assert, 2 drift found (shown, saved or applied), 1 error.
    """
    with _reconciler() as reconciler:
        names = reconciler.targets(target_name)
        reconciled = asyncio.run(_read(reconciler, reconciler.ruleset(), names))
        document = reconciled.document()
        if out is not None:
            out.write_text(json.dumps(document, indent=1, default=str), encoding="utf-8")
        if as_json:
            click.echo(json.dumps(document, indent=2, default=str))
        else:
            render(reconciled, Console(soft_wrap=False))
        if do_apply and reconciled.plan.tracked:
            run_id, status, written = reconciler.apply(reconciled, actor=actor())
            message = f"run {run_id}: {written} intent(s) {status}"
            if status == "quarantined":
                message += f"; over the safety threshold: review, then `bridge approve {run_id}`"
            click.echo(message, err=as_json)
    plan_exit(reconciled.exit_code, detailed)


SHOWN_PER_KIND = 20
"""Rows of the table per drift kind (the JSON holds every item)."""


def render(reconciled: Reconciled, console: Console) -> None:
    """The drift as a table (up to ``SHOWN_PER_KIND`` rows per kind), then what applying
    it does."""
    plan, drift = reconciled.plan, reconciled.drift
    owned = [d for d in drift if d.intent is not None]
    console.print(
        f"[bold]Reconcile of {', '.join(reconciled.targets)}[/bold] — "
        f"{plan.population} linked account(s), {reconciled.reads} read call(s), {plan.generated_at}"
    )
    if not drift:
        console.print("  no drift: the LMS holds what it confirmed")
        return
    states = {id(t.intent): t.state for t in (*plan.tracked, *plan.in_flight)}
    table = Table("drift", "person", "ref", "action", "reason", show_lines=False)
    shown: dict[str, int] = {}
    for item in drift:
        shown[item.kind] = shown.get(item.kind, 0) + 1
        if shown[item.kind] > SHOWN_PER_KIND:
            continue
        action = "report only"
        if item.intent is not None:
            action = f"{item.intent.kind.value} ({states.get(id(item.intent), 'to_make')})"
        table.add_row(
            item.kind,
            escape(item.label or "-"),
            escape(item.ref or ""),
            action,
            escape(item.reason),
        )
    console.print(table)
    for kind, count in shown.items():
        if count > SHOWN_PER_KIND:
            console.print(f"  … and {count - SHOWN_PER_KIND} more {kind} (see --json)")
    counts = plan.state_counts()
    console.print(
        f"{len(owned)} drift item(s) to re-assert ({len(plan.tracked)} intent(s) to enqueue, "
        f"{counts['pending'] + counts['waiting']} already on their way); "
        f"{len(drift) - len(owned)} reported only"
    )
    for verdict in plan.safety:
        if verdict.quarantined:
            console.print(f"[red]safety: {verdict.rule_file}: {escape(verdict.reason)}[/red]")


def apply_saved(document: dict[str, Any]) -> None:
    """``bridge apply FILE`` of a saved reconcile: read the LMS again and enqueue only if the
    drift is the same as reviewed (else the plan is stale: reconcile again)."""
    with _reconciler() as reconciler:
        ruleset = reconciler.ruleset()
        if document.get("rules_version") != ruleset.version:
            raise ReconcileError(
                f"the reconcile was made with rules {document.get('rules_version')}, "
                f"the bridge has {ruleset.version}: reconcile again"
            )
        names = [str(n) for n in document.get("targets") or []]
        reconciled = asyncio.run(_read(reconciler, ruleset, reconciler.targets_named(names)))
        if reconciled.fingerprint != document.get("fingerprint"):
            raise click.ClickException(
                "the reconcile is stale: the LMS or the outbox changed since it was made; "
                "reconcile again"
            )
        run_id, status, written = reconciler.apply(reconciled, actor=actor())
    click.echo(f"run {run_id}: {written} intent(s) {status}")
    if status == "quarantined":
        click.echo(f"over the safety threshold: review, then `bridge approve {run_id}`")
