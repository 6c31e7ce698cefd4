"""feed_people: the people each HR feed owns (created or last synced by ``bridge sync``)

Revision ID: 0013
Revises: 0012

One row per (feed, externalId): the SCIM resource it is, the hash of what the feed mapped for
them at the last sync (an unchanged export row costs no write), the run and time of the
export that last listed them, and when a sync deactivated them (missing from an export).
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feed_people",
        sa.Column("feed", sa.String(64), primary_key=True),
        sa.Column("external_id", sa.String(255), primary_key=True),
        sa.Column("resource_id", sa.String(64), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=True),
        sa.Column("run_id", sa.String(64), nullable=True),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deactivated", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_feed_people_resource", "feed_people", ["resource_id"])


def downgrade() -> None:
    op.drop_index("ix_feed_people_resource", table_name="feed_people")
    op.drop_table("feed_people")
