"""Auditor-side helpers shared by the CLI and the demo: reading exports, raw database rows and chains.

Nothing here goes through the broker's service logic: local verification reads the raw
``audit_entry`` / ``audit_checkpoint`` / ``audit_head`` rows exactly as stored.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import Engine


def file_lines(path: Path, chunk: int = 1 << 20) -> Iterator[bytes]:
    with open(path, "rb", buffering=chunk) as fh:
        yield from fh


def read_checkpoint_file(path: Path) -> list[str]:
    """Checkpoints exported as JSONL ({"note": ...} per line) or a single signed note."""
    raw = Path(path).read_text(encoding="utf-8")
    if raw.lstrip().startswith("{"):
        return [json.loads(line)["note"] for line in raw.splitlines() if line.strip()]
    return [raw]


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


def db_head(engine: Engine) -> tuple[int, str] | None:
    with engine.connect() as conn:
        row = conn.execute(text("SELECT size, last_leaf_hash FROM audit_head WHERE id = 1")).first()
    return (int(row[0]), str(row[1])) if row else None


def db_anchor_target(engine: Engine) -> tuple[int, str] | None:
    """(chain id, contract) of the newest anchor the broker recorded (a hint; the chain is the authority)."""
    with engine.connect() as conn:
        row = conn.execute(text("SELECT chain_id, contract FROM audit_anchor ORDER BY anchored_at DESC LIMIT 1")).first()
    return (int(row[0]), str(row[1])) if row else None


def fetch_bundle(client, out_dir: Path) -> dict:
    """Download the full export and every checkpoint through the API as an auditor.

    ``client`` is a ``twinspace.client.broker.BrokerClient``. Writes ``log.jsonl`` and ``checkpoints.jsonl``
    into ``out_dir``; returns counts and the key the broker *claims* (compare it with yours).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = 0
    with open(out_dir / "log.jsonl", "wb") as fh:
        with client.http.stream("GET", "/audit/export", headers=client.headers()) as response:
            if response.status_code >= 400:
                response.read()
                client._check(response)
            for line in response.iter_lines():
                if line:
                    fh.write(line.encode() + b"\n")
                    entries += 1
    client.post("/audit/checkpoints")  # make sure the newest entries are covered
    checkpoints, after = 0, 0
    with open(out_dir / "checkpoints.jsonl", "w") as fh:
        while True:
            page = client.get("/audit/checkpoints", params={"after": after, "limit": 1000})["checkpoints"]
            for cp in page:
                fh.write(json.dumps(cp) + "\n")
            checkpoints += len(page)
            if len(page) < 1000:
                break
            after = page[-1]["tree_size"]
    claimed = client.get("/audit/key")
    return {"entries": entries, "checkpoints": checkpoints, "claimed_vkey": claimed["vkey"]}
