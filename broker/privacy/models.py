"""Per-agreement privacy budgets (epsilon), shared by all broker replicas through the database."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from broker.storage.db import utcnow



class PrivacyBudget(SQLModel, table=True):
    __tablename__ = "privacy_budget"

    agreement_id: str = Field(primary_key=True, max_length=64)
    epsilon_total: float
    epsilon_spent: float = 0.0
    epsilon_reserved: float = 0.0
    queries: int = 0
    updated_at: datetime = Field(default_factory=utcnow)
