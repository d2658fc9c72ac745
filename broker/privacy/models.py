"""Per-agreement privacy budgets (epsilon), shared by all broker replicas through the database."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlmodel import Field, SQLModel


def _now() -> datetime:
    return datetime.now(timezone.utc)


class PrivacyBudget(SQLModel, table=True):
    __tablename__ = "privacy_budget"

    agreement_id: str = Field(primary_key=True, max_length=64)
    epsilon_total: float
    epsilon_spent: float = 0.0
    epsilon_reserved: float = 0.0
    queries: int = 0
    updated_at: datetime = Field(default_factory=_now)
