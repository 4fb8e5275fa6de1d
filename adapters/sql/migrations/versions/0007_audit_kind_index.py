"""the compliance issue: find the chain's records of one kind without a scan

`GET /v1/compliance/verifications` pages through the `verification` records
(and the checkpoints, the unlock steps and the anomalies are read the same way)
in chain order; an index on (kind, seq) reads each page directly.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 18:30:00
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_audit_log_kind", "audit_log", ["kind", "seq"])


def downgrade() -> None:
    op.drop_index("ix_audit_log_kind", table_name="audit_log")
