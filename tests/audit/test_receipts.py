"""An auditor matches every connector receipt to the broker's decision, offline, from the exported log."""

from __future__ import annotations

import json
import time

from twinspace.audit.receipts import check_receipts
from twinspace.crypto import generate_key
from twinspace.dataplane import RECEIPT, sign_message


def _export(world) -> list[str]:
    response = world.auditor.client.http.get("/audit/export", headers=world.auditor.headers())
    assert response.status_code == 200, response.text
    return [line for line in response.text.splitlines() if line.strip()]


def _pulled(world, n: int = 2, acknowledge: int = 1) -> list[str]:
    agreement = world.agreement()
    tp = world.consumer.client.transfer_request(agreement["id"])
    for i in range(n):
        world.consumer.client.transfer_pull(tp, "csv", acknowledge=i < acknowledge)
    deadline = time.time() + 10  # a connector delivers receipts just after the body, in batches
    while True:
        lines = _export(world)
        if sum(json.loads(x)["kind"] == "transfer.receipt" for x in lines) >= n or time.time() > deadline:
            return lines
        time.sleep(0.05)


def _rewrite(lines: list[str], kind: str, change) -> list[str]:
    out, done = [], False
    for line in lines:
        entry = json.loads(line)
        if not done and entry["kind"] == kind:
            entry, done = change(entry), True
            if entry is None:
                continue
        out.append(json.dumps(entry))
    assert done, kind
    return out


def test_every_receipt_is_signed_and_answers_a_logged_decision(world):
    report = check_receipts(_pulled(world))
    assert (report.receipts, report.verified, report.matched, report.acknowledged) == (2, 2, 2, 1)
    assert report.ok and report.problems == []


def test_a_receipt_whose_claims_were_edited_is_caught(world):
    def inflate(entry):
        entry["details"]["claims"]["rows"] += 1000
        return entry

    report = check_receipts(_rewrite(_pulled(world), "transfer.receipt", inflate))
    assert not report.ok and report.verified == 1 and "signature or claims" in report.problems[0]


def test_a_receipt_without_its_decision_is_caught(world):
    report = check_receipts(_rewrite(_pulled(world, 1, 0), "transfer.decision", lambda entry: None))
    assert not report.ok and report.matched == 0 and "no logged allowing decision" in report.problems[0]


def test_a_receipt_signed_by_a_key_the_log_never_registered_is_caught(world):
    def forge(entry):
        claims = entry["details"]["claims"]
        entry["details"]["jws"] = sign_message(generate_key(), RECEIPT, issuer=claims["iss"], audience=claims["aud"],
                                               claims={k: v for k, v in claims.items()
                                                       if k not in ("iss", "aud", "iat", "exp")})
        return entry

    report = check_receipts(_rewrite(_pulled(world, 1, 0), "transfer.receipt", forge))
    assert not report.ok and report.verified == 0
