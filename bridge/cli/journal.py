"""``bridge journal``: the change journal (the delta feed), as a table or JSON lines."""

from __future__ import annotations

import json
from dataclasses import asdict

import click
from rich.console import Console
from rich.table import Table

from bridge.cli.database import database
from bridge.cli.settings import load_settings
from bridge.store import journal


@click.command(name="journal")
@click.option("--since", default=0, type=int, help="Only entries after this seq.")
@click.option("--resource", "resource_id", default=None, help="Only entries of this resource id.")
@click.option("--limit", default=1000, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def journal_command(since: int, resource_id: str | None, limit: int, as_json: bool) -> None:
    """Read the change journal (the delta feed)."""
    with database(load_settings()) as db, db.read() as conn:
        entries = journal.read(conn, since=since, resource_id=resource_id, limit=limit)
    if as_json:
        for entry in entries:
            body = asdict(entry)
            body["at"] = entry.at.isoformat()
            click.echo(json.dumps(body, default=str))
        return
    table = Table("seq", "at", "actor", "op", "resource", "tolerances")
    for entry in entries:
        table.add_row(
            str(entry.seq),
            entry.at.strftime("%Y-%m-%d %H:%M:%S"),
            entry.actor,
            entry.op,
            f"{entry.resource_type}/{entry.resource_id}",
            ", ".join(entry.tolerances),
        )
    Console().print(table)
