"""Contract tables: one ``ContractNegotiation`` per DSP negotiation (id = providerPid) and one
``Agreement`` per agreed negotiation, holding the signed document, signatures and countersignature."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, UniqueConstraint
from sqlmodel import Field, SQLModel

from broker.storage.db import utcnow


class ContractNegotiation(SQLModel, table=True):
    __tablename__ = "contract_negotiation"
    __table_args__ = (UniqueConstraint("consumer_id", "consumer_pid", name="uq_contract_negotiation_consumer_pid"),)

    id: str = Field(primary_key=True, max_length=64)  # providerPid
    consumer_pid: str = Field(max_length=128)
    consumer_id: str = Field(foreign_key="org.id", index=True, max_length=64)
    provider_id: str = Field(foreign_key="org.id", index=True, max_length=64)
    asset_id: str = Field(index=True, max_length=64)
    asset_version: int
    content_hash: str = Field(max_length=64)
    offer_id: str = Field(max_length=64)
    policy_id: str = Field(max_length=128)
    policy_version: str = Field(max_length=32)
    offer_params: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    terms: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    purpose: str = Field(max_length=100)
    scenario: str | None = Field(default=None, max_length=100)
    requested_not_after: datetime | None = None
    precheck: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    draft: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    state: str = Field(index=True, max_length=16)
    agreement_id: str | None = Field(default=None, max_length=64)
    callback_address: str | None = Field(default=None, max_length=500)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class Agreement(SQLModel, table=True):
    __tablename__ = "contract_agreement"

    id: str = Field(primary_key=True, max_length=64)
    negotiation_id: str = Field(foreign_key="contract_negotiation.id", index=True, max_length=64)
    asset_id: str = Field(index=True, max_length=64)
    asset_version: int
    content_hash: str = Field(max_length=64)
    consumer_id: str = Field(foreign_key="org.id", index=True, max_length=64)
    provider_id: str = Field(foreign_key="org.id", index=True, max_length=64)
    purpose: str = Field(max_length=100)
    scenario: str | None = Field(default=None, max_length=100)
    policy_id: str = Field(max_length=128)
    policy_version: str = Field(max_length=32)
    policy_params: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    obligations: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    not_before: datetime
    not_after: datetime
    document: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    document_sha256: str = Field(max_length=64)
    signatures: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    countersignature: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    registry_keys: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    status: str = Field(index=True, max_length=16)  # AGREED | VERIFIED | FINALIZED | TERMINATED | REVOKED
    created_at: datetime = Field(default_factory=utcnow)
    finalized_at: datetime | None = None
    revoked_at: datetime | None = None
    revoked_by: str | None = Field(default=None, max_length=64)
    revocation_reason: str | None = Field(default=None, max_length=500)


class RemoteNegotiation(SQLModel, table=True):
    """Consumer role: a negotiation this broker runs for one of its consumers with another DSP provider
    (id = consumerPid). The provider's messages arrive at a capability callback URL; only the SHA-256
    of its secret is kept. The consumer's access token at the provider is never stored."""

    __tablename__ = "dsp_remote_negotiation"

    id: str = Field(primary_key=True, max_length=64)  # consumerPid
    org_id: str = Field(foreign_key="org.id", index=True, max_length=64)
    provider_url: str = Field(max_length=500)  # the provider's DSP base URL
    provider_pid: str | None = Field(default=None, max_length=200)
    offer: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    purpose: str | None = Field(default=None, max_length=100)
    scenario: str | None = Field(default=None, max_length=100)
    state: str = Field(index=True, max_length=16)
    agreement: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    signed_agreement: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    countersignature: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    callback_secret_sha256: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
