"""``bridge journal``: the change journal (the delta feed), as a table or JSON lines.

The table names each person as an admin knows them (``userName (externalId)``), not by the
bridge's UUID, and fits the terminal: at under ``WIDE`` columns it keeps seq, time, actor,
op and person, and folds long actors and names instead of cutting them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

import click
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sqlalchemy import Connection

from bridge.cli.database import database
from bridge.cli.settings import load_settings
from bridge.store import journal
from bridge.store.resources import ResourceStore

WIDE = 100
"""Columns from which the tables show their secondary columns (tolerances, full dates)."""
GAP = 3
"""Characters between two columns of the tables (rich's SIMPLE_HEAD box, padding 1)."""
PERSON = 34
"""Characters of a person's label kept on one line before other columns give way."""


def doc_label(doc: dict[str, Any] | None) -> str | None:
    """A resource as an admin knows it: ``userName (externalId)``, a group's displayName."""
    if not doc:
        return None
    name = doc.get("userName") or doc.get("displayName")
    external = doc.get("externalId")
    if name and external and external != name:
        return f"{name} ({external})"
    return str(name or external) if (name or external) else None


def short_id(resource_id: str) -> str:
    return resource_id if len(resource_id) <= 13 else f"{resource_id[:8]}…"


def person_labels(conn: Connection, dialect: str, ids: Iterable[str]) -> dict[str, str]:
    """The label of each stored resource among ``ids`` (one indexed read each)."""
    store = ResourceStore({}, dialect)
    found = {}
    for resource_id in sorted(set(ids)):
        record = store.get(conn, None, resource_id)
        if record is not None:
            label = doc_label(
                {"userName": record.name, "externalId": record.external_id}
                if record.type == "User"
                else {"displayName": record.name, "externalId": record.external_id}
            )
            if label:
                found[resource_id] = label
    return found


def entry_labels(entries: list[journal.Entry], stored: dict[str, str]) -> dict[str, str]:
    """Each resource's label: from its entries' own images first (a deleted person keeps
    their name), then from the store."""
    labels = dict(stored)
    for entry in entries:
        label = doc_label(entry.after) or doc_label(entry.before)
        if entry.resource_id and label:
            labels[entry.resource_id] = label
    return labels


def unlabelled(entries: list[journal.Entry]) -> set[str]:
    """Resource ids no entry's before/after image names (deliveries, members-only changes)."""
    named = {e.resource_id for e in entries if doc_label(e.after) or doc_label(e.before)}
    return {e.resource_id for e in entries if e.resource_id and e.resource_id not in named}


def resource_cell(entry: journal.Entry, labels: dict[str, str], *, wide: bool = True) -> str:
    """``User/jane (E1)``; narrow, a person is just ``jane (E1)`` (a group keeps ``Group/``)."""
    if not entry.resource_id:
        return "-"
    label = labels.get(entry.resource_id) or short_id(entry.resource_id)
    if not entry.resource_type or (entry.resource_type == "User" and not wide):
        return label
    return f"{entry.resource_type}/{label}"


def actor_width(entries: list[journal.Entry], cells: list[str], width: int) -> int:
    """How wide the actor column may grow at ``width`` columns (narrow): what is left once
    seq, time, op and up to ``PERSON`` characters of each person's label have their room."""
    if width >= WIDE:
        return width
    seq = max((len(str(entry.seq)) for entry in entries), default=3)
    op = max((len(entry.op) for entry in entries), default=2)
    person = min(max((len(cell) for cell in cells), default=6), PERSON)
    fixed = max(seq, 3) + len("01-01 00:00:00") + op + person + 3 * GAP
    return max(8, width - fixed - GAP)


def journal_table(entries: list[journal.Entry], labels: dict[str, str], width: int) -> Table:
    """The journal as a table for a terminal ``width`` columns wide."""
    wide = width >= WIDE
    cells = [resource_cell(entry, labels, wide=wide) for entry in entries]
    stamp = "%Y-%m-%d %H:%M:%S" if wide else "%m-%d %H:%M:%S"
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    table.add_column("seq", justify="right", no_wrap=True)
    table.add_column("at (UTC)", no_wrap=True)
    table.add_column("actor", overflow="fold", max_width=actor_width(entries, cells, width))
    table.add_column("op", no_wrap=True)
    table.add_column("resource" if wide else "person", overflow="fold")
    if wide:
        table.add_column("tolerances", overflow="fold")
    for entry, resource in zip(entries, cells, strict=True):
        row = [
            str(entry.seq),
            entry.at.strftime(stamp),
            entry.actor,
            entry.op,
            resource,
        ]
        if wide:
            row.append(", ".join(entry.tolerances))
        table.add_row(*(escape(cell) for cell in row))
    return table


@click.command(name="journal")
@click.option("--since", default=0, type=int, help="Only entries after this seq.")
@click.option("--resource", "resource_id", default=None, help="Only entries of this resource id.")
@click.option("--limit", default=1000, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def journal_command(since: int, resource_id: str | None, limit: int, as_json: bool) -> None:
    """Read the change journal (the delta feed)."""
    with database(load_settings()) as db, db.read() as conn:
        entries = journal.read(conn, since=since, resource_id=resource_id, limit=limit)
        stored = {} if as_json else person_labels(conn, db.dialect, unlabelled(entries))
    if as_json:
        for entry in entries:
            body = asdict(entry)
            body["at"] = entry.at.isoformat()
            click.echo(json.dumps(body, default=str))
        return
    console = Console()
    console.print(journal_table(entries, entry_labels(entries, stored), console.width))
    hidden = sum(1 for entry in entries if entry.tolerances)
    if hidden and console.width < WIDE:
        click.echo(f"{hidden} entr{'y' if hidden == 1 else 'ies'} used tolerances: see --json")
