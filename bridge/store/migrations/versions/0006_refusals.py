"""refusals: writes refused for a duplicate identifier

Revision ID: 0006
Revises: 0005

``refusals`` keeps each write the SCIM server answered 409 ``uniqueness`` (both records, the
attribute and value, who sent it and when, how often), so that a duplicate employee id is
reported instead of forgotten. Whether a refusal still holds is computed when it is read.
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "refusals",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("resource_type", sa.String(32), nullable=False),
        sa.Column("attribute", sa.String(32), nullable=False),
        sa.Column("value", sa.String(512), nullable=False),
        sa.Column("holder_id", sa.String(64), nullable=True),
        sa.Column("holder_name", sa.String(512), nullable=True),
        sa.Column("holder_external_id", sa.String(255), nullable=True),
        sa.Column("refused_id", sa.String(64), nullable=True),
        sa.Column("refused_name", sa.String(512), nullable=False),
        sa.Column("refused_external_id", sa.String(255), nullable=True),
        sa.Column("op", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=True),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("dismissed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("dismissed_by", sa.String(255), nullable=True),
    )
    op.create_index("ux_refusals_key", "refusals", ["key"], unique=True)


def downgrade() -> None:
    op.drop_index("ux_refusals_key", table_name="refusals")
    op.drop_table("refusals")
