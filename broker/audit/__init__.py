"""Audit log entry point: every security-relevant event goes through ``record_event``.

Entries are canonical JSON (RFC 8785) leaves of an RFC 9162 Merkle tree, chained to their
predecessor, with gap-free sequence numbers across replicas; see ``broker.audit.log`` for the
format and ``docs/audit.md`` for what an auditor verifies. Never put row data or secrets in
``details``: keys naming secrets or bulk data are redacted, long values summarised.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session

from broker.audit.log import GroupCommitWriter, append
from twinspace.audit.entries import Event


_PENDING = "twinspace_audit_pending"


def record_event(session: Session, kind: str, *, actor: str | None, outcome: str = "ok",
                 asset_id: str | None = None, agreement_id: str | None = None,
                 details: dict[str, Any] | None = None) -> int | None:
    """Append one event in the caller's transaction; returns its sequence number.

    The entry commits (and is acknowledged as durable) with the caller's transaction; if that
    rolls back, so does the entry and its sequence number. In a request session (see
    ``defer_appends``) the entries are appended together just before the commit and ``None`` is
    returned: one append per request, and the log's write lock is held only for the commit.
    """
    ev = Event(kind=kind, actor=actor, outcome=outcome, asset_id=asset_id, agreement_id=agreement_id,
               details=details or {})
    pending = session.info.get(_PENDING)
    if pending is not None:
        pending.append(ev)
        return None
    return append(session.connection(), [ev])[0]


def defer_appends(session: Session) -> None:
    """Collect this session's audit events and append them in one batch at commit (request sessions).

    Why: appends serialise on the log head (a row lock on PostgreSQL, the write lock on SQLite); taken
    at the first event, that lock would be held through the rest of the request (policy, decryption).
    """
    session.info[_PENDING] = []

    @event.listens_for(session, "before_commit")
    def _append_pending(sess: Session) -> None:
        events = sess.info.get(_PENDING)
        if events and not sess.in_nested_transaction():  # a savepoint's release is not the commit
            sess.info[_PENDING] = []
            append(sess.connection(), events)

    @event.listens_for(session, "after_rollback")
    def _drop_pending(sess: Session) -> None:
        if sess.info.get(_PENDING) and not sess.in_nested_transaction():  # the whole transaction is gone
            sess.info[_PENDING] = []


def has_pending(session: Session) -> bool:
    return bool(session.info.get(_PENDING))


_writers: "weakref.WeakKeyDictionary[Engine, GroupCommitWriter]" = weakref.WeakKeyDictionary()
_writers_lock = threading.Lock()


def log_event(engine: Engine, kind: str, *, actor: str | None, outcome: str = "ok",
              asset_id: str | None = None, agreement_id: str | None = None,
              details: dict[str, Any] | None = None) -> int:
    """Append an event outside any transaction through the group-commit writer.

    Blocks until the entry is durable and returns its sequence number. Use this for events that
    are not part of a database change (e.g. a search, a denied request) on busy paths.
    """
    with _writers_lock:
        writer = _writers.get(engine)
        if writer is None:
            writer = _writers[engine] = GroupCommitWriter(engine)
            weakref.finalize(engine, writer.close)
    return writer.record(kind, actor=actor, outcome=outcome, asset_id=asset_id, agreement_id=agreement_id,
                         details=details)


__all__ = ["record_event", "log_event", "defer_appends", "has_pending", "Event"]
