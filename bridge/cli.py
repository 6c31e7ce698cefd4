"""The ``bridge`` command: the composition root, the only place that reads configuration."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC
from datetime import datetime
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from starlette.applications import Starlette

from bridge.auth.tokens import generate
from bridge.auth.tokens import parse_scopes
from bridge.config import Settings
from bridge.provision import Provisioner
from bridge.schemas import SchemaError
from bridge.schemas import load_catalog
from bridge.scim.app import create_app
from bridge.scim.auth import Authenticator
from bridge.store import journal
from bridge.store import tokens
from bridge.store.engine import Database
from bridge.store.engine import connect

_RESERVED = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line; extra fields (request_id, status, ms) included."""

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        body.update({k: v for k, v in record.__dict__.items() if k not in _RESERVED})
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        return json.dumps(body, default=str)


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


def open_database(settings: Settings) -> Database:
    db = connect(settings.database_url)
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


def build_app(settings: Settings) -> Starlette:
    """Everything ``bridge serve`` runs: database (migrated), schemas, auth and the SCIM app."""
    db = open_database(settings)
    catalog = load_catalog(settings.schemas_dir)
    provisioner = Provisioner(db, catalog)
    jwt_verifier = None
    if settings.jwt.enabled:
        from bridge.auth.jwt import JwtVerifier

        jwt_verifier = JwtVerifier(settings.jwt)
    authenticate = Authenticator(db, env_token=settings.scim_token, jwt=jwt_verifier)
    return create_app(provisioner, catalog, settings, authenticate)


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc


@click.group()
def main() -> None:
    """A declarative SCIM 2.0 provisioning bridge from identity providers and HRIS to an LMS."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
def serve(host: str, port: int) -> None:
    """Run the SCIM server at http://HOST:PORT/scim/v2."""
    import uvicorn

    settings = _settings()
    configure_logging(settings)
    try:
        app = build_app(settings)
    except (SchemaError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    if not settings.scim_token:
        logging.getLogger("bridge").info(
            "no BRIDGE_SCIM_TOKEN set: create a token with `bridge tokens create NAME`"
        )
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


@main.group(name="tokens")
def tokens_group() -> None:
    """Bearer tokens for SCIM clients (stored as hashes only)."""


@tokens_group.command(name="create")
@click.argument("name")
@click.option(
    "--scope", "scopes", default="read,write", show_default=True, help="read, write or both"
)
def tokens_create(name: str, scopes: str) -> None:
    """Create a token; it is printed once and never stored in clear."""
    try:
        parsed = parse_scopes(scopes)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--scope") from exc
    token = generate()
    try:
        with database(_settings()) as db, db.write() as conn:
            tokens.create(conn, name, token, parsed, datetime.now(UTC))
    except tokens.TokenExists:
        raise click.ClickException(
            f"a token named {name!r} exists; revoke it or pick another name"
        ) from None
    click.echo(token)
    click.echo(
        f"# token {name!r} with scopes {' '.join(sorted(parsed))}; it is not shown again", err=True
    )


@tokens_group.command(name="list")
def tokens_list() -> None:
    """List tokens (names, scopes, dates — never the tokens)."""
    with database(_settings()) as db, db.read() as conn:
        found = tokens.listing(conn)
    table = Table("name", "scopes", "created", "revoked")
    for info in found:
        table.add_row(
            info.name,
            info.scopes,
            info.created.isoformat(),
            info.revoked.isoformat() if info.revoked else "",
        )
    Console().print(table)


@tokens_group.command(name="revoke")
@click.argument("name")
def tokens_revoke(name: str) -> None:
    """Revoke a token at once."""
    with database(_settings()) as db, db.write() as conn:
        revoked = tokens.revoke(conn, name, datetime.now(UTC))
    if not revoked:
        raise click.ClickException(f"no active token named {name!r}")
    click.echo(f"revoked {name}")


@main.group(name="db")
def db_group() -> None:
    """Database maintenance."""


@db_group.command(name="upgrade")
def db_upgrade() -> None:
    """Create or migrate the database schema to the newest revision."""
    settings = _settings()
    with database(settings):
        pass
    click.echo(f"database at {settings.database_url.split('@')[-1]} is up to date")


@main.command(name="journal")
@click.option("--since", default=0, type=int, help="Only entries after this seq.")
@click.option("--resource", "resource_id", default=None, help="Only entries of this resource id.")
@click.option("--limit", default=1000, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def journal_command(since: int, resource_id: str | None, limit: int, as_json: bool) -> None:
    """Read the change journal (the delta feed)."""
    with database(_settings()) as db, db.read() as conn:
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
