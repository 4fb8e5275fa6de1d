"""the lifecycle issue: token accounts, wider record kinds, fill execution ids,
the simulated broker's journal

- `api_tokens.accounts`: the accounts a trader token is bound to (JSON list;
  NULL: every account the compliance configuration allows);
- `audit_log.kind`: 32 characters (`trading_state_changed`);
- `fills.execution_id`: the broker's id of each execution, so that a repeated
  report is recognised and never booked twice;
- `broker_journal`: durable memory of an in-process broker (its working orders
  and fills), so that a restart loses nothing.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 13:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_tokens") as batch:
        batch.add_column(sa.Column("accounts", sa.Text(), nullable=True))
    with op.batch_alter_table("audit_log") as batch:
        batch.alter_column("kind", type_=sa.String(32), existing_type=sa.String(16))
    with op.batch_alter_table("fills") as batch:
        batch.add_column(sa.Column("execution_id", sa.String(64), nullable=True))
    op.create_table(
        "broker_journal",
        sa.Column("broker", sa.String(32), primary_key=True),
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("broker_journal")
    with op.batch_alter_table("fills") as batch:
        batch.drop_column("execution_id")
    with op.batch_alter_table("audit_log") as batch:
        batch.alter_column("kind", type_=sa.String(16), existing_type=sa.String(32))
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_column("accounts")
