"""Batched appends (one statement per transaction: executemany on SQLite, unnest arrays on PostgreSQL)
store exactly what single appends store, and the group-commit writer keeps order and acknowledges
only committed entries."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from broker.audit.log import GroupCommitWriter, append
from broker.storage.db import make_engine, migrate
from twinspace.audit.entries import ZERO_HASH, Event, chain_fields, leaf_hex

COLUMNS = "seq, created_at, kind, actor, outcome, asset_id, agreement_id, body"
T = datetime(2026, 11, 25, 4, 14, 15, 108593, tzinfo=timezone(timedelta(hours=2)))


def _events(tag: str) -> list[Event]:
    return [Event(f"{tag}.a", "org-1", details={"q": 'quote " back \\ slash', "n": 1}),
            Event(f"{tag}.b", None, "deny", "ast-1", "agr-1", {"reason": "é ☃ \U0001F600 {x}", "rows": 3}),
            Event(f"{tag}.c", "org-2", time=T, details={"nested": {"k": [1, "two", None]}, "f": 1.5}),
            Event(f"{tag}.d" + "x" * 80, "org-3", "error" * 5, details={})]


def _rows(engine, first: int):
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(f"SELECT {COLUMNS} FROM audit_entry WHERE seq >= :s ORDER BY seq"),
                                               {"s": first})]


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_a_batch_stores_what_single_appends_store(database_url, tmp_path):
    engine = make_engine(database_url or f"sqlite:///{tmp_path / 'a.db'}")
    migrate(engine)
    for ev in _events("same"):
        with engine.begin() as conn:
            append(conn, [ev])
    with engine.begin() as conn:
        seqs = append(conn, _events("same"))
    assert seqs == [5, 6, 7, 8]
    singles, batch = _rows(engine, 1)[:4], _rows(engine, 5)
    for one, many in zip(singles, batch):
        assert many[2:7] == one[2:7]  # kind (cut at 64), actor, outcome (cut at 16), asset, agreement
        assert type(many[1]) is type(one[1])
    assert len(batch[3][2]) == 64 and batch[3][4] == "error" * 3 + "e"
    assert batch[2][1] == singles[2][1] == (T if engine.dialect.name == "postgresql" else batch[2][1])
    bodies = [r[7].encode() for r in _rows(engine, 1)]
    prev = ZERO_HASH
    for i, body in enumerate(bodies, start=1):
        assert chain_fields(body) == (i, prev)
        prev = leaf_hex(body)
    # the bodies differ only in _seq/_prev and time: the same events give the same details bytes
    assert [b.split(b'"details":')[1] for b in bodies[:4]] != [] and \
        [b.split(b'"details":')[1].split(b',"kind"')[0] for b in bodies[:4]] == \
        [b.split(b'"details":')[1].split(b',"kind"')[0] for b in bodies[4:]]
    with engine.connect() as conn:
        assert tuple(conn.execute(text("SELECT size, last_leaf_hash FROM audit_head")).one()) == (8, prev)
    engine.dispose()


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_group_commit_under_load_keeps_order_and_acks_only_committed(database_url, tmp_path):
    engine = make_engine(database_url or f"sqlite:///{tmp_path / 'g.db'}")
    migrate(engine)
    writer = GroupCommitWriter(engine, max_batch=16)
    acked: dict[int, tuple[int, int]] = {}
    lock = threading.Lock()

    def worker(k: int) -> None:
        last = 0
        for i in range(30):
            seq = writer.record("g", actor=f"org-{k}", details={"i": i})
            assert seq > last  # a thread's own entries are in its submission order
            last = seq
            with lock:
                acked[seq] = (k, i)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.close()
    assert sorted(acked) == list(range(1, 12 * 30 + 1))
    rows = _rows(engine, 1)
    prev = ZERO_HASH
    for seq, *_, body in rows:
        assert chain_fields(body.encode()) == (seq, prev)
        prev = leaf_hex(body.encode())
        k, i = acked[seq]
        assert f'"actor":"org-{k}"' in body and f'"i":{i}' in body  # the ack names the caller's own entry
    with pytest.raises(RuntimeError):
        writer.record("late", actor=None)
    engine.dispose()


def test_a_failed_batch_fails_every_waiter(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'f.db'}")
    migrate(engine)
    writer = GroupCommitWriter(engine, max_wait=0.05)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE audit_head"))
        conn.execute(text("ALTER TABLE audit_entry RENAME TO audit_entry_gone"))
    tickets = [writer.submit(Event("x", None)) for _ in range(5)]
    for t in tickets:
        with pytest.raises(Exception):
            t.result(10)
    writer.close()


def test_a_cold_replica_loads_in_bulk_and_still_names_a_tampered_entry(tmp_path):
    from broker.audit.service import LogIntegrityError, TreeView
    from tests.audit.tamper_helpers import drop_append_only_guards
    from twinspace.audit.merkle import MerkleTree

    engine = make_engine(f"sqlite:///{tmp_path / 'v.db'}")
    migrate(engine)
    with engine.begin() as conn:
        append(conn, [Event("v", f"org-{i}", details={"i": i}) for i in range(300)])
    bodies = [r[7].encode() for r in _rows(engine, 1)]
    view = TreeView()
    assert view.sync(engine) == 300
    assert view.tree.levels == MerkleTree(__import__("hashlib").sha256(b"\x00" + b).digest() for b in bodies).levels
    assert view.last_hash == leaf_hex(bodies[-1])
    with engine.begin() as conn:
        append(conn, [Event("v", "late")])
    assert view.sync(engine) == 301  # follows incrementally

    drop_append_only_guards(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE audit_entry SET body = replace(body, :a, :b) WHERE seq = 151"),
                     {"a": '"i":150', "b": '"i":151'})
    with pytest.raises(LogIntegrityError, match="audit entry 152 does not chain to entry 151"):
        TreeView().sync(engine)
    engine.dispose()


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_a_batch_with_a_non_string_id_is_stored_like_single_appends(database_url, tmp_path):
    engine = make_engine(database_url or f"sqlite:///{tmp_path / 'n.db'}")
    migrate(engine)
    events = [Event("n", "org-1"), Event("n", 42, asset_id=7)]  # type: ignore[arg-type]
    with engine.begin() as conn:
        assert append(conn, events) == [1, 2]
    for ev in events:
        with engine.begin() as conn:
            append(conn, [ev])
    rows = _rows(engine, 1)
    assert [r[3:6] for r in rows[:2]] == [r[3:6] for r in rows[2:]]
    engine.dispose()
