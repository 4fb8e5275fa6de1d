"""issue 12: the account's book for the credit checks, read in O(1) per decision

`positions.price` keeps the last execution price of the account in the symbol
(the mark its gross exposure is valued at); `daily_notional` adds up the
notional each account executed per trading day. Both are written with the fill
that changes them, so a decision reads one row each instead of scanning fills.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 23:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("positions") as batch:
        batch.add_column(sa.Column("price", sa.Float(), nullable=True))
    op.create_table(
        "daily_notional",
        sa.Column("account", sa.String(64), primary_key=True),
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("notional", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("daily_notional")
    with op.batch_alter_table("positions") as batch:
        batch.drop_column("price")
