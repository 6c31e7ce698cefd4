"""The database: opened migrated for each command, and ``bridge db`` to maintain it.

Only ``serve``, ``db upgrade`` and ``tokens create`` create a missing SQLite file; for every
other command it is a one-line error, never a new empty ``bridge.db`` wherever it ran.
A URL SQLAlchemy cannot parse, or a database it cannot reach, is a one-line error too.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.exc import NoSuchModuleError
from sqlalchemy.exc import OperationalError

from bridge.cli.settings import load_schemas
from bridge.cli.settings import load_settings
from bridge.cli.settings import store_options
from bridge.config import Settings
from bridge.config import mask_url
from bridge.provision import Provisioner
from bridge.store.engine import Database
from bridge.store.engine import connect

NO_DATABASE_FIX = "run `bridge db upgrade` (or set BRIDGE_DATABASE_URL)"


def sqlite_file(url: str) -> Path | None:
    """The file a SQLite URL names (None: not SQLite, or in memory); ``ClickException`` for
    a URL SQLAlchemy cannot parse."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise click.ClickException(
            f"BRIDGE_DATABASE_URL {mask_url(url)!r} is not a database URL: {exc}"
        ) from exc
    name = parsed.database
    if parsed.get_backend_name() != "sqlite" or not name or name == ":memory:":
        return None
    return None if name.startswith("file:") else Path(name)


def open_database(settings: Settings, *, serving: bool = False, create: bool = True) -> Database:
    """The database of ``settings``, migrated to the newest revision.

    ``create=False``: a SQLite file that does not exist is an error (exit 1) naming it.
    """
    url = settings.database_url
    path = sqlite_file(url)
    if not create and path is not None and not path.exists():
        raise click.ClickException(f"no database at {path.resolve()}; {NO_DATABASE_FIX}")
    try:
        db = connect(url, serving=serving)
    except ModuleNotFoundError as exc:  # the dialect's driver (psycopg) is not installed
        raise click.ClickException(
            f"BRIDGE_DATABASE_URL names a database whose driver ({exc.name}) is not "
            "installed: pip install 'scim-lms-bridge[postgres]'"
        ) from exc
    except (ArgumentError, NoSuchModuleError, ValueError) as exc:
        raise click.ClickException(
            f"BRIDGE_DATABASE_URL {mask_url(url)!r} cannot be opened: {exc}"
        ) from exc
    try:
        db.upgrade()
    except OperationalError as exc:
        db.dispose()
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        where = mask_url(url).split("@")[-1]
        raise click.ClickException(f"cannot open the database at {where}: {reason}") from exc
    return db


@contextmanager
def database(settings: Settings, *, create: bool = False) -> Iterator[Database]:
    """A migrated database for one command, closed when the command ends. Only the commands
    that set a bridge up (``db upgrade``, ``tokens create``) pass ``create=True``: any other
    command run against a missing SQLite file is an error naming it (see ``open_database``)."""
    db = open_database(settings, create=create)
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
    with database(settings, create=True):
        pass
    click.echo(f"database at {mask_url(settings.database_url).split('@')[-1]} is up to date")


@db_group.command(name="reindex")
def db_reindex() -> None:
    """Rebuild the index that filters on multi-valued attributes use (run after a schema edit)."""
    settings = load_settings()
    catalog = load_schemas(settings)
    with database(settings, create=False) as db:
        store = Provisioner(db, catalog, **store_options(settings)).store
        resources = rows = 0
        for resource_type in ("User", "Group"):
            with db.read() as reader:
                for batch in store.scan(reader, resource_type):
                    with db.write() as writer:
                        rows += store.reindex(writer, batch)
                    resources += len(batch)
    click.echo(f"reindexed {resources} resource(s): {rows} index row(s)")
