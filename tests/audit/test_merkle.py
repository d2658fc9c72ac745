"""The Merkle code against RFC 6962 / RFC 9162 facts and every transparency-dev proof vector."""

from __future__ import annotations

import base64
import hashlib
import json
import random

import pytest

from twinspace.audit import merkle
from twinspace.audit.merkle import MerkleTree, ProofError

LEAVES = [bytes.fromhex(h) for h in ["", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                                    "606162636465666768696a6b6c6d6e6f"]]
ROOTS = {
    1: "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    2: "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    3: "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    4: "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    5: "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    6: "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    7: "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    8: "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
}
I0 = ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
      "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
      "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]
INCLUSION = {
    (0, 8): I0,
    (5, 8): ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
             "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
             "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"],
    (2, 3): ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
    (1, 5): ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
             "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
             "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"],
}
CONSISTENCY = {
    (1, 8): I0,
    (6, 8): ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
             "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
             "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"],
    (2, 5): ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
             "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"],
    (6, 7): ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
             "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
             "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"],
}


def test_hasher_facts():
    assert merkle.EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert MerkleTree().root().hex() == merkle.EMPTY_ROOT.hex()
    assert merkle.leaf_hash(b"").hex() == "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    assert merkle.leaf_hash(b"L123456").hex() == "395aa064aa4c29f7010acfe3f25db9485bbd4b91897b6ad7ad547639252b4d56"
    assert merkle.node_hash(b"N123", b"N456").hex() == "aa217fe888e47007fa15edab33c2b492a722cb106c64667fc2b044444de66bbb"


def test_eight_leaf_roots_for_every_prefix():
    tree = MerkleTree()
    for n, leaf in enumerate(LEAVES, start=1):
        tree.append(leaf)
        assert tree.root().hex() == ROOTS[n]
        assert merkle.root_from_leaf_hashes([merkle.leaf_hash(x) for x in LEAVES[:n]]).hex() == ROOTS[n]
    for n in ROOTS:  # earlier sizes stay reachable after more appends
        assert tree.root(n).hex() == ROOTS[n]


@pytest.mark.parametrize("index,size", sorted(INCLUSION))
def test_inclusion_proofs_match_reference(index, size):
    tree = MerkleTree(merkle.leaf_hash(x) for x in LEAVES)
    proof = tree.inclusion_proof(index, size)
    assert [p.hex() for p in proof] == INCLUSION[(index, size)]
    merkle.verify_inclusion(index, size, merkle.leaf_hash(LEAVES[index]), proof, bytes.fromhex(ROOTS[size]))


@pytest.mark.parametrize("size1,size2", sorted(CONSISTENCY))
def test_consistency_proofs_match_reference(size1, size2):
    tree = MerkleTree(merkle.leaf_hash(x) for x in LEAVES)
    proof = tree.consistency_proof(size1, size2)
    assert [p.hex() for p in proof] == CONSISTENCY[(size1, size2)]
    merkle.verify_consistency(size1, size2, bytes.fromhex(ROOTS[size1]), bytes.fromhex(ROOTS[size2]), proof)


def _b(s):
    return base64.b64decode(s) if s else b""


def _vector_files(root, kind):
    files = sorted((root / kind).rglob("*.json"))
    assert files, f"no {kind} vectors under {root}"
    return files


def _accepts_inclusion(v) -> bool:
    try:
        merkle.verify_inclusion(v["leafIdx"], v["treeSize"], _b(v["leafHash"]), [_b(p) for p in v["proof"] or []],
                                _b(v["root"]))
    except ProofError:
        return False
    return True


def _accepts_consistency(v) -> bool:
    try:
        merkle.verify_consistency(v["size1"], v["size2"], _b(v["root1"]), _b(v["root2"]),
                                  [_b(p) for p in v["proof"] or []])
    except ProofError:
        return False
    return True


def test_all_conformance_vectors(merkle_vectors):
    inclusion = _vector_files(merkle_vectors, "inclusion")
    consistency = _vector_files(merkle_vectors, "consistency")
    assert len(inclusion) + len(consistency) == 196, "the README lists 196 vector files"
    mismatches = []
    for path in inclusion:
        v = json.loads(path.read_text())
        if _accepts_inclusion(v) == v["wantErr"]:
            mismatches.append(str(path.relative_to(merkle_vectors)))
    for path in consistency:
        v = json.loads(path.read_text())
        if _accepts_consistency(v) == v["wantErr"]:
            mismatches.append(str(path.relative_to(merkle_vectors)))
    assert mismatches == []


def test_happy_path_vectors_are_regenerated_byte_for_byte(merkle_vectors):
    tree = MerkleTree(merkle.leaf_hash(x) for x in LEAVES)
    checked = 0
    for path in sorted(merkle_vectors.glob("*/*/happy-path.json")):
        v = json.loads(path.read_text())
        if "leafIdx" in v:
            got = tree.inclusion_proof(v["leafIdx"], v["treeSize"])
            assert _b(v["root"]) == tree.root(v["treeSize"]) and _b(v["leafHash"]) == tree.leaf_hash_at(v["leafIdx"])
        else:
            got = tree.consistency_proof(v["size1"], v["size2"])
            assert _b(v["root2"]) == tree.root(v["size2"])
        assert got == [_b(p) for p in v["proof"] or []], path
        checked += 1
    assert checked == 10


def test_random_trees_agree_with_the_rfc_definition_and_verify():
    rng = random.Random(7)
    hashes = [hashlib.sha256(rng.randbytes(8)).digest() for _ in range(300)]
    tree = MerkleTree(hashes)
    for _ in range(200):
        size = rng.randint(1, 300)
        root = merkle.root_from_leaf_hashes(hashes[:size])
        assert tree.root(size) == root
        i = rng.randrange(size)
        merkle.verify_inclusion(i, size, hashes[i], tree.inclusion_proof(i, size), root)
        m = rng.randint(1, size)
        merkle.verify_consistency(m, size, tree.root(m), root, tree.consistency_proof(m, size))
        if m < size:  # a proof for the wrong old root must fail
            with pytest.raises(ProofError):
                merkle.verify_consistency(m, size, tree.root(m - 1) if m > 1 else b"\0" * 32, root,
                                          tree.consistency_proof(m, size))


def test_out_of_range_requests_are_rejected():
    tree = MerkleTree(merkle.leaf_hash(x) for x in LEAVES)
    with pytest.raises(ProofError):
        tree.inclusion_proof(8, 8)
    with pytest.raises(ProofError):
        tree.inclusion_proof(0, 9)
    with pytest.raises(ProofError):
        tree.consistency_proof(0, 8)
    with pytest.raises(ProofError):
        tree.consistency_proof(5, 4)
    with pytest.raises(ProofError):
        tree.root(9)


def test_the_merkle_module_does_no_io():
    """The pure Merkle code imports nothing but hashing and typing helpers, and calls no I/O builtins."""
    import ast
    from pathlib import Path

    tree = ast.parse(Path(merkle.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported <= {"__future__", "hashlib", "collections", "typing", "dataclasses", "itertools", "functools"}
    calls = {node.func.id for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    assert not calls & {"open", "print", "input", "exec", "eval", "__import__"}
