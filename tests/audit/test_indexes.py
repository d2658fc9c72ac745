"""The indexes of ``audit_entry`` (migration 0011): which exist, that each filter the audit API offers
is an index search in sequence order on SQLite and PostgreSQL (the plan of the statement the service
actually sends, with its parameters), that the partial indexes return the same rows as a filter in
Python, and that the migration keeps the rows and goes back and forth."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import event, func, select, text
from sqlmodel import Session, SQLModel, col

import broker.all_models  # noqa: F401
from broker.audit import service
from broker.audit.log import append
from broker.audit.models import AuditEntry
from broker.storage.db import alembic_config, make_engine, migrate
from twinspace.audit.entries import Event

T0 = datetime(2026, 12, 1, tzinfo=timezone.utc)
# name -> (columns, partial-index predicate); the same on both databases, and created_at on PostgreSQL
INDEXES = {
    "ix_audit_entry_kind_seq": (["kind", "seq"], None),
    "ix_audit_entry_asset_seq": (["asset_id", "seq"], "asset_id IS NOT NULL"),
    "ix_audit_entry_agreement_seq": (["agreement_id", "seq"], "agreement_id IS NOT NULL"),
    "ix_audit_entry_not_ok_seq": (["outcome", "seq"], "outcome <> 'ok'"),
}
POSTGRESQL_ONLY = {"ix_audit_entry_created_at": (["created_at"], None)}
OLD_INDEXES = {f"ix_audit_entry_{c}": ([c], None)
               for c in ("actor", "agreement_id", "asset_id", "kind", "created_at", "outcome")}


def _expected(engine) -> dict:
    return INDEXES | (POSTGRESQL_ONLY if engine.dialect.name == "postgresql" else {})


def _engine(database_url, tmp_path):
    return make_engine(database_url or f"sqlite:///{tmp_path / 'ix.db'}")


def _indexes(engine) -> dict[str, tuple[list[str], str | None]]:
    """Secondary indexes of audit_entry as the database reports them: columns and WHERE clause."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            out = {}
            for name, sql in conn.execute(text("SELECT name, sql FROM sqlite_master WHERE type = 'index' "
                                               "AND tbl_name = 'audit_entry' AND sql IS NOT NULL")):
                cols = [r[2] for r in conn.execute(text(f"PRAGMA index_info('{name}')"))]
                where = sql.split(" WHERE ", 1)[1].strip() if " WHERE " in sql else None
                out[name] = (cols, where)
            return out
        out = {}
        for name, cols, where in conn.execute(text(
                "SELECT i.relname, array(SELECT a.attname FROM unnest(x.indkey) WITH ORDINALITY k(n, o) "
                "JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.n ORDER BY k.o), "
                "pg_get_expr(x.indpred, x.indrelid) FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
                "WHERE x.indrelid = 'audit_entry'::regclass AND NOT x.indisprimary")):
            out[name] = (list(cols), where)
        return out


def _normalised(indexes):
    """PostgreSQL prints predicates its own way ("(outcome)::text <> 'ok'::text"); compare the words."""
    def norm(where):
        if where is None:
            return None
        return (where.replace("::text", "").replace("(", "").replace(")", "")
                .replace("character varying", "").strip())
    return {k: (v[0], norm(v[1])) for k, v in indexes.items()}


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_audit_entry_has_exactly_these_indexes(database_url, tmp_path):
    engine = _engine(database_url, tmp_path)
    migrate(engine)
    assert _normalised(_indexes(engine)) == _expected(engine)
    # the models declare the same (alembic compares names and columns, not WHERE clauses nor ddl_if)
    name = engine.dialect.name
    declared = {ix.name: ([c.name for c in ix.columns], ix.dialect_options[name]["where"])
                for ix in AuditEntry.__table__.indexes
                if ix._ddl_if is None or ix._ddl_if.dialect == name}
    assert {k: (v[0], None if v[1] is None else str(v[1])) for k, v in declared.items()} == _expected(engine)
    engine.dispose()


# --- query plans ---------------------------------------------------------------------------------


