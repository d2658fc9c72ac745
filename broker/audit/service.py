"""Audit log services: the Merkle view of the log, signed checkpoints, proofs, queries, receipts.

No FastAPI here. Each process keeps an in-memory ``TreeView`` per engine that follows the
``audit_entry`` table (entries commit in sequence order, so reading ``seq > size`` is enough);
while following it checks sequence numbers and hash links, and before signing a new checkpoint
it checks the tree still matches the previous one, so a tampered database is never signed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import String, TypeDecorator, bindparam, func, literal_column, or_, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session
from sqlmodel.sql.sqltypes import UTCDateTime

from twinspace.audit.entries import ZERO_HASH, chain_fields, openings_ok
from twinspace.audit.merkle import MerkleTree, ProofError
from broker.audit.log import stored_time
from broker.audit.models import AuditCheckpoint, AuditEntry
from twinspace.audit.note import Checkpoint, Verifier, parse_vkey, sign_checkpoint, vkey_string
from twinspace.errors import BadRequest, Conflict, NotFound
from broker.settings import Settings

RECEIPT_FORMAT = "twinspace-audit-receipt/v1"
_SYNC_CHUNK = 20_000


class LogIntegrityError(Conflict):
    """The stored log no longer matches what was already signed or chained (tampering)."""

    default_code = "audit_log_integrity"


def log_origin(settings: Settings) -> str:
    return settings.audit_origin or f"{settings.issuer}/audit"


def log_vkey(runtime) -> str:
    return vkey_string(log_origin(runtime.settings), runtime.broker_key.public_key())


def log_verifier(runtime) -> Verifier:
    return parse_vkey(log_vkey(runtime))


class TreeView:
    """The Merkle tree of the committed log, followed incrementally from the database."""

    def __init__(self) -> None:
        self.tree = MerkleTree()
        self.last_hash = ZERO_HASH
        self.lock = threading.Lock()

    @property
    def size(self) -> int:
        return self.tree.size

    def sync(self, engine: Engine) -> int:
        with self.lock:
            table = AuditEntry.__table__
            with engine.connect() as conn:
                mark = {"qmark": "?", "format": "%s", "pyformat": "%s"}.get(conn.dialect.paramstyle)
                while True:
                    if mark is not None:  # the driver's cursor: plain tuples, no result-row processing
                        cur = conn.connection.cursor()
                        try:
                            cur.execute(f"SELECT seq, body FROM audit_entry WHERE seq > {mark} ORDER BY seq "
                                        f"LIMIT {mark}", (self.tree.size, _SYNC_CHUNK))
                            rows = cur.fetchall()
                        finally:
                            cur.close()
                    else:
                        rows = conn.execute(select(table.c.seq, table.c.body).where(table.c.seq > self.tree.size)
                                            .order_by(table.c.seq).limit(_SYNC_CHUNK)).all()
                    if not self._add_run(rows):
                        for seq, body in rows:
                            self._add(seq, body.encode())
                    if len(rows) < _SYNC_CHUNK:
                        return self.tree.size

    def _add_run(self, rows) -> bool:
        """Rows in bulk when they are the next entries, canonical and chained (a cold replica's 1M-entry
        load); False leaves them to ``_add``, which names what is wrong."""
        size = self.tree.size
        if not rows or rows[0][0] != size + 1 or rows[-1][0] != size + len(rows):
            return False  # seq is the ordered primary key: first and last pin down a gap-free run
        bodies = [body.encode() for _, body in rows]
        sha = hashlib.sha256
        hashes = [sha(b"\x00" + body).digest() for body in bodies]
        if not openings_ok(bodies, hashes, size + 1, self.last_hash.encode()):
            return False
        self.tree.extend(hashes)
        self.last_hash = hashes[-1].hex()
        return True

    def _add(self, seq: int, body: bytes) -> None:
        expected = self.tree.size + 1
        if seq != expected:
            raise LogIntegrityError(f"audit entry {expected} is missing (next stored entry is {seq})",
                                    extra={"seq": expected})
        body_seq, prev = chain_fields(body)
        if body_seq is not None and body_seq != seq:
            raise LogIntegrityError(f"audit entry {seq} carries sequence number {body_seq}", extra={"seq": seq})
        if body_seq is not None and prev != self.last_hash:
            raise LogIntegrityError(f"audit entry {seq} does not chain to entry {seq - 1}", extra={"seq": seq})
        h = hashlib.sha256(b"\x00" + body).digest()
        self.tree.append_leaf_hash(h)
        self.last_hash = h.hex()


_views: "weakref.WeakKeyDictionary[Engine, TreeView]" = weakref.WeakKeyDictionary()
_views_lock = threading.Lock()


def tree_view(engine: Engine, *, sync: bool = True) -> TreeView:
    with _views_lock:
        view = _views.get(engine)
        if view is None:
            view = _views[engine] = TreeView()
    if sync:
        view.sync(engine)
    return view


# --- checkpoints ------------------------------------------------------------------------------


def latest_checkpoint(session: Session) -> AuditCheckpoint | None:
    return session.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.tree_size.desc()).limit(1)).first()


def get_checkpoint(session: Session, tree_size: int) -> AuditCheckpoint:
    cp = session.get(AuditCheckpoint, tree_size)
    if cp is None:
        raise NotFound(f"No signed checkpoint at tree size {tree_size}.", code="unknown_checkpoint")
    return cp


def list_checkpoints(session: Session, *, after: int = 0, limit: int = 100) -> list[AuditCheckpoint]:
    return list(session.scalars(select(AuditCheckpoint).where(AuditCheckpoint.tree_size > after)
                                .order_by(AuditCheckpoint.tree_size).limit(limit)))


def create_checkpoint(runtime) -> AuditCheckpoint | None:
    """Sign a checkpoint of the committed log if it grew since the newest one (None while empty)."""
    engine = runtime.engine
    with Session(engine, expire_on_commit=False) as session:
        previous = latest_checkpoint(session)
    view = tree_view(engine)  # synced after reading `previous`, so it covers at least that size
    with view.lock:
        size = view.size
        root = view.tree.root(size)
        if previous is not None:
            if previous.tree_size > size:
                raise LogIntegrityError(f"the log has {size} entries but checkpoint {previous.tree_size} was signed",
                                        extra={"seq": size + 1})
            if view.tree.root(previous.tree_size).hex() != previous.root_hash:
                raise LogIntegrityError(f"the log no longer matches signed checkpoint {previous.tree_size}")
    if size == 0:
        return None
    if previous is not None and previous.tree_size == size:
        return previous
    now = datetime.now(timezone.utc)
    note = sign_checkpoint(Checkpoint(log_origin(runtime.settings), size, root, now), runtime.broker_key)
    cp = AuditCheckpoint(tree_size=size, root_hash=root.hex(), created_at=now, note=note)
    try:
        with Session(engine, expire_on_commit=False) as session:
            session.add(cp)
            session.commit()
    except IntegrityError:  # another replica signed this size first: same root, keep theirs
        with Session(engine, expire_on_commit=False) as session:
            cp = get_checkpoint(session, size)
    return cp


def checkpoint_json(cp: AuditCheckpoint) -> dict[str, Any]:
    """Roots are base64 wherever TwinSpace shows one, as in the signed note itself (the column is hex)."""
    return {"tree_size": cp.tree_size, "root_hash": _b64(bytes.fromhex(cp.root_hash)),
            "created_at": cp.created_at.isoformat(), "note": cp.note}


def current_checkpoint(runtime) -> AuditCheckpoint:
    cp = create_checkpoint(runtime)
    if cp is None:
        raise NotFound("The audit log is empty; there is no checkpoint yet.", code="unknown_checkpoint")
    return cp


# --- proofs -----------------------------------------------------------------------------------


def _b64(h: bytes) -> str:
    return base64.b64encode(h).decode()


def _resolve_size(runtime, session: Session, tree_size: int | None) -> tuple[int, AuditCheckpoint | None]:
    if tree_size is None:
        cp = current_checkpoint(runtime)
        return cp.tree_size, cp
    if tree_size < 1:
        raise BadRequest("tree_size must be at least 1.", code="tree_size_out_of_range")
    return tree_size, session.get(AuditCheckpoint, tree_size)


def inclusion_proof(runtime, session: Session, seq: int, tree_size: int | None = None) -> dict[str, Any]:
    size, cp = _resolve_size(runtime, session, tree_size)
    view = tree_view(runtime.engine)
    if size > view.size:
        raise BadRequest(f"tree_size {size} is larger than the log ({view.size} entries).",
                         code="tree_size_out_of_range")
    if not 1 <= seq <= size:
        raise BadRequest(f"Entry {seq} is not in the tree of size {size} (entries are numbered 1..{size}).",
                         code="index_out_of_range")
    with view.lock:
        proof = view.tree.inclusion_proof(seq - 1, size)
        leaf = view.tree.leaf_hash_at(seq - 1)
        root = view.tree.root(size)
    return {"seq": seq, "leaf_index": seq - 1, "tree_size": size, "leaf_hash": _b64(leaf),
            "root_hash": _b64(root), "proof": [_b64(p) for p in proof],
            "checkpoint": cp.note if cp is not None else None}


def consistency_proof(runtime, session: Session, first: int, second: int | None = None) -> dict[str, Any]:
    second, cp2 = _resolve_size(runtime, session, second)
    view = tree_view(runtime.engine)
    if second > view.size:
        raise BadRequest(f"Tree size {second} is larger than the log ({view.size} entries).",
                         code="tree_size_out_of_range")
    if not 1 <= first <= second:
        raise BadRequest(f"A consistency proof needs 1 <= first ({first}) <= second ({second}).",
                         code="tree_size_out_of_range")
    cp1 = session.get(AuditCheckpoint, first)
    with view.lock:
        try:
            proof = view.tree.consistency_proof(first, second)
        except ProofError as exc:
            raise BadRequest(str(exc), code="tree_size_out_of_range") from None
        root1, root2 = view.tree.root(first), view.tree.root(second)
    return {"first": first, "second": second, "first_root": _b64(root1), "second_root": _b64(root2),
            "proof": [_b64(p) for p in proof], "first_checkpoint": cp1.note if cp1 else None,
            "second_checkpoint": cp2.note if cp2 else None}


# --- entries ----------------------------------------------------------------------------------


@dataclass
class EntryFilter:
    org: str | None = None
    kind: str | None = None
    asset_id: str | None = None
    agreement_id: str | None = None
    outcome: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    after_seq: int = 0
    limit: int = 100


def _escape_like(s: str) -> str:
    return s.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class _AsStored(TypeDecorator):
    """A ``since`` / ``until`` bound in the form the appender stores ``created_at``: on SQLite the text
    ``broker.audit.log`` writes ("2026-12-01 03:51:00+00:00", "…:00.250000+00:00"), which sorts like
    the stored values; SQLAlchemy's own DATETIME text ("…:00.000000") would sort after an entry of
    that very second with zero microseconds. Elsewhere the column's type as usual."""

    impl = UTCDateTime
    cache_ok = True

    def load_dialect_impl(self, dialect):
        return dialect.type_descriptor(String() if dialect.name == "sqlite" else UTCDateTime())

    def process_bind_param(self, value, dialect):
        return stored_time(dialect, value) if dialect.name == "sqlite" else value


