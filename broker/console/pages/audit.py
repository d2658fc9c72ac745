"""Who accessed what (providers) and the audit explorer (auditors)."""

from __future__ import annotations

import base64
from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from sqlmodel import Session

from broker.api.deps import ALL_ROLES, Principal, db_session, get_runtime
from broker.console import charts
from broker.console.auth import console_roles
from broker.console.views import AUDITOR, PROVIDER, render
from twinspace.errors import BadRequest, Forbidden, TwinSpaceError

router = APIRouter()


# --------------------------------------------------------------------------- provider: who accessed what
ACCESS_KINDS = ("transfer.", "contract.", "policy.", "request.refused")


@router.get("/access")
def access_log(request: Request, principal: Principal = console_roles(*PROVIDER),
               session: Session = db_session) -> Response:
    """Events about this provider's own assets (pulls, transfers, agreements, denials): who accessed what."""
    from sqlmodel import col, select

    from broker.audit.models import AuditEntry
    from broker.catalog.models import Asset
    from broker.transfer import service as transfers

    own = set(session.exec(select(Asset.id).where(Asset.provider_id == principal.org_id)).all())
    entries = []
    if own:
        rows = session.exec(select(AuditEntry).where(col(AuditEntry.asset_id).in_(own))
                            .order_by(col(AuditEntry.seq).desc()).limit(500)).all()
        entries = [charts.entry_row(e) for e in rows]
    tps = [transfers.view(tp)["twin:transfer"] | {"state": tp.state}
           for tp in transfers.list_transfers(session, principal, limit=500) if tp.provider_id == principal.org_id]
    return render(request, "access.html", principal, session, entries=entries, transfers=tps,
                  volume_svg=charts.volume_chart(entries), denial_svg=charts.denial_chart(entries))


# --------------------------------------------------------------------------- auditor: audit explorer
def _parse_dt(value: str | None, name: str) -> datetime | None:
    if not value:
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise BadRequest(f"{name} must be an ISO 8601 date or time.", code="bad_time") from None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


@router.get("/audit")
def audit(request: Request, org: str | None = Query(None, max_length=64), kind: str | None = Query(None, max_length=64),
          outcome: str | None = Query(None, max_length=16), asset_id: str | None = Query(None, max_length=64),
          agreement_id: str | None = Query(None, max_length=64), since: str | None = Query(None, max_length=40),
          until: str | None = Query(None, max_length=40), after_seq: int = Query(0, ge=0),
          principal: Principal = console_roles(*AUDITOR), session: Session = db_session) -> Response:
    from broker.audit import service
    from broker.audit.anchor import get_anchorer

    runtime = get_runtime(request)
    f = service.EntryFilter(org=org or None, kind=kind or None, outcome=outcome or None, asset_id=asset_id or None,
                            agreement_id=agreement_id or None, since=_parse_dt(since, "since"),
                            until=_parse_dt(until, "until"), after_seq=after_seq, limit=100)
    entries = [charts.entry_row(e) for e in service.query_entries(session, f)]
    chart_rows = [charts.entry_row(e) for e in service.query_entries(
        session, service.EntryFilter(org=f.org, kind=f.kind, outcome=f.outcome, asset_id=f.asset_id,
                                     agreement_id=f.agreement_id, since=f.since, until=f.until, limit=1000))]
    cp = service.latest_checkpoint(session)
    try:
        anchoring = get_anchorer(runtime).status()
    except Exception as exc:  # noqa: BLE001 - the page shows the anchoring problem instead of failing
        anchoring = {"mode": "unavailable", "error": type(exc).__name__}
    return render(request, "audit.html", principal, session, entries=entries, log_size=service.log_size(session),
                  checkpoint=service.checkpoint_json(cp) if cp else None, anchoring=anchoring,
                  filters={"org": org or "", "kind": kind or "", "outcome": outcome or "", "asset_id": asset_id or "",
                           "agreement_id": agreement_id or "", "since": since or "", "until": until or ""},
                  next_after=entries[-1]["seq"] if len(entries) == 100 else None,
                  volume_svg=charts.volume_chart(chart_rows), denial_svg=charts.denial_chart(chart_rows),
                  vkey=service.log_vkey(runtime))


