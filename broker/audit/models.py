"""Audit log storage (foundation version; the audit chain feature extends it)."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel


class AuditEntry(SQLModel, table=True):
    __tablename__ = "audit_entry"

    seq: int | None = Field(default=None, primary_key=True)
    created_at: datetime
    kind: str = Field(index=True, max_length=64)
    actor: str | None = Field(default=None, index=True, max_length=64)
    outcome: str = Field(max_length=16)
    asset_id: str | None = Field(default=None, index=True, max_length=64)
    agreement_id: str | None = Field(default=None, index=True, max_length=64)
    body: str  # the exact RFC 8785 canonical JSON bytes that are hashed into the Merkle tree
