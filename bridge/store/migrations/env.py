"""Alembic environment: migrations run on the connection the bridge hands over, in its one
transaction; on PostgreSQL that transaction already holds the migration lock
(``Database.upgrade``), so replicas starting together migrate once."""

from alembic import context

from bridge.store.tables import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
context.run_migrations()
