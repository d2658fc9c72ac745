"""The connector registry: which organisation answers at which connector endpoint (docs/data-plane.md).

Registering: the broker sends ``POST {endpoint}/ownership {nonce, audience}`` through ``netguard``; the
connector answers ``{proof}``, an ownership message signed by a key of the provider. The broker checks
the key named by the header ``kid`` is an *active* key of the calling organisation, the signature, kind,
audience (the broker issuer), issuer (the org), the fresh nonce and the endpoint. An endpoint belongs to
one organisation (409 ``endpoint_owned_elsewhere``); registering your own again refreshes it.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timezone
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from broker.audit import record_event
from broker.catalog import netguard
from broker.catalog.models import ConnectorEndpoint
from broker.identity.models import Org, OrgKey
from broker.settings import Settings
from twinspace.crypto import public_key_from_b64
from twinspace.dataplane import OWNERSHIP, message_header, normalise_endpoint, verify_message
from twinspace.errors import Conflict, Forbidden, TwinSpaceError


def _iso(dt: datetime | None) -> str | None:
    if dt is None:
        return None
    return (dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).isoformat()


def view(row: ConnectorEndpoint) -> dict[str, Any]:
    return {"id": row.id, "org_id": row.org_id, "endpoint": row.endpoint, "kid": row.kid,
            "public_key": row.public_key, "status": row.status, "verified_at": _iso(row.verified_at),
            "created_at": _iso(row.created_at)}


def org_public_key(session: Session, org_id: str, kid: str) -> Ed25519PublicKey | None:
    """The public key ``kid`` when it is an active key of an active ``org_id``; None otherwise."""
    key = session.get(OrgKey, kid) if isinstance(kid, str) else None
    if key is None or key.org_id != org_id or key.status != "active":
        return None
    org = session.get(Org, org_id)
    if org is None or org.status != "active":
        return None
    try:
        return public_key_from_b64(key.public_key)
    except (TwinSpaceError, ValueError):
        return None


def verify_org_message(session: Session, token: str, org_id: str, kind: str, *, audience: str,
                       error: TwinSpaceError) -> dict[str, Any]:
    """Claims of a message signed by an active key of ``org_id`` (issuer ``org_id``); ``error`` otherwise."""
    try:
        kid = message_header(token)["kid"]
    except TwinSpaceError:
        raise error from None
    public = org_public_key(session, org_id, kid)
    if public is None:
        raise error
    try:
        return verify_message(token, public, kind, audience=audience, issuer=org_id)
    except TwinSpaceError:
        raise error from None


def by_endpoint(session: Session, endpoint: str) -> ConnectorEndpoint | None:
    return session.exec(select(ConnectorEndpoint).where(ConnectorEndpoint.endpoint == endpoint)).first()


def verified(session: Session, org_id: str, endpoint: str) -> ConnectorEndpoint:
    """The verified connector of ``org_id`` at ``endpoint`` (any spelling); 403 otherwise."""
    try:
        normal = normalise_endpoint(endpoint)
    except TwinSpaceError:
        normal = None
    row = by_endpoint(session, normal) if normal else None
    if row is None or row.org_id != org_id or row.status != "verified":
        raise Forbidden("data_endpoint is not a verified connector of your organisation; register it with "
                        "POST /connectors first.", code="connector_not_verified")
    return row


def register(session: Session, settings: Settings, org_id: str, endpoint: str) -> ConnectorEndpoint:
    """Challenge the connector at ``endpoint`` and record it for ``org_id`` (or refresh it)."""
    normal = normalise_endpoint(endpoint)  # 400 invalid_endpoint for what is no endpoint at all
    existing = by_endpoint(session, normal)
    if existing is not None and existing.org_id != org_id:
        raise Conflict("This connector endpoint is registered to another organisation.",
                       code="endpoint_owned_elsewhere")
    nonce = secrets.token_hex(32)
    response = netguard.request(settings, "POST", normal, "/ownership",
                                json={"nonce": nonce, "audience": settings.issuer}, max_bytes=65536)
    try:
        proof = response.json().get("proof") if response.status_code == 200 else None
    except ValueError:
        proof = None
    if not isinstance(proof, str):
        raise netguard.unreachable()
    refused = Forbidden("The connector did not prove that it holds an active key of your organisation "
                        "for this endpoint.", code="ownership_not_proven")
    claims = verify_org_message(session, proof, org_id, OWNERSHIP, audience=settings.issuer, error=refused)
    if claims.get("nonce") != nonce or claims.get("endpoint") != normal or claims.get("org", org_id) != org_id:
        raise refused
    kid = message_header(proof)["kid"]
    key = session.get(OrgKey, kid)
    now = datetime.now(timezone.utc)
    refreshed = existing is not None
    if existing is None:
        row = ConnectorEndpoint(id="cn_" + secrets.token_hex(10), org_id=org_id, endpoint=normal, kid=kid,
                                public_key=key.public_key, verified_at=now)
        try:
            with session.begin_nested():
                session.add(row)
                session.flush()
        except IntegrityError:  # registered by someone else meanwhile
            raise Conflict("This connector endpoint is registered to another organisation.",
                           code="endpoint_owned_elsewhere") from None
    else:
        row = existing
        row.kid, row.public_key, row.verified_at, row.status = kid, key.public_key, now, "verified"
        session.add(row)
        session.flush()
    record_event(session, "connector.registered", actor=org_id,
                 details={"connector_id": row.id, "org_id": org_id, "endpoint": normal, "kid": kid,
                          "refreshed": refreshed})
    return row


def list_connectors(session: Session, *, org_id: str, role: str) -> list[ConnectorEndpoint]:
    """A provider sees its own connectors; every other role sees all."""
    query = select(ConnectorEndpoint).order_by(col(ConnectorEndpoint.created_at), col(ConnectorEndpoint.id))
    if role == "provider":
        query = query.where(ConnectorEndpoint.org_id == org_id)
    return list(session.exec(query).all())
