"""Audit log storage.

``audit_entry`` rows are append-only: the sequence number is gap-free (allocated through the
single ``audit_head`` row, whose row lock serialises appenders across replicas) and ``body`` is the
exact RFC 8785 canonical JSON that is hashed into the Merkle tree. Nothing here is trusted by the
verifier: it recomputes everything from the bodies and the signed checkpoints.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger
from sqlmodel import Field, SQLModel


class AuditEntry(SQLModel, table=True):
    __tablename__ = "audit_entry"

    seq: int | None = Field(default=None, primary_key=True)  # 1-based; leaf index = seq - 1
    created_at: datetime = Field(index=True)
    kind: str = Field(index=True, max_length=64)
    actor: str | None = Field(default=None, index=True, max_length=64)
    outcome: str = Field(index=True, max_length=16)
    asset_id: str | None = Field(default=None, index=True, max_length=64)
    agreement_id: str | None = Field(default=None, index=True, max_length=64)
    body: str  # the exact RFC 8785 canonical JSON bytes that are hashed into the Merkle tree


class AuditHead(SQLModel, table=True):
    """One row (id 1): the size of the log and the leaf hash of its last entry (allocation only)."""

    __tablename__ = "audit_head"

    id: int = Field(primary_key=True)
    size: int
    last_leaf_hash: str = Field(max_length=64)


class AuditCheckpoint(SQLModel, table=True):
    """A signed checkpoint (C2SP signed note) of the tree at ``tree_size``."""

    __tablename__ = "audit_checkpoint"

    tree_size: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    root_hash: str = Field(max_length=64)  # hex
    created_at: datetime = Field(index=True)
    note: str


class AuditAnchor(SQLModel, table=True):
    """A checkpoint anchored on an EVM chain (the broker's record; auditors read the chain itself)."""

    __tablename__ = "audit_anchor"

    chain_id: int = Field(primary_key=True, sa_type=BigInteger, sa_column_kwargs={"autoincrement": False})
    contract: str = Field(primary_key=True, max_length=42)
    tree_size: int = Field(primary_key=True, sa_type=BigInteger, sa_column_kwargs={"autoincrement": False})
    root_hash: str = Field(max_length=64)
    tx_hash: str = Field(max_length=66)
    block_number: int = Field(sa_type=BigInteger)
    anchored_at: datetime


class AuditChainContract(SQLModel, table=True):
    """The anchor contract the broker deployed on a chain (when none is configured)."""

    __tablename__ = "audit_chain_contract"

    chain_id: int = Field(primary_key=True, sa_type=BigInteger, sa_column_kwargs={"autoincrement": False})
    address: str = Field(max_length=42)
    deployed_at: datetime
