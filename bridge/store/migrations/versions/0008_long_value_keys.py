"""attribute_values: a key over 1,024 bytes becomes its first bytes and its hash

Revision ID: 0008
Revises: 0007

A string key longer than 1,024 UTF-8 bytes is now stored as its first 896 bytes, an ellipsis
and the SHA-256 of all of it (``bridge.store.values.string_key``), so that PostgreSQL's
B-tree entry (2,704 bytes at most) always fits and a filter's operand, keyed the same way,
still finds it. Keys were at most 1,024 characters before, so only multi-byte ones were
written whole over 1,024 bytes; they are rewritten here. The downgrade leaves them: the
older code finds no value by such a key, as it indexed no value over 1,024 characters.
"""

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# As bridge.store.values had them when this revision was written.
MAX_KEY_BYTES = 1024
PREFIX_BYTES = 896


def _key(key: str) -> str:
    encoded = key.encode()
    prefix = encoded[:PREFIX_BYTES].decode("utf-8", "ignore")
    return f"{prefix}\u2026{hashlib.sha256(encoded).hexdigest()}"


def upgrade() -> None:
    conn = op.get_bind()
    size = (
        "octet_length(value_key)"
        if conn.dialect.name == "postgresql"
        else "length(CAST(value_key AS BLOB))"
    )
    rows = conn.execute(
        sa.text(
            "SELECT resource_pk, path, position, value_key FROM attribute_values"  # noqa: S608 - constants only
            f" WHERE {size} > {MAX_KEY_BYTES}"
        )
    ).fetchall()
    update = sa.text(
        "UPDATE attribute_values SET value_key = :key"
        " WHERE resource_pk = :pk AND path = :path AND position = :position"
    )
    for pk, path, position, key in rows:
        conn.execute(update, {"key": _key(key), "pk": pk, "path": path, "position": position})


def downgrade() -> None:
    pass
