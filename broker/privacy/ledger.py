"""Privacy-budget ledger: reserve epsilon atomically before a query runs, commit it when the result
is returned, release it when the query is refused or fails — so a refused query never costs budget
and concurrent queries on several replicas can never overspend.

Each step is one conditional SQL UPDATE (no read-modify-write), so it is safe across processes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from broker.audit import record_event
from twinspace.errors import BadRequest, TooManyRequests
from broker.privacy.models import PrivacyBudget

_EPS = 1e-12  # float slack so a budget of exactly 1.0 admits ten queries of 0.1


@dataclass(frozen=True)
class Reservation:
    agreement_id: str
    epsilon: float


def ensure_budget(session: Session, agreement_id: str, epsilon_total: float) -> PrivacyBudget:
    """Create the agreement's budget on first use (the total comes from the agreement's policy)."""
    budget = session.get(PrivacyBudget, agreement_id)
    if budget is None:
        try:
            with session.begin_nested():
                session.add(PrivacyBudget(agreement_id=agreement_id, epsilon_total=epsilon_total))
        except IntegrityError:  # another replica created it first
            pass
        budget = session.get(PrivacyBudget, agreement_id)
    return budget


def remaining(session: Session, agreement_id: str) -> float:
    budget = session.get(PrivacyBudget, agreement_id)
    if budget is None:
        return 0.0
    session.refresh(budget)
    return budget.epsilon_total - budget.epsilon_spent - budget.epsilon_reserved


def reserve(session: Session, agreement_id: str, epsilon: float, *, actor: str) -> Reservation:
    if not 0 < epsilon <= 10:
        raise BadRequest("epsilon per query must be in (0, 10].", code="invalid_epsilon")
    table = PrivacyBudget.__table__.c
    result = session.execute(
        update(PrivacyBudget)
        .where(PrivacyBudget.agreement_id == agreement_id,
               table.epsilon_spent + table.epsilon_reserved + epsilon <= table.epsilon_total + _EPS)
        .values(epsilon_reserved=table.epsilon_reserved + epsilon, updated_at=datetime.now(timezone.utc)))
    if result.rowcount != 1:
        raise TooManyRequests("The agreement's privacy budget is exhausted; no query was run.",
                              code="privacy_budget_exhausted")
    return Reservation(agreement_id, epsilon)


def commit(session: Session, reservation: Reservation, *, actor: str, details: dict | None = None) -> None:
    """Turn the reservation into spent budget and record the debit in the audit log."""
    table = PrivacyBudget.__table__.c
    session.execute(update(PrivacyBudget).where(PrivacyBudget.agreement_id == reservation.agreement_id)
                    .values(epsilon_reserved=table.epsilon_reserved - reservation.epsilon,
                            epsilon_spent=table.epsilon_spent + reservation.epsilon, queries=table.queries + 1,
                            updated_at=datetime.now(timezone.utc)))
    record_event(session, "privacy.budget_debited", actor=actor, agreement_id=reservation.agreement_id,
                 details={"epsilon": reservation.epsilon, **(details or {})})


def release(session: Session, reservation: Reservation) -> None:
    table = PrivacyBudget.__table__.c
    session.execute(update(PrivacyBudget).where(PrivacyBudget.agreement_id == reservation.agreement_id)
                    .values(epsilon_reserved=table.epsilon_reserved - reservation.epsilon,
                            updated_at=datetime.now(timezone.utc)))
