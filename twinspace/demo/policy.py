"""Demo step: the policy engine decides on the published assets, allow and deny with reasons."""

from __future__ import annotations

from rich.table import Table

from broker.api.deps import Principal
from broker.policy.input import build_policy_input


def step_policies(ctx) -> None:
    """Usage policies decide each request: allow or deny, with reasons and obligations."""
    from broker.catalog.service import asset_policy_view, get_asset
    from broker.storage.db import session_scope

    consumer = ctx.participants["consumer"]
    auditor = ctx.client("auditor")
    buildings = ctx.state["catalog_assets"]["buildings"]
    with session_scope(ctx.runtime.engine) as session:
        asset = asset_policy_view(get_asset(session, buildings))
    offer = asset["offers"][0]
    me = consumer.client.whoami()
    principal = Principal(org_id=me["id"], role=me["role"], org_name=me["name"], token_id="demo",
                          cnf_kid=consumer.org.kid, attributes=me["attributes"], org_type=me["org_type"])
    agreement = {"id": "ag-demo", "consumer_id": consumer.org.org_id, "provider_id": asset["provider_id"],
                 "status": "FINALIZED", "purpose": "research", "scenario": "parking_guidance",
                 "not_before": 0, "not_after": 4_102_444_800}
    table = Table("request", "policy", "decision", "reasons / obligations", title="Policy decisions")
    for label, purpose in (("research use", "research"), ("advertising use", "advertising")):
        doc = build_policy_input(principal=principal, action="read", asset=asset, agreement=agreement,
                                 params=offer["params"], request={"purpose": purpose})
        decision = auditor.post(f"/policies/{offer['policy_id']}/evaluate", json={"input": doc})
        detail = "; ".join(decision["reasons"]) or f"obligations {decision['obligations']}"
        table.add_row(label, f"{offer['policy_id']} ({decision['policy_version']})",
                      "[green]allow" if decision["allow"] else "[red]deny", detail)
    engine = "OPA server" if ctx.settings.opa_url else "embedded Rego (regopy)"
    ctx.console.print(table)
    ctx.console.print(f"Engine: {engine}; every decision above is in the audit log with its input hash.")
