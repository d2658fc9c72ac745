"""Entry bodies: the fast path of ``entry_body`` writes exactly the bytes of the general path
(sanitize, then RFC 8785 through ``rfc8785`` itself), for any details a caller may pass."""

from __future__ import annotations

from datetime import datetime, timezone

import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from twinspace.audit import entries
from twinspace.audit.entries import Event, entry_body, sanitize

NOW = datetime(2026, 12, 1, 12, 30, tzinfo=timezone.utc)


def reference_body(seq: int, prev: str, ev: Event) -> bytes:
    """The definition: sanitised details, RFC 8785 by the reference implementation, the size cap."""
    details = sanitize(ev.details or {})
    body = {"_prev": prev, "_seq": seq, "_v": 1, "kind": ev.kind, "actor": ev.actor, "outcome": ev.outcome,
            "asset_id": ev.asset_id, "agreement_id": ev.agreement_id, "details": details,
            "time": (ev.time or NOW).astimezone(timezone.utc).isoformat()}
    data = rfc8785.dumps(body)
    if len(data) > entries.MAX_DETAILS_BYTES + 1024:
        import hashlib

        body["details"] = {"summary": "details too large (not logged)",
                           "sha256": hashlib.sha256(rfc8785.dumps(details)).hexdigest()}
        data = rfc8785.dumps(body)
    return data


texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
keys = st.sampled_from(["rows", "bytes", "reason", "token", "password", "jws", "org_id", "data", "key_pem",
                        "é", "Zeta", "a b", "api_key_id", "\U0001F600"]) | st.text(max_size=6)
scalars = (st.none() | st.booleans() | st.integers(-(2**60), 2**60) | texts
           | st.text(st.sampled_from("ab€\u2028"), min_size=1000, max_size=1100)
           | st.floats(allow_nan=False, allow_infinity=False))
details = st.dictionaries(keys, scalars | st.lists(scalars, max_size=3) | st.dictionaries(keys, scalars, max_size=3),
                          max_size=8)
ids = st.none() | texts


@settings(max_examples=400, deadline=None)
@given(details, st.integers(1, 2**40), texts, ids, ids, ids, st.sampled_from(["ok", "deny", "error"]))
def test_entry_body_equals_the_reference(d, seq, kind, actor, asset, agreement, outcome):
    ev = Event(kind or "k", actor, outcome, asset, agreement, d)
    prev = "ab" * 32
    assert entry_body(seq, prev, ev, NOW, NOW.isoformat()) == reference_body(seq, prev, ev)


def test_flat_details_take_the_fast_path_and_big_ones_do_not():
    assert entries._flat_details({"rows": 3, "token": "x", "ok": True, "n": None, "big": 2**60}) == \
        {"rows": 3, "token": "[redacted]", "ok": True, "n": None, "big": str(2**60)}
    assert entries._flat_details({"nested": {"a": 1}}) is None
    assert entries._flat_details({"f": 1.5}) is None
    ev = Event("k", "a", details={f"k{i}": "x" * 1000 for i in range(40)})  # over the size cap
    assert entry_body(1, "0" * 64, ev, NOW) == reference_body(1, "0" * 64, ev)
    lone = Event("k", "a", details={"s": "\ud800"})
    try:
        want = reference_body(1, "0" * 64, lone)
    except Exception as exc:  # noqa: BLE001
        want = type(exc)
    try:
        got = entry_body(1, "0" * 64, lone, NOW)
    except Exception as exc:  # noqa: BLE001
        got = type(exc)
    assert got == want