def _time(value: datetime):
    return bindparam(None, value, type_=_AsStored())


_NOT_OK = AuditEntry.outcome != literal_column("'ok'")  # the predicate of ix_audit_entry_not_ok_seq, verbatim


def _filtered(f: EntryFilter):
    """Entries after ``f.after_seq`` matching the filter, in sequence order (indexes: ``AuditEntry``)."""
    q = select(AuditEntry).where(AuditEntry.seq > f.after_seq)
    if f.org:
        q = q.where(or_(AuditEntry.actor == f.org,
                        AuditEntry.body.like('%"org_id":"' + _escape_like(f.org) + '"%', escape="\\")))
    if f.kind:
        q = q.where(AuditEntry.kind.like(_escape_like(f.kind[:-1]) + "%", escape="\\")
                    if f.kind.endswith("*") else AuditEntry.kind == f.kind)
    if f.asset_id:
        q = q.where(AuditEntry.asset_id == f.asset_id)
    if f.agreement_id:
        q = q.where(AuditEntry.agreement_id == f.agreement_id)
    if f.outcome:
        q = q.where(AuditEntry.outcome == f.outcome)
        if f.outcome != "ok":  # implied, but a planner uses a partial index only when it sees its predicate
            q = q.where(_NOT_OK)
    if f.since:
        q = q.where(AuditEntry.created_at >= _time(f.since))
    if f.until:
        q = q.where(AuditEntry.created_at < _time(f.until))
    return q.order_by(AuditEntry.seq)


