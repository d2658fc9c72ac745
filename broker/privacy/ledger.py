"""Privacy-budget ledger: one account per (consumer organisation, asset), shared by every agreement and
every version, on SQLite and PostgreSQL with any number of workers.

A query reserves its cost before it reads data and settles it afterwards: ``commit`` (answered, or
refused after reading data: both are charged) or ``release`` (it failed before reading data, or the
charge could not be recorded — then the consumer gets no answer either). Rules that keep it sound:

- one lock order everywhere: the account row first (``SELECT … FOR UPDATE``), then its reservations,
  then the audit head (``record_event`` is always the last write of a transaction);
- every step is its own short transaction, retried on deadlock / serialisation failure / a locked
  SQLite database, then refused with 503 ``ledger_busy`` (never a 500);
- a reservation whose query never settled expires after ``RESERVATION_TTL`` seconds and is given
  back by the next reservation on the account; a commit that finds its reservation expired charges
  only if the budget still allows it, so expiry never lets the account overspend.
"""

from __future__ import annotations

import random
import secrets
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, TypeVar

from sqlalchemy import delete, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlmodel import Session

from broker.audit import record_event
from twinspace.errors import Forbidden, ServiceUnavailable, TooManyRequests
from broker.privacy.models import PrivacyAccount, PrivacyReservation
from broker.storage.db import session_scope

UNIT = 10**9           # amounts are integers of 1e-9 ε: ten queries of 0.1 spend exactly 1.0
RESERVATION_TTL = 600  # seconds; far longer than any query runs
ATTEMPTS = 12
T = TypeVar("T")


@dataclass(frozen=True)
class Reservation:
    id: str
    account: str
    units: int

    @property
    def cost(self) -> float:
        return self.units / UNIT


