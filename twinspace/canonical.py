"""RFC 8785 JSON Canonicalization: the exact bytes we sign and hash."""

from __future__ import annotations

import hashlib
from typing import Any

import rfc8785


def canonical_json(obj: Any) -> bytes:
    """Serialise ``obj`` per RFC 8785 (sorted keys, no whitespace, ES6 number form)."""
    return rfc8785.dumps(obj)


def canonical_sha256(obj: Any) -> str:
    """Hex SHA-256 of the canonical form; used for input and document hashes."""
    return hashlib.sha256(canonical_json(obj)).hexdigest()
