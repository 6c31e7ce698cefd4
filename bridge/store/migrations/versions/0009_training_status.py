"""training_status: completion read back from the LMS, per bridge-made enrolment

Revision ID: 0009
Revises: 0008

``training_status`` keeps the last reading of one person's progress in one course of one
target (``bridge training --refresh``): ``state`` not_started | in_progress | complete (null
when the read failed: ``error`` says why), when the learner started and completed as the LMS
reports it, and ``read_at``, when the bridge read it. The due date stays in ``links.confirmed``.
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "training_status",
        sa.Column("target", sa.String(255), primary_key=True),
        sa.Column("resource_id", sa.String(64), primary_key=True),
        sa.Column("course", sa.String(255), primary_key=True),
        sa.Column("state", sa.String(16), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("error", sa.Text, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("training_status")