def _populate(engine, n: int = 4000) -> None:
    """A log where every filter value tested below is rare, so an index is the plan on both databases."""
    rng = random.Random(7)
    events = []
    for i in range(n):
        events.append(Event(f"common.{rng.choice('abcde')}", f"org-{rng.randrange(20)}",
                            asset_id=f"asset-{rng.randrange(200)}" if i % 3 == 0 else None,
                            agreement_id=f"agr-{rng.randrange(300)}" if i % 5 == 0 else None,
                            outcome="deny" if i % 400 == 7 else "ok", details={"i": i},
                            time=T0 + timedelta(seconds=i)))
    for i in (n // 40, n * 19 // 40, n * 37 // 40):  # 100, 1900, 3700 of 4000
        events[i] = Event("rare.kind", "org-rare", outcome="error", asset_id="asset-rare", agreement_id="agr-rare",
                          details={"i": i}, time=T0 + timedelta(seconds=i))
    for b in range(0, n, 500):
        with engine.begin() as conn:
            append(conn, events[b:b + 500])
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(text("ANALYZE audit_entry"))


def _sent(engine, run) -> tuple[str, object]:
    """The statement (and parameters) ``run()`` sends about audit_entry, as the driver receives it."""
    sent = []

    def grab(conn, cursor, statement, parameters, context, executemany):
        if "FROM audit_entry" in statement:
            sent.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", grab)
    try:
        run()
    finally:
        event.remove(engine, "before_cursor_execute", grab)
    assert len(sent) == 1, sent
    return sent[0]


def _plan(engine, statement: str, parameters) -> str:
    """EXPLAIN QUERY PLAN (SQLite) / EXPLAIN (PostgreSQL) of that very statement with its parameters."""
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        if engine.dialect.name == "sqlite":
            cur.execute("EXPLAIN QUERY PLAN " + statement, parameters)
            return " | ".join(r[-1] for r in cur.fetchall())
        cur.execute("EXPLAIN " + statement, parameters)
        return " | ".join(r[0].strip() for r in cur.fetchall())
    finally:
        raw.close()


def _filter_plan(engine, f: service.EntryFilter) -> tuple[str, list[AuditEntry]]:
    got = []

    def run():
        with Session(engine) as s:
            got.extend(service.query_entries(s, f))

    return _plan(engine, *_sent(engine, run)), got


F = service.EntryFilter
INDEXED = [
    ("kind", F(kind="rare.kind"), "ix_audit_entry_kind_seq"),
    ("kind, after_seq", F(kind="rare.kind", after_seq=1000), "ix_audit_entry_kind_seq"),
    ("asset_id", F(asset_id="asset-rare"), "ix_audit_entry_asset_seq"),
    ("agreement_id", F(agreement_id="agr-rare"), "ix_audit_entry_agreement_seq"),
    ("outcome=error", F(outcome="error"), "ix_audit_entry_not_ok_seq"),
    ("outcome=deny", F(outcome="deny", after_seq=2000), "ix_audit_entry_not_ok_seq"),
    ("asset_id and time", F(asset_id="asset-rare", since=T0, until=T0 + timedelta(days=1)),
     "ix_audit_entry_asset_seq"),
]


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_each_filter_is_an_index_search_in_sequence_order(database_url, tmp_path):
    engine = _engine(database_url, tmp_path)
    migrate(engine)
    _populate(engine)
    sqlite = engine.dialect.name == "sqlite"
    for label, f, index in INDEXED:
        plan, rows = _filter_plan(engine, f)
        assert index in plan, (label, plan)
        assert rows and all(a.seq < b.seq for a, b in zip(rows, rows[1:])), label
        if sqlite:  # the index's second column gives sequence order: no sort
            assert "TEMP B-TREE" not in plan, (label, plan)
    if not sqlite:  # PostgreSQL keeps ix_audit_entry_created_at: a narrow time window is a search too
        plan, rows = _filter_plan(engine, F(since=T0 + timedelta(seconds=1000), until=T0 + timedelta(seconds=1010)))
        assert "ix_audit_entry_created_at" in plan and [e.seq for e in rows] == list(range(1001, 1011)), plan
    # the provider's "who accessed what" page (broker/console/pages/audit.py): its assets, newest first
    own = ["asset-rare", "asset-none"]
    access = select(AuditEntry).where(col(AuditEntry.asset_id).in_(own)).order_by(col(AuditEntry.seq).desc()).limit(500)

    def run_access():
        with Session(engine) as s:
            assert [e.seq for e in s.scalars(access)] == [3701, 1901, 101]

    plan = _plan(engine, *_sent(engine, run_access))
    assert "ix_audit_entry_asset_seq" in plan, plan
    # counting (the console's log size) reads an index, not the table with its bodies
    if sqlite:
        plan = _plan(engine, *_sent(engine, lambda: Session(engine).scalar(select(func.count()).select_from(AuditEntry))))
        assert "COVERING INDEX ix_audit_entry_kind_seq" in plan, plan
    engine.dispose()


WALKS = [
    ("no filter", F()),
    ("after_seq", F(after_seq=2500)),
    ("outcome=ok", F(outcome="ok")),
    ("org", F(org="org-rare")),
    ("kind prefix", F(kind="rare.*")),
    ("since", F(since=T0 + timedelta(seconds=3000))),
    ("until", F(until=T0 + timedelta(seconds=50))),
    ("since and until", F(since=T0 + timedelta(seconds=10), until=T0 + timedelta(seconds=20))),
]


def test_sqlite_walks_the_primary_key_in_order_for_the_other_filters(tmp_path):
    """``outcome=ok`` matches nearly every row (a page is the next rows); ``org`` also looks inside the
    body, a kind prefix is a LIKE and the times follow ``seq``: these walk the primary key from
    ``after_seq`` in sequence order, never sorting, and stop after a page."""
    engine = _engine(None, tmp_path)
    migrate(engine)
    _populate(engine, 600)
    for label, f in WALKS:
        plan, _ = _filter_plan(engine, f)
        assert plan.startswith("SEARCH audit_entry USING INTEGER PRIMARY KEY (rowid>?)"), (label, plan)
        assert "TEMP B-TREE" not in plan, (label, plan)
    engine.dispose()


# --- the same rows as a filter in Python ---------------------------------------------------------


def _matches(e: dict, f: service.EntryFilter) -> bool:
    t = datetime.fromisoformat(e["time"])
    return ((not f.org or e["actor"] == f.org or e["details"].get("org_id") == f.org)
            and (not f.kind or (e["kind"].startswith(f.kind[:-1]) if f.kind.endswith("*") else e["kind"] == f.kind))
            and (not f.asset_id or e["asset_id"] == f.asset_id)
            and (not f.agreement_id or e["agreement_id"] == f.agreement_id)
            and (not f.outcome or e["outcome"] == f.outcome)
            and (not f.since or t >= f.since) and (not f.until or t < f.until) and e["_seq"] > f.after_seq)


def _bound(rng) -> datetime:
    t = T0 + timedelta(minutes=rng.randrange(300), microseconds=rng.choice([0, 0, 1, 500_000]))
    return t.astimezone(timezone(timedelta(hours=rng.choice([0, 2, -5]))))


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_filters_return_what_a_filter_in_python_returns(database_url, tmp_path):
    engine = _engine(database_url, tmp_path)
    migrate(engine)
    rng = random.Random(11)
    kinds = ["auth.login", "auth.token_issued", "catalog.searched", "transfer.completed", "policy.decision"]
    outcomes = ["ok", "ok", "ok", "deny", "error", "warn"]
    events = [Event(rng.choice(kinds), rng.choice(["org-a", "org-b", None]), rng.choice(outcomes),
                    rng.choice(["asset-1", "asset-2", None, None]), rng.choice(["agr-1", None, None]),
                    {"org_id": "org-c"} if rng.random() < 0.2 else {"i": i}, T0 + timedelta(minutes=i))
              for i in range(300)]
    with engine.begin() as conn:
        append(conn, events)
    with Session(engine) as s:
        stored = {e.seq: e.body for e in s.scalars(select(AuditEntry))}
        bodies = [json.loads(stored[seq]) for seq in sorted(stored)]
        # bounds on entry times (whole minutes: zero microseconds) and between them, in other offsets
        for _ in range(150):
            f = F(org=rng.choice([None, "org-a", "org-c"]), kind=rng.choice([None, "auth.*", "auth.login", "x.*"]),
                  asset_id=rng.choice([None, "asset-1"]), agreement_id=rng.choice([None, "agr-1"]),
                  outcome=rng.choice([None, "ok", "deny", "error", "warn", "nope"]),
                  since=rng.choice([None, _bound(rng)]), until=rng.choice([None, _bound(rng)]),
                  after_seq=rng.choice([0, rng.randrange(300)]), limit=1000)
            expected = [b["_seq"] for b in bodies if _matches(b, f)]
            assert [e.seq for e in service.query_entries(s, f)] == expected, f
            assert b"".join(service.export_lines(engine, f, chunk=7)) == \
                b"".join(stored[seq].encode() + b"\n" for seq in expected), f
    engine.dispose()


# --- the migration -------------------------------------------------------------------------------


def _migration_0011():
    import importlib.util

    from broker.storage.db import MIGRATIONS_DIR

    spec = importlib.util.spec_from_file_location("m0011", MIGRATIONS_DIR / "versions" / "0011_audit_indexes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_migration_0011_keeps_the_rows_and_goes_back_and_forth(database_url, tmp_path):
    engine = _engine(database_url, tmp_path)
    cfg = alembic_config(engine)
    command.upgrade(cfg, "0010_dataplane")
    command.upgrade(cfg, "0002_audit")  # the revisions 0011 follows
    assert _normalised(_indexes(engine)) == OLD_INDEXES
    with engine.begin() as conn:
        append(conn, [Event("before.upgrade", "org-1", outcome="deny" if i % 2 else "ok",
                            asset_id="asset-1" if i % 3 else None, details={"i": i}) for i in range(50)])
    migrate(engine)
    assert _normalised(_indexes(engine)) == _expected(engine)
    with engine.connect() as conn:
        assert [d for d in compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
                if d[0] != "add_index" or d[1].name not in POSTGRESQL_ONLY] == []
        assert conn.execute(text("SELECT count(*) FROM audit_entry")).scalar() == 50
    with Session(engine) as s:
        assert len(service.query_entries(s, F(outcome="deny", asset_id="asset-1"))) == 17
    # downgrade 0011 alone (other branches may have revisions after 0010 too) and upgrade again
    module = _migration_0011()
    with engine.begin() as conn:
        with Operations.context(MigrationContext.configure(conn)):
            module.downgrade()
    assert _normalised(_indexes(engine)) == OLD_INDEXES
    with engine.begin() as conn:
        with Operations.context(MigrationContext.configure(conn)):
            module.upgrade()
        # the append-only triggers survive (the table is not rebuilt)
        with pytest.raises(Exception, match="append-only"):
            with conn.begin_nested():
                conn.execute(text("DELETE FROM audit_entry WHERE seq = 1"))
    assert _normalised(_indexes(engine)) == _expected(engine)
    engine.dispose()
