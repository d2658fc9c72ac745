"""The verifier's fast path (runs of intact canonical entries checked in bulk) reports exactly what the
line-by-line path reports, whatever was done to the log and wherever a run boundary falls."""

from __future__ import annotations

import random
from datetime import datetime, timezone

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from twinspace.audit import verify
from twinspace.audit.entries import ZERO_HASH, Event, entry_body, leaf_hex
from twinspace.audit.merkle import MerkleTree
from twinspace.audit.note import Checkpoint, sign_checkpoint, vkey_string

ORIGIN = "test.twinspace/audit"
KEY = Ed25519PrivateKey.generate()
NOW = datetime(2026, 12, 1, tzinfo=timezone.utc)


def _log(n: int) -> tuple[list[bytes], list[str]]:
    bodies, prev, tree, notes = [], ZERO_HASH, MerkleTree(), []
    for seq in range(1, n + 1):
        body = entry_body(seq, prev, Event("t.e", f"org-{seq % 3}", details={"i": seq, "s": "é" * (seq % 4)}), NOW)
        bodies.append(body)
        prev = leaf_hex(body)
        tree.append(body)
        if seq % 9 == 0 or seq == n:
            notes.append(sign_checkpoint(Checkpoint(ORIGIN, seq, tree.root(), NOW), KEY))
    return bodies, notes


def _report(lines, notes, *, fast: bool, block: int, monkeypatch) -> dict:
    monkeypatch.setattr(verify, "FAST_PATH", fast)
    monkeypatch.setattr(verify, "_BLOCK", block)
    seen: list[int] = []
    rep = verify.verify_log(list(lines), notes, vkey_string(ORIGIN, KEY.public_key()), origin=ORIGIN,
                            progress=seen.append, progress_every=8)
    out = rep.to_json()
    out["progress"] = seen
    return out


def _tamperings(bodies: list[bytes]):
    nl = [b + b"\n" for b in bodies]
    yield "intact", nl
    yield "no newlines", list(bodies)
    yield "mixed newlines", [b if i % 5 else b + b"\n" for i, b in enumerate(bodies)]
    edited = list(nl)
    edited[20] = edited[20].replace(b'"i":21', b'"i":99')
    yield "edited", edited
    yield "edited last", nl[:-1] + [nl[-1].replace(b"org-", b"org-x")]
    yield "deleted", nl[:13] + nl[14:]
    yield "deleted run", nl[:13] + nl[17:]
    swapped = list(nl)
    swapped[30], swapped[31] = swapped[31], swapped[30]
    yield "reordered", swapped
    yield "inserted", nl[:25] + [nl[3]] + nl[25:]
    yield "duplicate", nl[:25] + [nl[24]] + nl[25:]
    yield "blank lines", nl[:10] + [b"\n", b""] + nl[10:]
    yield "truncated", nl[:-5]
    yield "garbage", nl[:7] + [b"not json\n"] + nl[8:]
    yield "upper-case hex", nl[:40] + [nl[40][:10] + nl[40][10:74].upper() + nl[40][74:]] + nl[41:]
    yield "leading zero seq", nl[:40] + [nl[40].replace(b'"_seq":41,', b'"_seq":041,')] + nl[41:]


@pytest.mark.parametrize("block", [1, 4, 7, 64])
def test_fast_and_general_paths_report_alike(block, monkeypatch):
    bodies, notes = _log(60)
    for name, lines in _tamperings(bodies):
        general = _report(lines, notes, fast=False, block=block, monkeypatch=monkeypatch)
        fast = _report(lines, notes, fast=True, block=block, monkeypatch=monkeypatch)
        assert fast == general, name
        assert general["ok"] == (name in ("intact", "no newlines", "mixed newlines", "blank lines")), name


def test_random_tampering_reports_alike(monkeypatch):
    bodies, notes = _log(120)
    rng = random.Random(7)
    for _ in range(40):
        lines = [b + b"\n" for b in bodies]
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(lines))
            op = rng.choice(["del", "dup", "swap", "flip"])
            if op == "del":
                del lines[i]
            elif op == "dup":
                lines.insert(i, lines[rng.randrange(len(lines))])
            elif op == "swap":
                j = rng.randrange(len(lines))
                lines[i], lines[j] = lines[j], lines[i]
            else:
                b = bytearray(lines[i])
                b[rng.randrange(len(b) - 1)] ^= 1
                lines[i] = bytes(b)
        block = rng.choice([3, 16, 50])
        assert _report(lines, notes, fast=True, block=block, monkeypatch=monkeypatch) == \
            _report(lines, notes, fast=False, block=block, monkeypatch=monkeypatch)


def test_extend_stores_the_same_tree_as_appending():
    import hashlib

    hs = [hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(300)]
    one = MerkleTree(hs)
    rng = random.Random(1)
    for _ in range(5):
        bulk, i = MerkleTree(), 0
        while i < len(hs):
            k = rng.randint(1, 70)
            bulk.extend(hs[i:i + k])
            i += k
            assert bulk.root() == MerkleTree(hs[:i]).root()
        assert bulk.levels == one.levels and bulk.size == one.size
    with pytest.raises(ValueError):
        MerkleTree().extend([b"short"])
