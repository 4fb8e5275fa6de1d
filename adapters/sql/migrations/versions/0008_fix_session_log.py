"""the custom OMS issue: a FIX session's sequence numbers and message log

- `fix_sessions`: per session (the broker's name), the next MsgSeqNum to send
  and to expect, and an epoch counting sequence resets;
- `fix_messages`: every FIX message in and out as it was on the wire, so that a
  ResendRequest is answered with what was sent, a restart resumes with the
  right sequence numbers, and `apex-oms brokers fix-log` can print them.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 23:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "fix_sessions",
        sa.Column("session", sa.String(32), primary_key=True),
        sa.Column("next_out", sa.BigInteger(), nullable=False),
        sa.Column("next_in", sa.BigInteger(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "fix_messages",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("session", sa.String(32), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("direction", sa.String(3), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("msg_type", sa.String(8), nullable=False),
        sa.Column("cl_ord_id", sa.String(64), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_fix_messages_seq", "fix_messages", ["session", "epoch", "direction", "seq"])
    op.create_index("ix_fix_messages_cl_ord_id", "fix_messages", ["session", "cl_ord_id"])


def downgrade() -> None:
    op.drop_index("ix_fix_messages_cl_ord_id", table_name="fix_messages")
    op.drop_index("ix_fix_messages_seq", table_name="fix_messages")
    op.drop_table("fix_messages")
    op.drop_table("fix_sessions")
