"""After finalisation: revocation and the checks every data access makes (``require_active_agreement``;
the policy decision itself is ``broker.policy.access.decide_access``, asked by the transfer's decision
service for every pull)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlmodel import Session

from broker.audit import record_event
from broker.contracts.models import Agreement
from twinspace import agreements
from twinspace.dsp.states import NegotiationState as S
from twinspace.errors import Conflict, Forbidden, Gone, NotFound
from broker.contracts import lookups
from broker.contracts.lookups import _utc, get_agreement


# --------------------------------------------------------------------------- after finalisation
# What else ends when an agreement is revoked. Features above contracts (transfer) register here, so that
# revocation takes effect at once without contracts importing them; each hook returns how many it ended.
ON_REVOKE: list[Callable[[Session, str, str], int]] = []


def revoke(session: Session, principal: Any, agreement_id: str, reason: str | None = None) -> Agreement:
    """Provider (of this agreement) or operator revokes; effective on the next access."""
    agreement = get_agreement(session, agreement_id, principal)
    if not (principal.role == "operator" or principal.org_id == agreement.provider_id):
        raise Forbidden("Only the agreement's provider or the operator revokes it.", code="wrong_party")
    if agreement.status == "REVOKED":
        return agreement
    if agreement.status != S.FINALIZED.value:
        raise Conflict(f"Only a finalised agreement can be revoked (this one is {agreement.status}); "
                       "terminate the negotiation instead.", code="agreement_not_finalized")
    agreement.status = "REVOKED"
    agreement.revoked_at = lookups.now()
    agreement.revoked_by = principal.org_id
    agreement.revocation_reason = (reason or "")[:500] or None
    session.add(agreement)
    session.flush()
    ended = sum(hook(session, agreement.id, principal.org_id) for hook in ON_REVOKE)
    record_event(session, "contract.revoked", actor=principal.org_id, asset_id=agreement.asset_id,
                 agreement_id=agreement.id, details={"by_role": principal.role, "reason": agreement.revocation_reason,
                                                     "transfers_terminated": ended})
    return agreement


def _row_matches_document(a: Agreement) -> bool:
    """Defence against edits to the indexed columns: they must agree with the signed document."""
    d = a.document
    try:
        return (agreements.document_sha256(d) == a.document_sha256 and d["id"] == a.id
                and d["consumer_id"] == a.consumer_id and d["provider_id"] == a.provider_id
                and d["asset"]["id"] == a.asset_id and d["asset"]["version"] == a.asset_version
                and d["asset"]["content_hash"] == a.content_hash
                and agreements.parse_iso(d["validity"]["not_after"]) == _utc(a.not_after)
                and agreements.parse_iso(d["validity"]["not_before"]) == _utc(a.not_before)
                and d["policy"]["id"] == a.policy_id and d["policy"]["version"] == a.policy_version
                and d["obligations"] == a.obligations and d["policy"]["params"] == a.policy_params
                and agreements.policy_params_of(d, a.policy_params) == a.policy_params)  # = its ODRL terms
    except (KeyError, TypeError, ValueError):  # OdrlProblem is a ValueError
        return False


def require_active_agreement(session: Session, agreement_id: str, consumer_id: str) -> Agreement:
    """The agreement, if ``consumer_id`` may use it right now. Raises NotFound ``agreement_not_found``,
    Forbidden ``not_agreement_consumer``, Conflict ``agreement_not_finalized``, Gone ``agreement_revoked``
    / ``agreement_expired`` / ``asset_withdrawn``, Forbidden ``agreement_not_yet_valid``, Conflict
    ``asset_version_changed``, ServiceUnavailable ``agreement_integrity``."""
    from broker.catalog.service import get_asset
    from twinspace.errors import ServiceUnavailable

    agreement = session.get(Agreement, agreement_id)
    if agreement is None:
        raise NotFound(f"No agreement {agreement_id}.", code="agreement_not_found")
    if agreement.consumer_id != consumer_id:
        raise Forbidden("This agreement belongs to another consumer.", code="not_agreement_consumer")
    if agreement.status == "REVOKED":
        raise Gone("The agreement was revoked.", code="agreement_revoked")
    if agreement.status != S.FINALIZED.value or not agreement.countersignature:
        raise Conflict(f"The agreement is not finalised (status {agreement.status}).", code="agreement_not_finalized")
    if not _row_matches_document(agreement):
        raise ServiceUnavailable("The stored agreement does not match its signed document.",
                                 code="agreement_integrity")
    t = lookups.now()
    if t < _utc(agreement.not_before):
        raise Forbidden("The agreement is not yet valid.", code="agreement_not_yet_valid")
    if t >= _utc(agreement.not_after):
        raise Gone("The agreement has expired.", code="agreement_expired")
    latest = get_asset(session, agreement.asset_id)
    if latest.status == "withdrawn":
        raise Gone("The asset was withdrawn.", code="asset_withdrawn")
    if latest.version != agreement.asset_version or latest.content_hash != agreement.content_hash:
        raise Conflict(f"The asset changed (agreement: v{agreement.asset_version}, now v{latest.version}); "
                       "negotiate the new version.", code="asset_version_changed")
    return agreement


def policy_agreement_view(agreement: Agreement) -> dict[str, Any]:
    """The agreement as ``broker.policy.access.decide_access`` reads it. The policy parameters are read
    from the signed document's ODRL rules, so the engine decides on the terms both parties signed."""
    return {"id": agreement.id, "asset_id": agreement.asset_id, "asset_version": agreement.asset_version,
            "consumer_id": agreement.consumer_id, "provider_id": agreement.provider_id,
            "purpose": agreement.purpose, "scenario": agreement.scenario, "policy_id": agreement.policy_id,
            "policy_version": agreement.policy_version,
            "policy_params": agreements.policy_params_of(agreement.document, agreement.policy_params),
            "status": agreement.status, "not_before": _utc(agreement.not_before).timestamp(),
            "not_after": _utc(agreement.not_after).timestamp(), "obligations": dict(agreement.obligations)}


def _log_refusal(session: Session, kind: str, *, actor: str, agreement: Agreement | None,
                 details: dict[str, Any]) -> None:
    """A refused step is audited outside the request transaction. That transaction is rolled back first:
    nothing of a refused request persists, and it must not hold the audit append lock while we log."""
    from broker.audit import log_event

    asset_id, agreement_id = (agreement.asset_id, agreement.id) if agreement is not None else (None, None)
    session.rollback()
    try:
        log_event(session.get_bind(), kind, actor=actor, outcome="denied", asset_id=asset_id,
                  agreement_id=agreement_id, details=details)
    except Exception:  # noqa: BLE001 - auditing a refusal must not mask the refusal itself
        import logging

        logging.getLogger("twinspace.contracts").exception("could not audit %s", kind)
