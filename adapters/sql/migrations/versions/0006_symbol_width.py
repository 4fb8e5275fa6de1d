"""the hostile-input issue: the symbol columns as wide as the order model allows

- `orders.symbol`, `positions.symbol`: 16 characters, the longest symbol the
  order model accepts (`engine.limits.SYMBOL_LENGTH`); the columns and the
  model now share one set of limits.

A longer value can only be in `orders.symbol` of a rejected request (an
accepted order's symbol is at most 16); it is cleared there first, since the
record in the audit chain and the stored request keep it whole. SQLite does
not enforce a VARCHAR's length, so only PostgreSQL changes the column type
(rebuilding SQLite's orders table would cost much and change nothing).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 15:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("UPDATE orders SET symbol = NULL WHERE length(symbol) > 16")
    op.alter_column("orders", "symbol", type_=sa.String(16), existing_type=sa.String(32))
    op.alter_column(
        "positions",
        "symbol",
        type_=sa.String(16),
        existing_type=sa.String(32),
        existing_nullable=False,
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.alter_column(
        "positions",
        "symbol",
        type_=sa.String(32),
        existing_type=sa.String(16),
        existing_nullable=False,
    )
    op.alter_column("orders", "symbol", type_=sa.String(32), existing_type=sa.String(16))
