"""Agreement documents, Ed25519 signatures over their RFC 8785 form, the broker countersignature and
the offline verifier of exported agreement bundles. Pure: no I/O, no database.

* Parties (provider, consumer) sign ``canonical_json(document)`` with their registered org key; the
  signature entry names the key (``kid`` = RFC 7638 thumbprint, so the key is self-certifying).
* The broker countersigns ``canonical_json(countersignature payload)``: the document hash, both party
  signatures and the registry facts it checked (which key belongs to which org), at finalisation.
* A bundle (``twinspace-agreement-bundle/1``) carries the document, the signatures, the countersignature
  and the public keys needed, so anyone can verify it offline (``twinspace contract verify FILE``).
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from twinspace.canonical import canonical_json
from twinspace.crypto import b64url, b64url_decode, key_id, public_key_b64, public_key_from_b64, sign, verify

DOCUMENT_TYPE = "twinspace-agreement/1"
BUNDLE_FORMAT = "twinspace-agreement-bundle/1"
COUNTERSIGNATURE_TYPE = "twinspace-countersignature/1"
DSP_CONTEXT = "https://w3id.org/dspace/2025/1/context.jsonld"
ODRL_PROFILE_CONTEXT = "https://w3id.org/dspace/2025/1/odrl-profile.jsonld"
TWIN_CONTEXT = "https://twinspace.dev/ns/twin/context.jsonld"  # twinspace/dsp/data/context/twinspace.jsonld
TWIN_PROFILE = "https://twinspace.dev/ns/twin"
# The signed document stands alone as JSON-LD: DSP terms, the ODRL terms DSP imports, TwinSpace terms.
DOCUMENT_CONTEXT = [DSP_CONTEXT, ODRL_PROFILE_CONTEXT, TWIN_CONTEXT]
ODRL_KEYS = ("@id", "@type", "profile", "target", "assigner", "assignee", "timestamp", "permission", "prohibition",
             "obligation")
PARTY_ROLES = ("provider", "consumer")


def iso(dt: datetime) -> str:
    """UTC, second precision, ``Z`` suffix: one textual form for every signed timestamp."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def agreement_document(*, agreement_id: str, negotiation_id: str, asset_id: str, asset_version: int,
                       content_hash: str, dataset: str, offer_id: str, provider_id: str, consumer_id: str,
                       purpose: str, scenario: str | None, policy_id: str, policy_version: str,
                       policy_params: dict[str, Any], obligations: dict[str, Any], not_before: datetime,
                       not_after: datetime, issued_at: datetime, issuer: str,
                       classification: str | None = None) -> dict[str, Any]:
    """The document both parties sign: an ODRL 2.2 Agreement whose rules are the policy parameters
    (``twinspace.odrl.mapping``: the Rego input is read back from them), with TwinSpace terms (all in
    the TwinSpace context, so JSON-LD expansion keeps every key)."""
    from twinspace.odrl.mapping import from_rules, to_rules
    from twinspace.odrl.policy import party_iri

    rules = to_rules(policy_id, policy_params, classification=classification)
    if from_rules(rules)[0] != policy_params:
        raise ValueError("the policy parameters do not round-trip through ODRL")
    doc = {
        "@context": list(DOCUMENT_CONTEXT),
        "@type": "Agreement",
        "@id": f"urn:twinspace:agreement:{agreement_id}",
        "profile": TWIN_PROFILE,
        "type": DOCUMENT_TYPE,
        "id": agreement_id,
        "negotiation_id": negotiation_id,
        "target": dataset,
        "assigner": party_iri(provider_id),
        "assignee": party_iri(consumer_id),
        "timestamp": iso(issued_at),
        "asset": {"id": asset_id, "version": asset_version, "content_hash": content_hash, "offer_id": offer_id},
        "provider_id": provider_id,
        "consumer_id": consumer_id,
        "purpose": purpose,
        "scenario": scenario,
        "policy": {"id": policy_id, "version": policy_version, "params": policy_params},
        "validity": {"not_before": iso(not_before), "not_after": iso(not_after)},
        "obligations": obligations,
        **rules,
        "broker": issuer,
    }
    if scenario is None:  # JSON-LD has no null value: an absent scenario is left out, not written as null
        del doc["scenario"]
    return doc


def odrl_view(document: dict[str, Any]) -> dict[str, Any]:
    """The agreement as a plain DSP peer reads it (ContractAgreementMessage ``agreement``): the ODRL
    part of the signed document, without its own @context."""
    return {k: document[k] for k in ODRL_KEYS if k in document}


