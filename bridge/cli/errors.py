"""``bridge errors``: the dead letters (intents the LMS refused), listed, shown, retried or
skipped by the guide's three error categories."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from bridge.cli.database import database
from bridge.cli.settings import load_settings
from bridge.provision.resources import now_utc
from bridge.store import journal
from bridge.store import outbox

CATEGORY_TITLES = {
    "data_quality": "Data quality — fix the HR record",
    "configuration": "Configuration — fix the target (LMS setup, credentials) or the rules",
    "transient": "Transient — outages and throttling the relay kept retrying",
}


@click.group(name="errors", invoke_without_command=True)
@click.pass_context
def errors_group(context: click.Context) -> None:
    """Dead letters: intents the LMS refused, by the guide's three error categories."""
    if context.invoked_subcommand is None:
        context.invoke(errors_list)


@errors_group.command(name="list")
@click.option("--category", type=click.Choice(["configuration", "data_quality", "transient"]))
@click.option("--target", default=None)
@click.option("--json", "as_json", is_flag=True)
def errors_list(category: str | None, target: str | None, as_json: bool) -> None:
    """Dead letters grouped by category, with the LMS's own message."""
    with database(load_settings()) as db, db.read() as conn:
        rows = outbox.dead_letters(conn, category=category, target=target)
    if as_json:
        for row in rows:
            click.echo(
                json.dumps(
                    {
                        k: row[k]
                        for k in ("id", "target", "category", "last_error", "attempts", "intent")
                    },
                    default=str,
                )
            )
        return
    if not rows:
        click.echo("no dead letters")
        return
    for name, title in CATEGORY_TITLES.items():
        group = [row for row in rows if row.get("category") == name]
        if not group:
            continue
        table = Table(
            "id",
            "target",
            "person",
            "intent",
            "attempts",
            "LMS said",
            title=f"{title} ({len(group)})",
        )
        for row in group:
            intent = row["intent"]
            table.add_row(
                str(row["id"]),
                row["target"],
                str(intent.get("person", ""))[:12],
                f"{intent.get('kind')} {intent.get('ref') or ''}".strip(),
                str(row["attempts"]),
                str(row.get("last_error") or "")[:80],
            )
        Console().print(table)
    click.echo("retry with `bridge errors retry ID…` once fixed, or `bridge errors skip ID…`")


@errors_group.command(name="show")
@click.argument("row_id", type=int)
def errors_show(row_id: int) -> None:
    """One dead letter: the intent, the LMS's message, and its delivery journal."""
    with database(load_settings()) as db, db.read() as conn:
        row = outbox.get(conn, row_id)
        if row is None:
            raise click.ClickException(f"no outbox row {row_id}")
        entries = [
            e
            for e in journal.read(conn, resource_id=row["intent"].get("person"))
            if (e.detail or {}).get("outbox") == row_id
        ]
    click.echo(
        json.dumps(
            {
                k: row[k]
                for k in ("id", "target", "status", "category", "attempts", "last_error", "intent")
            },
            indent=2,
            default=str,
        )
    )
    for entry in entries:
        lms = (entry.detail or {}).get("lms", {})
        click.echo(
            f"  seq {entry.seq} {entry.at:%Y-%m-%d %H:%M:%S} {entry.op}: {lms.get('message', '')}"
        )


def _ids(ids: tuple[int, ...], everything: bool, conn: Any, category: str | None) -> list[int]:
    if everything:
        return [row["id"] for row in outbox.dead_letters(conn, category=category, limit=100_000)]
    return list(ids)


@errors_group.command(name="retry")
@click.argument("ids", type=int, nargs=-1)
@click.option("--all", "everything", is_flag=True)
@click.option("--category", type=click.Choice(["configuration", "data_quality", "transient"]))
def errors_retry(ids: tuple[int, ...], everything: bool, category: str | None) -> None:
    """Send dead letters again (after fixing the data, the rules or the LMS)."""
    with database(load_settings()) as db, db.write() as conn:
        count = outbox.requeue(conn, _ids(ids, everything, conn, category), now_utc())
    click.echo(f"{count} intent(s) queued again")


@errors_group.command(name="skip")
@click.argument("ids", type=int, nargs=-1)
@click.option("--all", "everything", is_flag=True)
@click.option("--category", type=click.Choice(["configuration", "data_quality", "transient"]))
def errors_skip(ids: tuple[int, ...], everything: bool, category: str | None) -> None:
    """Give up on dead letters; the person's later intents may then go."""
    with database(load_settings()) as db, db.write() as conn:
        count = outbox.skip(conn, _ids(ids, everything, conn, category))
    click.echo(f"{count} intent(s) skipped")
