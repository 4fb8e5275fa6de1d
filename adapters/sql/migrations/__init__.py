"""Alembic migrations of the store; applied on start by `adapters.sql.store.Store.migrate`."""
