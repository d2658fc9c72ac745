"""Auditor-side helpers shared by the CLI and the demo: reading exports, raw database rows and chains.

Nothing here goes through the broker's service logic: local verification reads the raw
``audit_entry`` / ``audit_checkpoint`` / ``audit_head`` rows exactly as stored.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

from sqlalchemy import text
from sqlalchemy.engine import Engine


def db_entry_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM audit_entry")).scalar() or 0)


def db_lines(engine: Engine, chunk: int = 20_000) -> Iterator[bytes]:
    """Raw entry bodies in sequence-column order, as stored (keyset pagination)."""
    after = None
    while True:
        with engine.connect() as conn:
            if after is None:
                rows = conn.execute(text("SELECT seq, body FROM audit_entry ORDER BY seq LIMIT :n"), {"n": chunk}).all()
            else:
                rows = conn.execute(text("SELECT seq, body FROM audit_entry WHERE seq > :a ORDER BY seq LIMIT :n"),
                                    {"a": after, "n": chunk}).all()
        for _, body in rows:
            yield body.encode()
        if len(rows) < chunk:
            return
        after = rows[-1][0]


_COLUMNS = ("kind", "actor", "outcome", "asset_id", "agreement_id")
_KEYS = tuple(f'"{c}":' for c in _COLUMNS)
_PLAIN = re.compile(r'[^"\\\x00-\x1f]*\Z').match  # strings JSON writes without escapes


def db_lines_checked(engine: Engine, mismatches: list[tuple[int, str]], chunk: int = 20_000) -> Iterator[bytes]:
    """Like ``db_lines``, and records rows whose indexed columns (used by filters) disagree with the
    signed body — someone hiding an entry from filtered queries by editing e.g. its actor column."""
    after = 0
    cols = ", ".join(_COLUMNS)
    while True:
        with engine.connect() as conn:
            rows = conn.execute(text(f"SELECT seq, body, {cols} FROM audit_entry WHERE seq > :a "
                                     "ORDER BY seq LIMIT :n"), {"a": after, "n": chunk}).all()
        for row in rows:
            body = row[1]
            for key, value in zip(_KEYS, row[2:]):
                if value is None:
                    fragment = key + "null"
                elif _PLAIN(value):
                    fragment = key + '"' + value + '"'
                else:
                    fragment = key + json.dumps(value, ensure_ascii=False)
                if fragment not in body:
                    mismatches.append((int(row[0]), key[1:-2]))
            yield body.encode()
        if len(rows) < chunk:
            return
        after = rows[-1][0]


def db_checkpoint_notes(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(text("SELECT note FROM audit_checkpoint ORDER BY tree_size"))]


def db_checkpoint_roots(engine: Engine) -> list[tuple[int, str]]:
    """(tree_size, root_hash) columns of the checkpoint table, which the broker serves from."""
    with engine.connect() as conn:
        return [(int(r[0]), str(r[1])) for r in
                conn.execute(text("SELECT tree_size, root_hash FROM audit_checkpoint ORDER BY tree_size"))]


def db_anchor_records(engine: Engine):
    """The anchors the broker recorded for its newest contract (a second witness when no chain node is
    given: a recorded anchor beyond the log's end still proves a truncation)."""
    from twinspace.audit.verify import AnchorRecord

    target = db_anchor_target(engine)
    if target is None:
        return []
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT tree_size, root_hash, block_number, tx_hash FROM audit_anchor "
                                 "WHERE chain_id = :c AND contract = :a ORDER BY tree_size"),
                            {"c": target[0], "a": target[1]}).all()
    out = []
    for size, root, block, tx in rows:
        try:
            out.append(AnchorRecord(int(size), bytes.fromhex(root), int(block), str(tx)))
        except ValueError:
            out.append(AnchorRecord(int(size), b"", int(block), str(tx)))
    return out


def db_head(engine: Engine) -> tuple[int, str] | None:
    with engine.connect() as conn:
        row = conn.execute(text("SELECT size, last_leaf_hash FROM audit_head WHERE id = 1")).first()
    return (int(row[0]), str(row[1])) if row else None


def db_anchor_target(engine: Engine) -> tuple[int, str] | None:
    """(chain id, contract) of the newest anchor the broker recorded (a hint; the chain is the authority)."""
    with engine.connect() as conn:
        row = conn.execute(text("SELECT chain_id, contract FROM audit_anchor ORDER BY anchored_at DESC LIMIT 1")).first()
    return (int(row[0]), str(row[1])) if row else None
