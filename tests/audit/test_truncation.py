"""A truncated tail whose covering checkpoints were dropped too: what still proves the deletion.

The attacker (DDL rights) deletes the newest entries, deletes the checkpoints that covered them and
rewrites the head row, so the remaining log is internally consistent. A checkpoint the auditor saved
earlier, an anchor (from their node, a saved file, or the broker's own anchor table) and the
checkpoint table's root column must each fail verification.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from broker.audit import record_event
from broker.audit.service import create_checkpoint, log_vkey
from broker.audit.tools import db_checkpoint_notes, db_lines
from broker.storage.db import session_scope
from tests.audit.tamper_helpers import drop_append_only_guards
from twinspace.audit.entries import leaf_hex
from twinspace.cli.main import app

N = 30


@pytest.fixture
def log(runtime):
    for i in range(1, N + 1):
        with session_scope(runtime.engine) as s:
            record_event(s, "transfer.completed", actor=f"org-{i % 3}", details={"rows": i})
        if i in (10, 20, N):
            create_checkpoint(runtime)
    drop_append_only_guards(runtime.engine)
    return runtime


def _size(runtime) -> int:
    with runtime.engine.connect() as conn:
        return int(conn.execute(text("SELECT max(seq) FROM audit_entry")).scalar())


def _truncate(runtime, keep: int) -> None:
    """Delete entries after ``keep`` and every checkpoint beyond it; make the head agree."""
    with runtime.engine.begin() as conn:
        last = conn.execute(text("SELECT body FROM audit_entry WHERE seq = :k"), {"k": keep}).scalar()
        conn.execute(text("DELETE FROM audit_entry WHERE seq > :k"), {"k": keep})
        conn.execute(text("DELETE FROM audit_checkpoint WHERE tree_size > :k"), {"k": keep})
        conn.execute(text("UPDATE audit_head SET size = :k, last_leaf_hash = :h"),
                     {"k": keep, "h": leaf_hex(last.encode())})


def _verify(runtime, *args: str):
    result = CliRunner().invoke(app, ["audit", "verify", "--json", *args])
    return result.exit_code, result.output


def _export(runtime, tmp_path):
    entries = tmp_path / "log.jsonl"
    entries.write_bytes(b"".join(line + b"\n" for line in db_lines(runtime.engine)))
    cps = tmp_path / "checkpoints.jsonl"
    cps.write_text("".join(json.dumps({"note": n}) + "\n" for n in db_checkpoint_notes(runtime.engine)))
    return entries, cps


def test_consistent_truncation_passes_without_a_witness(log, tmp_path):
    """The baseline the other tests break: with nothing kept from before, the shorter log verifies."""
    size = _size(log)
    _truncate(log, size - 7)
    entries, cps = _export(log, tmp_path)
    code, out = _verify(log, "--entries", str(entries), "--checkpoints", str(cps), "--key", log_vkey(log))
    assert code == 0, out


def test_a_saved_checkpoint_beyond_the_end_fails_offline_verification(log, tmp_path):
    size = _size(log)
    saved = tmp_path / "saved.note"
    saved.write_text(db_checkpoint_notes(log.engine)[-1])  # the auditor kept the newest checkpoint
    _truncate(log, size - 7)
    entries, cps = _export(log, tmp_path)
    code, out = _verify(log, "--entries", str(entries), "--checkpoints", str(cps), "--extra-checkpoint", str(saved),
                        "--key", log_vkey(log))
    report = json.loads(out)
    assert code == 1 and report["first_bad"]["kind"] == "truncated"
    assert report["first_bad"]["seq"] == size - 6


def test_a_saved_anchor_beyond_the_end_fails_offline_verification(log, tmp_path):
    size = _size(log)
    with log.engine.connect() as conn:
        root = conn.execute(text("SELECT root_hash FROM audit_checkpoint ORDER BY tree_size DESC LIMIT 1")).scalar()
    anchors = tmp_path / "anchors.jsonl"
    anchors.write_text(json.dumps({"tree_size": size, "root_hash": root, "block_number": 7}) + "\n")
    _truncate(log, size - 7)
    entries, cps = _export(log, tmp_path)
    code, out = _verify(log, "--entries", str(entries), "--checkpoints", str(cps), "--anchors", str(anchors),
                        "--key", log_vkey(log))
    report = json.loads(out)
    assert code == 1 and report["first_bad"]["kind"] == "truncated", report["problems"]


def test_the_brokers_anchor_record_beyond_the_end_fails_local_verification(log):
    size = _size(log)
    with log.engine.begin() as conn:
        root = conn.execute(text("SELECT root_hash FROM audit_checkpoint ORDER BY tree_size DESC LIMIT 1")).scalar()
        conn.execute(text("INSERT INTO audit_anchor (chain_id, contract, tree_size, root_hash, tx_hash, block_number, "
                          "anchored_at) VALUES (31337, :c, :n, :r, :t, 5, :at)"),
                     {"c": "0x" + "ab" * 20, "n": size, "r": root, "t": "0x" + "cd" * 32,
                      "at": datetime.now(timezone.utc)})
    code, out = _verify(log, "--data-dir", str(log.settings.data_dir))
    assert code == 0, out
    _truncate(log, size - 7)
    code, out = _verify(log, "--data-dir", str(log.settings.data_dir))
    report = json.loads(out)
    assert code == 1 and report["first_bad"]["kind"] == "truncated", report["problems"]


def test_an_edited_checkpoint_root_column_fails_local_verification(log):
    code, out = _verify(log, "--data-dir", str(log.settings.data_dir))
    assert code == 0, out
    with log.engine.begin() as conn:
        conn.execute(text("UPDATE audit_checkpoint SET root_hash = :r WHERE tree_size = 20"), {"r": "00" * 32})
    code, out = _verify(log, "--data-dir", str(log.settings.data_dir))
    report = json.loads(out)
    assert code == 1 and {"seq": 20, "kind": "checkpoint_mismatch"}.items() <= report["first_bad"].items(), out
