"""Appending to the audit log: entry format, gap-free sequencing, group commit.

Entry body (RFC 8785 canonical JSON, exactly the bytes hashed into the Merkle tree)::

    {"_prev":"<hex leaf hash of entry seq-1, 64 zeros for the first>","_seq":<n>,"_v":1,
     "actor":..,"agreement_id":..,"asset_id":..,"details":{..},"kind":..,"outcome":..,"time":".."}

``_seq`` is 1-based (leaf index = seq - 1; a tree of size n ends with entry n). ``_prev`` chains each
entry to its predecessor so a verifier can name the exact entry that was edited, deleted,
inserted or moved, not only the checkpoint range in which the tree diverges.

Sequencing: every append first updates the single ``audit_head`` row (``size = size + k``). That
row lock (PostgreSQL) or the database write lock (SQLite) is held until the surrounding
transaction ends, so appenders on any number of replicas are serialised, sequence numbers are
gap-free (a rolled-back append rolls back its number too) and entries commit in sequence order.
"""

from __future__ import annotations

import hashlib
import json
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import Decimal
from enum import Enum
from typing import Any
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from broker.audit.models import AuditEntry
from broker.canonical import canonical_json

FORMAT_VERSION = 1
ZERO_HASH = "0" * 64
MAX_DETAILS_BYTES = 16_384
_SECRET_WORDS = ("password", "secret", "private", "assertion", "credential", "passphrase", "plaintext",
                 "ciphertext", "api_key", "apikey", "access_token", "refresh_token", "id_token", "bearer")
_SECRET_KEYS = {"token", "key_pem", "pem", "jwt", "authorization", "cookie", "row", "rows_data", "data",
                "records", "payload", "values"}
_MAX_STRING = 1024
_MAX_LIST = 64


@dataclass
class Event:
    kind: str
    actor: str | None = None
    outcome: str = "ok"
    asset_id: str | None = None
    agreement_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    time: datetime | None = None


def _is_secret_key(key: str) -> bool:
    k = key.lower()
    return k in _SECRET_KEYS or any(w in k for w in _SECRET_WORDS)


def sanitize(value: Any, *, _depth: int = 0) -> Any:
    """Make ``details`` safe for a permanent log: JSON types only, secrets and bulk data removed.

    Keys that name secrets or row data are replaced by ``"[redacted]"``; long strings and long
    lists are summarised; non-JSON scalars (datetime, UUID, Decimal, Enum) become strings;
    floats that are not finite become strings. Counts (``rows``, ``bytes``) and hashes stay.
    """
    if _depth > 6:
        return "[too deep]"
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            k = str(k)
            if _is_secret_key(k) and not (v is None or isinstance(v, (bool, int))):
                out[k] = "[redacted]"  # numbers (counts, sizes) under such keys are harmless
            else:
                out[k] = sanitize(v, _depth=_depth + 1)
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        items = list(value)
        if len(items) > _MAX_LIST:
            return {"summary": f"list of {len(items)} items (not logged)"}
        return [sanitize(v, _depth=_depth + 1) for v in items]
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if abs(value) < 2**53 else str(value)
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else str(value)
    if isinstance(value, str):
        return value if len(value) <= _MAX_STRING else value[:_MAX_STRING] + f"…[{len(value)} chars]"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"summary": f"{len(value)} bytes (not logged)", "sha256": hashlib.sha256(bytes(value)).hexdigest()}
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat() if value.tzinfo else value.isoformat()
    if isinstance(value, Enum):
        return sanitize(value.value, _depth=_depth + 1)
    if isinstance(value, (date, UUID, Decimal)):
        return str(value)
    return str(value)


def _plain(value: Any) -> bool:
    """True when json.dumps(sort_keys) already yields RFC 8785: no floats, ASCII keys, no surrogates."""
    if isinstance(value, str):
        return True
    if isinstance(value, dict):
        return all(isinstance(k, str) and k.isascii() and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, (bool, int))


def canonical(obj: Any) -> bytes:
    """RFC 8785 bytes; the stdlib encoder is used where it provably gives the same output."""
    if _plain(obj):
        try:
            return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                              allow_nan=False).encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: let rfc8785 reject or handle them
            pass
    return canonical_json(obj)


def entry_body(seq: int, prev: str, ev: Event, now: datetime) -> bytes:
    details = sanitize(ev.details or {})
    body = {"_prev": prev, "_seq": seq, "_v": FORMAT_VERSION, "kind": ev.kind, "actor": ev.actor,
            "outcome": ev.outcome, "asset_id": ev.asset_id, "agreement_id": ev.agreement_id,
            "details": details, "time": (ev.time or now).astimezone(timezone.utc).isoformat()}
    data = canonical(body)
    if len(data) > MAX_DETAILS_BYTES + 1024:
        body["details"] = {"summary": "details too large (not logged)",
                           "sha256": hashlib.sha256(canonical(details)).hexdigest()}
        data = canonical(body)
    return data


def leaf_hex(body: bytes) -> str:
    return hashlib.sha256(b"\x00" + body).hexdigest()


_PREFIX = b'{"_prev":"'
_SEQ_KEY = b'","_seq":'


def chain_fields(line: bytes) -> tuple[int | None, str | None]:
    """(seq, prev) of an entry; a fast path for canonical bodies, JSON parsing otherwise."""
    if line.startswith(_PREFIX) and line[74:83] == _SEQ_KEY:
        end = line.find(b",", 83)
        digits = line[83:end]
        if end > 0 and digits.isdigit():
            return int(digits), line[10:74].decode("ascii", "replace")
    try:
        obj = json.loads(line)
    except ValueError:
        return None, None
    if not isinstance(obj, dict):
        return None, None
    seq, prev = obj.get("_seq"), obj.get("_prev")
    return (seq if isinstance(seq, int) and not isinstance(seq, bool) else None,
            prev if isinstance(prev, str) else None)


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
        cur = conn.connection.cursor()
        to_db = _time_processor(conn.dialect)
    try:
        end, prev = _allocate(cur, sql, len(events))
        start = end - len(events) + 1
        now = datetime.now(timezone.utc)
        rows = []
        for i, ev in enumerate(events):
            seq = start + i
            body = entry_body(seq, prev, ev, now)
            prev = leaf_hex(body)
            created = ev.time or now
            rows.append({"seq": seq, "created_at": to_db(created) if to_db else created, "kind": ev.kind[:64],
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
