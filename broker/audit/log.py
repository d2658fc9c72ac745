"""Appending to the audit log: gap-free sequencing and group commit.

The entry format is ``twinspace.audit.entries`` (pure, shared with the offline verifier).

Sequencing: every append first updates the single ``audit_head`` row (``size = size + k``). That
row lock (PostgreSQL) or the database write lock (SQLite) is held until the surrounding
transaction ends, so appenders on any number of replicas are serialised, sequence numbers are
gap-free (a rolled-back append rolls back its number too) and entries commit in sequence order.
"""

from __future__ import annotations

import hashlib
import threading
import time
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from broker.audit.models import AuditEntry
from broker.storage.sqlite_lock import begin_write
from twinspace.audit.entries import ZERO_HASH, Event, entry_body, leaf_hex

_STATEMENTS: dict[str, tuple[str, str, str, str, str]] = {}
_COLUMNS = ("seq", "created_at", "kind", "actor", "outcome", "asset_id", "agreement_id", "body")
_sha256 = hashlib.sha256
_UNNEST_INSERT = ("INSERT INTO audit_entry (seq, created_at, kind, actor, outcome, asset_id, agreement_id, body) "
                  "SELECT * FROM unnest(%b::int8[], %b::timestamptz[], %b::text[], %b::text[], %b::text[], "
                  "%b::text[], %b::text[], %b::text[])")


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
            # positional: the driver binds a tuple per row without a dict lookup per column
            "INSERT INTO audit_entry (seq, created_at, kind, actor, outcome, asset_id, agreement_id, body) VALUES "
            f"({', '.join(['?' if style == 'named' else '%s'] * 8)})",
            f"UPDATE audit_head SET last_leaf_hash = {p('h')} WHERE id = 1",
        )
    return got


_TIME_PROCESSORS: dict[str, Any] = {}


def _time_processor(dialect) -> Any:
    """How SQLAlchemy, then the driver, would bind ``created_at`` on this dialect (we bypass both on the
    hot path and convert the batch's one timestamp once): the column type's bind processor, then on
    pysqlite the adapter sqlite3 itself would apply to the resulting datetime (same stored text)."""
    proc = _TIME_PROCESSORS.get(dialect.driver)
    if proc is None:
        column = AuditEntry.__table__.c.created_at.type.bind_processor(dialect) or (lambda v: v)
        if dialect.driver == "pysqlite":
            import sqlite3

            def proc(value, _column=column):
                value = _column(value)
                adapt = sqlite3.adapters.get((type(value), sqlite3.PrepareProtocol))
                return value if adapt is None else adapt(value)
        else:
            proc = column
        _TIME_PROCESSORS[dialect.driver] = proc
    return proc


def stored_time(dialect, value: datetime) -> Any:
    """``value`` as the appender binds ``created_at`` on this dialect (filters compare against it)."""
    return _time_processor(dialect)(value)


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


def _text_only(rows: list[tuple]) -> bool:
    """actor, asset_id, agreement_id are str or None in every row (text[] arrays; a caller passing
    another type gets the per-row executemany, and the driver's casts, as before)."""
    for r in rows:
        for v in r[3:7]:
            if v is not None and type(v) is not str:
                return False
    return True


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
        positional = unnest = False
    else:
        positional = True
        unnest = conn.dialect.driver == "psycopg"
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
        for seq, ev in enumerate(events, start):
            body = entry_body(seq, prev, ev, now, now_iso)
            prev = _sha256(b"\x00" + body).hexdigest()
            created = now_db if ev.time is None else (to_db(ev.time) if to_db else ev.time)
            rows.append((seq, created, ev.kind[:64], ev.actor, ev.outcome[:16], ev.asset_id, ev.agreement_id,
                         body.decode()))
        if not positional:
            rows = [dict(zip(_COLUMNS, r)) for r in rows]
        if len(rows) == 1:
            cur.execute(sql[3], rows[0])
        elif unnest and _text_only(rows):  # one statement, eight array parameters: no per-row protocol round
            cur.execute(_UNNEST_INSERT, [list(col) for col in zip(*rows)])
        else:
            cur.executemany(sql[3], rows)
        cur.execute(sql[4], {"h": prev})
    finally:
        cur.close()
    return list(range(start, end + 1))


