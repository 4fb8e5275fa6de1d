"""issue 12: the account's working orders found without a scan

Every decision reads the account's working orders (the credit and self-match
checks). The index the planner took for it, ix_orders_window (account,
operation, ...), holds every submit the account ever made, so the read grew
with the account's history (about 0.5 ms at 3,000 orders on SQLite, under the
chain lock). A partial index holds only the orders working at a broker.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 03:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

# engine.lifecycle.OPEN as it stood at this revision (adapters/sql/schema.py WORKING)
_WORKING = (
    "status IN ('submitted', 'accepted', 'partially_filled', 'pending_cancel',"
    " 'pending_replace', 'replaced')"
)


def upgrade() -> None:
    op.create_index(
        "ix_orders_working",
        "orders",
        ["account", "operation"],
        sqlite_where=sa.text(_WORKING),
        postgresql_where=sa.text(_WORKING),
    )


def downgrade() -> None:
    op.drop_index("ix_orders_working", table_name="orders")
