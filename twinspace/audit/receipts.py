"""Offline check of the data plane's receipts in an exported audit log (light install: no broker).

Each ``transfer.receipt`` entry keeps the connector's signed receipt (``details.jws``). From the log
alone an auditor checks that every receipt

* is signed by a key the log registered for the organisation that posted it (``org.registered`` /
  ``org.key_added`` carry the public keys; a key id is the key's RFC 7638 thumbprint),
* says what the entry says (its claims equal ``details.claims``),
* answers a decision the broker logged (``transfer.decision`` with the same ``decision_id``, transfer
  and agreement) that allowed the pull — no row left a connector without a logged decision,

and counts the consumers' acknowledgements (``transfer.acknowledged``) that match a receipt.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import jwt

from twinspace.crypto import key_id, public_key_from_b64
from twinspace.dataplane import RECEIPT


@dataclass
class ReceiptReport:
    receipts: int = 0
    verified: int = 0           # signature by the posting organisation's registered key, claims as logged
    matched: int = 0            # answers an allowing decision of the same transfer and agreement
    acknowledged: int = 0       # countersigned by the consumer with the same SHA-256
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and self.verified == self.matched == self.receipts


def _entries(lines: Iterable[bytes | str]) -> Iterable[dict[str, Any]]:
    for line in lines:
        if isinstance(line, bytes):
            line = line.decode("utf-8")
        if line.strip():
            yield json.loads(line)


def _verify(jws: str, keys: dict[str, tuple[str, str]], org: str) -> dict[str, Any] | None:
    try:
        header = jwt.get_unverified_header(jws)
        owner, public = keys[header["kid"]]
        if header.get("typ") != RECEIPT or owner != org:
            return None
        claims = jwt.decode(jws, public_key_from_b64(public), algorithms=["EdDSA"],
                            options={"verify_aud": False, "verify_exp": False})
    except (KeyError, jwt.PyJWTError, ValueError):
        return None
    return claims if claims.get("iss") == org else None


def check_receipts(lines: Iterable[bytes | str]) -> ReceiptReport:
    """Every receipt of an exported log (JSON lines of entry bodies), checked as the module says."""
    report = ReceiptReport()
    keys: dict[str, tuple[str, str]] = {}
    decisions: dict[str, dict[str, Any]] = {}
    receipts: dict[str, str] = {}
    for entry in _entries(lines):
        kind, details, seq = entry.get("kind"), entry.get("details") or {}, entry.get("_seq")
        if kind in ("org.registered", "org.key_added") and isinstance(details.get("public_key"), str):
            try:
                if key_id(public_key_from_b64(details["public_key"])) == details.get("kid"):
                    keys[details["kid"]] = (details["org_id"], details["public_key"])
            except ValueError:
                report.problems.append(f"entry {seq}: a registered key does not parse")
        elif kind == "transfer.decision":
            decisions[str(details.get("decision_id"))] = details
        elif kind == "transfer.receipt" and (details.get("claims") or {}).get("kind", "transfer") == "transfer":
            report.receipts += 1
            claims = _verify(str(details.get("jws", "")), keys, str(entry.get("actor")))
            if claims is None or claims != details.get("claims"):
                report.problems.append(f"entry {seq}: the receipt's signature or claims do not check")
                continue
            report.verified += 1
            receipts[str(claims.get("receipt_id") or claims.get("jti"))] = str(claims.get("sha256"))
            decision = decisions.get(str(claims.get("decision_id")))
            if (decision is None or not decision.get("allow") or decision.get("transfer_id") != claims.get("tpid")
                    or entry.get("agreement_id") != claims.get("agr")):
                report.problems.append(f"entry {seq}: receipt {claims.get('receipt_id')} answers no logged "
                                       "allowing decision of its transfer")
                continue
            report.matched += 1
        elif kind == "transfer.acknowledged" and details.get("matches"):
            if receipts.get(str(details.get("receipt_id"))) == details.get("sha256"):
                report.acknowledged += 1
    return report
