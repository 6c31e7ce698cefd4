"""``bridge tokens``: the bearer tokens of SCIM clients, created, listed and revoked."""

from __future__ import annotations

from datetime import UTC
from datetime import datetime

import click
from rich.console import Console
from rich.table import Table

from bridge.auth.tokens import generate
from bridge.auth.tokens import parse_scopes
from bridge.cli.database import database
from bridge.cli.settings import load_settings
from bridge.store import tokens


@click.group(name="tokens")
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
        with database(load_settings(), create=True) as db, db.write() as conn:
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
    with database(load_settings()) as db, db.read() as conn:
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
    with database(load_settings()) as db, db.write() as conn:
        revoked = tokens.revoke(conn, name, datetime.now(UTC))
    if not revoked:
        raise click.ClickException(f"no active token named {name!r}")
    click.echo(f"revoked {name}")
