"""ODRL 2.2 Offer and Agreement documents (DSP compacted form) and the Information Model checks
(W3C ODRL 2.2, section 2): what TwinSpace emits passes them, and inbound policies are held to them."""

from __future__ import annotations

from typing import Any

from twinspace.dsp.contexts import TWIN_NS, TWIN_PROFILE
from twinspace.odrl.mapping import OdrlProblem, from_rules, to_rules

POLICY_ID = TWIN_NS + "policyId"
POLICY_ID_TERMS = (POLICY_ID, "policyId", "twin:policyId")


def party_iri(org_id: str) -> str:
    """Parties are IRIs (ODRL 2.2): a TwinSpace org id becomes ``urn:twinspace:org:<id>``; an IRI stays."""
    return org_id if (":" in org_id) else f"urn:twinspace:org:{org_id}"


def org_of(party: str) -> str:
    prefix = "urn:twinspace:org:"
    return party[len(prefix):] if party.startswith(prefix) else party


def offer(offer_id: str, *, policy_id: str, params: dict[str, Any], assigner: str,
          classification: str | None = None, target: str | None = None) -> dict[str, Any]:
    """An ODRL Offer. In a catalog ``Dataset`` the target is the dataset itself and is left out (DSP);
    in a negotiation message it is set."""
    doc: dict[str, Any] = {"@id": offer_id, "@type": "Offer", "profile": TWIN_PROFILE,
                           "assigner": party_iri(assigner), POLICY_ID: policy_id}
    if target:
        doc["target"] = target
    doc.update(to_rules(policy_id, params, classification=classification))
    return doc


def agreement(agreement_iri: str, *, target: str, assigner: str, assignee: str, timestamp: str,
              policy_id: str, params: dict[str, Any], classification: str | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"@id": agreement_iri, "@type": "Agreement", "profile": TWIN_PROFILE,
                           "target": target, "assigner": party_iri(assigner), "assignee": party_iri(assignee),
                           "timestamp": timestamp, POLICY_ID: policy_id}
    doc.update(to_rules(policy_id, params, classification=classification))
    return doc


def policy_id_of(policy: dict[str, Any]) -> str | None:
    for key in POLICY_ID_TERMS:
        value = policy.get(key)
        if isinstance(value, dict):
            value = value.get("@value")
        if isinstance(value, str):
            return value
    return None


def terms_of(policy: dict[str, Any]) -> tuple[str | None, dict[str, Any], dict[str, Any]]:
    """``(policy_id, params, facts)`` of an ODRL policy (OdrlProblem when outside the profile)."""
    params, facts = from_rules(policy)
    return policy_id_of(policy), params, facts


def _is_iri(value: Any) -> bool:
    if isinstance(value, dict):
        value = value.get("@id")
    return isinstance(value, str) and ":" in value and " " not in value


def problems(policy: Any, *, kind: str | None = None) -> list[str]:
    """ODRL Information Model violations (empty when the policy is well formed)."""
    out: list[str] = []
    if not isinstance(policy, dict):
        return ["a policy is a JSON object"]
    kind = kind or policy.get("@type")
    if not _is_iri(policy.get("@id")):
        out.append("the policy has no IRI (@id)")
    rules = [(name, r) for name in ("permission", "prohibition", "obligation")
             for r in (policy.get(name) or [])]
    if not rules:
        out.append("a policy has at least one permission, prohibition or obligation")
    if kind in ("Offer", "Agreement") and not _is_iri(policy.get("assigner")):
        out.append(f"an {kind} has an assigner (an IRI)")
    if kind == "Agreement":
        if not _is_iri(policy.get("assignee")):
            out.append("an Agreement has an assignee (an IRI)")
        if not _is_iri(policy.get("target")):
            out.append("an Agreement has a target asset (an IRI)")
    for name, rule in rules:
        if not isinstance(rule, dict) or not rule.get("action"):
            out.append(f"every {name} has an action")
            continue
        for duty in rule.get("duty") or []:
            if not isinstance(duty, dict) or not duty.get("action"):
                out.append("every duty has an action")
        for c in _constraints(rule):
            if not ("leftOperand" in c and "operator" in c and ("rightOperand" in c or "rightOperandReference" in c)):
                out.append("a constraint has a leftOperand, an operator and a rightOperand")
    return out


def _constraints(rule: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    stack = list(rule.get("constraint") or []) + [c for d in rule.get("duty") or [] if isinstance(d, dict)
                                                  for c in d.get("constraint") or []]
    while stack:
        c = stack.pop()
        if not isinstance(c, dict):
            continue
        logical = [k for k in ("and", "or", "xone", "andSequence") if k in c]
        if logical:
            for k in logical:
                stack.extend(c[k] or [])
        else:
            found.append(c)
    return found


__all__ = ["offer", "agreement", "terms_of", "problems", "party_iri", "org_of", "policy_id_of", "OdrlProblem"]
