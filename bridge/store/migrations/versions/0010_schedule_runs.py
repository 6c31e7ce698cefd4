"""schedule_runs: each occurrence of a rule file's scheduled job, claimed once

Revision ID: 0010
Revises: 0009

``schedule_runs`` holds one row per occurrence a scheduler ran (``schedule:`` of a rule
file): the job (``job_key`` = rule file + job name), the occurrence (UTC), ``state`` running |
done | failed, when it started and finished, which worker ran it, a JSON ``summary`` of what
it found and did, and the ``error`` of a failed run. The unique (job_key, occurrence) index is
the claim: the process whose insert lands runs the occurrence.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "schedule_runs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("job_key", sa.String(320), nullable=False),
        sa.Column("rule_file", sa.String(255), nullable=False),
        sa.Column("job", sa.String(32), nullable=False),
        sa.Column("occurrence", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("started", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished", sa.DateTime(timezone=True), nullable=True),
        sa.Column("worker", sa.String(128), nullable=False),
        sa.Column("summary", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=True),
        sa.Column("error", sa.Text, nullable=True),
    )
    op.create_index(
        "ux_schedule_runs_occurrence", "schedule_runs", ["job_key", "occurrence"], unique=True
    )
    op.create_index("ix_schedule_runs_started", "schedule_runs", ["started"])


def downgrade() -> None:
    op.drop_index("ix_schedule_runs_started", table_name="schedule_runs")
    op.drop_index("ux_schedule_runs_occurrence", table_name="schedule_runs")
    op.drop_table("schedule_runs")
