"""Shared pieces of the contract services: the clock, lookups with party checks, the state move."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from sqlmodel import Session, col, select

from broker.audit import record_event
from broker.contracts.models import Agreement, ContractNegotiation
from broker.settings import Settings
from twinspace import agreements
from twinspace.dsp.states import NegotiationState as S
from twinspace.dsp.states import check_negotiation
from twinspace.errors import BadRequest, Forbidden, NotFound


READ_ALL_ROLES = ("operator", "auditor")


def now() -> datetime:
    """The service clock (tests move it to exercise expiry)."""
    return datetime.now(timezone.utc)


def _utc(dt: datetime | None) -> datetime | None:
    if dt is None:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def _parse_time(text: str, field: str) -> datetime:
    try:
        value = agreements.parse_iso(text)
    except ValueError:
        raise BadRequest(f"{field} must be an ISO 8601 date-time.", code="invalid_time") from None
    return _utc(value)


def _validity_end(settings: Settings, start: datetime, requested: datetime | None) -> datetime:
    longest = start + timedelta(days=settings.contract_max_validity_days)
    end = requested or start + timedelta(days=settings.contract_default_validity_days)
    if end <= start:
        raise BadRequest("The requested validity ends in the past.", code="invalid_validity")
    if end > longest:
        raise BadRequest(f"Agreements last at most {settings.contract_max_validity_days} days.",
                         code="invalid_validity")
    return end


# --------------------------------------------------------------------------- lookups
def get_negotiation(session: Session, negotiation_id: str, principal: Any, *, lock: bool = False) -> ContractNegotiation:
    """A negotiation the principal is party to (operators and auditors see all); NotFound otherwise."""
    stmt = select(ContractNegotiation).where(ContractNegotiation.id == negotiation_id)
    if lock:
        stmt = stmt.with_for_update()
    neg = session.exec(stmt).first()
    if neg is None or (principal.role not in READ_ALL_ROLES
                       and principal.org_id not in (neg.consumer_id, neg.provider_id)):
        raise NotFound(f"No negotiation {negotiation_id}.", code="negotiation_not_found")
    return neg


def get_agreement(session: Session, agreement_id: str, principal: Any | None = None) -> Agreement:
    agreement = session.get(Agreement, agreement_id)
    if agreement is None or (principal is not None and principal.role not in READ_ALL_ROLES
                             and principal.org_id not in (agreement.consumer_id, agreement.provider_id)):
        raise NotFound(f"No agreement {agreement_id}.", code="agreement_not_found")
    return agreement


def list_negotiations(session: Session, principal: Any, *, state: str | None = None,
                      limit: int = 100) -> list[ContractNegotiation]:
    stmt = select(ContractNegotiation).order_by(col(ContractNegotiation.created_at).desc()).limit(limit)
    if principal.role not in READ_ALL_ROLES:
        stmt = stmt.where((ContractNegotiation.consumer_id == principal.org_id)
                          | (ContractNegotiation.provider_id == principal.org_id))
    if state:
        stmt = stmt.where(ContractNegotiation.state == state)
    return list(session.exec(stmt).all())


def list_agreements(session: Session, principal: Any, *, status: str | None = None,
                    asset_id: str | None = None, limit: int = 100) -> list[Agreement]:
    stmt = select(Agreement).order_by(col(Agreement.created_at).desc()).limit(limit)
    if principal.role not in READ_ALL_ROLES:
        stmt = stmt.where((Agreement.consumer_id == principal.org_id) | (Agreement.provider_id == principal.org_id))
    if status:
        stmt = stmt.where(Agreement.status == status)
    if asset_id:
        stmt = stmt.where(Agreement.asset_id == asset_id)
    return list(session.exec(stmt).all())


def _require_party(neg: ContractNegotiation, principal: Any, role: str) -> None:
    expected = neg.consumer_id if role == "consumer" else neg.provider_id
    if principal.org_id != expected:
        raise Forbidden(f"Only the negotiation's {role} sends this message.", code="wrong_party")


def _check_pids(neg: ContractNegotiation, provider_pid: str, consumer_pid: str) -> None:
    if provider_pid != neg.id or consumer_pid != neg.consumer_pid:
        raise BadRequest("providerPid/consumerPid do not identify this negotiation.", code="pid_mismatch")


def _move(session: Session, neg: ContractNegotiation, target: S, *, actor: str, kind: str,
          details: dict[str, Any] | None = None) -> None:
    previous = neg.state
    check_negotiation(previous, target.value)
    neg.state = target.value
    neg.updated_at = now()
    session.add(neg)
    session.flush()
    record_event(session, kind, actor=actor, asset_id=neg.asset_id, agreement_id=neg.agreement_id,
                 details={"negotiation_id": neg.id, "from": previous, "to": target.value, **(details or {})})
