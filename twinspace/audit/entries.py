"""Audit entries as bytes: the format every verifier recomputes (pure; no I/O).

Entry body (RFC 8785 canonical JSON, exactly the bytes hashed into the Merkle tree)::

    {"_prev":"<hex leaf hash of entry seq-1, 64 zeros for the first>","_seq":<n>,"_v":1,
     "actor":..,"agreement_id":..,"asset_id":..,"details":{..},"kind":..,"outcome":..,"time":".."}

``_seq`` is 1-based (leaf index = seq - 1; a tree of size n ends with entry n). ``_prev`` chains each
entry to its predecessor so a verifier can name the exact entry that was edited, deleted,
inserted or moved, not only the checkpoint range in which the tree diverges. Details are
sanitised here, so that no caller can put a secret or bulk data into the log.
"""

from __future__ import annotations

import binascii
import hashlib
import json
from itertools import chain
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import Decimal
from enum import Enum
from typing import Any
from uuid import UUID

from twinspace.canonical import canonical_json

try:  # the fast path of entry_body (same bytes as canonical_json; see twinspace.canonical)
    from orjson import OPT_SORT_KEYS as _SORT
    from orjson import JSONEncodeError as _EncodeError
    from orjson import dumps as _dumps
except ImportError:  # pragma: no cover - without orjson every entry takes the general path
    _dumps = None
    _SORT = 0
    _EncodeError = TypeError

FORMAT_VERSION = 1
ZERO_HASH = "0" * 64
MAX_DETAILS_BYTES = 16_384
_SECRET_WORDS = ("password", "secret", "private", "assertion", "credential", "passphrase", "plaintext",
                 "ciphertext", "api_key", "apikey", "access_token", "refresh_token", "id_token", "bearer")
_SECRET_KEYS = {"token", "key_pem", "pem", "jwt", "authorization", "cookie", "row", "rows_data", "data",
                "records", "payload", "values"}
_MAX_STRING = 1024
_MAX_LIST = 64
# Signed messages kept whole (under these keys only) so an auditor re-verifies them offline.
_SIGNED_KEYS = {"jws"}
_MAX_SIGNED = 8192


@dataclass
class Event:
    kind: str
    actor: str | None = None
    outcome: str = "ok"
    asset_id: str | None = None
    agreement_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    time: datetime | None = None


_SECRET_KEY_CACHE: dict[str, bool] = {}


def _is_secret_key(key: str) -> bool:
    """Memoised: the same few detail keys ("rows", "bytes", …) come back in every entry."""
    known = _SECRET_KEY_CACHE.get(key)
    if known is None:
        k = key.lower()
        known = k in _SECRET_KEYS or any(w in k for w in _SECRET_WORDS)
        if len(_SECRET_KEY_CACHE) < 10_000:
            _SECRET_KEY_CACHE[key] = known
    return known


def sanitize(value: Any, *, _depth: int = 0) -> Any:
    """Make ``details`` safe for a permanent log: JSON types only, secrets and bulk data removed.

    Keys that name secrets or row data are replaced by ``"[redacted]"``; long strings and long
    lists are summarised; non-JSON scalars (datetime, UUID, Decimal, Enum) become strings;
    floats that are not finite become strings. Counts (``rows``, ``bytes``) and hashes stay.
    """
    if _depth > 6:
        return "[too deep]"
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            k = str(k)
            if _is_secret_key(k) and not (v is None or isinstance(v, (bool, int))):
                out[k] = "[redacted]"  # numbers (counts, sizes) under such keys are harmless
            elif k in _SIGNED_KEYS and isinstance(v, str) and len(v) <= _MAX_SIGNED:
                out[k] = v
            else:
                out[k] = sanitize(v, _depth=_depth + 1)
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        items = list(value)
        if len(items) > _MAX_LIST:
            return {"summary": f"list of {len(items)} items (not logged)"}
        return [sanitize(v, _depth=_depth + 1) for v in items]
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if abs(value) < 2**53 else str(value)
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else str(value)
    if isinstance(value, str):
        return value if len(value) <= _MAX_STRING else value[:_MAX_STRING] + f"…[{len(value)} chars]"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"summary": f"{len(value)} bytes (not logged)", "sha256": hashlib.sha256(bytes(value)).hexdigest()}
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat() if value.tzinfo else value.isoformat()
    if isinstance(value, Enum):
        return sanitize(value.value, _depth=_depth + 1)
    if isinstance(value, (date, UUID, Decimal)):
        return str(value)
    return str(value)


def canonical(obj: Any) -> bytes:
    """RFC 8785 bytes (``twinspace.canonical`` takes its fast path for the plain JSON entries are)."""
    return canonical_json(obj)


