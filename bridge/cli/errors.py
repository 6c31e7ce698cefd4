"""``bridge errors``: the dead letters (intents the LMS refused), listed, shown, retried or
skipped by the three error categories (with the integration guide's terms for them).

A dead letter holds its person's later intents on the same target back (the relay keeps
per-person order): each is listed with the intents blocked behind it. A target whose health
is not ok (unreachable, or failing preflight) is named above the list with why its intents
wait and how many do.
"""

from __future__ import annotations

import json
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bridge.cli.database import database
from bridge.cli.settings import load_settings
from bridge.provision.resources import now_utc
from bridge.store import health
from bridge.store import journal
from bridge.store import outbox
from bridge.targets.base import GUIDE_TERMS
from bridge.targets.base import Category

CATEGORY_TITLES = {
    "data_quality": "Data quality — fix the HR record",
    "configuration": "Configuration — fix the target (LMS setup, credentials) or the rules",
    "transient": "Transient — outages and throttling the relay kept retrying",
}


def category_title(name: str) -> str:
    """A category's title with the guide's term for it."""
    return f"{CATEGORY_TITLES[name]} — in the guide's terms: {GUIDE_TERMS[Category(name)]}"


def _guide(name: str | None) -> str | None:
    try:
        return GUIDE_TERMS[Category(name)] if name else None
    except ValueError:
        return None  # a category this bridge does not know: shown as stored


def _intent_text(intent: dict[str, Any]) -> str:
    return f"{intent.get('kind')} {intent.get('ref') or ''}".strip()


def _blocked_text(rows: list[dict[str, Any]], shown: int = 3) -> str:
    if not rows:
        return "-"
    names = [f"#{row['id']} {_intent_text(row['intent'])}" for row in rows[:shown]]
    if len(rows) > shown:
        names.append(f"+{len(rows) - shown} more")
    return f"{len(rows)}: {', '.join(names)}"


@click.group(name="errors", invoke_without_command=True)
@click.option("--category", type=click.Choice(["configuration", "data_quality", "transient"]))
@click.option("--target", default=None)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def errors_group(
    context: click.Context, category: str | None, target: str | None, as_json: bool
) -> None:
    """Dead letters: intents the LMS refused, by the three error categories (``bridge errors``
    is ``bridge errors list``, options included)."""
    if context.invoked_subcommand is None:
        context.invoke(errors_list, category=category, target=target, as_json=as_json)


@errors_group.command(name="list")
@click.option("--category", type=click.Choice(["configuration", "data_quality", "transient"]))
@click.option("--target", default=None)
@click.option("--json", "as_json", is_flag=True)
def errors_list(category: str | None, target: str | None, as_json: bool) -> None:
    """Dead letters grouped by category, with the LMS's own message and what they block.

    ``--json``: one object per line: ``id``, ``target``, ``category``, ``last_error``,
    ``attempts``, ``intent``, ``blocked`` (``[{"id", "kind", "ref"}]``: the intents held back
    behind it), ``blocked_count``, ``guide`` (the guide's term for the category) and
    ``target_waiting`` (why the target's intents wait, or null).
    """
    with database(load_settings()) as db, db.read() as conn:
        rows = outbox.dead_letters(conn, category=category, target=target)
        behind = outbox.blocked_behind(conn, rows)
        waiting = {
            name: found.waiting()
            for name, found in sorted(health.all_of(conn).items())
            if not found.ok and (target is None or name == target)
        }
        queued = outbox.open_by_target(conn) if waiting else {}
    if as_json:
        for row in rows:
            blocked = behind.get(row["id"], [])
            record = {
                k: row[k] for k in ("id", "target", "category", "last_error", "attempts", "intent")
            }
            record["guide"] = _guide(row.get("category"))
            record["blocked"] = [
                {"id": b["id"], "kind": b["intent"].get("kind"), "ref": b["intent"].get("ref")}
                for b in blocked
            ]
            record["blocked_count"] = len(blocked)
            record["target_waiting"] = waiting.get(row["target"])
            click.echo(json.dumps(record, default=str))
        return
    for name, reason in waiting.items():
        count = queued.get(name, 0)
        click.echo(
            f"target {name}: waiting — {reason} "
            f"({count} intent{'' if count == 1 else 's'} waiting on it)"
        )
    if not rows:
        click.echo("no dead letters")
        return
    for name in CATEGORY_TITLES:
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
            "blocked behind it",
            title=escape(f"{category_title(name)} ({len(group)})"),
        )
        for row in group:
            intent = row["intent"]
            cells = (
                str(row["id"]),
                row["target"],
                str(intent.get("person", ""))[:12],
                _intent_text(intent),
                str(row["attempts"]),
                str(row.get("last_error") or "")[:80],
                _blocked_text(behind.get(row["id"], [])),
            )
            table.add_row(*(escape(cell) for cell in cells))  # the LMS's words, not markup
        Console().print(table)
    click.echo(
        "retry with `bridge errors retry ID…` once fixed (or `bridge apply` a new plan: it "
        "sends failed intents again in place), or give up with `bridge errors skip ID…`"
    )


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
