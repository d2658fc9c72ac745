"""An audit bundle: what an auditor takes away to verify the log offline, as plain files.

``entries.jsonl`` (one canonical entry per line, as exported), ``checkpoints.jsonl`` (``{"note": ...}``
per line), ``log.vkey`` (the log's verifier key — check it against the one obtained out of band) and,
where the log was anchored, ``anchors.json`` (the ``Anchored`` events as read from a chain node when
the bundle was made; an auditor with a node of its own reads them again with ``--rpc-url``).
"""

from __future__ import annotations

import base64

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from twinspace.audit.verify import AnchorRecord

ENTRIES, CHECKPOINTS, VKEY, ANCHORS = "entries.jsonl", "checkpoints.jsonl", "log.vkey", "anchors.json"


class BundleError(ValueError):
    """A bundle file is missing or malformed."""


def file_lines(path: Path, chunk: int = 1 << 20) -> Iterator[bytes]:
    with open(path, "rb", buffering=chunk) as fh:
        yield from fh


def read_checkpoint_file(path: Path) -> list[str]:
    """Checkpoints exported as JSONL ({"note": ...} per line) or a single signed note."""
    raw = Path(path).read_text(encoding="utf-8")
    if not raw.lstrip().startswith("{"):
        return [raw]
    notes = []
    for n, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            notes.append(json.loads(line)["note"])
        except (ValueError, KeyError, TypeError) as exc:
            raise BundleError(f"{path}: line {n} is not a {{\"note\": ...}} object") from exc
    return notes


def anchors_to_json(anchors: Iterable[AnchorRecord]) -> list[dict]:
    """Roots in base64, as in signed checkpoints and every API answer."""
    return [{"tree_size": a.tree_size, "root_hash": base64.b64encode(a.root_hash).decode(),
             "block_number": a.block_number, "tx_hash": a.tx_hash} for a in anchors]


def root_bytes(text: str) -> bytes:
    """A 32-byte root written in base64 (TwinSpace's form) or hex (as chain explorers show bytes32)."""
    text = str(text).strip().removeprefix("0x")
    raw = bytes.fromhex(text) if len(text) == 64 else base64.b64decode(text, validate=True)
    if len(raw) != 32:
        raise ValueError("a root hash is 32 bytes")
    return raw


def anchors_from_json(items: list) -> list[AnchorRecord]:
    try:
        return [AnchorRecord(int(a["tree_size"]), root_bytes(a["root_hash"]), a.get("block_number"),
                             a.get("tx_hash")) for a in items]
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{ANCHORS}: not a list of anchors ({exc})") from exc


def write_bundle(directory: Path, entries: bytes, notes: list[str], vkey: str,
                 anchors: list[AnchorRecord] | None = None, *, chain: dict | None = None) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / ENTRIES).write_bytes(entries)
    (directory / CHECKPOINTS).write_text("".join(json.dumps({"note": n}) + "\n" for n in notes), encoding="utf-8")
    (directory / VKEY).write_text(vkey + "\n", encoding="utf-8")
    if anchors is not None:
        (directory / ANCHORS).write_text(json.dumps({"chain": chain or {}, "anchors": anchors_to_json(anchors)},
                                                    indent=2), encoding="utf-8")
    return directory


@dataclass
class Bundle:
    entries: Path
    notes: list[str]
    vkey: str
    anchors: list[AnchorRecord] | None
    chain: dict


def read_bundle(directory: Path) -> Bundle:
    directory = Path(directory)
    if not (directory / ENTRIES).is_file():
        raise BundleError(f"{directory} is not an audit bundle: {ENTRIES} is missing")
    notes = read_checkpoint_file(directory / CHECKPOINTS) if (directory / CHECKPOINTS).is_file() else []
    vkey = (directory / VKEY).read_text(encoding="utf-8").strip() if (directory / VKEY).is_file() else ""
    anchors, chain = None, {}
    if (directory / ANCHORS).is_file():
        try:
            doc = json.loads((directory / ANCHORS).read_text(encoding="utf-8"))
        except ValueError as exc:
            raise BundleError(f"{ANCHORS} is not JSON") from exc
        anchors, chain = anchors_from_json(doc.get("anchors", [])), doc.get("chain") or {}
    return Bundle(directory / ENTRIES, notes, vkey, anchors, chain)


def fetch_bundle(client, out_dir: Path) -> dict:
    """Download the full export and every checkpoint through the API as an auditor, as a bundle.

    ``client`` is a ``twinspace.client.broker.BrokerClient``. ``log.vkey`` holds the key the broker
    *claims*: compare it with the one obtained out of band (``verify --key``)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = 0
    with open(out_dir / ENTRIES, "wb") as fh:
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
    with open(out_dir / CHECKPOINTS, "w", encoding="utf-8") as fh:
        while True:
            page = client.get("/audit/checkpoints", params={"after": after, "limit": 1000})["checkpoints"]
            for cp in page:
                fh.write(json.dumps(cp) + "\n")
            checkpoints += len(page)
            if len(page) < 1000:
                break
            after = page[-1]["tree_size"]
    claimed = client.get("/audit/key")["vkey"]
    (out_dir / VKEY).write_text(claimed + "\n", encoding="utf-8")
    return {"entries": entries, "checkpoints": checkpoints, "claimed_vkey": claimed}
