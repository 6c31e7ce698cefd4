"""The database: opened migrated for each command, and ``bridge db`` to maintain it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import click

from bridge.cli.settings import load_schemas
from bridge.cli.settings import load_settings
from bridge.cli.settings import store_options
from bridge.config import Settings
from bridge.provision import Provisioner
from bridge.store.engine import Database
from bridge.store.engine import connect


def open_database(settings: Settings, *, serving: bool = False) -> Database:
    db = connect(settings.database_url, serving=serving)
    db.upgrade()
    return db


@contextmanager
def database(settings: Settings) -> Iterator[Database]:
    """A migrated database for one command, closed when the command ends."""
    db = open_database(settings)
    try:
        yield db
    finally:
        db.dispose()


@click.group(name="db")
def db_group() -> None:
    """Database maintenance."""


@db_group.command(name="upgrade")
def db_upgrade() -> None:
    """Create or migrate the database schema to the newest revision."""
    settings = load_settings()
    with database(settings):
        pass
    click.echo(f"database at {settings.database_url.split('@')[-1]} is up to date")


@db_group.command(name="reindex")
def db_reindex() -> None:
    """Rebuild the index that filters on multi-valued attributes use (run after a schema edit)."""
    settings = load_settings()
    catalog = load_schemas(settings)
    with database(settings) as db:
        store = Provisioner(db, catalog, **store_options(settings)).store
        resources = rows = 0
        for resource_type in ("User", "Group"):
            with db.read() as reader:
                for batch in store.scan(reader, resource_type):
                    with db.write() as writer:
                        rows += store.reindex(writer, batch)
                    resources += len(batch)
    click.echo(f"reindexed {resources} resource(s): {rows} index row(s)")
