"""Named bearer tokens, kept as hashes only."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection
from sqlalchemy import insert
from sqlalchemy import select
from sqlalchemy import update

from bridge.auth.tokens import Principal
from bridge.auth.tokens import digest
from bridge.auth.tokens import matches
from bridge.auth.tokens import parse_scopes
from bridge.store.raw import utc
from bridge.store.tables import TokenRow

T = TokenRow.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class TokenInfo:
    name: str
    scopes: str
    created: datetime
    revoked: datetime | None


class TokenExists(Exception):
    """A token of that name exists already."""


def create(conn: Connection, name: str, token: str, scopes: frozenset[str], now: datetime) -> None:
    if conn.execute(select(T.c.name).where(T.c.name == name)).first() is not None:
        raise TokenExists(name)
    conn.execute(
        insert(T).values(
            name=name, token_hash=digest(token), scopes=" ".join(sorted(scopes)), created=now
        )
    )


def listing(conn: Connection) -> list[TokenInfo]:
    rows = conn.execute(select(T.c.name, T.c.scopes, T.c.created, T.c.revoked).order_by(T.c.name))
    return [
        TokenInfo(row.name, row.scopes, utc(row.created), utc(row.revoked) if row.revoked else None)
        for row in rows
    ]


def revoke(conn: Connection, name: str, now: datetime) -> bool:
    result = conn.execute(
        update(T).where(T.c.name == name, T.c.revoked.is_(None)).values(revoked=now)
    )
    return bool(result.rowcount)


def is_active(conn: Connection, token_digest: str) -> bool:
    """Whether the token with this hash exists and is not revoked: one unique-index point read."""
    row = conn.execute(select(T.c.revoked).where(T.c.token_hash == token_digest)).first()
    return row is not None and row.revoked is None


def verify(conn: Connection, token: str) -> Principal | None:
    """The principal a presented token stands for, or None."""
    row = conn.execute(
        select(T.c.name, T.c.token_hash, T.c.scopes).where(
            T.c.token_hash == digest(token), T.c.revoked.is_(None)
        )
    ).first()
    if row is None or not matches(token, row.token_hash):
        return None
    return Principal(row.name, parse_scopes(row.scopes))
