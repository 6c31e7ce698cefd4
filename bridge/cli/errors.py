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
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bridge.cli.database import database
from bridge.cli.journal import GAP
from bridge.cli.journal import PERSON
from bridge.cli.journal import person_labels
from bridge.cli.journal import short_id
from bridge.cli.plans import actor
from bridge.cli.settings import load_settings
from bridge.provision import dead_letters
from bridge.provision.resources import now_utc
from bridge.store import health
from bridge.store import journal
from bridge.store import outbox
from bridge.targets.base import GUIDE_TERMS
from bridge.targets.base import Category

WIDE_ERRORS = 120
"""Columns from which ``bridge errors`` shows the target, attempts and blocked intents apart."""

SAID = 240
"""Characters of the LMS's message in the table (`bridge errors show ID` has all of it)."""

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
    """The intents held back behind a dead letter: how many, and the first ``shown``."""
    if not rows:
        return "-"
    names = [f"#{row['id']} {_intent_text(row['intent'])}" for row in rows[:shown]]
    if len(rows) > shown:
        names.append(f"+{len(rows) - shown} more")
    return f"{len(rows)}: {', '.join(names)}"


def dead_letter_table(
    group: list[dict[str, Any]],
    behind: dict[int, list[dict[str, Any]]],
    people: dict[str, str],
    title: str,
    width: int,
) -> Table:
    """One category's dead letters for a terminal ``width`` columns wide: the person by
    userName (externalId), the LMS's words folded, never cut. Under ``WIDE_ERRORS`` columns
    the intent (with its target) heads the LMS's words in one column, and the intents held
    back behind each letter are a count (``bridge errors --json`` lists them)."""
    if width >= WIDE_ERRORS:
        return _wide_table(group, behind, people, title)
    names = [_person(row, people) for row in group]
    ids = max(len(str(row["id"])) for row in group)
    person = min(max(len(name) for name in names), PERSON)
    table = Table(title=escape(title), box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    table.add_column("id", justify="right", no_wrap=True)
    table.add_column("person", overflow="fold")
    table.add_column(
        "intent: what the LMS said",
        overflow="fold",
        max_width=max(20, width - max(ids, 2) - person - len("blocks") - 3 * GAP),
    )
    table.add_column("blocks", justify="right", no_wrap=True)
    for row, name in zip(group, names, strict=True):
        what = f"{row['target']}: {_intent_text(row['intent'])}\n{_said(row)}"
        blocked = len(behind.get(row["id"], []))
        table.add_row(escape(str(row["id"])), escape(name), escape(what), str(blocked or "-"))
    return table


def _person(row: dict[str, Any], people: dict[str, str]) -> str:
    person = str(row["intent"].get("person") or "")
    return people.get(person) or short_id(person)


def _said(row: dict[str, Any]) -> str:
    said = str(row.get("last_error") or "")
    return said if len(said) <= SAID else f"{said[: SAID - 1]}…"


def _wide_table(
    group: list[dict[str, Any]],
    behind: dict[int, list[dict[str, Any]]],
    people: dict[str, str],
    title: str,
) -> Table:
    table = Table(
        "id",
        "target",
        "person",
        "intent",
        "attempts",
        "LMS said",
        "blocked behind it",
        title=escape(title),
    )
    for row in group:
        cells = (
            str(row["id"]),
            row["target"],
            _person(row, people),
            _intent_text(row["intent"]),
            str(row["attempts"]),
            _said(row),
            _blocked_text(behind.get(row["id"], [])),
        )
        table.add_row(*(escape(cell) for cell in cells))  # the LMS's words, not markup
    return table


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
        persons = {str(row["intent"].get("person")) for row in rows if row["intent"].get("person")}
        people = {} if as_json else person_labels(conn, db.dialect, persons)
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
    console = Console(highlight=False)
    for name, reason in waiting.items():
        count = queued.get(name, 0)
        console.print(
            escape(
                f"target {name}: waiting — {reason} "
                f"({count} intent{'' if count == 1 else 's'} waiting on it)"
            )
        )
    if not rows:
        console.print("no dead letters")
        return
    for name in CATEGORY_TITLES:
        group = [row for row in rows if row.get("category") == name]
        if group:
            title = f"{category_title(name)} ({len(group)})"
            console.print(dead_letter_table(group, behind, people, title, console.width))
    console.print(
        escape(
            "retry with `bridge errors retry ID…` once fixed (or `bridge apply` a new plan: it "
            "sends failed intents again in place), or give up with `bridge errors skip ID…`"
        )
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


def _rows(
    ids: tuple[int, ...], everything: bool, conn: Any, category: str | None
) -> list[dict[str, Any]]:
    """The outbox rows named (or, ``--all``, every dead letter of the category)."""
    if everything:
        return outbox.dead_letters(conn, category=category, limit=100_000)
    return [row for row in (outbox.get(conn, row_id) for row_id in ids) if row is not None]


@errors_group.command(name="retry")
@click.argument("ids", type=int, nargs=-1)
@click.option("--all", "everything", is_flag=True)
@click.option("--category", type=click.Choice(["configuration", "data_quality", "transient"]))
def errors_retry(ids: tuple[int, ...], everything: bool, category: str | None) -> None:
    """Send dead letters again (after fixing the data, the rules or the LMS); each decision
    is journalled on its person."""
    with database(load_settings()) as db, db.write() as conn:
        rows = _rows(ids, everything, conn, category)
        count = dead_letters.decide(conn, rows, op=dead_letters.RETRY, actor=actor(), now=now_utc())
    click.echo(f"{count} intent(s) queued again")


@errors_group.command(name="skip")
@click.argument("ids", type=int, nargs=-1)
@click.option("--all", "everything", is_flag=True)
@click.option("--category", type=click.Choice(["configuration", "data_quality", "transient"]))
def errors_skip(ids: tuple[int, ...], everything: bool, category: str | None) -> None:
    """Give up on dead letters; the person's later intents may then go. Each decision is
    journalled on its person."""
    with database(load_settings()) as db, db.write() as conn:
        rows = _rows(ids, everything, conn, category)
        count = dead_letters.decide(conn, rows, op=dead_letters.SKIP, actor=actor(), now=now_utc())
    click.echo(f"{count} intent(s) skipped")