def entry_json(e: AuditEntry) -> dict[str, Any]:
    body = e.body.encode()
    return {"seq": e.seq, "leaf_index": e.seq - 1, "leaf_hash": _b64(hashlib.sha256(b"\x00" + body).digest()),
            "entry": json.loads(body)}


def query_entries(session: Session, f: EntryFilter) -> list[AuditEntry]:
    return list(session.scalars(_filtered(f).limit(max(1, min(f.limit, 1000)))))


def get_entry(session: Session, seq: int) -> AuditEntry:
    e = session.get(AuditEntry, seq)
    if e is None:
        raise NotFound(f"No audit entry {seq}.", code="unknown_entry")
    return e


def log_size(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(AuditEntry)) or 0)


def export_lines(engine: Engine, f: EntryFilter | None = None, *, chunk: int = 10_000) -> Iterator[bytes]:
    """Entries as JSONL: each line is the exact canonical body (the Merkle leaf), in sequence order."""
    f = f or EntryFilter()
    after = f.after_seq
    while True:
        page = EntryFilter(**{**f.__dict__, "after_seq": after, "limit": chunk})
        with engine.connect() as conn:
            rows = conn.execute(_filtered(page).with_only_columns(AuditEntry.seq, AuditEntry.body)
                                .limit(chunk)).all()
        for seq, body in rows:
            yield body.encode() + b"\n"
        if len(rows) < chunk:
            return
        after = rows[-1][0]


