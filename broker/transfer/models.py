"""Transfer processes (DSP): one row per TransferRequestMessage (id = providerPid)."""

from __future__ import annotations

from datetime import datetime

from typing import Any

from sqlalchemy import JSON, Column, UniqueConstraint
from sqlmodel import Field, SQLModel

from broker.storage.db import utcnow


class TransferProcess(SQLModel, table=True):
    __tablename__ = "transfer_process"
    __table_args__ = (UniqueConstraint("consumer_id", "consumer_pid", name="uq_transfer_process_consumer_pid"),)

    id: str = Field(primary_key=True, max_length=64)  # providerPid
    consumer_pid: str = Field(max_length=128)
    agreement_id: str = Field(foreign_key="contract_agreement.id", index=True, max_length=64)
    consumer_id: str = Field(foreign_key="org.id", index=True, max_length=64)
    provider_id: str = Field(max_length=64)
    asset_id: str = Field(max_length=64)
    asset_version: int
    format: str = Field(max_length=64)
    state: str = Field(index=True, max_length=16)
    token_generation: int = 0  # bumped on suspend/terminate/complete: earlier tokens stop working
    pulls: int = 0
    rows_served: int = 0
    callback_address: str | None = Field(default=None, max_length=500)  # the consumer's DSP callback base
    consumer_kid: str | None = Field(default=None, max_length=64)  # the key the consumer's tokens bind to
    data_address: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))  # PUSH sink
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class RemoteTransfer(SQLModel, table=True):
    """Consumer role: a transfer process with another DSP provider under a remote agreement
    (id = consumerPid); the provider's DataAddress arrives with its TransferStartMessage."""

    __tablename__ = "dsp_remote_transfer"

    id: str = Field(primary_key=True, max_length=64)  # consumerPid
    negotiation_id: str = Field(foreign_key="dsp_remote_negotiation.id", index=True, max_length=64)
    org_id: str = Field(foreign_key="org.id", index=True, max_length=64)
    provider_pid: str | None = Field(default=None, max_length=200)
    agreement_id: str = Field(max_length=300)
    format: str = Field(max_length=64)
    state: str = Field(index=True, max_length=16)
    data_address: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class DataplaneDecision(SQLModel, table=True):
    """A signed decision the broker gave a provider's connector for one pull (``POST /dataplane/decisions``),
    so that the receipt the connector sends afterwards can be matched to it."""

    __tablename__ = "dataplane_decision"

    decision_id: str = Field(primary_key=True, max_length=64)
    transfer_id: str = Field(foreign_key="transfer_process.id", index=True, max_length=64)
    provider_id: str = Field(max_length=64)
    consumer_id: str = Field(max_length=64)
    agreement_id: str = Field(max_length=64)
    token_jti: str = Field(max_length=128)
    allow: bool = False
    created_at: datetime = Field(default_factory=utcnow)


class DataplaneReceipt(SQLModel, table=True):
    """A receipt a connector signed for what it served (idempotent per ``receipt_id``)."""

    __tablename__ = "dataplane_receipt"

    receipt_id: str = Field(primary_key=True, max_length=128)
    kind: str = Field(default="transfer", max_length=16)  # transfer | query
    transfer_id: str | None = Field(default=None, foreign_key="transfer_process.id", index=True, max_length=64)
    agreement_id: str = Field(max_length=64)
    decision_id: str = Field(max_length=128)  # the decision id (transfer) or the query id (query)
    provider_id: str = Field(max_length=64)
    sha256: str = Field(max_length=64)
    rows: int = 0
    bytes: int = 0
    acknowledged: bool = False
    created_at: datetime = Field(default_factory=utcnow)
