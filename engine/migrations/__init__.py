"""Alembic migrations of the store; applied on start by `engine.store.migrate`."""
