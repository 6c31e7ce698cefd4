"""webhook_refusals, and the journal by request id

Revision ID: 0014
Revises: 0013

``webhook_refusals`` counts the HR webhooks and export uploads refused before anything was
stored (unsigned, forged, stale, oversized), per declared feed, kind and reason: nothing of
the refused body is kept, only how often, the last reason and when. ``ix_journal_request``
finds the writes one request or run made (``bridge plan --run`` of an export sync).
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhook_refusals",
        sa.Column("feed", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("error", sa.String(32), primary_key=True),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("last_reason", sa.Text, nullable=True),
        sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_journal_request", "journal", ["request_id"])


def downgrade() -> None:
    op.drop_index("ix_journal_request", table_name="journal")
    op.drop_table("webhook_refusals")
