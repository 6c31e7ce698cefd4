"""Cursors of RFC 9865 paging, signed: the server follows only the cursors it issued.

A cursor is ``<payload>.<mac>``, both base64url: the payload is the JSON ``[sort value, pk,
query fingerprint]`` of the last row of a page, the MAC its HMAC-SHA256 under the server's
cursor key. A cursor whose MAC does not verify is 400 ``invalidCursor`` before anything in it
is read, so a client can neither forge a sort value nor follow a cursor into another query.

The key comes from ``BRIDGE_CURSOR_SECRET`` when it is set, else from a random secret kept in
the database (``server_secrets``, made by migration 0007 and again on first use should the
row be gone), so every replica of one database follows the others' cursors. Hand-written:
scim2-models models the errors, not the cursors; ``hmac`` is the standard library's.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Sequence
from datetime import UTC
from datetime import datetime
from typing import Any

from scim2_models import InvalidCursorException
from scim2_models.path import AttrPath
from scim2_models.path import FilterNode
from sqlalchemy import Connection
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from bridge.store.raw import utc
from bridge.store.tables import ServerSecretRow

MAX_CURSOR_LENGTH = 32_768
"""Longest cursor read: a page's last sort value can be a 2,048-character string, which
JSON and base64 make up to about 16 KiB."""

CURSOR_SECRET = "cursor"  # noqa: S105 - the name of a row, not a secret
"""The ``server_secrets`` row cursors are signed with, when no BRIDGE_CURSOR_SECRET is set."""

_CURSOR = re.compile(r"([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]{43})")  # 43: 32 bytes, unpadded
_PK_RANGE = range(-(2**63), 2**63)  # what both databases bind as an integer
_CONTEXT = b"bridge scim cursor v1"  # the key is for cursors only, whatever else the secret signs


S = ServerSecretRow.__table__  # type: ignore[attr-defined]


def new_secret() -> str:
    return secrets.token_hex(32)


def database_secret(conn: Connection) -> str:
    """The database's cursor secret; made (on a connection of its own, committed at once)
    when missing, the first writer winning when replicas race."""
    query = select(S.c.secret).where(S.c.name == CURSOR_SECRET)
    found = conn.execute(query).scalar_one_or_none()
    if found is not None:
        return str(found)
    row = {"name": CURSOR_SECRET, "secret": new_secret(), "created": datetime.now(UTC)}
    insert = sqlite_insert if conn.dialect.name == "sqlite" else pg_insert
    # ``conn`` may be a read (rolled back, or a SQLite snapshot): the secret must outlive it.
    with conn.engine.connect().execution_options(sqlite_immediate=True) as own:
        with own.begin():
            own.execute(insert(S).values(row).on_conflict_do_nothing(index_elements=["name"]))
        with own.begin():
            return str(own.execute(query).scalar_one())


def cursor_key(secret: str) -> bytes:
    """The HMAC key of cursors, derived from a secret."""
    return hmac.new(secret.encode(), _CONTEXT, hashlib.sha256).digest()


def fingerprint(
    types: Sequence[str], node: FilterNode | None, sort_by: AttrPath | None, descending: bool
) -> str:
    """What a cursor belongs to: the resource types, filter, sortBy and order of a query."""
    text = json.dumps([list(types), str(node or ""), str(sort_by or ""), descending])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(payload: str, key: bytes) -> str:
    return _b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())


def sign(values: list[Any], key: bytes) -> str:
    """A cursor holding ``values`` (JSON), signed with ``key``."""
    raw = json.dumps(values, separators=(",", ":"), ensure_ascii=False).encode()
    payload = _b64(raw)
    return f"{payload}.{_mac(payload, key)}"


def verify(cursor: str, key: bytes) -> Any:
    """The values of a cursor signed with ``key``; 400 ``invalidCursor`` for anything else
    (RFC 9865 §2), the MAC checked before the payload is decoded."""
    matched = _CURSOR.fullmatch(cursor) if len(cursor) <= MAX_CURSOR_LENGTH else None
    if matched is None:
        raise InvalidCursorException(detail="the cursor is not one this server issued")
    payload, mac = matched.groups()
    if not hmac.compare_digest(_mac(payload, key), mac):
        raise InvalidCursorException(detail="the cursor is not one this server issued")
    try:
        return json.loads(_unb64(payload))
    except (ValueError, binascii.Error) as exc:  # signed with the key, yet not ours: a bug
        raise InvalidCursorException(detail="the cursor is not one this server issued") from exc


class CursorSigner:
    """Encodes and decodes the cursors of one server: ``secret`` (BRIDGE_CURSOR_SECRET), else
    the database's, read on first use."""

    def __init__(self, secret: str | None = None) -> None:
        self._key = cursor_key(secret) if secret else None

    def key(self, conn: Connection) -> bytes:
        if self._key is None:
            self._key = cursor_key(database_secret(conn))
        return self._key

    def encode(self, conn: Connection, sort_value: Any, pk: int, owner: str) -> str:
        """The cursor after a row (its sort value and pk) of the query ``owner`` names."""
        if isinstance(sort_value, datetime):
            sort_value = {"datetime": utc(sort_value).isoformat()}
        return sign([sort_value, pk, owner], self.key(conn))

    def decode(self, conn: Connection, cursor: str, owner: str) -> tuple[Any, int]:
        """The sort value and pk a cursor continues after; 400 ``invalidCursor`` when this
        server did not sign it or it belongs to another query than ``owner``."""
        values = verify(cursor, self.key(conn))
        if not (isinstance(values, list) and len(values) == 3 and values[2] == owner):
            raise InvalidCursorException(detail="the cursor belongs to another query")
        return _position(values[0], values[1])


def _position(sort_value: Any, pk: Any) -> tuple[Any, int]:
    """The row a verified cursor continues after, checked all the same: whoever holds the
    secret could sign anything, and a value the database cannot bind must not reach it."""
    try:
        if type(pk) is not int or pk not in _PK_RANGE:
            raise ValueError(pk)
        if isinstance(sort_value, dict):
            return datetime.fromisoformat(sort_value["datetime"]), pk
        if type(sort_value) is int and sort_value not in _PK_RANGE:
            raise ValueError(sort_value)
        if sort_value is None or type(sort_value) in (str, int, float):
            return sort_value, pk
        raise ValueError(sort_value)
    except (ValueError, TypeError, KeyError) as exc:
        raise InvalidCursorException(detail="the cursor holds no row of this server") from exc
