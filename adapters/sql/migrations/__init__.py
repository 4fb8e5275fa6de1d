"""Alembic migrations of the store; applied on start by the store's `migrate()`."""
