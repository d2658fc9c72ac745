"""Offline verification of an exported audit log, trusting nothing the broker says.

Inputs: the entries (JSONL, one exact canonical body per line, in order), signed checkpoints
(C2SP notes), the log's verifier key, and optionally the ``Anchored`` events read from the
auditor's own chain node and the broker's ``audit_head`` row. The verifier

1. checks every checkpoint signature and that no two checkpoints of one size differ (a fork);
2. streams the entries: leaf hash, RFC 9162 tree, sequence numbers and hash links;
3. compares the recomputed root with every signed checkpoint and anchored root, verifies an
   RFC 9162 consistency proof between consecutive checkpoints against their *signed* roots,
   requires strictly growing anchored sizes;
4. names the first bad entry: edited, deleted, inserted or moved.

Pure: the caller reads files, databases or chains and hands over iterables.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from itertools import islice
from operator import itemgetter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from twinspace.audit.entries import _PREFIX, _SEQ_KEY, ZERO_HASH, chain_fields, openings_ok
from twinspace.audit.merkle import MerkleTree, ProofError, verify_consistency
from twinspace.audit.note import Checkpoint, NoteError, Verifier, open_checkpoint, parse_vkey

_BLOCK = 2048  # lines per fast-path run (fits the CPU cache; a bad run falls back line by line)
FAST_PATH = True  # tests turn it off to check both paths report alike
_LAST = itemgetter(-1)
_NL = b"\n"


@dataclass(frozen=True)
class AnchorRecord:
    tree_size: int
    root_hash: bytes
    block_number: int | None = None
    tx_hash: str | None = None


@dataclass
class Problem:
    seq: int | None
    kind: str
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "kind": self.kind, "message": self.message}


@dataclass
class VerifyReport:
    entries: int = 0
    root_hash: bytes = b""
    checkpoints_total: int = 0
    checkpoints_verified: int = 0
    latest_checkpoint: int | None = None
    consistency_checked: int = 0
    anchors_checked: int = 0
    latest_anchor: AnchorRecord | None = None
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_bad(self) -> Problem | None:
        with_seq = [p for p in self.problems if p.seq is not None]
        return min(with_seq, key=lambda p: p.seq) if with_seq else (self.problems[0] if self.problems else None)

    def add(self, seq: int | None, kind: str, message: str) -> None:
        if len(self.problems) < 1000:
            self.problems.append(Problem(seq, kind, message))

    def to_json(self) -> dict[str, Any]:
        first = self.first_bad
        return {"ok": self.ok, "entries": self.entries, "root_hash": base64.b64encode(self.root_hash).decode(),
                "checkpoints_total": self.checkpoints_total, "checkpoints_verified": self.checkpoints_verified,
                "latest_checkpoint": self.latest_checkpoint, "consistency_checked": self.consistency_checked,
                "anchors_checked": self.anchors_checked,
                "latest_anchor": None if self.latest_anchor is None else {
                    "tree_size": self.latest_anchor.tree_size, "root_hash": base64.b64encode(self.latest_anchor.root_hash).decode(),
                    "block_number": self.latest_anchor.block_number, "tx_hash": self.latest_anchor.tx_hash},
                "first_bad": first.to_json() if first else None,
                "problems": [p.to_json() for p in sorted(self.problems, key=lambda p: (p.seq is None, p.seq or 0))],
                "warnings": self.warnings}


def _plural(n: int, word: str) -> str:
    if n == 1:
        return f"{n} {word}"
    return f"{n} {word[:-1]}ies" if word.endswith("y") else f"{n} {word}s"


def verify_log(lines: Iterable[bytes], checkpoint_notes: Iterable[str], vkey: Verifier | str, *,
               origin: str | None = None, anchors: Iterable[AnchorRecord] | None = None,
               head: tuple[int, str] | None = None, progress: Callable[[int], None] | None = None,
               progress_every: int = 65_536,
               stored_roots: Iterable[tuple[int, str]] | None = None) -> VerifyReport:
    """``stored_roots``: (tree_size, hex root) as the broker's checkpoint table stores them beside the
    notes (local verification); each must match the rebuilt tree, and none may lie beyond its end."""
    verifier = parse_vkey(vkey) if isinstance(vkey, str) else vkey
    rep = VerifyReport()

    # 1. checkpoints: signatures, origin, forks
    cps: dict[int, Checkpoint] = {}
    for i, note in enumerate(checkpoint_notes, start=1):
        rep.checkpoints_total += 1
        try:
            cp = open_checkpoint(note, verifier, origin)
        except NoteError as exc:
            rep.add(None, "bad_checkpoint", f"checkpoint #{i} is not validly signed by {verifier.name}: {exc}")
            continue
        other = cps.get(cp.tree_size)
        if other is not None and other.root_hash != cp.root_hash:
            rep.add(cp.tree_size, "fork", f"two validly signed checkpoints of size {cp.tree_size} have different "
                                          "roots: the log forked")
        cps[cp.tree_size] = cp
    rep.checkpoints_verified = len(cps)
    sizes = sorted(s for s in cps if s > 0)
    rep.latest_checkpoint = sizes[-1] if sizes else None

    # 2. entries
    tree = MerkleTree()
    last_hex = ZERO_HASH
    expected = 1                  # the sequence number the next entry should carry
    displaced: set[int] = set()   # sequence numbers whose place was taken by another entry
    troubled: set[int] = set()    # positions that already explain the next link break
    cp_mismatch: list[int] = []
    next_cp = 0
    buf: tuple[int, int | None, str | None, bool] | None = None

    def leaf_hex_at(pos: int) -> str:
        return ZERO_HASH if pos == 0 else tree.leaf_hash_at(pos - 1).hex()

    def judge(cur, nxt) -> None:
        nonlocal expected
        p, s, prev, link_ok = cur
        if type(prev) is bytes:
            prev = prev.decode("ascii", "replace")
        e = expected
        if s is None:
            rep.add(p, "malformed", f"entry at position {p} is not a TwinSpace audit entry (no _seq/_prev)")
            troubled.add(p)
            expected = e + 1
            return
        if s != e:
            troubled.add(p)
            if s > e and (nxt is None or nxt[1] == s + 1):
                rep.add(e, "deleted", f"{_plural(s - e, 'entry')} missing: entries {e}..{s - 1} were deleted "
                                      f"(position {p} holds entry {s})" if s - e > 1 else
                        f"entry {e} is missing: it was deleted (position {p} holds entry {s})")
                expected = s + 1
            elif s > e:
                rep.add(e, "reordered", f"entry {e} was moved: its position holds entry {s} (rows reordered)")
                displaced.add(e)
                expected = e + 1
            elif s in displaced:
                rep.add(s, "reordered", f"entry {s} was moved to position {p} (rows reordered)")
                expected = e + 1
            elif nxt is not None and nxt[1] == s + 1 and prev == leaf_hex_at(p - (e - s) - 1):
                first = p - (e - s)
                rep.add(first, "inserted", f"{_plural(e - s, 'entry')} inserted at position {first}: entry {s} "
                                           f"now sits at position {p} and later entries are shifted")
                expected = s + 1
            else:
                rep.add(p, "duplicate", f"position {p} holds a second copy of entry {s}")
                expected = e + 1
            return
        expected = e + 1
        if not link_ok and (p - 1) not in troubled:
            if p == 1 or (nxt is not None and nxt[1] == s + 1 and not nxt[3]):
                rep.add(p, "altered", f"entry {p} was altered: it no longer chains to entry {p - 1}"
                        + ("" if nxt is None else f" and entry {p + 1} no longer chains to it"))
                troubled.add(p)
            else:
                rep.add(p - 1, "altered", f"entry {p - 1} was altered: its hash differs from the hash entry {p} "
                                          "chains to")
                troubled.add(p - 1)

    pos = 0
    sha256 = hashlib.sha256
    hexlify = binascii.hexlify
    last_b = ZERO_HASH.encode()
    n_sizes = len(sizes)

    def one(raw: bytes) -> None:
        """The general path, one line at a time (any input; diagnoses what is wrong)."""
        nonlocal pos, buf, expected, last_b, next_cp
        line = raw[:-1] if raw[-1:] == b"\n" else raw
        if not line:
            return
        pos += 1
        h = sha256(b"\x00" + line).digest()
        # Canonical bodies ({"_prev":"<64 hex>","_seq":N,...}): bytes compared, no decode.
        if line[74:83] == _SEQ_KEY and line[:10] == _PREFIX and (end := line.find(b",", 83)) > 0 \
                and (digits := line[83:end]).isdigit():
            seq, prev = int(digits), line[10:74]
            link_ok = prev == last_b
        else:
            seq, prev = chain_fields(line)
            link_ok = prev == last_b.decode()
        item = (pos, seq, prev, link_ok)
        if buf is not None:
            if buf[1] == expected and buf[3]:
                expected += 1  # an intact entry: all judge() would do
            else:
                judge(buf, item)
        buf = item
        tree.append_leaf_hash(h)
        last_b = hexlify(h)
        while next_cp < n_sizes and sizes[next_cp] <= pos:
            if sizes[next_cp] == pos and tree.root() != cps[pos].root_hash:
                cp_mismatch.append(pos)
            next_cp += 1
        if progress is not None and pos % progress_every == 0:
            progress(pos)

    def block(chunk: list[bytes]) -> bool:
        """The fast path for a run of intact canonical entries: one C-level pass per step (leaf hashes,
        expected ``{"_prev":"<hex>","_seq":N,`` prefixes, tree levels). False: nothing consumed, the
        general path must look at this run line by line."""
        nonlocal pos, buf, expected, last_b, next_cp
        if buf is not None and not (buf[1] == expected and buf[3]):
            return False
        k = len(chunk)
        try:
            ends = bytes(map(_LAST, chunk))
        except (IndexError, TypeError):
            return False
        if ends == _NL * k:
            hs = [sha256(b"\x00" + line[:-1]).digest() for line in chunk]
        elif 10 not in ends:
            hs = [sha256(b"\x00" + line).digest() for line in chunk]
        else:
            return False
        first = expected + (buf is not None)
        # every line must open with {"_prev":"<hex of the previous leaf hash>","_seq":<its number>,
        if not openings_ok(chunk, hs, first, last_b):
            return False
        before = pos
        pos += k
        expected = first + k - 1  # the last entry stays buffered, as on the general path
        buf = (pos, expected, chunk[-1][10:74], True)
        tree.extend(hs)
        last_b = hexlify(hs[-1])
        while next_cp < n_sizes and sizes[next_cp] <= pos:
            size = sizes[next_cp]
            if tree.root(size) != cps[size].root_hash:
                cp_mismatch.append(size)
            next_cp += 1
        if progress is not None:
            for m in range((before // progress_every + 1) * progress_every, pos + 1, progress_every):
                progress(m)
        return True

    it = iter(lines)
    while chunk := list(islice(it, _BLOCK)):
        if not (FAST_PATH and block(chunk)):
            for raw in chunk:
                one(raw)
    last_hex = last_b.decode()
    if buf is not None:
        judge(buf, None)
    if progress is not None:
        progress(pos)
    rep.entries = pos
    rep.root_hash = tree.root()

    def first_problem_seq() -> int | None:
        seqs = [p.seq for p in rep.problems if p.seq is not None]
        return min(seqs) if seqs else None

    # 3. checkpoints against the rebuilt tree
    if cp_mismatch:
        s = cp_mismatch[0]
        earlier = [x for x in sizes if x < s and x not in cp_mismatch]
        first = first_problem_seq()
        if first is None or first > s:
            since = f"; entries {earlier[-1] + 1}..{s} may have been rewritten together" if earlier else ""
            rep.add(s, "altered", f"entry {s} was altered: the tree of size {s} does not match the signed "
                                  f"checkpoint although the hash chain is intact{since}")
        rep.add(s, "checkpoint_mismatch", f"{_plural(len(cp_mismatch), 'signed checkpoint')} (first: size {s}) "
                                          "no longer match the entries")
    beyond = [s for s in sizes if s > pos]
    if beyond:
        rep.add(pos + 1, "truncated", f"checkpoint of size {beyond[-1]} is signed but only {_plural(pos, 'entry')} "
                                      f"exist: entries {pos + 1}..{beyond[-1]} were deleted")
    within = [s for s in sizes if s <= pos]
    for a, b in zip(within, within[1:]):
        if a in cp_mismatch or b in cp_mismatch:
            continue
        try:
            verify_consistency(a, b, cps[a].root_hash, cps[b].root_hash, tree.consistency_proof(a, b))
            rep.consistency_checked += 1
        except ProofError as exc:
            rep.add(b, "inconsistent", f"checkpoints {a} and {b} are not consistent: {exc}")
    if rep.latest_checkpoint is None and pos:
        rep.warnings.append("no signed checkpoint: the entries are internally consistent but nothing vouches "
                            "for them")
    elif within and within[-1] < pos:
        rep.warnings.append(f"entries {within[-1] + 1}..{pos} are newer than the latest signed checkpoint "
                            f"({within[-1]}) and are only covered by the hash chain")

    for size, root_hex in stored_roots or ():
        if size > pos:
            rep.add(pos + 1, "truncated", f"the checkpoint table records a tree of size {size} but only "
                                          f"{_plural(pos, 'entry')} exist")
        elif size > 0 and tree.root(size).hex() != str(root_hex).lower():
            rep.add(size, "checkpoint_mismatch", f"the checkpoint table's root for size {size} differs from "
                                                 "the tree of the entries (the stored row was edited)")

    # 4. anchors
    last_size = 0
    for a in anchors or ():
        rep.anchors_checked += 1
        if a.tree_size <= last_size:
            rep.add(None, "anchor_order", f"anchor of size {a.tree_size} (block {a.block_number}) does not grow "
                                          f"past the previous anchor ({last_size})")
        last_size = max(last_size, a.tree_size)
        if a.tree_size > pos:
            rep.add(pos + 1, "truncated", f"tree size {a.tree_size} is anchored on chain (block {a.block_number}) "
                                          f"but only {_plural(pos, 'entry')} exist")
        elif tree.root(a.tree_size) != a.root_hash:
            rep.add(a.tree_size, "anchor_mismatch", f"the root anchored for size {a.tree_size} (block "
                                                    f"{a.block_number}) does not match the entries")
        elif a.tree_size in cps and cps[a.tree_size].root_hash != a.root_hash:
            rep.add(a.tree_size, "anchor_mismatch", f"anchored root at size {a.tree_size} differs from the "
                                                    "signed checkpoint")
        rep.latest_anchor = a

    # 5. the broker's own head row (local verification only)
    if head is not None:
        size, last = head
        if size < pos:
            rep.add(size + 1, "inserted", f"entries {size + 1}..{pos} were written outside the broker: the log "
                                          f"head records {_plural(size, 'entry')}")
        elif size > pos:
            rep.add(pos + 1, "deleted", f"the log head records {_plural(size, 'entry')} but only {pos} exist: "
                                        f"entries {pos + 1}..{size} were deleted")
        elif pos and last != last_hex and (first_problem_seq() or pos + 1) > pos:
            rep.add(pos, "altered", f"entry {pos} was altered: its hash differs from the one the log head recorded")
    return rep
