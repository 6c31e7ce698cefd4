"""initial schema

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "attribute_values",
        sa.Column("resource_pk", sa.Integer(), nullable=False),
        sa.Column("path", sa.String(length=255), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("value_key", sa.String(length=1024), nullable=False),
        sa.PrimaryKeyConstraint("resource_pk", "path", "position"),
    )
    with op.batch_alter_table("attribute_values", schema=None) as batch_op:
        batch_op.create_index(
            "ix_attribute_values_lookup", ["path", "value_key", "resource_pk"], unique=False
        )
        batch_op.create_index("ix_attribute_values_resource", ["resource_pk"], unique=False)

    op.create_table(
        "journal",
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=255), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column("op", sa.String(length=32), nullable=False),
        sa.Column("resource_type", sa.String(length=32), nullable=True),
        sa.Column("resource_id", sa.String(length=64), nullable=True),
        sa.Column(
            "before",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "after",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "tolerances",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "detail",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.PrimaryKeyConstraint("seq"),
    )
    with op.batch_alter_table("journal", schema=None) as batch_op:
        batch_op.create_index("ix_journal_resource", ["resource_id", "seq"], unique=False)

    op.create_table(
        "memberships",
        sa.Column("group_id", sa.String(length=64), nullable=False),
        sa.Column("member_id", sa.String(length=64), nullable=False),
        sa.Column("member_type", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("group_id", "member_id"),
    )
    with op.batch_alter_table("memberships", schema=None) as batch_op:
        batch_op.create_index("ix_memberships_member", ["member_id"], unique=False)

    op.create_table(
        "resources",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("external_id", sa.String(length=255), nullable=True),
        sa.Column("name", sa.String(length=512), nullable=False),
        sa.Column("name_key", sa.String(length=512), nullable=False),
        sa.Column("display", sa.String(length=512), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=True),
        sa.Column(
            "doc",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_modified", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("id"),
    )
    with op.batch_alter_table("resources", schema=None) as batch_op:
        batch_op.create_index("ix_resources_name_key", ["type", "name_key"], unique=False)
        batch_op.create_index("ux_resources_external_id", ["type", "external_id"], unique=True)
        batch_op.create_index(
            "ux_resources_user_name",
            ["type", "name_key"],
            unique=True,
            sqlite_where=sa.text("type = 'User'"),
            postgresql_where=sa.text("type = 'User'"),
        )

    op.create_table(
        "tokens",
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("scopes", sa.String(length=255), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("name"),
        sa.UniqueConstraint("token_hash"),
    )


def downgrade() -> None:
    op.drop_table("tokens")
    with op.batch_alter_table("resources", schema=None) as batch_op:
        batch_op.drop_index(
            "ux_resources_user_name",
            sqlite_where=sa.text("type = 'User'"),
            postgresql_where=sa.text("type = 'User'"),
        )
        batch_op.drop_index("ux_resources_external_id")
        batch_op.drop_index("ix_resources_name_key")

    op.drop_table("resources")
    with op.batch_alter_table("memberships", schema=None) as batch_op:
        batch_op.drop_index("ix_memberships_member")

    op.drop_table("memberships")
    with op.batch_alter_table("journal", schema=None) as batch_op:
        batch_op.drop_index("ix_journal_resource")

    op.drop_table("journal")
    with op.batch_alter_table("attribute_values", schema=None) as batch_op:
        batch_op.drop_index("ix_attribute_values_resource")
        batch_op.drop_index("ix_attribute_values_lookup")

    op.drop_table("attribute_values")
