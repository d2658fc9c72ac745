"""Privacy budgets per (consumer, asset) and secure-aggregation rounds, shared by all broker replicas."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, Column, LargeBinary
from sqlmodel import Field, SQLModel

from broker.storage.db import utcnow


class PrivacyAccount(SQLModel, table=True):
    """One privacy budget per (consumer organisation, asset): every version of the asset and every
    agreement the consumer holds on it draw from it, so a new agreement never adds budget."""
    __tablename__ = "privacy_account"

    key: str = Field(primary_key=True, max_length=160)   # "<consumer org id>|<asset id>"
    consumer_id: str = Field(index=True, max_length=64)
    asset_id: str = Field(index=True, max_length=64)
    measure: str = Field(default="pure", max_length=8)   # pure (ε adds up) | zcdp (ρ adds up)
    # amounts in integer units of 10^-9 (``ledger.UNIT``): exact sums, nothing left over by float drift
    total_units: int = Field(sa_column=Column(BigInteger, nullable=False))  # the smallest total offered
    spent_units: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    reserved_units: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    queries: int = 0
    updated_at: datetime = Field(default_factory=utcnow)


class PrivacyReservation(SQLModel, table=True):
    """Budget held for a query in flight; expired (and given back) after ``expires_at`` if its query
    never settled, so a crashed worker cannot hold budget for ever."""
    __tablename__ = "privacy_reservation"

    id: str = Field(primary_key=True, max_length=40)
    account_key: str = Field(index=True, max_length=160)
    cost_units: int = Field(sa_column=Column(BigInteger, nullable=False))
    expires_at: float                                    # epoch seconds (portable comparisons)


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