def policy_params_of(document: dict[str, Any], stored: dict[str, Any]) -> dict[str, Any]:
    """The Rego parameters of an agreement, read from its ODRL rules (the terms that were signed).
    Agreements made before the TwinSpace ODRL profile keep their stored parameters."""
    from twinspace.odrl.mapping import from_rules

    if document.get("profile") != TWIN_PROFILE:
        return dict(stored)
    return from_rules(document)[0]


def signing_input(document: dict[str, Any]) -> bytes:
    """The exact bytes a party signs: RFC 8785 canonical JSON of the document."""
    return canonical_json(document)


def document_sha256(document: dict[str, Any]) -> str:
    return hashlib.sha256(signing_input(document)).hexdigest()


def sign_document(private_key: Ed25519PrivateKey, document: dict[str, Any], *, role: str,
                  org_id: str) -> dict[str, Any]:
    """What a party (SDK, CLI) computes locally; the private key never leaves the caller."""
    return {"role": role, "org_id": org_id, "kid": key_id(private_key.public_key()), "alg": "EdDSA",
            "signature": b64url(sign(private_key, signing_input(document)))}


def verify_signature_entry(entry: dict[str, Any], document: dict[str, Any], public_key: str) -> bool:
    """True when ``public_key`` (base64url raw) is the key named by ``entry`` and signed the document."""
    try:
        pub = public_key_from_b64(public_key)
        if key_id(pub) != entry.get("kid") or entry.get("alg") != "EdDSA":
            return False
        return verify(pub, b64url_decode(str(entry["signature"])), signing_input(document))
    except (ValueError, KeyError, TypeError):
        return False


def countersignature_payload(document: dict[str, Any], signatures: list[dict[str, Any]],
                             keys: list[dict[str, Any]], *, finalized_at: datetime, issuer: str) -> dict[str, Any]:
    """What the broker signs at finalisation: the document hash, both party signatures and the
    registry facts (kid → org, public key) it checked them against."""
    return {
        "type": COUNTERSIGNATURE_TYPE,
        "issuer": issuer,
        "agreement_id": document["id"],
        "document_sha256": document_sha256(document),
        "signatures": [{k: s[k] for k in ("role", "org_id", "kid", "alg", "signature")} for s in signatures],
        "keys": [{k: key[k] for k in ("kid", "org_id", "public_key")} for key in keys],
        "finalized_at": iso(finalized_at),
    }


def countersign(broker_key: Ed25519PrivateKey, payload: dict[str, Any]) -> dict[str, Any]:
    return {"payload": payload, "kid": key_id(broker_key.public_key()), "alg": "EdDSA",
            "signature": b64url(sign(broker_key, canonical_json(payload)))}


def bundle(document: dict[str, Any], signatures: list[dict[str, Any]], countersignature: dict[str, Any],
           registry_keys: list[dict[str, Any]], *, issuer: str, broker_public_key: str,
           snapshot_at: datetime, status: dict[str, Any]) -> dict[str, Any]:
    """The exported agreement file: everything an offline verifier needs."""
    return {
        "format": BUNDLE_FORMAT,
        "document": document,
        "document_sha256": document_sha256(document),
        "signatures": signatures,
        "countersignature": countersignature,
        "registry": {"issuer": issuer, "snapshot_at": iso(snapshot_at),
                     "broker_key": {"kid": key_id(public_key_from_b64(broker_public_key)),
                                    "public_key": broker_public_key},
                     "keys": registry_keys},
        "status": status,
    }


