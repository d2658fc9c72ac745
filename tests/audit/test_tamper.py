"""Tampering with the database directly: verification detects it and names the entry."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from broker.audit import record_event
from twinspace.audit.entries import Event, entry_body, leaf_hex
from broker.audit.service import LogIntegrityError, create_checkpoint, log_vkey
from broker.audit.tools import db_checkpoint_notes, db_head, db_lines
from twinspace.audit.verify import verify_log
from twinspace.cli.main import app as cli
from broker.storage.db import make_engine, session_scope
from tests.audit.tamper_helpers import drop_append_only_guards

N = 30


@pytest.fixture
def log(runtime):
    """A log of N entries with signed checkpoints at 10, 20 and N."""
    engine = runtime.engine
    drop_append_only_guards(engine)  # the attacker has DDL rights
    with engine.begin() as conn:  # start from an empty log so entry numbers are predictable
        conn.execute(text("DELETE FROM audit_entry"))
        conn.execute(text("UPDATE audit_head SET size = 0, last_leaf_hash = :z"), {"z": "0" * 64})
    for i in range(1, N + 1):
        with session_scope(engine) as s:
            record_event(s, "transfer.completed", actor=f"org-{i % 3}", asset_id=f"asset-{i}",
                         details={"rows": i, "bytes": 100 * i})
        if i in (10, 20, N):
            assert create_checkpoint(runtime).tree_size == i
    return runtime


def _verify(runtime, head=True):
    e = runtime.engine
    return verify_log(db_lines(e), db_checkpoint_notes(e), log_vkey(runtime), head=db_head(e) if head else None)


def _sql(runtime, *statements):
    with runtime.engine.begin() as conn:
        for st, params in statements:
            conn.execute(text(st), params)


def _edit(runtime, seq, old, new, table="audit_entry", col="body", key="seq"):
    with runtime.engine.begin() as conn:
        value = conn.execute(text(f"SELECT {col} FROM {table} WHERE {key} = :s"), {"s": seq}).scalar()
        assert old in value
        conn.execute(text(f"UPDATE {table} SET {col} = :v WHERE {key} = :s"), {"v": value.replace(old, new), "s": seq})


def _body(runtime, seq) -> str:
    with runtime.engine.connect() as conn:
        return conn.execute(text("SELECT body FROM audit_entry WHERE seq = :s"), {"s": seq}).scalar()


def test_untouched_log_verifies(log):
    report = _verify(log)
    assert report.ok, report.problems
    assert (report.entries, report.checkpoints_verified, report.consistency_checked) == (N, 3, 2)


@pytest.mark.parametrize("seq", [1, 14, 20])
def test_edited_entry_is_named(log, seq):
    _edit(log, seq, f'"rows":{seq}}}', '"rows":999}')
    assert '"rows":999' in _body(log, seq)
    report = _verify(log)
    assert not report.ok
    assert (report.first_bad.seq, report.first_bad.kind) == (seq, "altered"), report.problems
    assert any(p.kind == "checkpoint_mismatch" for p in report.problems)


def test_edited_last_entry_is_named_through_the_checkpoint(log):
    _edit(log, N, "org-0", "org-9")
    report = _verify(log, head=False)
    assert (report.first_bad.seq, report.first_bad.kind) == (N, "altered"), report.problems


def test_edited_chain_field_is_named(log):
    body = json.loads(_body(log, 7))
    forged = entry_body(7, "f" * 64, Event(body["kind"], body["actor"], asset_id=body["asset_id"],
                                            details=body["details"]), __import__("datetime").datetime.now().astimezone())
    _sql(log, ("UPDATE audit_entry SET body = :b WHERE seq = 7", {"b": forged.decode()}))
    report = _verify(log)
    assert (report.first_bad.seq, report.first_bad.kind) == (7, "altered"), report.problems


def test_deleted_entry_is_named(log):
    _sql(log, ("DELETE FROM audit_entry WHERE seq = 12", {}))
    report = _verify(log)
    assert (report.first_bad.seq, report.first_bad.kind) == (12, "deleted"), report.problems
    assert "entry 12 is missing" in report.first_bad.message


def test_deleted_tail_is_named(log):
    _sql(log, ("DELETE FROM audit_entry WHERE seq >= 28", {}))
    report = _verify(log, head=False)  # the checkpoint at N alone proves entries 28..30 existed
    assert (report.first_bad.seq, report.first_bad.kind) == (28, "truncated"), report.problems


def test_reordered_rows_are_named(log):
    _sql(log, ("UPDATE audit_entry SET seq = -1 WHERE seq = 5", {}),
         ("UPDATE audit_entry SET seq = 5 WHERE seq = 9", {}),
         ("UPDATE audit_entry SET seq = 9 WHERE seq = -1", {}))
    report = _verify(log)
    assert (report.first_bad.seq, report.first_bad.kind) == (5, "reordered"), report.problems
    assert {p.seq for p in report.problems if p.kind == "reordered"} == {5}


def test_inserted_entry_is_named(log):
    # renumber 15.. up by one and slip a plausible, correctly chained entry in at 15
    prev = leaf_hex(_body(log, 14).encode())
    forged = entry_body(15, prev, Event("policy.decision", "org-1", "allow", "asset-x"),
                        __import__("datetime").datetime.now().astimezone())
    _sql(log, ("UPDATE audit_entry SET seq = seq + 1000 WHERE seq >= 15", {}),
         ("UPDATE audit_entry SET seq = seq - 999 WHERE seq >= 1000", {}),
         ("INSERT INTO audit_entry (seq, created_at, kind, actor, outcome, body) "
          "VALUES (15, CURRENT_TIMESTAMP, 'policy.decision', 'org-1', 'allow', :b)", {"b": forged.decode()}))
    report = _verify(log)
    assert (report.first_bad.seq, report.first_bad.kind) == (15, "inserted"), report.problems


def test_appended_forgery_is_named_by_the_head(log):
    prev = leaf_hex(_body(log, N).encode())
    forged = entry_body(N + 1, prev, Event("policy.decision", "org-1", "allow"),
                        __import__("datetime").datetime.now().astimezone())
    _sql(log, ("INSERT INTO audit_entry (seq, created_at, kind, actor, outcome, body) "
               "VALUES (:s, CURRENT_TIMESTAMP, 'policy.decision', 'org-1', 'allow', :b)",
               {"s": N + 1, "b": forged.decode()}))
    report = _verify(log)
    assert (report.first_bad.seq, report.first_bad.kind) == (N + 1, "inserted"), report.problems


def test_forged_checkpoint_is_rejected(log):
    _edit(log, 20, "\n20\n", "\n21\n", table="audit_checkpoint", col="note", key="tree_size")
    report = _verify(log)
    assert [p.kind for p in report.problems] == ["bad_checkpoint"]


def test_broker_refuses_to_sign_a_tampered_log(log):
    _edit(log, 3, "org-", "org_")
    with session_scope(log.engine) as s:
        record_event(s, "later.event", actor=None)
    fresh = type(log)(settings=log.settings, engine=make_engine(log.settings.effective_database_url),
                      broker_key=log.broker_key, replay=log.replay)  # a replica starting now
    with pytest.raises(LogIntegrityError) as err:
        create_checkpoint(fresh)
    assert err.value.extra["seq"] == 4  # entry 4 no longer chains to the altered entry 3
    fresh.engine.dispose()


def test_cli_verify_names_the_entry_and_exits_nonzero(log, settings, tmp_path):
    runner = CliRunner()
    ok = runner.invoke(cli, ["audit", "verify", "--data-dir", str(settings.data_dir)])
    assert ok.exit_code == 0, ok.output
    assert "VERIFIED" in ok.output
    exported = tmp_path / "log.jsonl"
    cps = tmp_path / "cps.jsonl"
    r = runner.invoke(cli, ["audit", "export", str(exported), "--checkpoints", str(cps),
                            "--data-dir", str(settings.data_dir)])
    assert r.exit_code == 0, r.output
    vkey = log_vkey(log)
    lines = exported.read_bytes().splitlines(keepends=True)
    lines[16] = lines[16].replace(b'"rows":17', b'"rows":18')
    exported.write_bytes(b"".join(lines))
    bad = runner.invoke(cli, ["audit", "verify", "--entries", str(exported), "--checkpoints", str(cps),
                              "--key", vkey, "--json"])
    assert bad.exit_code == 1, bad.output
    report = json.loads(bad.output)
    assert report["first_bad"]["seq"] == 17 and report["first_bad"]["kind"] == "altered"
    wrong_key = runner.invoke(cli, ["audit", "verify", "--entries", str(exported), "--checkpoints", str(cps),
                                    "--key", vkey.replace("+", "+0", 1)[:-1]])
    assert wrong_key.exit_code == 2 and "not a valid log key" in wrong_key.output


def test_edited_index_column_is_named_by_local_verification(log, settings):
    _sql(log, ("UPDATE audit_entry SET actor = 'org-x' WHERE seq = 11", {}))
    report = _verify(log)
    assert report.ok  # the signed bodies are intact ...
    r = CliRunner().invoke(cli, ["audit", "verify", "--data-dir", str(settings.data_dir), "--json"])
    assert r.exit_code == 1, r.output  # ... but filters would now hide entry 11 from its real actor
    first = json.loads(r.output)["first_bad"]
    assert first["seq"] == 11 and "actor column" in first["message"]
