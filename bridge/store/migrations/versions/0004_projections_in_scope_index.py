"""an index for a pilot's admitted count

Revision ID: 0004
Revises: 0003

A capped pilot counts the people it admitted on every write that could admit one; without
this index the count reads every projection of the rule file (100k rows at 100k people).
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_projections_in_scope", "projections", ["rule_file", "in_scope"])


def downgrade() -> None:
    op.drop_index("ix_projections_in_scope", table_name="projections")
