"""Alembic environment: runs on the connection the store's `migrate()` hands over."""

from __future__ import annotations

from alembic import context

from adapters.sql.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "run migrations through the store's migrate() (adapters.sql), which passes a connection"
    )

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