def verify_bundle(data: Any, *, trusted_broker_keys: list[str] | None = None) -> dict[str, Any]:
    """Verify an exported agreement offline. Returns ``{"valid", "errors", "warnings", ...}``; never raises
    on bad input. ``trusted_broker_keys`` (base64url raw keys) pins the broker key; without it the key
    in the bundle is used and a warning says so."""
    errors: list[str] = []
    warnings: list[str] = []
    report: dict[str, Any] = {"valid": False, "errors": errors, "warnings": warnings}
    if not isinstance(data, dict) or data.get("format") != BUNDLE_FORMAT:
        errors.append(f"not a {BUNDLE_FORMAT} file")
        return report
    document = data.get("document")
    if not isinstance(document, dict):
        errors.append("the bundle has no agreement document")
        return report
    try:
        digest = document_sha256(document)
    except Exception as exc:  # noqa: BLE001 - e.g. numbers RFC 8785 cannot represent
        errors.append(f"the document cannot be canonicalised: {type(exc).__name__}")
        return report
    report.update(agreement_id=document.get("id"), document_sha256=digest,
                  provider_id=document.get("provider_id"), consumer_id=document.get("consumer_id"),
                  asset=document.get("asset"), validity=document.get("validity"))
    if data.get("document_sha256") != digest:
        errors.append("document_sha256 does not match the document (the agreement was altered)")
    registry = data.get("registry") if isinstance(data.get("registry"), dict) else {}
    keys = {k.get("kid"): k for k in registry.get("keys") or [] if isinstance(k, dict)}
    signatures = [s for s in data.get("signatures") or [] if isinstance(s, dict)]
    used_keys: list[dict[str, Any]] = []
    for role in PARTY_ROLES:
        expected_org = document.get(f"{role}_id")
        entries = [s for s in signatures if s.get("role") == role]
        if len(entries) != 1:
            errors.append(f"expected exactly one {role} signature, found {len(entries)}")
            continue
        entry = entries[0]
        key = keys.get(entry.get("kid"))
        if entry.get("org_id") != expected_org:
            errors.append(f"the {role} signature is by {entry.get('org_id')}, not the {role} {expected_org}")
        elif key is None:
            errors.append(f"the {role} signing key {entry.get('kid')} is not in the registry snapshot")
        elif key.get("org_id") != expected_org:
            errors.append(f"the {role} signing key belongs to {key.get('org_id')}, not {expected_org}")
        elif not verify_signature_entry(entry, document, str(key.get("public_key"))):
            errors.append(f"the {role} signature does not verify over the canonical document")
        else:
            used_keys.append(key)
    if len(signatures) != len(PARTY_ROLES):
        errors.append("the bundle carries unexpected extra signatures")
    counter = data.get("countersignature") if isinstance(data.get("countersignature"), dict) else None
    if counter is None:
        errors.append("the broker countersignature is missing")
    else:
        broker_entry = registry.get("broker_key") or {}
        if trusted_broker_keys:
            candidates = list(trusted_broker_keys)
        else:
            candidates = [broker_entry.get("public_key")] if broker_entry.get("public_key") else []
            warnings.append("the broker key was taken from the bundle itself; pin it (--broker-key) to rule out a "
                            "forged bundle")
        payload = counter.get("payload") if isinstance(counter.get("payload"), dict) else {}
        ok = False
        for candidate in candidates:
            try:
                pub = public_key_from_b64(str(candidate))
                ok = (key_id(pub) == counter.get("kid") and counter.get("alg") == "EdDSA"
                      and verify(pub, b64url_decode(str(counter.get("signature"))), canonical_json(payload)))
            except (ValueError, TypeError):
                ok = False
            if ok:
                break
        if not ok:
            errors.append("the broker countersignature does not verify with the "
                          + ("trusted broker key" if trusted_broker_keys else "bundled broker key"))
        if payload.get("type") != COUNTERSIGNATURE_TYPE:
            errors.append("the countersignature payload has the wrong type")
        if payload.get("document_sha256") != digest:
            errors.append("the broker countersigned a different document")
        if payload.get("agreement_id") != document.get("id"):
            errors.append("the broker countersigned another agreement")
        signed_sigs = {(s.get("role"), s.get("kid"), s.get("signature")) for s in payload.get("signatures") or []}
        if signed_sigs != {(s.get("role"), s.get("kid"), s.get("signature")) for s in signatures}:
            errors.append("the party signatures differ from those the broker countersigned")
        signed_keys = {(k.get("kid"), k.get("org_id"), k.get("public_key")) for k in payload.get("keys") or []}
        for key in used_keys:
            if (key.get("kid"), key.get("org_id"), key.get("public_key")) not in signed_keys:
                errors.append(f"key {key.get('kid')} was not attested by the broker at finalisation")
        report["finalized_at"] = payload.get("finalized_at")
    status = data.get("status") if isinstance(data.get("status"), dict) else {}
    if status.get("revoked"):
        warnings.append(f"the broker reported this agreement revoked at {status.get('revoked_at')} "
                        "(status is informative, not signed)")
    report["valid"] = not errors
    return report


def verify_agreement_bundle(bundle: dict[str, Any], *, trusted_broker_keys: list[str] | None = None) -> list[str]:
    """Offline check of an exported bundle: the problems found, empty when the bundle is valid.

    Checks the RFC 8785 document hash, the consumer and provider Ed25519 signatures (with the keys the
    bundle carries, attested by the broker), and the broker countersignature over the document hash and
    both signatures. Pass ``trusted_broker_keys`` to pin the broker key."""
    return list(verify_bundle(bundle, trusted_broker_keys=trusted_broker_keys)["errors"])


def public_key_entry(kid: str, org_id: str, role: str, public_key: str, status: str) -> dict[str, Any]:
    return {"kid": kid, "org_id": org_id, "role": role, "public_key": public_key, "status": status}


__all__ = ["agreement_document", "signing_input", "document_sha256", "sign_document", "verify_signature_entry",
           "countersignature_payload", "countersign", "bundle", "verify_bundle", "verify_agreement_bundle", "iso",
           "parse_iso", "public_key_b64"]
