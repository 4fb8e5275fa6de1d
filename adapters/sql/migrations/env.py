"""Alembic environment: runs on the connection `adapters.sql.store.Store.migrate` hands over."""

from __future__ import annotations

from alembic import context

from adapters.sql.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "run migrations through adapters.sql.store.Store.migrate(), which passes a connection"
    )

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
