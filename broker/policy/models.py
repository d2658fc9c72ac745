"""Uploaded policy versions, live usage counters and scenario approvals (shared by all replicas)."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from broker.storage.db import utcnow



class PolicyVersion(SQLModel, table=True):
    __tablename__ = "policy_version"

    policy_id: str = Field(primary_key=True, max_length=64)
    version: int = Field(primary_key=True)
    rego: str
    sha256: str = Field(max_length=64)
    description: str = Field(default="", max_length=500)
    created_by: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow)


class UsageCounter(SQLModel, table=True):
    """Per-agreement usage; incremented with one atomic UPDATE so replicas never lose counts."""

    __tablename__ = "usage_counter"

    agreement_id: str = Field(primary_key=True, max_length=64)
    accesses: int = 0
    rows: int = 0
    updated_at: datetime = Field(default_factory=utcnow)


class ScenarioApproval(SQLModel, table=True):
    """A provider's approval of a declared use scenario for one consumer and asset."""

    __tablename__ = "scenario_approval"

    asset_id: str = Field(primary_key=True, max_length=64)
    consumer_id: str = Field(primary_key=True, max_length=64)
    scenario: str = Field(primary_key=True, max_length=100)
    approved_by: str = Field(max_length=64)
    approved_at: datetime = Field(default_factory=utcnow)
