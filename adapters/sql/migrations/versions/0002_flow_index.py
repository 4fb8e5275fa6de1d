"""index for the per-evaluation flow counts

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 00:55:00
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_orders_flow", "orders", ["account", "operation", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_orders_flow", table_name="orders")
