"""Appending to the audit log: gap-free sequencing and group commit.

The entry format is ``twinspace.audit.entries`` (pure, shared with the offline verifier).

Sequencing: every append first updates the single ``audit_head`` row (``size = size + k``). That
row lock (PostgreSQL) or the database write lock (SQLite) is held until the surrounding
transaction ends, so appenders on any number of replicas are serialised, sequence numbers are
gap-free (a rolled-back append rolls back its number too) and entries commit in sequence order.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from broker.audit.models import AuditEntry
from broker.storage.sqlite_lock import begin_write
from twinspace.audit.entries import ZERO_HASH, Event, entry_body, leaf_hex

_STATEMENTS: dict[str, tuple[str, str, str, str, str]] = {}


def _statements(conn: Connection) -> tuple[str, str, str, str, str] | None:
    """Driver-level SQL for the hot path (SQLAlchemy's per-statement overhead dominates otherwise)."""
    style = {"pysqlite": "named", "psycopg": "pyformat", "psycopg2": "pyformat"}.get(conn.dialect.driver)
    if style is None:
        return None
    got = _STATEMENTS.get(style)
    if got is None:
        p = (lambda n: f":{n}") if style == "named" else (lambda n: f"%({n})s")
        got = _STATEMENTS[style] = (
            f"UPDATE audit_head SET size = size + {p('k')} WHERE id = 1 RETURNING size, last_leaf_hash",
            "SELECT seq, body FROM audit_entry ORDER BY seq DESC LIMIT 1",
            f"INSERT INTO audit_head (id, size, last_leaf_hash) VALUES (1, {p('s')}, {p('h')}) "
            "ON CONFLICT (id) DO NOTHING",
            "INSERT INTO audit_entry (seq, created_at, kind, actor, outcome, asset_id, agreement_id, body) VALUES "
            f"({p('seq')}, {p('created_at')}, {p('kind')}, {p('actor')}, {p('outcome')}, {p('asset_id')}, "
            f"{p('agreement_id')}, {p('body')})",
            f"UPDATE audit_head SET last_leaf_hash = {p('h')} WHERE id = 1",
        )
    return got


_TIME_PROCESSORS: dict[str, Any] = {}


def _time_processor(dialect) -> Any:
    """How SQLAlchemy would bind ``created_at`` on this dialect (we bypass it on the hot path)."""
    proc = _TIME_PROCESSORS.get(dialect.name)
    if proc is None:
        proc = _TIME_PROCESSORS[dialect.name] = AuditEntry.__table__.c.created_at.type.bind_processor(dialect)
    return proc


def _allocate(cur, sql, k: int) -> tuple[int, str]:
    """Reserve k sequence numbers; returns (last allocated seq, leaf hash before the first)."""
    for _ in range(2):
        cur.execute(sql[0], {"k": k})
        row = cur.fetchone()
        if row is not None:
            return int(row[0]), str(row[1])
        # No head row (schema created without the migration): start it from the existing entries.
        cur.execute(sql[1])
        last = cur.fetchone()
        size, h = (0, ZERO_HASH) if last is None else (int(last[0]), leaf_hex(last[1].encode()))
        cur.execute(sql[2], {"s": size, "h": h})
    raise RuntimeError("audit_head row could not be created")


class _CoreCursor:
    """The same five statements through SQLAlchemy, for drivers with other parameter styles."""

    def __init__(self, conn: Connection):
        self.conn = conn
        self._last = None

    def execute(self, sql: str, params: dict | None = None) -> None:
        self._last = self.conn.execute(text(sql), params or {})

    def executemany(self, sql: str, rows: list[dict]) -> None:
        self.conn.execute(text(sql), rows)

    def fetchone(self):
        return self._last.first()

    def close(self) -> None:
        pass


def append(conn: Connection, events: list[Event]) -> list[int]:
    """Append events in the connection's current transaction; returns their sequence numbers.

    The entries become durable, and visible to other replicas, when that transaction commits.
    """
    if not events:
        return []
    sql = _statements(conn)
    if sql is None:
        p = lambda n: f":{n}"  # noqa: E731
        sql = (f"UPDATE audit_head SET size = size + {p('k')} WHERE id = 1 RETURNING size, last_leaf_hash",
               "SELECT seq, body FROM audit_entry ORDER BY seq DESC LIMIT 1",
               "INSERT INTO audit_head (id, size, last_leaf_hash) VALUES (1, :s, :h) ON CONFLICT (id) DO NOTHING",
               "INSERT INTO audit_entry (seq, created_at, kind, actor, outcome, asset_id, agreement_id, body) "
               "VALUES (:seq, :created_at, :kind, :actor, :outcome, :asset_id, :agreement_id, :body)",
               "UPDATE audit_head SET last_leaf_hash = :h WHERE id = 1")
        cur = _CoreCursor(conn)
        to_db = None
    else:
        if not conn.in_transaction():
            conn.begin()
        begin_write(conn)  # the raw cursor bypasses SQLAlchemy's events: take the SQLite write mutex here
        cur = conn.connection.cursor()
        to_db = _time_processor(conn.dialect)
    try:
        end, prev = _allocate(cur, sql, len(events))
        start = end - len(events) + 1
        now = datetime.now(timezone.utc)
        now_iso = now.isoformat()  # formatted once per batch
        now_db = to_db(now) if to_db else now
        rows = []
        for i, ev in enumerate(events):
            seq = start + i
            body = entry_body(seq, prev, ev, now, now_iso)
            prev = leaf_hex(body)
            created = now_db if ev.time is None else (to_db(ev.time) if to_db else ev.time)
            rows.append({"seq": seq, "created_at": created, "kind": ev.kind[:64],
                         "actor": ev.actor, "outcome": ev.outcome[:16], "asset_id": ev.asset_id,
                         "agreement_id": ev.agreement_id, "body": body.decode()})
        if len(rows) == 1:
            cur.execute(sql[3], rows[0])
        else:
            cur.executemany(sql[3], rows)
        cur.execute(sql[4], {"h": prev})
    finally:
        cur.close()
    return list(range(start, end + 1))


class GroupCommitWriter:
    """Appends events from many threads in shared transactions (group commit, as Tessera does).

    ``record(...)`` blocks until the batch holding the event has committed, then returns its
    sequence number: an entry is acknowledged only once durable. A batch closes at ``max_batch``
    events or ``max_wait`` seconds after its first event, whichever comes first; with the default
    ``max_wait=0`` a batch is whatever queued up while the previous one was being written, so a
    lone event pays no extra latency and a busy broker gets large batches.
    """

    def __init__(self, engine: Engine, *, max_batch: int = 256, max_wait: float = 0.0):
        self.engine = engine
        self.max_batch = max_batch
        self.max_wait = max_wait
        self._queue: queue.Queue[tuple[Event, Future] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="audit-group-commit", daemon=True)
        self._closed = False
        self._thread.start()

    def submit(self, event: Event) -> Future:
        if self._closed:
            raise RuntimeError("the audit writer is closed")
        fut: Future = Future()
        self._queue.put((event, fut))
        return fut

    def record(self, kind: str, *, actor: str | None, outcome: str = "ok", asset_id: str | None = None,
               agreement_id: str | None = None, details: dict[str, Any] | None = None,
               timeout: float | None = 30) -> int:
        return self.submit(Event(kind, actor, outcome, asset_id, agreement_id, details or {})).result(timeout)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            deadline = time.monotonic() + self.max_wait
            stop = False
            while len(batch) < self.max_batch:
                remaining = deadline - time.monotonic()
                try:
                    nxt = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            self._write(batch)
            if stop:
                return

    def _write(self, batch: list[tuple[Event, Future]]) -> None:
        try:
            with self.engine.begin() as conn:
                seqs = append(conn, [ev for ev, _ in batch])
        except Exception as exc:  # noqa: BLE001 - every waiter learns the batch failed; nothing is acked
            for _, fut in batch:
                fut.set_exception(exc)
            return
        for (_, fut), seq in zip(batch, seqs):
            fut.set_result(seq)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._thread.join(timeout=30)
