"""target health, and the three error categories

Revision ID: 0005
Revises: 0004

``target_health`` holds whether the relay may send to a target (ok, unreachable while its
circuit breaker is open, misconfigured while its preflight fails) and why. Dead letters filed
under the names before the split (``mapping``, ``provisioning``) become ``configuration``.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "target_health",
        sa.Column("target", sa.String(255), primary_key=True),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("findings", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=True),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("checked", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_probe", sa.DateTime(timezone=True), nullable=True),
    )
    op.execute(
        "UPDATE outbox SET category = 'configuration' WHERE category IN ('mapping', 'provisioning')"
    )


def downgrade() -> None:
    op.drop_table("target_health")
