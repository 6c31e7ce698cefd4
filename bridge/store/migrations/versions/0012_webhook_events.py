"""webhook_events: HR webhook events, verified, durably queued and deduplicated

Revision ID: 0012
Revises: 0010

One row per event a feed pushed (``POST /hris/v1/events/{feed}``): the feed, the event id
(unique per feed: a replay finds its row, which is the dedup), its type, the person's
externalId, the event's own time (``occurred``, the per-person order) and when it arrived, the
payload, and its ``state`` (queued, applied, ignored, failed) with the ``detail`` of an
ignored or failed one and the journal seq of the write it made; ``attempts`` and
``next_attempt`` hold back an event whose record the HRIS could not give yet.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0012"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhook_events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("feed", sa.String(64), nullable=False),
        sa.Column("event_id", sa.String(255), nullable=False),
        sa.Column("event_type", sa.String(32), nullable=False),
        sa.Column("external_id", sa.String(255), nullable=False),
        sa.Column("occurred", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received", sa.DateTime(timezone=True), nullable=False),
        sa.Column("payload", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text, nullable=True),
        sa.Column("journal_seq", sa.Integer, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ux_webhook_events_event", "webhook_events", ["feed", "event_id"], unique=True)
    op.create_index("ix_webhook_events_state", "webhook_events", ["state", "occurred"])
    op.create_index("ix_webhook_events_person", "webhook_events", ["feed", "external_id", "state"])


def downgrade() -> None:
    op.drop_index("ix_webhook_events_person", table_name="webhook_events")
    op.drop_index("ix_webhook_events_state", table_name="webhook_events")
    op.drop_index("ux_webhook_events_event", table_name="webhook_events")
    op.drop_table("webhook_events")
