"""Appending: canonical chained entries, gap-free numbering, rollback, group commit, no secrets."""

from __future__ import annotations

import json
import threading

import pytest
from sqlalchemy import text

from broker.audit import log_event, record_event
from broker.audit.log import GroupCommitWriter
from twinspace.audit.entries import ZERO_HASH, chain_fields, leaf_hex, sanitize
from broker.audit.tools import db_head, db_lines
from twinspace.canonical import canonical_json
from broker.storage.db import session_scope


def _bodies(engine) -> list[bytes]:
    return list(db_lines(engine))


def test_entries_are_canonical_and_chained(engine):
    with session_scope(engine) as s:
        a = record_event(s, "policy.decision", actor="org-1", outcome="deny", asset_id="as-1",
                         details={"reason": "clearance", "b": 2, "a": 1.5})
        b = record_event(s, "transfer.completed", actor="org-1", asset_id="as-1", agreement_id="ag-1",
                         details={"rows": 10, "bytes": 2048, "sha256": "ab" * 32})
    assert b == a + 1
    bodies = _bodies(engine)
    prev = ZERO_HASH
    for i, body in enumerate(bodies, start=1):
        obj = json.loads(body)
        assert canonical_json(obj) == body  # stored bytes are exactly RFC 8785
        assert (obj["_seq"], obj["_prev"]) == (i, prev) == chain_fields(body)
        prev = leaf_hex(body)
    assert db_head(engine) == (len(bodies), prev)
    last = json.loads(bodies[-1])
    assert last["kind"] == "transfer.completed" and last["details"]["rows"] == 10 and last["agreement_id"] == "ag-1"


def test_rolled_back_appends_leave_no_gap(engine):
    with session_scope(engine) as s:
        first = record_event(s, "x.one", actor=None)
    with pytest.raises(RuntimeError):
        with session_scope(engine) as s:
            record_event(s, "x.rolled_back", actor=None)
            raise RuntimeError("caller fails after logging")
    with session_scope(engine) as s:
        second = record_event(s, "x.two", actor=None)
    assert second == first + 1
    with engine.connect() as conn:
        seqs = [r[0] for r in conn.execute(text("SELECT seq FROM audit_entry ORDER BY seq"))]
        kinds = [r[0] for r in conn.execute(text("SELECT kind FROM audit_entry ORDER BY seq"))]
    assert seqs == list(range(1, len(seqs) + 1)) and "x.rolled_back" not in kinds


def test_secrets_and_row_data_never_reach_the_log(engine):
    with session_scope(engine) as s:
        record_event(s, "auth.token_issued", actor="org-1",
                     details={"client_assertion": "eyJhbGciOi.secret.sig", "password": "hunter2",
                              "private_key": "-----BEGIN", "rows": 3, "data": [[1, "alice", "A123456789"]],
                              "nested": {"access_token": "abc.def.ghi"}, "blob": b"\x00" * 100,
                              "ids": list(range(500)), "note": "x" * 5000})
    body = _bodies(engine)[-1].decode()
    for leaked in ("eyJhbGciOi", "hunter2", "BEGIN", "alice", "A123456789", "abc.def.ghi", "x" * 2000):
        assert leaked not in body
    details = json.loads(body)["details"]
    assert details["rows"] == 3  # counts stay
    assert details["password"] == details["data"] == details["nested"]["access_token"] == "[redacted]"
    assert details["ids"] == {"summary": "list of 500 items (not logged)"}
    assert details["blob"]["summary"] == "100 bytes (not logged)"


def test_sanitize_keeps_plain_values_and_stringifies_others():
    from datetime import datetime, timezone
    from decimal import Decimal
    from uuid import UUID

    out = sanitize({"n": 1, "f": 0.5, "s": "ok", "b": True, "none": None, "d": Decimal("1.10"),
                    "u": UUID(int=1), "t": datetime(2026, 1, 1, tzinfo=timezone.utc), "nan": float("nan")})
    assert out == {"n": 1, "f": 0.5, "s": "ok", "b": True, "none": None, "d": "1.10",
                   "u": "00000000-0000-0000-0000-000000000001", "t": "2026-01-01T00:00:00+00:00", "nan": "nan"}


