"""Consumer role: this broker negotiates, for one of its consumers, with any DSP 2025-1 provider
(another TwinSpace broker, an EDC connector, ...). No FastAPI imports.

The consumer drives it through the management API and passes its access token at the provider with
each call (never stored). The provider answers asynchronously at the callback address this broker
gives it: ``<dsp base>/callback/<secret>`` + the DSP consumer paths, a capability URL whose secret is
known only to the provider (its SHA-256 is kept here and compared in constant time). When the provider
is a TwinSpace broker, the agreement document arrives signed by the provider and the consumer's
signature goes back with the verification, so the TwinSpace countersigned agreement still results.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from typing import Any

from sqlmodel import Session, select

from broker.audit import record_event
from broker.contracts import lookups, peer
from broker.contracts.models import RemoteNegotiation
from twinspace import agreements
from twinspace.dsp.contexts import TWIN_NS
from twinspace.dsp.messages import PLAIN_CONTEXT, extension
from twinspace.dsp.states import NegotiationState as S
from twinspace.dsp.states import check_negotiation
from twinspace.errors import BadRequest, Conflict, Forbidden, NotFound


def _sha(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def callback_secret(broker_key: Any, negotiation_id: str) -> str:
    """The secret in a negotiation's callback URL: the broker's (deterministic) Ed25519 signature over
    the consumerPid, so it is never stored and transfers under the same agreement reuse the address."""
    from twinspace.crypto import b64url, sign

    return b64url(sign(broker_key, f"twinspace-dsp-callback:{negotiation_id}".encode()))[:43]


def transfer_callback(session: Session, settings: Any, broker_key: Any, rn: RemoteNegotiation) -> str:
    return callback_base(settings, callback_secret(broker_key, rn.id))


def check_transfer_secret(session: Session, negotiation_id: str, secret: str) -> None:
    rn = session.get(RemoteNegotiation, negotiation_id)
    if rn is None or not hmac.compare_digest(rn.callback_secret_sha256, _sha(secret)):
        raise NotFound("No such transfer process.", code="transfer_not_found")


def callback_base(settings: Any, secret: str) -> str:
    if not settings.dsp_base_url:
        raise Conflict("Set TWINSPACE_DSP_BASE_URL (this broker's public DSP address) to negotiate with other "
                       "connectors: they call back there.", code="dsp_base_url_unset")
    return f"{settings.dsp_base_url.rstrip('/')}/callback/{secret}"


def _msg(kind: str, **fields: Any) -> dict[str, Any]:
    return {"@context": list(PLAIN_CONTEXT), "@type": kind, **fields}


def _move(session: Session, rn: RemoteNegotiation, target: S, *, actor: str, details: dict | None = None) -> None:
    previous = rn.state
    check_negotiation(previous, target.value)
    rn.state = target.value
    rn.updated_at = lookups.now()
    session.add(rn)
    session.flush()
    record_event(session, f"contract.remote.{target.value.lower()}", actor=actor,
                 details={"consumer_pid": rn.id, "provider": rn.provider_url, "from": previous, "to": target.value,
                          **(details or {})})


def get(session: Session, negotiation_id: str, principal: Any, *, lock: bool = False) -> RemoteNegotiation:
    stmt = select(RemoteNegotiation).where(RemoteNegotiation.id == negotiation_id)
    if lock:
        stmt = stmt.with_for_update()
    rn = session.exec(stmt).first()
    if rn is None or (principal.org_id != rn.org_id and principal.role not in lookups.READ_ALL_ROLES):
        raise NotFound(f"No remote negotiation {negotiation_id}.", code="negotiation_not_found")
    return rn


def view(rn: RemoteNegotiation) -> dict[str, Any]:
    return {"id": rn.id, "consumerPid": rn.id, "providerPid": rn.provider_pid, "provider": rn.provider_url,
            "state": rn.state, "offer": rn.offer, "purpose": rn.purpose, "scenario": rn.scenario,
            "agreement": rn.agreement, "signed_agreement": rn.signed_agreement,
            "countersignature": rn.countersignature}


# --------------------------------------------------------------------------- consumer → provider
def start(session: Session, settings: Any, broker_key: Any, principal: Any, *, provider_url: str,
          offer: dict[str, Any],
          token: str | None, purpose: str | None = None, scenario: str | None = None) -> RemoteNegotiation:
    """Send the ContractRequestMessage for ``offer`` (as the provider's catalog lists it)."""
    base = peer.check_peer(settings, provider_url)
    if not isinstance(offer, dict) or not isinstance(offer.get("@id"), str):
        raise BadRequest("offer is the ODRL offer from the provider's catalog (with its @id).", code="invalid_offer")
    negotiation_id = f"urn:uuid:{uuid.uuid4()}"
    secret = callback_secret(broker_key, negotiation_id)
    rn = RemoteNegotiation(id=negotiation_id, org_id=principal.org_id, provider_url=base,
                           offer=offer, purpose=purpose, scenario=scenario, state=S.REQUESTED.value,
                           callback_secret_sha256=_sha(secret))
    body = _msg("ContractRequestMessage", consumerPid=rn.id, offer={"@type": "Offer", **offer},
                callbackAddress=callback_base(settings, secret))
    if purpose:
        body[TWIN_NS + "purpose"] = purpose
    if scenario:
        body[TWIN_NS + "scenario"] = scenario
    answer = peer.send("POST", f"{base}/negotiations/request", body, token)
    provider_pid = answer.get("providerPid") if isinstance(answer, dict) else None
    if not isinstance(provider_pid, str) or answer.get("consumerPid") != rn.id:
        raise peer.PeerError("The provider's answer is not a ContractNegotiation for our request.",
                             code="peer_bad_answer")
    rn.provider_pid = provider_pid
    session.add(rn)
    session.flush()
    record_event(session, "contract.remote.requested", actor=principal.org_id,
                 details={"consumer_pid": rn.id, "provider": base, "provider_pid": provider_pid,
                          "offer": offer.get("@id")})
    return rn


def accept(session: Session, principal: Any, negotiation_id: str, token: str | None) -> RemoteNegotiation:
    rn = get(session, negotiation_id, principal, lock=True)
    check_negotiation(rn.state, S.ACCEPTED.value)
    peer.send("POST", f"{rn.provider_url}/negotiations/{rn.provider_pid}/events",
              _msg("ContractNegotiationEventMessage", providerPid=rn.provider_pid, consumerPid=rn.id,
                   eventType="ACCEPTED"), token)
    _move(session, rn, S.ACCEPTED, actor=principal.org_id)
    return rn


def verify(session: Session, principal: Any, negotiation_id: str, token: str | None, *,
           signature: dict[str, Any] | None) -> RemoteNegotiation:
    """ContractAgreementVerificationMessage; with a TwinSpace provider it carries the consumer's signature
    (checked here against the consumer's registered key before it leaves)."""
    from broker.identity.service import active_key

    rn = get(session, negotiation_id, principal, lock=True)
    check_negotiation(rn.state, S.VERIFIED.value)
    body = _msg("ContractAgreementVerificationMessage", providerPid=rn.provider_pid, consumerPid=rn.id)
    if rn.signed_agreement is not None:
        if signature is None:
            raise BadRequest("This provider's agreement is TwinSpace-signed: sign its document and send the "
                             "signature.", code="consumer_signature_required")
        entry = {"role": "consumer", "org_id": principal.org_id, "alg": "EdDSA", **signature}
        _org, key = active_key(session, str(entry.get("kid")))
        if key.org_id != principal.org_id or not agreements.verify_signature_entry(
                entry, rn.signed_agreement["document"], key.public_key):
            raise BadRequest("The signature does not verify over the agreement document with your key.",
                             code="invalid_signature")
        name, value = extension("signature", entry)
        body[name] = value
    peer.send("POST", f"{rn.provider_url}/negotiations/{rn.provider_pid}/agreement/verification", body, token)
    _move(session, rn, S.VERIFIED, actor=principal.org_id)
    return rn


def terminate(session: Session, principal: Any, negotiation_id: str, token: str | None,
              reason: str | None = None) -> RemoteNegotiation:
    rn = get(session, negotiation_id, principal, lock=True)
    check_negotiation(rn.state, S.TERMINATED.value)
    body = _msg("ContractNegotiationTerminationMessage", providerPid=rn.provider_pid, consumerPid=rn.id,
                code="consumer_terminated", **({"reason": [reason[:500]]} if reason else {}))
    peer.send("POST", f"{rn.provider_url}/negotiations/{rn.provider_pid}/termination", body, token)
    _move(session, rn, S.TERMINATED, actor=principal.org_id)
    return rn


# --------------------------------------------------------------------------- provider → consumer (callbacks)
def by_callback(session: Session, secret: str, consumer_pid: str, provider_pid: str | None) -> RemoteNegotiation:
    """The negotiation a callback names, if the secret in its URL is the one we gave that provider."""
    rn = session.exec(select(RemoteNegotiation).where(RemoteNegotiation.id == consumer_pid)
                      .with_for_update()).first()
    if rn is None or not hmac.compare_digest(rn.callback_secret_sha256, _sha(secret)):
        raise NotFound("No such negotiation.", code="negotiation_not_found")
    if provider_pid is not None and provider_pid != rn.provider_pid:
        raise BadRequest("providerPid does not identify this negotiation.", code="pid_mismatch")
    return rn


def on_offer(session: Session, rn: RemoteNegotiation, msg) -> RemoteNegotiation:
    if msg.offer.id != rn.offer.get("@id"):
        raise Conflict("The offer must be the one under negotiation.", code="offer_changed")
    rn.offer = {**msg.offer.policy}
    _move(session, rn, S.OFFERED, actor="provider")
    return rn


def on_agreement(session: Session, rn: RemoteNegotiation, msg) -> RemoteNegotiation:
    """The provider's agreement. A TwinSpace provider sends its signed document too: it must be the
    agreement (its ODRL part), name this consumer and carry a provider signature."""
    if not isinstance(msg.agreement.get("assignee"), str) or not isinstance(msg.agreement.get("target"), str):
        raise BadRequest("The agreement names no assignee or target.", code="invalid_agreement")
    signed = msg.signed_agreement
    if signed is not None:
        document = signed.get("document") if isinstance(signed, dict) else None
        if not isinstance(document, dict) or document.get("consumer_id") is None:
            raise BadRequest("The signed agreement is malformed.", code="invalid_agreement")
        if not any(s.get("role") == "provider" for s in signed.get("signatures") or [] if isinstance(s, dict)):
            raise BadRequest("The signed agreement lacks the provider's signature.", code="missing_signature")
    check_negotiation(rn.state, S.AGREED.value)
    rn.agreement = dict(msg.agreement)
    rn.signed_agreement = signed
    _move(session, rn, S.AGREED, actor="provider", details={"agreement": msg.agreement.get("@id")})
    return rn


def on_event(session: Session, rn: RemoteNegotiation, msg) -> RemoteNegotiation:
    if msg.eventType != "FINALIZED":
        raise BadRequest("A provider sends only the FINALIZED event.", code="invalid_event")
    rn.countersignature = msg.countersignature
    _move(session, rn, S.FINALIZED, actor="provider")
    return rn


def on_termination(session: Session, rn: RemoteNegotiation, msg) -> RemoteNegotiation:
    _move(session, rn, S.TERMINATED, actor="provider", details={"code": msg.code})
    return rn


def agreement_id_of(rn: RemoteNegotiation) -> str:
    """The id the provider's TransferRequestMessage expects: TwinSpace uses its agreement id, a plain
    DSP provider the agreement's @id."""
    if rn.state != S.FINALIZED.value or rn.agreement is None:
        raise Conflict(f"The remote negotiation is {rn.state}, not FINALIZED.", code="agreement_not_finalized")
    document = (rn.signed_agreement or {}).get("document") or {}
    return document.get("id") or rn.agreement["@id"]


def require_owner(rn: RemoteNegotiation, principal: Any) -> None:
    if rn.org_id != principal.org_id:
        raise Forbidden("Only the consumer that runs this negotiation acts on it.", code="wrong_party")


__all__ = ["start", "accept", "verify", "terminate", "by_callback", "on_offer", "on_agreement", "on_event",
           "on_termination", "get", "view", "agreement_id_of", "callback_secret", "transfer_callback",
           "check_transfer_secret"]
