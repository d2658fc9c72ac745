"""Participant registry and authentication, independent of HTTP."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from broker.audit import record_event
from twinspace.crypto import key_id, public_key_from_b64
from twinspace.errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized
from broker.identity.models import Org, OrgKey
from twinspace.roles import Role
from broker.identity.replay import ReplayStore
from twinspace.tokens import issue_access_token, unverified_kid, verify_assertion
from broker.settings import Settings

# Called in the same transaction when an organisation is suspended or a key revoked: ``(session, org_id,
# kid_or_None)``. The transfer feature registers one that tells connectors to drop leased decisions
# (identity cannot import it).
ON_ACCESS_WITHDRAWN: list[Callable[[Session, str, str | None], Any]] = []


@dataclass(frozen=True)
class TokenGrant:
    access_token: str
    expires_in: int
    org: Org


def new_org_id() -> str:
    return "org_" + secrets.token_hex(8)


def _parse_public_key(public_key: str):
    try:
        return public_key_from_b64(public_key)
    except ValueError:
        raise BadRequest("public_key must be a base64url raw 32-byte Ed25519 key.", code="invalid_public_key") from None


def _check_legal_entity(session: Session, role: str, attributes: dict[str, Any]) -> dict[str, Any]:
    """``legal_entity_id`` (e.g. a company registration number) and ``controlled_by`` (its parent entity)
    are checked here, at onboarding, because secure aggregation relies on them to tell independent
    providers apart: one legal entity may hold one organisation per role, never two."""
    for name in ("legal_entity_id", "controlled_by"):
        value = attributes.get(name)
        if value is not None and (not isinstance(value, str) or not 1 <= len(value.strip()) <= 64):
            raise BadRequest(f"{name} must be a string of 1 to 64 characters.", code="invalid_legal_entity")
        if value is not None:
            attributes = {**attributes, name: value.strip()}
    entity = attributes.get("legal_entity_id")
    if entity is not None:
        for org in session.exec(select(Org).where(Org.role == role)).all():
            if (org.attributes or {}).get("legal_entity_id") == entity:
                raise Conflict("An organisation of this legal entity is already registered in this role.",
                               code="legal_entity_exists")
    return attributes


def register_org(session: Session, *, name: str, role: Role | str, public_key: str, org_type: str = "other",
                 attributes: dict[str, Any] | None = None, actor: str | None = None) -> tuple[Org, OrgKey]:
    """Create an organisation with its first public key. The private key never reaches the broker."""
    role = Role(role)
    pub = _parse_public_key(public_key)
    if session.exec(select(Org).where(Org.name == name)).first():
        raise Conflict(f"An organisation named {name!r} already exists.", code="org_exists")
    attributes = _check_legal_entity(session, role.value, attributes or {})
    kid = key_id(pub)
    if session.get(OrgKey, kid):
        raise Conflict("This public key is already registered.", code="key_exists")
    org = Org(id=new_org_id(), name=name, role=role.value, org_type=org_type, attributes=attributes)
    key = OrgKey(kid=kid, org_id=org.id, public_key=public_key)
    session.add(org)
    session.flush()
    session.add(key)
    try:
        session.flush()
    except IntegrityError:
        raise Conflict("The organisation or key already exists.", code="org_exists") from None
    # The public key is in the log, so auditors verify connector receipts offline (twinspace/audit/receipts.py).
    record_event(session, "org.registered", actor=actor, details={"org_id": org.id, "name": name,
                                                                   "role": role.value, "kid": kid,
                                                                   "public_key": public_key})
    return org, key


def get_org(session: Session, org_id: str) -> Org:
    org = session.get(Org, org_id)
    if org is None:
        raise NotFound(f"No organisation {org_id!r}.", code="org_not_found")
    return org


def list_orgs(session: Session, role: str | None = None) -> list[Org]:
    query = select(Org).order_by(Org.created_at)
    if role:
        query = query.where(Org.role == role)
    return list(session.exec(query))


def org_keys(session: Session, org_id: str) -> list[OrgKey]:
    return list(session.exec(select(OrgKey).where(OrgKey.org_id == org_id).order_by(OrgKey.created_at)))


def add_key(session: Session, org_id: str, public_key: str, *, actor: str) -> OrgKey:
    """Key rotation: register a new key; the old one stays valid until revoked."""
    get_org(session, org_id)
    kid = key_id(_parse_public_key(public_key))
    if session.get(OrgKey, kid):
        raise Conflict("This public key is already registered.", code="key_exists")
    key = OrgKey(kid=kid, org_id=org_id, public_key=public_key)
    session.add(key)
    session.flush()
    record_event(session, "org.key_added", actor=actor, details={"org_id": org_id, "kid": kid,
                                                                  "public_key": public_key})
    return key


def revoke_key(session: Session, org_id: str, kid: str, *, actor: str) -> OrgKey:
    key = session.get(OrgKey, kid)
    if key is None or key.org_id != org_id:
        raise NotFound(f"Organisation {org_id!r} has no key {kid!r}.", code="key_not_found")
    if key.status != "revoked":
        key.status = "revoked"
        key.revoked_at = datetime.now(timezone.utc)
        session.add(key)
        record_event(session, "org.key_revoked", actor=actor, details={"org_id": org_id, "kid": kid})
        for hook in ON_ACCESS_WITHDRAWN:
            hook(session, org_id, kid)
    return key


def set_org_status(session: Session, org_id: str, status: str, *, actor: str) -> Org:
    if status not in ("active", "suspended"):
        raise BadRequest("status must be 'active' or 'suspended'.", code="invalid_status")
    org = get_org(session, org_id)
    withdrawn = org.status == "active" and status != "active"
    org.status = status
    session.add(org)
    record_event(session, "org.status_changed", actor=actor, details={"org_id": org_id, "status": status})
    if withdrawn:
        for hook in ON_ACCESS_WITHDRAWN:
            hook(session, org_id, None)
    return org


def active_key(session: Session, kid: str) -> tuple[Org, OrgKey]:
    """The key and its org, refusing unknown keys, revoked keys and suspended orgs."""
    key = session.get(OrgKey, kid)
    if key is None:
        raise Unauthorized("The signing key is not registered.", code="unknown_key")
    if key.status != "active":
        raise Unauthorized("The signing key has been revoked.", code="revoked_key")
    org = session.get(Org, key.org_id)
    if org is None or org.status != "active":
        raise Forbidden("The organisation is suspended.", code="org_suspended")
    return org, key


def authenticate(session: Session, settings: Settings, replay: ReplayStore, broker_key: Ed25519PrivateKey,
                 assertion: str) -> TokenGrant:
    """Exchange a signed client assertion for a short-lived broker access token."""
    kid = unverified_kid(assertion)
    org, key = active_key(session, kid)
    claims = verify_assertion(assertion, public_key_from_b64(key.public_key), org_id=org.id, kid=kid,
                              audience=settings.issuer, max_lifetime=settings.assertion_max_lifetime_seconds,
                              leeway=settings.clock_skew_seconds)
    ttl = settings.assertion_max_lifetime_seconds + 2 * settings.clock_skew_seconds
    if not replay.claim(f"{org.id}:{claims.jti}", ttl, session):
        raise Unauthorized("This client assertion was already used.", code="replayed_assertion")
    token, expires_in = issue_access_token(broker_key, issuer=settings.issuer, org_id=org.id, role=org.role,
                                           org_key_kid=kid, ttl=settings.access_token_ttl_seconds)
    record_event(session, "auth.token_issued", actor=org.id, details={"kid": kid, "role": org.role})
    return TokenGrant(access_token=token, expires_in=expires_in, org=org)
