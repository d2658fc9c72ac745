"""Audit log storage.

``audit_entry`` rows are append-only: the sequence number is gap-free (allocated through the
single ``audit_head`` row, whose row lock serialises appenders across replicas) and ``body`` is the
exact RFC 8785 canonical JSON that is hashed into the Merkle tree. Nothing here is trusted by the
verifier: it recomputes everything from the bodies and the signed checkpoints.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, text
from sqlmodel import Field, SQLModel


def _partial(name: str, column: str, where: str) -> Index:
    """``(column, seq)`` for the rows ``where`` selects (the same predicate on SQLite and PostgreSQL)."""
    return Index(name, column, "seq", sqlite_where=text(where), postgresql_where=text(where))


class AuditEntry(SQLModel, table=True):
    """Indexes (docs/audit.md#indexes): every append writes each index its row enters, so there are
    few. Each filter of ``broker.audit.service`` that an index serves is an equality on its leading
    column, and the second column is ``seq``: rows come out in sequence order from ``seq > after_seq``
    on and a page stops after ``limit`` rows, without a sort. ``kind`` is indexed for every row;
    ``asset_id`` / ``agreement_id`` only where set (most events name neither); ``outcome`` only where
    it is not ``ok`` (denials and errors: ``outcome=ok`` matches nearly every row, so walking the
    primary key fills a page at once; for the other values the query repeats the index's predicate,
    see ``service._filtered``). No index on ``actor``: the ``org`` filter also matches
    ``details.org_id`` in the body, so no index can serve it. ``created_at`` is indexed on PostgreSQL
    only, whose planner uses it for time windows; SQLite's (without ANALYZE statistics) took it for
    windows with both bounds only, and on SQLite the time filters walk the primary key.
    """

    __tablename__ = "audit_entry"
    __table_args__ = (
        Index("ix_audit_entry_kind_seq", "kind", "seq"),
        _partial("ix_audit_entry_asset_seq", "asset_id", "asset_id IS NOT NULL"),
        _partial("ix_audit_entry_agreement_seq", "agreement_id", "agreement_id IS NOT NULL"),
        _partial("ix_audit_entry_not_ok_seq", "outcome", "outcome <> 'ok'"),
        Index("ix_audit_entry_created_at", "created_at").ddl_if(dialect="postgresql"),
    )

    seq: int | None = Field(default=None, primary_key=True)  # 1-based; leaf index = seq - 1
    created_at: datetime
    kind: str = Field(max_length=64)
    actor: str | None = Field(default=None, max_length=64)
    outcome: str = Field(max_length=16)
    asset_id: str | None = Field(default=None, max_length=64)
    agreement_id: str | None = Field(default=None, max_length=64)
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
