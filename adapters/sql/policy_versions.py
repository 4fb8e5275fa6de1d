"""`engine.policy.versions.PolicyArchive` on the `policy_versions` table: every
policy version ever put in force, by its digests, with its files' texts.

A version is written once, in its own small transaction, when a set is loaded
to be put in force (start, reload) or run as the shadow; it is never changed.
It appends nothing to the audit chain: the records judged under a version name
its digests, and a kept version must give those digests back when loaded again
(`load_version`), so a row that was altered cannot pass for the original.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import Column, DateTime, Engine, String, Table, Text, insert, select

from engine.policy.versions import PolicyVersion

from ._errors import unavailable
from .schema import metadata

__all__ = ["SqlPolicyArchive", "policy_versions"]

_DIGEST = 71  # "sha256:" + 64 hex digits

policy_versions = Table(
    "policy_versions",
    metadata,
    Column("policy_digest", String(_DIGEST), primary_key=True),
    Column("compliance_digest", String(_DIGEST), primary_key=True),
    Column("files", Text, nullable=False),  # JSON: rule file name -> text
    Column("compliance", Text, nullable=False),
    Column("kept_at", DateTime(timezone=True), nullable=False),
)


class SqlPolicyArchive:
    def __init__(self, engine: Engine, errors: Any) -> None:
        self._engine = engine
        self._errors = errors

    def keep(self, version: PolicyVersion, at: datetime) -> bool:
        with unavailable(self._errors, "keeping a policy version"), self._engine.begin() as conn:
            if self._row(conn, version.policy_digest, version.compliance_digest) is not None:
                return False
            conn.execute(
                insert(policy_versions).values(
                    policy_digest=version.policy_digest,
                    compliance_digest=version.compliance_digest,
                    files=json.dumps(version.files, sort_keys=True, ensure_ascii=False),
                    compliance=version.compliance,
                    kept_at=at,
                )
            )
            return True

    def get(self, policy_digest: str, compliance_digest: str) -> PolicyVersion | None:
        with unavailable(self._errors, "reading a policy version"), self._engine.connect() as conn:
            row = self._row(conn, policy_digest, compliance_digest)
        if row is None:
            return None
        files = json.loads(row.files)
        return PolicyVersion(policy_digest, compliance_digest, dict(files), row.compliance)

    @staticmethod
    def _row(conn: Any, policy_digest: str, compliance_digest: str) -> Any:
        query = select(policy_versions).where(
            policy_versions.c.policy_digest == policy_digest,
            policy_versions.c.compliance_digest == compliance_digest,
        )
        return conn.execute(query).first()
