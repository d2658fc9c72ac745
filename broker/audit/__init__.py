"""Audit log entry point: every security-relevant event goes through ``record_event``."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlmodel import Session

from broker.audit.models import AuditEntry
from broker.canonical import canonical_json


def record_event(session: Session, kind: str, *, actor: str | None, outcome: str = "ok",
                 asset_id: str | None = None, agreement_id: str | None = None,
                 details: dict[str, Any] | None = None) -> int:
    """Append one event in the caller's transaction; returns its sequence number."""
    now = datetime.now(timezone.utc)
    body = {"kind": kind, "actor": actor, "outcome": outcome, "asset_id": asset_id,
            "agreement_id": agreement_id, "details": details or {}, "time": now.isoformat()}
    entry = AuditEntry(created_at=now, kind=kind, actor=actor, outcome=outcome, asset_id=asset_id,
                       agreement_id=agreement_id, body=canonical_json(body).decode())
    session.add(entry)
    session.flush()
    return entry.seq
