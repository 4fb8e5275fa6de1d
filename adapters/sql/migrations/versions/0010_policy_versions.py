"""issue 12: every policy version ever in force, kept by its digests

`policy_versions` holds each version's rule files and compliance.yaml as text,
keyed by (policy digest, compliance digest), so that `apex-oms audit replay`
can judge every recorded decision again under the rules that judged it.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 23:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "policy_versions",
        sa.Column("policy_digest", sa.String(71), primary_key=True),
        sa.Column("compliance_digest", sa.String(71), primary_key=True),
        sa.Column("files", sa.Text(), nullable=False),
        sa.Column("compliance", sa.Text(), nullable=False),
        sa.Column("kept_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("policy_versions")