def test_threads_appending_concurrently_get_one_gap_free_sequence(engine):
    errors = []

    def worker(i):
        try:
            for j in range(20):
                with session_scope(engine) as s:
                    record_event(s, "load.test", actor=f"t{i}", details={"j": j})
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    bodies = _bodies(engine)
    prev = ZERO_HASH
    for i, body in enumerate(bodies, start=1):
        assert chain_fields(body) == (i, prev)
        prev = leaf_hex(body)
    assert sum(1 for b in bodies if b"load.test" in b) == 80


def test_group_commit_acknowledges_durable_entries(engine):
    writer = GroupCommitWriter(engine, max_batch=64, max_wait=0.01)
    results: list[int] = []
    lock = threading.Lock()

    def worker(i):
        for j in range(25):
            seq = writer.record("search.performed", actor=f"org-{i}", details={"q": j})
            with engine.connect() as conn:  # acknowledged ⇒ already committed and visible
                assert conn.execute(text("SELECT count(*) FROM audit_entry WHERE seq = :s"), {"s": seq}).scalar() == 1
            with lock:
                results.append(seq)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.close()
    assert len(results) == len(set(results)) == 200
    bodies = _bodies(engine)
    prev = ZERO_HASH
    for i, body in enumerate(bodies, start=1):
        assert chain_fields(body) == (i, prev)
        prev = leaf_hex(body)
    seq = log_event(engine, "search.performed", actor="org-x")
    assert seq == len(bodies) + 1


def test_group_commit_failure_is_reported_not_acknowledged(engine):
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE audit_head"))
        conn.execute(text("ALTER TABLE audit_entry RENAME TO audit_entry_gone"))
    writer = GroupCommitWriter(engine)
    with pytest.raises(Exception):
        writer.record("x", actor=None, timeout=10)
    writer.close()


def test_missing_head_row_is_rebuilt_from_entries(engine):
    with session_scope(engine) as s:
        n = record_event(s, "a", actor=None)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_head"))
    with session_scope(engine) as s:
        assert record_event(s, "b", actor=None) == n + 1
    bodies = _bodies(engine)
    assert chain_fields(bodies[-1]) == (n + 1, leaf_hex(bodies[-2]))


def test_fast_canonical_form_equals_rfc8785():
    import random

    import rfc8785

    from twinspace.audit.entries import canonical

    rng = random.Random(5)
    alphabet = ["a", "Z", "_", "é", "€", "\u2028", "\n", "\t", '"', "\\", "\x01", "\x7f", "😀", "中"]

    def value(depth=0):
        r = rng.random()
        if depth < 3 and r < 0.2:
            return {"".join(rng.choices(["a", "b", "B", "_", "1", "é", "😀"], k=rng.randint(0, 4))): value(depth + 1)
                    for _ in range(rng.randint(0, 4))}
        if depth < 3 and r < 0.35:
            return [value(depth + 1) for _ in range(rng.randint(0, 4))]
        return rng.choice([None, True, False, rng.randint(-2**53 + 1, 2**53 - 1), rng.randint(-5, 5),
                           "".join(rng.choices(alphabet, k=rng.randint(0, 8))), rng.random() * 1e6, 1e21, 0.1])

    for _ in range(3000):
        obj = {"details": value(), "kind": "k"}
        assert canonical(obj) == rfc8785.dumps(obj), obj


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_entries_and_checkpoints_cannot_be_updated_or_deleted(database_url, tmp_path):
    from sqlalchemy.exc import DBAPIError

    from broker.storage.db import make_engine, migrate

    engine = make_engine(database_url or f"sqlite:///{tmp_path / 'a.db'}")
    migrate(engine)
    with session_scope(engine) as s:
        record_event(s, "a", actor=None)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO audit_checkpoint (tree_size, root_hash, created_at, note) "
                          "VALUES (1, 'ab', CURRENT_TIMESTAMP, 'n')"))
    statements = ["UPDATE audit_entry SET kind = 'b'", "DELETE FROM audit_entry",
                  "UPDATE audit_checkpoint SET root_hash = 'cd'", "DELETE FROM audit_checkpoint"]
    if engine.dialect.name == "postgresql":
        statements.append("TRUNCATE audit_entry")
    for sql in statements:
        with pytest.raises(DBAPIError, match="append-only"):
            with engine.begin() as conn:
                conn.execute(text(sql))
    assert len(_bodies(engine)) == 1
    engine.dispose()
