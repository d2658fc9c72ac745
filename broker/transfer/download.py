"""The management API's download under an agreement (``GET /contracts/agreements/{id}/data``)."""

from __future__ import annotations

import hashlib
from typing import Any

from sqlmodel import Session

from broker.audit import record_event
from broker.contracts import access
from broker.contracts import service as contracts
from broker.settings import Settings
from broker.transfer.dataplane import MEDIA_TYPES, apply_obligations, encode, merge_obligations
from twinspace.errors import BadRequest, Forbidden


def pull_data(session: Session, settings: Settings, principal: Any, agreement_id: str,
              fmt: str = "csv") -> tuple[str, list[bytes], dict[str, Any]]:
    """The consumer's download under an agreement: ``require_active_agreement``, ``ACCESS_DECIDER``, then the
    strictest of the agreement's and the decider's ``max_rows`` / ``columns`` obligations. Returns
    ``(media_type, chunks, summary)``; the transfer (rows, bytes, hashes — no row data) is audited."""
    from broker.catalog.vault import load_table

    if fmt not in ("csv", "json"):
        raise BadRequest("format must be csv or json.", code="unsupported_format")
    try:
        agreement = contracts.require_active_agreement(session, agreement_id, principal.org_id)
    except Exception as exc:
        contracts._log_refusal(session, "contract.data_refused", actor=principal.org_id,
                     agreement=session.get(contracts.Agreement, agreement_id),
                     details={"code": getattr(exc, "code", type(exc).__name__)})
        raise
    usage = {"format": fmt, "purpose": agreement.purpose, "scenario": agreement.scenario}
    allow, reasons, extra = access.ACCESS_DECIDER(session, agreement, principal, "read", usage)
    if not allow:
        contracts._log_refusal(session, "contract.data_refused", actor=principal.org_id, agreement=agreement,
                     details={"code": "access_denied", "reasons": [str(r)[:200] for r in reasons][:10]})
        raise Forbidden("Access refused: " + "; ".join(str(r) for r in reasons)[:500], code="access_denied",
                        extra={"reasons": [str(r) for r in reasons]})
    obligations = merge_obligations(agreement.obligations, extra or {})
    table = load_table(session, agreement.asset_id, agreement.asset_version, settings=settings)
    table = apply_obligations(table, max_rows=obligations["max_rows"], columns=obligations["columns"])
    chunks = [c for c in encode(table, fmt) if c]
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    summary = {"format": fmt, "rows": table.num_rows, "columns": table.column_names,
               "bytes": sum(len(c) for c in chunks), "sha256": digest.hexdigest(),
               "content_hash": agreement.content_hash, "asset_version": agreement.asset_version,
               "obligations": obligations, "reasons": [str(r)[:200] for r in reasons][:10]}
    record_event(session, "contract.data_transfer", actor=principal.org_id, asset_id=agreement.asset_id,
                 agreement_id=agreement.id, details=summary)
    return MEDIA_TYPES[fmt], chunks, summary