class _Batch:
    """Events that will share one transaction; their submitters wait on ``done``."""

    __slots__ = ("events", "done", "seqs", "error")

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.done = threading.Event()
        self.seqs: list[int] | None = None
        self.error: BaseException | None = None


class _Ticket:
    """What ``submit`` returns: ``result(timeout)`` gives the sequence number once durable."""

    __slots__ = ("batch", "index")

    def __init__(self, batch: _Batch, index: int) -> None:
        self.batch, self.index = batch, index

    def result(self, timeout: float | None = None) -> int:
        b = self.batch
        if not b.done.wait(timeout):
            raise TimeoutError("the audit entry was not committed in time")
        if b.error is not None:
            raise b.error
        return b.seqs[self.index]  # type: ignore[index]

    def done(self) -> bool:
        return self.batch.done.is_set()


class GroupCommitWriter:
    """Appends events from many threads in shared transactions (group commit, as Tessera does).

    ``record(...)`` blocks until the batch holding the event has committed, then returns its
    sequence number: an entry is acknowledged only once durable (a failed batch raises in every
    waiter; nothing of it is acknowledged). A batch closes at ``max_batch`` events or ``max_wait``
    seconds after its first event, whichever comes first; with the default ``max_wait=0`` a batch
    is whatever queued up while the previous one was being written, so a lone event pays no extra
    latency and a busy broker gets large batches. Submitters append to the open batch under one
    lock and wait on that batch's event (no per-entry future or queue hand-off). Order: a batch's
    entries take consecutive sequence numbers in submission order, batches commit one after the
    other; several processes each with a writer still serialise on the ``audit_head`` row.
    """

    def __init__(self, engine: Engine, *, max_batch: int = 256, max_wait: float = 0.0):
        self.engine = engine
        self.max_batch = max_batch
        self.max_wait = max_wait
        self._cond = threading.Condition(threading.Lock())
        self._batches: list[_Batch] = []  # closed-to-the-writer order; the last one may still grow
        self._closed = False
        self._last_size = 0
        self._thread = threading.Thread(target=self._run, name="audit-group-commit", daemon=True)
        self._thread.start()

    def submit(self, event: Event) -> _Ticket:
        with self._cond:
            if self._closed:
                raise RuntimeError("the audit writer is closed")
            batches = self._batches
            if not batches or len(batches[-1].events) >= self.max_batch:
                batches.append(_Batch())
                self._cond.notify()
            b = batches[-1]
            b.events.append(event)
            return _Ticket(b, len(b.events) - 1)

    def record(self, kind: str, *, actor: str | None, outcome: str = "ok", asset_id: str | None = None,
               agreement_id: str | None = None, details: dict[str, Any] | None = None,
               timeout: float | None = 30) -> int:
        return self.submit(Event(kind, actor, outcome, asset_id, agreement_id, details or {})).result(timeout)

    def _next(self) -> _Batch | None:
        with self._cond:
            while not self._batches:
                if self._closed:
                    return None
                self._cond.wait()
            if self.max_wait > 0 and len(self._batches) == 1:
                deadline = time.monotonic() + self.max_wait
                while len(self._batches) == 1 and len(self._batches[0].events) < self.max_batch \
                        and not self._closed and (left := deadline - time.monotonic()) > 0:
                    self._cond.wait(left)
            # Submitters woken by the previous batch are about to add their next event: let them (release
            # the GIL and the lock) while the batch keeps growing, so it holds everyone's instead of half.
            # Only under load (the previous batch held several events): a lone event waits for nothing.
            for _ in range(8 if self._last_size > 1 else 0):
                if len(self._batches) > 1 or len(self._batches[0].events) >= self.max_batch:
                    break
                before = len(self._batches[0].events)
                self._cond.release()
                try:
                    time.sleep(0)
                finally:
                    self._cond.acquire()
                if len(self._batches[0].events) == before:
                    break
            batch = self._batches.pop(0)  # from now on nobody adds to it
            self._last_size = len(batch.events)
            return batch

    def _run(self) -> None:
        while (batch := self._next()) is not None:
            self._write(batch)

    def _write(self, batch: _Batch) -> None:
        try:
            with self.engine.begin() as conn:
                seqs = append(conn, batch.events)
        except BaseException as exc:  # noqa: BLE001 - every waiter learns the batch failed; nothing is acked
            batch.error = exc
        else:
            batch.seqs = seqs
        batch.done.set()

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=30)