def units(cost: float) -> int:
    """A privacy cost in ledger units (rounded up: never charge less than asked)."""
    return max(1, -(-round(cost * UNIT * 1000) // 1000))


def account_key(consumer_id: str, asset_id: str) -> str:
    return f"{consumer_id}|{asset_id}"


def _transient(exc: BaseException) -> bool:
    """Deadlock, serialisation failure or a busy SQLite file: safe to retry the whole transaction."""
    if not isinstance(exc, DBAPIError):
        return False
    code = getattr(getattr(exc, "orig", None), "sqlstate", None) or getattr(getattr(exc, "orig", None), "pgcode", None)
    text = str(getattr(exc, "orig", exc)).lower()
    return code in ("40P01", "40001", "55P03") or "database is locked" in text or "deadlock" in text


def _retrying(engine: Engine, step: Callable[[Session], T]) -> T:
    for attempt in range(ATTEMPTS):
        try:
            with session_scope(engine) as session:
                return step(session)
        except DBAPIError as exc:
            if not _transient(exc):
                raise
            time.sleep(random.uniform(0, 0.01 * 2 ** min(attempt, 6)))  # noqa: S311 - jitter, not a secret
    raise ServiceUnavailable("The privacy ledger is busy; no query was run. Try again.", code="ledger_busy")


def _lock(session: Session, key: str) -> PrivacyAccount | None:
    """Take the account row's lock (the first lock of every ledger transaction)."""
    return session.execute(select(PrivacyAccount).where(PrivacyAccount.key == key).with_for_update()
                           .execution_options(populate_existing=True)).scalar_one_or_none()


def _expire(session: Session, key: str, now: float) -> None:
    stale = session.execute(select(PrivacyReservation).where(PrivacyReservation.account_key == key,
                                                             PrivacyReservation.expires_at < now)).scalars().all()
    for r in stale:
        if session.execute(delete(PrivacyReservation).where(PrivacyReservation.id == r.id)).rowcount == 1:
            _add(session, key, reserved=-r.cost_units)


def _add(session: Session, key: str, *, reserved: int = 0, spent: int = 0, queries: int = 0) -> None:
    c = PrivacyAccount.__table__.c
    session.execute(update(PrivacyAccount).where(PrivacyAccount.key == key)
                    .values(reserved_units=c.reserved_units + reserved, spent_units=c.spent_units + spent,
                            queries=c.queries + queries, updated_at=_utcnow()))


def _fits(account: PrivacyAccount, amount: int) -> bool:
    return account.spent_units + account.reserved_units + amount <= account.total_units


def _utcnow():
    from broker.storage.db import utcnow

    return utcnow()


def open_account(engine: Engine, consumer_id: str, asset_id: str, total: float, measure: str = "pure") -> str:
    """The account of (consumer, asset), created on first use with the offer's total and measure. A later
    agreement or version naming a larger total never raises it; a smaller one lowers it (the strictest
    holds); one naming another measure is refused."""
    key = account_key(consumer_id, asset_id)
    amount = round(total * UNIT)

    def step(session: Session) -> str:
        account = _lock(session, key)
        if account is None:
            try:
                with session.begin_nested():
                    session.add(PrivacyAccount(key=key, consumer_id=consumer_id, asset_id=asset_id,
                                               measure=measure, total_units=amount))
            except IntegrityError:  # another worker created it first: lock and compare below
                account = _lock(session, key)
        if account is not None and account.measure != measure:  # ε and ρ do not add up: fail closed
            raise Forbidden("The asset's offers name different privacy measures; no query is run.",
                            code="invalid_privacy_terms")
        if account is not None and amount < account.total_units:
            session.execute(update(PrivacyAccount).where(PrivacyAccount.key == key)
                            .values(total_units=amount, updated_at=_utcnow()))
        return key

    return _retrying(engine, step)


def reserve(engine: Engine, key: str, cost: float) -> Reservation:
    """Hold ``cost`` on the account, or refuse (429) when it would exceed the total."""
    rid = "res_" + secrets.token_hex(12)
    amount = units(cost)

    def step(session: Session) -> Reservation:
        account = _lock(session, key)
        if account is None:
            raise TooManyRequests("No privacy budget is open for this asset; no query was run.",
                                  code="privacy_budget_exhausted")
        now = time.time()
        _expire(session, key, now)
        c = PrivacyAccount.__table__.c
        granted = session.execute(
            update(PrivacyAccount)
            .where(PrivacyAccount.key == key, c.spent_units + c.reserved_units + amount <= c.total_units)
            .values(reserved_units=c.reserved_units + amount, updated_at=_utcnow())).rowcount == 1
        if not granted:
            raise TooManyRequests("The privacy budget for this asset is exhausted; no query was run.",
                                  code="privacy_budget_exhausted")
        session.add(PrivacyReservation(id=rid, account_key=key, cost_units=amount, expires_at=now + RESERVATION_TTL))
        return Reservation(rid, key, amount)

    return _retrying(engine, step)


def _settle(session: Session, r: Reservation, *, spend: bool) -> None:
    account = _lock(session, r.account)
    held = session.execute(delete(PrivacyReservation).where(PrivacyReservation.id == r.id)).rowcount == 1
    if spend:
        if not held and not _fits(account, r.units):
            raise TooManyRequests("The privacy budget for this asset is exhausted.", code="privacy_budget_exhausted")
        _add(session, r.account, reserved=-r.units if held else 0, spent=r.units, queries=1)
    elif held:
        _add(session, r.account, reserved=-r.units)


def commit(engine: Engine, r: Reservation, *, actor: str, events: Iterable[dict[str, Any]] = ()) -> None:
    """Charge the reservation and write the debit (and the caller's events) to the audit log, in one
    transaction. If that fails even after retries, the reservation is released and the error raised:
    the caller must not release an answer it could not charge for."""
    events = list(events)

    def step(session: Session) -> None:
        _settle(session, r, spend=True)
        account = session.get(PrivacyAccount, r.account)
        record_event(session, "privacy.budget_debited", actor=actor, asset_id=account.asset_id,
                     details={"account": r.account, "epsilon": r.cost})
        for event in events:
            event = dict(event)
            record_event(session, event.pop("kind"), actor=actor, **event)

    try:
        _retrying(engine, step)
    except BaseException:
        release(engine, r)
        raise


def release(engine: Engine, r: Reservation) -> None:
    """Give the reservation back (idempotent; a failure here is left to expiry)."""
    try:
        _retrying(engine, lambda session: _settle(session, r, spend=False))
    except Exception:  # noqa: BLE001 - the reservation then expires after RESERVATION_TTL
        pass


def charge_many_in(session: Session, costs: dict[str, float], *, actor: str, details: dict[str, Any]) -> None:
    """Charge several accounts at once inside the caller's transaction, all or nothing, locking them in
    key order before the audit head (secure aggregation, at release)."""
    keys = sorted(costs)
    accounts = [_lock(session, key) for key in keys]
    for key, account in zip(keys, accounts):
        if account is None or not _fits(account, units(costs[key])):
            raise TooManyRequests("A contributing asset's privacy budget is exhausted; nothing was released.",
                                  code="privacy_budget_exhausted")
    for key in keys:
        _add(session, key, spent=units(costs[key]), queries=1)
    for key, account in zip(keys, accounts):
        record_event(session, "privacy.budget_debited", actor=actor, asset_id=account.asset_id,
                     details={"account": key, "epsilon": costs[key], **details})


def charge_many(engine: Engine, costs: dict[str, float], *, actor: str, details: dict[str, Any]) -> None:
    _retrying(engine, lambda session: charge_many_in(session, costs, actor=actor, details=details))


def view(session: Session, key: str) -> dict[str, Any] | None:
    account = session.get(PrivacyAccount, key)
    if account is None:
        return None
    session.refresh(account)
    return {"account": key, "measure": account.measure, "epsilon_total": account.total_units / UNIT,
            "epsilon_spent": account.spent_units / UNIT,
            "epsilon_remaining": max(0, account.total_units - account.spent_units - account.reserved_units) / UNIT,
            "queries": account.queries}


def remaining(engine: Engine, key: str) -> float:
    with session_scope(engine) as session:
        v = view(session, key)
        return 0.0 if v is None else v["epsilon_remaining"]


def reserved(engine: Engine, key: str) -> float:
    with session_scope(engine) as session:
        account = session.get(PrivacyAccount, key)
        return 0.0 if account is None else account.reserved_units / UNIT