# --- receipts ---------------------------------------------------------------------------------


def make_receipt(runtime, session: Session, seq: int) -> dict[str, Any]:
    """An offline receipt: the entry, its inclusion proof and the signed checkpoint it refers to."""
    entry = get_entry(session, seq)
    cp = current_checkpoint(runtime)
    if cp.tree_size < seq:  # entry newer than the checkpoint just signed (racing appender)
        raise Conflict("The entry is not yet covered by a checkpoint; retry shortly.", code="not_yet_checkpointed")
    proof = inclusion_proof(runtime, session, seq, cp.tree_size)
    return {"format": RECEIPT_FORMAT, "seq": seq, "leaf_index": seq - 1, "body": entry.body,
            "tree_size": cp.tree_size, "inclusion_proof": proof["proof"], "checkpoint": cp.note,
            "log_key": log_vkey(runtime)}


def verify_receipt(receipt: dict[str, Any], vkey: str) -> dict[str, Any]:
    """Check a receipt with only the log's verifier key; returns the entry. Raises ValueError."""
    from twinspace.audit.merkle import verify_inclusion
    from twinspace.audit.note import open_checkpoint

    if receipt.get("format") != RECEIPT_FORMAT:
        raise ValueError("not a TwinSpace audit receipt")
    cp = open_checkpoint(receipt["checkpoint"], parse_vkey(vkey))
    seq = int(receipt["seq"])
    if cp.tree_size != int(receipt["tree_size"]):
        raise ValueError("receipt tree size differs from its checkpoint")
    body = receipt["body"].encode()
    body_seq, _ = chain_fields(body)
    if body_seq != seq:
        raise ValueError(f"receipt entry says seq {body_seq}, receipt says {seq}")
    leaf = hashlib.sha256(b"\x00" + body).digest()
    verify_inclusion(seq - 1, cp.tree_size, leaf, [base64.b64decode(p) for p in receipt["inclusion_proof"]],
                     cp.root_hash)
    return json.loads(body)

