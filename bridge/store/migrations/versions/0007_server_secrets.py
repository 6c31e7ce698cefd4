"""server_secrets: the random secret cursors are signed with

Revision ID: 0007
Revises: 0006

``server_secrets`` keeps secrets made once per database and shared by every process that
opens it: the ``cursor`` row signs RFC 9865 cursors (bridge.store.cursors) unless
BRIDGE_CURSOR_SECRET is set, so that every replica follows the cursors the others issued.
"""

import secrets
from datetime import UTC
from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table(
        "server_secrets",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("secret", sa.String(128), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
    )
    op.bulk_insert(
        table,
        [{"name": "cursor", "secret": secrets.token_hex(32), "created": datetime.now(UTC)}],
    )


def downgrade() -> None:
    op.drop_table("server_secrets")
