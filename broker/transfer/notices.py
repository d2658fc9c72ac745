"""Revocation pushed to the connectors (docs/data-plane.md#leases): a connector may reuse one allow
decision for the pulls of a transfer until the decision expires (``decision_lease_seconds``), so when
anything that decision rested on changes — the transfer's state or generation, its agreement, the
consumer's status or key — the broker tells that transfer's connector *in the request that made the
change*, right after it committed: ``POST {endpoint}/dataplane/revocations`` with a signed revocation
message (audience: that connector) naming the transfers. The connector drops their leases and asks
again, and the fresh decision sees the committed change.

The change is queued on the session (``queue``) and sent from SQLAlchemy's ``after_commit`` (never for
a rolled-back change) with the key of the runtime the request's session carries (``session.info``,
set by ``broker.api.deps.get_session``). A push that fails is logged; the lease bounds how long the
connector may go on serving (its decision's ``exp``). No FastAPI imports.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterable

from sqlalchemy import event
from sqlalchemy.orm import Session as OrmSession

from twinspace.dataplane import REVOCATION, sign_message

log = logging.getLogger("twinspace.broker.notices")
_PENDING = "twinspace_revocations"  # session.info key: {endpoint: {transfer id: reason}}
RUNTIME = "twinspace_runtime"  # session.info key: the broker runtime (settings, key) of the request


@dataclass
class Sender:
    settings: Any
    broker_key: Any

    def send(self, endpoint: str, reasons: dict[str, str]) -> bool:
        """One signed message per connector naming its transfers; True when it answered 2xx."""
        from broker.catalog import netguard

        notice = sign_message(self.broker_key, REVOCATION, issuer=self.settings.issuer, audience=endpoint,
                              claims={"tpids": sorted(reasons), "reasons": reasons})
        try:
            response = netguard.request(self.settings, "POST", endpoint, "/dataplane/revocations",
                                        json={"notice": notice},
                                        timeout=self.settings.revocation_push_timeout_seconds, max_bytes=65_536)
            ok = 200 <= response.status_code < 300
        except Exception as exc:  # noqa: BLE001 - unreachable, refused, timed out: the lease bounds it
            log.warning("revocation of %d transfer(s) not delivered to %s (%s); their leases end within %d s",
                        len(reasons), endpoint, type(exc).__name__, self.settings.decision_lease_seconds)
            return False
        if not ok:
            log.warning("connector %s answered %d to a revocation of %d transfer(s)", endpoint,
                        response.status_code, len(reasons))
        return ok


def queue(session: OrmSession, endpoint: str, transfer_id: str, reason: str) -> None:
    session.info.setdefault(_PENDING, {}).setdefault(endpoint, {})[transfer_id] = reason


def revoke_leases(session: OrmSession, transfers: Iterable[Any], reason: str) -> int:
    """Queue a revocation for each PULL transfer's connector (sent when the session commits)."""
    from broker.transfer.process import connector_of
    from twinspace.errors import TwinSpaceError

    count = 0
    endpoints: dict[tuple[str, int], str | None] = {}  # one lookup per asset version
    for tp in transfers:
        version = (tp.asset_id, tp.asset_version)
        if version not in endpoints:
            try:
                endpoints[version] = connector_of(session, tp)
            except TwinSpaceError:  # no connector serves it (any more): nothing holds a lease
                endpoints[version] = None
        if endpoints[version] is not None:
            queue(session, endpoints[version], tp.id, reason)
            count += 1
    return count


@event.listens_for(OrmSession, "after_commit")
def _push_after_commit(session: OrmSession) -> None:
    pending = session.info.pop(_PENDING, None)
    if not pending:
        return
    runtime = session.info.get(RUNTIME)
    if runtime is None:
        log.warning("a session without a broker runtime committed revocations: %d connector(s) not told; "
                    "their leases end within the lease time", len(pending))
        return
    sender = Sender(runtime.settings, runtime.broker_key)
    for endpoint, reasons in pending.items():
        sender.send(endpoint, reasons)


@event.listens_for(OrmSession, "after_rollback")
def _drop_after_rollback(session: OrmSession) -> None:
    session.info.pop(_PENDING, None)