def _flat_details(details: Any) -> dict[str, Any] | None:
    """``sanitize(details)`` for the usual case — a flat dict of strings, ints, bools and None under
    ASCII string keys — in one loop, or None when the general path must decide. The result is also
    in the subset whose RFC 8785 form is sorted-key JSON (ints are cut below 2^53 by sanitize)."""
    if type(details) is not dict:
        return None
    out = {}
    for k, v in details.items():
        if type(k) is not str or not k.isascii():
            return None
        tv = type(v)
        if tv is str:
            if _is_secret_key(k):
                out[k] = "[redacted]"
            elif len(v) <= _MAX_STRING or (k in _SIGNED_KEYS and len(v) <= _MAX_SIGNED):
                out[k] = v
            else:
                out[k] = v[:_MAX_STRING] + f"…[{len(v)} chars]"
        elif tv is int:
            out[k] = v if -2**53 < v < 2**53 else str(v)
        elif v is None or tv is bool:
            out[k] = v
        else:
            return None
    return out


def entry_body(seq: int, prev: str, ev: Event, now: datetime, now_iso: str | None = None) -> bytes:
    """``now_iso``: ``now`` already formatted (a batch formats its shared timestamp once)."""
    stamp = now_iso if ev.time is None and now_iso is not None else \
        (ev.time or now).astimezone(timezone.utc).isoformat()
    details = _flat_details(ev.details or {})
    if details is not None and _dumps is not None and type(ev.kind) is str and type(ev.outcome) is str \
            and (ev.actor is None or type(ev.actor) is str) and (ev.asset_id is None or type(ev.asset_id) is str) \
            and (ev.agreement_id is None or type(ev.agreement_id) is str):
        # Keys in sorted order, every value in the plain subset: RFC 8785 is sorted-key JSON here.
        try:
            data = _dumps({"_prev": prev, "_seq": seq, "_v": FORMAT_VERSION, "actor": ev.actor,
                           "agreement_id": ev.agreement_id, "asset_id": ev.asset_id, "details": details,
                           "kind": ev.kind, "outcome": ev.outcome, "time": stamp}, option=_SORT)
        except _EncodeError:  # a lone surrogate, say: the reference implementation decides
            data = None
        if data is not None and len(data) <= MAX_DETAILS_BYTES + 1024 and type(seq) is int \
                and -2**53 < seq < 2**53:
            return data
    details = sanitize(ev.details or {})
    body = {"_prev": prev, "_seq": seq, "_v": FORMAT_VERSION, "kind": ev.kind, "actor": ev.actor,
            "outcome": ev.outcome, "asset_id": ev.asset_id, "agreement_id": ev.agreement_id,
            "details": details, "time": stamp}
    data = canonical(body)
    if len(data) > MAX_DETAILS_BYTES + 1024:
        body["details"] = {"summary": "details too large (not logged)",
                           "sha256": hashlib.sha256(canonical(details)).hexdigest()}
        data = canonical(body)
    return data


def leaf_hex(body: bytes) -> str:
    return hashlib.sha256(b"\x00" + body).hexdigest()


_PREFIX = b'{"_prev":"'
_SEQ_KEY = b'","_seq":'


def chain_fields(line: bytes) -> tuple[int | None, str | None]:
    """(seq, prev) of an entry; a fast path for canonical bodies, JSON parsing otherwise."""
    if line.startswith(_PREFIX) and line[74:83] == _SEQ_KEY:
        end = line.find(b",", 83)
        digits = line[83:end]
        if end > 0 and digits.isdigit():
            return int(digits), line[10:74].decode("ascii", "replace")
    try:
        obj = json.loads(line)
    except ValueError:
        return None, None
    if not isinstance(obj, dict):
        return None, None
    seq, prev = obj.get("_seq"), obj.get("_prev")
    return (seq if isinstance(seq, int) and not isinstance(seq, bool) else None,
            prev if isinstance(prev, str) else None)


_OPENING = b'{"_prev":"%b","_seq":%d,'.__mod__


def openings_ok(bodies: list[bytes], leaf_hashes: list[bytes], first_seq: int, prev_hex: bytes) -> bool:
    """Whether ``bodies[i]`` opens with ``{"_prev":"<hex of leaf_hashes[i-1]>","_seq":<first_seq+i>,``
    (``prev_hex`` standing for the leaf before the first): a run of canonical entries with intact
    sequence numbers and hash links, checked with one C-level ``startswith`` per entry. False says
    only "look line by line"."""
    prefixes = map(_OPENING, zip(chain((prev_hex,), map(binascii.hexlify, leaf_hashes)),
                                 range(first_seq, first_seq + len(bodies))))
    return all(map(bytes.startswith, bodies, prefixes))