@router.get("/audit/monitor")
def audit_monitor(request: Request, principal: Principal = console_roles("auditor", "operator")) -> Response:
    """The auditor's witness in the browser: the trusted checkpoint is kept in this browser (not on the
    broker), the newest one is checked against the log key and the broker's consistency proof, in
    JavaScript, like ``twinspace audit monitor``."""
    from broker.audit import service

    runtime = get_runtime(request)
    try:
        latest = service.checkpoint_json(service.current_checkpoint(runtime))
    except TwinSpaceError:
        latest = None
    return render(request, "audit_monitor.html", principal, None, latest=latest, vkey=service.log_vkey(runtime))


@router.get("/audit/monitor/consistency")
def audit_monitor_consistency(request: Request, first: int = Query(..., ge=1), second: int = Query(..., ge=1),
                              principal: Principal = console_roles("auditor", "operator"),
                              session: Session = db_session) -> dict[str, Any]:
    """The consistency proof between two tree sizes (JSON), for the monitor page's own check."""
    from broker.audit import service

    return service.consistency_proof(get_runtime(request), session, first, second)


@router.get("/audit/entries/{seq}")
def audit_entry(seq: int, request: Request, principal: Principal = console_roles(*AUDITOR),
                session: Session = db_session) -> Response:
    import json

    from broker.audit import service

    runtime = get_runtime(request)
    entry = service.entry_json(service.get_entry(session, seq))
    try:
        service.current_checkpoint(runtime)
        proof = service.inclusion_proof(runtime, session, seq)
    except TwinSpaceError as exc:
        proof = {"error": exc.detail}
    return render(request, "audit_entry.html", principal, session, entry=entry,
                  entry_pretty=json.dumps(entry["entry"], indent=2, ensure_ascii=False), proof=proof,
                  vkey=service.log_vkey(runtime))


@router.get("/audit/entries/{seq}/receipt")
def audit_receipt(seq: int, request: Request, principal: Principal = console_roles(*ALL_ROLES),
                  session: Session = db_session) -> JSONResponse:
    """The same rule as GET /audit/entries/{seq}/receipt: auditors, operators and the entry's own actor."""
    from broker.audit import service
    from broker.audit.api import OVERSIGHT

    runtime = get_runtime(request)
    entry = service.get_entry(session, seq)
    if principal.role not in OVERSIGHT and entry.actor != principal.org_id:
        raise Forbidden("Receipts are for auditors, operators and the entry's own organisation.",
                        code="not_your_entry")
    service.current_checkpoint(runtime)
    return JSONResponse(service.make_receipt(runtime, session, seq),
                        headers={"Content-Disposition": f'attachment; filename="receipt-{seq}.json"'})


@router.post("/audit/verify")
def audit_verify(request: Request, principal: Principal = console_roles(*AUDITOR)) -> dict[str, Any]:
    """One click: sign a fresh checkpoint, then recompute the whole tree from the stored entries and check
    every checkpoint signature, the hash chain and the indexed columns (what ``twinspace audit verify`` does)."""
    from broker.audit import log_event, service, tools
    from twinspace.audit.verify import verify_log

    runtime = get_runtime(request)
    try:
        service.create_checkpoint(runtime)
    except TwinSpaceError:
        pass  # a tampered log is refused for signing; the verification below names the problem
    mismatches: list[tuple[int, str]] = []
    report = verify_log(tools.db_lines_checked(runtime.engine, mismatches), tools.db_checkpoint_notes(runtime.engine),
                        service.log_vkey(runtime), head=tools.db_head(runtime.engine))
    for seq, message in mismatches:
        report.add(seq, "column_mismatch", message)
    result = report.to_json()
    result["root_hash"] = base64.b64encode(report.root_hash).decode()  # as in checkpoints and proofs
    log_event(runtime.engine, "audit.verified", actor=principal.org_id, outcome="ok" if report.ok else "error",
              details={"ok": report.ok, "entries": result.get("entries_verified", result.get("entries"))})
    return result
