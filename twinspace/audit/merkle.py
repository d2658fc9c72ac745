"""RFC 6962 / RFC 9162 Merkle tree: hashing, proofs and their verification. Pure code, no I/O.

* leaf hash ``SHA-256(0x00 ‖ entry)``, node hash ``SHA-256(0x01 ‖ left ‖ right)``,
  empty tree ``SHA-256("")``; a tree of n > 1 leaves splits at the largest power of two < n.
* ``MerkleTree`` keeps every *complete* aligned subtree hash, level by level, in flat
  ``bytearray`` s (32 bytes per node, ~64 MB for a million leaves). Appending costs one leaf hash
  plus one node hash amortised; the root of any earlier size and any inclusion or consistency
  proof take O(log n) lookups and hashes.
* Verifiers follow RFC 9162 §2.1.3.2 / §2.1.4.2 with the conventions of the reference
  implementation (github.com/transparency-dev/merkle): index < size, 32-byte leaf hash,
  consistency from size 0 or to a smaller size rejected, equal sizes need an empty proof and
  equal roots.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
_sha256 = hashlib.sha256


class ProofError(ValueError):
    """A proof does not verify, or a proof request is out of range."""


def leaf_hash(entry: bytes) -> bytes:
    return _sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return _sha256(b"\x01" + left + right).digest()


def split_point(n: int) -> int:
    """Largest power of two strictly smaller than n (n ≥ 2)."""
    if n < 2:
        raise ValueError("split_point needs n >= 2")
    return 1 << ((n - 1).bit_length() - 1)


def root_from_leaf_hashes(hashes: Sequence[bytes]) -> bytes:
    """MTH(D[n]) straight from the RFC definition (reference implementation for tests and tools)."""
    n = len(hashes)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return hashes[0]
    k = split_point(n)
    return node_hash(root_from_leaf_hashes(hashes[:k]), root_from_leaf_hashes(hashes[k:]))


class MerkleTree:
    """Append-only in-memory Merkle tree over leaf hashes."""

    __slots__ = ("levels", "size")

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        self.levels: list[bytearray] = [bytearray()]
        self.size = 0
        for h in leaf_hashes:
            self.append_leaf_hash(h)

    def append(self, entry: bytes) -> int:
        """Append a raw entry; returns its leaf index."""
        return self.append_leaf_hash(_sha256(b"\x00" + entry).digest())

    def append_leaf_hash(self, h: bytes) -> int:
        if len(h) != HASH_SIZE:
            raise ValueError("a leaf hash is 32 bytes")
        levels = self.levels
        index = self.size
        levels[0] += h
        self.size = index + 1
        level = 0
        i = index
        while i & 1:  # this node completed a pair: store the parent
            row = levels[level]
            parent = _sha256(b"\x01" + row[-64:]).digest()
            level += 1
            if level == len(levels):
                levels.append(bytearray())
            levels[level] += parent
            i >>= 1
        return index

    def extend(self, leaf_hashes: Sequence[bytes]) -> None:
        """Append many leaf hashes at once: the same stored nodes as ``append_leaf_hash`` one by one,
        built level by level in tight loops (the verifier's and a cold replica's path)."""
        if not leaf_hashes:
            return
        joined = b"".join(leaf_hashes)
        if len(joined) != HASH_SIZE * len(leaf_hashes):
            raise ValueError("a leaf hash is 32 bytes")
        levels = self.levels
        levels[0] += joined
        self.size += len(leaf_hashes)
        sha = _sha256
        level = 0
        while True:
            row = levels[level]
            want = len(row) // 64  # complete nodes one level up
            if level + 1 == len(levels):
                if want == 0:
                    return
                levels.append(bytearray())
            up = levels[level + 1]
            have = len(up) // 32
            if have >= want:
                return
            up += b"".join([sha(b"\x01" + row[i:i + 64]).digest() for i in range(have * 64, want * 64, 64)])
            level += 1

    def leaf_hash_at(self, index: int) -> bytes:
        if not 0 <= index < self.size:
            raise ProofError(f"leaf index {index} is outside the tree of size {self.size}")
        return bytes(self.levels[0][index * 32:index * 32 + 32])

    def _subtree(self, start: int, end: int) -> bytes:
        """MTH of leaves [start, end)."""
        n = end - start
        if n == 0:
            return EMPTY_ROOT
        if n & (n - 1) == 0 and start % n == 0:  # complete aligned subtree: stored
            level = n.bit_length() - 1
            i = start >> level
            return bytes(self.levels[level][i * 32:i * 32 + 32])
        k = split_point(n)
        return node_hash(self._subtree(start, start + k), self._subtree(start + k, end))

    def _check_size(self, size: int | None) -> int:
        if size is None:
            return self.size
        if not 0 <= size <= self.size:
            raise ProofError(f"tree size {size} is outside 0..{self.size}")
        return size

    def root(self, size: int | None = None) -> bytes:
        """Root hash of the first ``size`` leaves (default: all)."""
        return self._subtree(0, self._check_size(size))

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """RFC 9162 §2.1.3.1 PATH(index, D[size]): sibling hashes from the leaf up to the root."""
        size = self._check_size(size)
        if not 0 <= index < size:
            raise ProofError(f"leaf index {index} is outside the tree of size {size}")
        proof: list[bytes] = []
        start, end = 0, size
        while end - start > 1:
            k = split_point(end - start)
            if index < start + k:
                proof.append(self._subtree(start + k, end))
                end = start + k
            else:
                proof.append(self._subtree(start, start + k))
                start += k
        proof.reverse()
        return proof

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        """RFC 9162 §2.1.4.1 PROOF(size1, D[size2])."""
        size2 = self._check_size(size2)
        if not 0 < size1 <= size2:
            raise ProofError(f"a consistency proof needs 0 < first size ({size1}) <= second size ({size2})")
        proof: list[bytes] = []
        m, start, end, complete = size1, 0, size2, True
        while True:
            n = end - start
            if m == n:
                if not complete:
                    proof.append(self._subtree(start, end))
                break
            k = split_point(n)
            if m <= k:
                proof.append(self._subtree(start + k, end))
                end = start + k
            else:
                proof.append(self._subtree(start, start + k))
                m -= k
                start += k
                complete = False
        proof.reverse()
        return proof


# --- verification (RFC 9162 §2.1.3.2 and §2.1.4.2) ------------------------------------------


def root_from_inclusion_proof(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root implied by an inclusion proof; raises ProofError when the proof is malformed."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is not below tree size {size}")
    if len(leaf) != HASH_SIZE:
        raise ProofError(f"leaf hash has {len(leaf)} bytes, expected {HASH_SIZE}")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if len(p) != HASH_SIZE:
            raise ProofError("proof element is not 32 bytes")
        if sn == 0:
            raise ProofError("inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof is too short")
    return r


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes) -> None:
    """Raise ProofError unless ``proof`` shows leaf hash ``leaf`` at ``index`` in the tree ``(size, root)``."""
    if root_from_inclusion_proof(index, size, leaf, proof) != root:
        raise ProofError(f"inclusion proof for leaf {index} does not lead to the root of tree size {size}")


def verify_consistency(size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]) -> None:
    """Raise ProofError unless ``proof`` shows the tree (size1, root1) is a prefix of (size2, root2)."""
    if size1 <= 0:
        raise ProofError("consistency from an empty tree is not accepted")
    if size2 < size1:
        raise ProofError(f"second tree size {size2} is smaller than the first {size1}")
    if size1 == size2:
        if proof:
            raise ProofError("trees of equal size need an empty consistency proof")
        if root1 != root2:
            raise ProofError("trees of equal size have different roots")
        return
    if not proof:
        raise ProofError("empty consistency proof for different tree sizes")
    if any(len(p) != HASH_SIZE for p in proof):
        raise ProofError("proof element is not 32 bytes")
    path = list(proof)
    if size1 & (size1 - 1) == 0:  # size1 is a power of two: the old root is the first node
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof is too short")
    if fr != root1:
        raise ProofError(f"consistency proof does not match the root of tree size {size1}")
    if sr != root2:
        raise ProofError(f"consistency proof does not match the root of tree size {size2}")
