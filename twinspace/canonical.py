"""RFC 8785 JSON Canonicalization: the exact bytes we sign and hash.

Fast path: for the JSON subset TwinSpace signs and logs — strings, integers within ±(2^53−1),
booleans, null, lists and objects with ASCII keys, no floats — RFC 8785 output equals plain
sorted-key JSON without whitespace, so orjson (Rust, ~50x faster) writes it. Anything else (floats,
whose ES6 number form differs, non-ASCII keys, whose UTF-16 sort order may differ, huge integers,
lone surrogates, other types) goes to the ``rfc8785`` reference implementation.
``tests/foundation/test_canonical.py`` checks byte equality with ``rfc8785`` by property testing.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import rfc8785

try:  # an optional speed-up (in the broker extra); the result is identical without it
    import orjson
except ImportError:  # pragma: no cover - exercised where orjson is absent
    orjson = None

_MAX_SAFE = 2**53 - 1


def _plain(value: Any) -> bool:
    """True for the subset whose RFC 8785 form is sorted-key JSON (leaves checked inline: this runs
    for every audit entry and policy input)."""
    t = type(value)
    if t is dict:
        for k, v in value.items():
            if type(k) is not str or not k.isascii():
                return False
            tv = type(v)
            if tv is str or v is None or tv is bool or (tv is int and -_MAX_SAFE <= v <= _MAX_SAFE):
                continue
            if tv is float or not _plain(v):
                return False
        return True
    if t is list:
        for v in value:
            tv = type(v)
            if tv is str or v is None or tv is bool or (tv is int and -_MAX_SAFE <= v <= _MAX_SAFE):
                continue
            if tv is float or not _plain(v):
                return False
        return True
    if t is str or value is None or t is bool:
        return True
    if t is int:
        return -_MAX_SAFE <= value <= _MAX_SAFE
    return False


def canonical_json(obj: Any) -> bytes:
    """Serialise ``obj`` per RFC 8785 (sorted keys, no whitespace, ES6 number form)."""
    if _plain(obj):
        if orjson is not None:
            try:
                return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
            except orjson.JSONEncodeError:  # lone surrogates, too deep: the reference decides
                pass
        else:
            try:
                return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                                  allow_nan=False).encode("utf-8")
            except (UnicodeEncodeError, RecursionError):
                pass
    return rfc8785.dumps(obj)


def canonical_sha256(obj: Any) -> str:
    """Hex SHA-256 of the canonical form; used for input and document hashes."""
    return hashlib.sha256(canonical_json(obj)).hexdigest()
