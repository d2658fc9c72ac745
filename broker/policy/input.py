"""THE one place the policy input document is built (schema in docs/policies.md).

The consumer's identity comes from the authenticated principal, never from the request body;
the asset is the catalog's live view of it; usage counters are the live shared ones.
"""

from __future__ import annotations

import time
from datetime import date, datetime, timezone
from decimal import Decimal
from enum import Enum
from typing import Any

ACTIONS = ("read", "query", "derive", "negotiate")
_FAR_FUTURE = float(2**53)


def _epoch(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if isinstance(value, datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)  # the broker stores naive UTC
    return value.timestamp()


def jsonable(value: Any) -> Any:
    """Plain JSON values only (the engines and the input hash need them)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Enum):
        return jsonable(value.value)
    if isinstance(value, Decimal):
        return float(value)
    if hasattr(value, "model_dump"):
        return jsonable(value.model_dump())
    return str(value)


def build_policy_input(*, principal: Any, action: str, asset: dict[str, Any],
                       org_attributes: dict[str, Any] | None = None, agreement: dict[str, Any] | None = None,
                       usage: dict[str, int] | None = None, request: dict[str, Any] | None = None,
                       params: dict[str, Any] | None = None, approvals: list[str] | None = None,
                       now: float | None = None) -> dict[str, Any]:
    """Assemble what a policy sees.

    principal: the authenticated org (``org_id``, ``role``, optionally ``org_type``, ``attributes``).
    org_attributes: the org's registered attributes (e.g. ``clearance``); default: ``principal.attributes``.
    action: read | query | derive | negotiate.  asset: the catalog's dict of the asset.
    agreement: the agreement dict, or None (negotiation).  usage: ``{"accesses", "rows"}`` so far.
    request: what this request asks for (purpose, scenario, bbox, rows, ...).
    params: the offer's policy parameters; default: ``agreement["policy_params"]``.
    approvals: scenarios the provider approved for this consumer and asset.  now: epoch seconds.
    """
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    agreement_doc = None
    if agreement is not None:
        agreement_doc = {
            "id": agreement.get("id"), "consumer_id": agreement.get("consumer_id"),
            "provider_id": agreement.get("provider_id"), "purpose": agreement.get("purpose"),
            "scenario": agreement.get("scenario"), "policy_id": agreement.get("policy_id"),
            "policy_version": agreement.get("policy_version"), "status": agreement.get("status"),
            "not_before": _epoch(agreement.get("not_before")) or 0.0,
            "not_after": _epoch(agreement.get("not_after")) or _FAR_FUTURE,
        }
        if params is None:
            params = agreement.get("policy_params")
    attributes = org_attributes if org_attributes is not None else getattr(principal, "attributes", None)
    attributes = dict(attributes or {})
    org_type = getattr(principal, "org_type", None) or attributes.get("org_type") or "other"
    return jsonable({
        "action": action,
        "now": float(now if now is not None else time.time()),
        "consumer": {"org_id": principal.org_id, "role": principal.role, "org_type": org_type,
                     "attributes": attributes},
        "asset": dict(asset),
        "agreement": agreement_doc,
        "params": dict(params or {}),
        "usage": {"accesses": 0, "rows": 0, **(usage or {})},
        "request": dict(request or {}),
        "approvals": sorted(set(approvals or [])),
    })
