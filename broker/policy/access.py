"""The access decision the data plane and the encrypted-query engine call on every request:
live usage counters + the agreement's pinned policy version + the asset as the catalog describes it."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session

from broker.policy import service
from broker.policy.input import build_policy_input
from broker.settings import Settings

# Called in the transaction of a policy upload, ``(session, policy_id)``: decisions made under the old
# version may no longer hold. The transfer feature registers one that tells the connectors to drop their
# leased decisions (policy cannot import it).
ON_POLICY_CHANGED: list = []


def policy_changed(session: Session, policy_id: str) -> None:
    for hook in ON_POLICY_CHANGED:
        hook(session, policy_id)


def _as_dict(obj: Any) -> dict[str, Any]:
    return obj if isinstance(obj, dict) else obj.model_dump()


def decide_access(session: Session, settings: Settings, agreement: Any, principal: Any, action: str,
                  request: dict[str, Any] | None = None):
    """Decide one access under an agreement; returns the Decision (already audited)."""
    from broker.catalog.service import asset_policy_view, get_asset

    doc = _as_dict(agreement)
    asset = asset_policy_view(get_asset(session, doc["asset_id"]))  # the live asset: withdrawals count
    agreement_id = doc.get("id")
    policy_input = build_policy_input(
        principal=principal, action=action, asset=asset, agreement=doc, params=doc.get("policy_params"),
        usage=service.get_usage(session, agreement_id), request=request,
        approvals=service.approvals_for(session, asset["id"], principal.org_id))
    return service.decide(session, settings, doc["policy_id"], policy_input, version=doc.get("policy_version"),
                          actor=principal.org_id, asset_id=asset["id"], agreement_id=agreement_id)
