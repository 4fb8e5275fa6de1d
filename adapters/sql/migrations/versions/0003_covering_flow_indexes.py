"""indexes that answer the per-evaluation flow reads from the index alone

The order-rate count reads every submit of the account in the rate window;
with `status` and `client_order_id` in the index it no longer visits the
(large) order rows. The duplicate check looks up one (symbol, side, quantity)
instead of scanning the account's whole duplicate window.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 01:50:00
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_orders_flow", table_name="orders")
    op.create_index(
        "ix_orders_window",
        "orders",
        ["account", "operation", "created_at", "status", "client_order_id"],
    )
    op.create_index(
        "ix_orders_duplicate",
        "orders",
        ["account", "symbol", "side", "quantity", "created_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_orders_duplicate", table_name="orders")
    op.drop_index("ix_orders_window", table_name="orders")
    op.create_index("ix_orders_flow", "orders", ["account", "operation", "created_at"])
