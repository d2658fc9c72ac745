"""Participant registry tables."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel

from broker.storage.db import utcnow


class Org(SQLModel, table=True):
    __tablename__ = "org"

    id: str = Field(primary_key=True, max_length=64)
    name: str = Field(index=True, unique=True, max_length=200)
    role: str = Field(max_length=16)
    org_type: str = Field(default="other", max_length=64)
    attributes: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    status: str = Field(default="active", max_length=16)
    created_at: datetime = Field(default_factory=utcnow)


class OrgKey(SQLModel, table=True):
    __tablename__ = "org_key"

    kid: str = Field(primary_key=True, max_length=64)
    org_id: str = Field(foreign_key="org.id", index=True, max_length=64)
    public_key: str = Field(max_length=64)
    status: str = Field(default="active", max_length=16)
    created_at: datetime = Field(default_factory=utcnow)
    revoked_at: datetime | None = None


class UsedAssertion(SQLModel, table=True):
    """Seen client-assertion ids, kept until they expire, so an assertion works once."""

    __tablename__ = "used_assertion"

    key: str = Field(primary_key=True, max_length=300)
    expires_at: datetime = Field(index=True)
