"""Per-agreement privacy budgets (epsilon), shared by all broker replicas through the database."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Column, LargeBinary
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


class AggregationRound(SQLModel, table=True):
    """A secure-aggregation round: providers add ciphertexts under the consumer's public context; the
    broker releases only the sum, once, when enough distinct providers contributed."""
    __tablename__ = "aggregation_round"

    id: str = Field(primary_key=True, max_length=40)
    consumer_id: str = Field(index=True, max_length=64)
    scheme: str = Field(max_length=8)
    context: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    context_sha256: str = Field(max_length=64)
    agreement_ids: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    spec: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    min_providers: int
    epsilon: float
    status: str = Field(default="open", max_length=16)  # open | released
    result: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    created_at: datetime = Field(default_factory=utcnow)
    released_at: datetime | None = None


class AggregationContribution(SQLModel, table=True):
    """One provider's encrypted statistics for a round (never released on its own)."""
    __tablename__ = "aggregation_contribution"

    round_id: str = Field(primary_key=True, max_length=40)
    agreement_id: str = Field(primary_key=True, max_length=64)
    provider_id: str = Field(index=True, max_length=64)
    ciphertext: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    sha256: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow)
