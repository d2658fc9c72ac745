"""THE one place the policy input document is built (schema in docs/policies.md)."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

ACTIONS = ("read", "query", "derive", "negotiate")


def _epoch(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value.timestamp()


def build_policy_input(*, principal: Any, action: str, asset: dict[str, Any],
                       agreement: dict[str, Any] | None = None, params: dict[str, Any] | None = None,
                       usage: dict[str, int] | None = None, request: dict[str, Any] | None = None,
                       approvals: list[str] | None = None, now: float | None = None) -> dict[str, Any]:
    """Assemble what a policy sees. ``principal`` is the authenticated org (never client-supplied)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    agreement_doc = None
    if agreement is not None:
        agreement_doc = {
            "id": agreement.get("id"), "consumer_id": agreement.get("consumer_id"),
            "provider_id": agreement.get("provider_id"), "purpose": agreement.get("purpose"),
            "scenario": agreement.get("scenario"), "policy_id": agreement.get("policy_id"),
            "status": agreement.get("status"),
            "not_before": _epoch(agreement.get("not_before")) or 0.0,
            "not_after": _epoch(agreement.get("not_after")) or float(2**53),
        }
        if params is None:
            params = agreement.get("policy_params")
    return {
        "action": action,
        "now": float(now if now is not None else time.time()),
        "consumer": {"org_id": principal.org_id, "role": principal.role,
                     "org_type": getattr(principal, "org_type", "other"),
                     "attributes": dict(getattr(principal, "attributes", {}) or {})},
        "asset": asset,
        "agreement": agreement_doc,
        "params": dict(params or {}),
        "usage": {"accesses": 0, "rows": 0, **(usage or {})},
        "request": dict(request or {}),
        "approvals": list(approvals or []),
    }
