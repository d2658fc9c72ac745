"""A table of decision cases shared by the engine-agreement test and the benchmark."""

from __future__ import annotations

import copy
from typing import Any

BASE: dict[str, Any] = {
    "action": "read", "now": 1000.0,
    "consumer": {"org_id": "c1", "role": "consumer", "org_type": "enterprise", "attributes": {"clearance": "internal"}},
    "asset": {"id": "a1", "provider_id": "p1", "classification": "internal", "domain": "transport",
              "status": "active", "bbox": [121.4, 24.9, 121.7, 25.2]},
    "agreement": {"id": "ag1", "consumer_id": "c1", "provider_id": "p1", "status": "FINALIZED", "not_before": 0.0,
                  "not_after": 2000.0, "purpose": "research", "scenario": "parking_guidance", "policy_id": "x"},
    "params": {"purposes": ["research"]},
    "usage": {"accesses": 0, "rows": 0},
    "request": {},
    "approvals": [],
}


def case(policy: str, expected: bool, label: str, **changes: Any) -> tuple[str, str, dict, bool]:
    doc = copy.deepcopy(BASE)
    for path, value in changes.items():
        node = doc
        keys = path.split("__")
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
    return policy, label, doc, expected


CASES = [
    # open-data
    case("open-data", True, "bound consumer"),
    case("open-data", False, "expired agreement", now=2500.0),
    case("open-data", False, "not yet valid", agreement__not_before=1500.0),
    case("open-data", False, "other consumer's agreement", agreement__consumer_id="c2"),
    case("open-data", False, "agreement not finalised", agreement__status="AGREED"),
    case("open-data", False, "no agreement", agreement=None),
    case("open-data", False, "provider role", consumer__role="provider"),
    case("open-data", False, "withdrawn asset", asset__status="withdrawn"),
    case("open-data", False, "access limit", params={"max_accesses": 2}, usage={"accesses": 2, "rows": 0}),
    case("open-data", True, "under access limit", params={"max_accesses": 2}, usage={"accesses": 1, "rows": 0}),
    case("open-data", False, "row quota", params={"max_total_rows": 100}, usage={"accesses": 1, "rows": 100}),
    # purpose-restricted
    case("purpose-restricted", True, "declared purpose"),
    case("purpose-restricted", False, "other purpose", request={"purpose": "marketing"}),
    case("purpose-restricted", False, "agreement purpose not allowed", agreement__purpose="advertising"),
    case("purpose-restricted", False, "clearance below sensitive", asset__classification="sensitive"),
    case("purpose-restricted", False, "clearance below core", asset__classification="core"),
    case("purpose-restricted", True, "public asset", asset__classification="public"),
    case("purpose-restricted", True, "high clearance", consumer__attributes={"clearance": "core"},
         asset__classification="core"),
    case("purpose-restricted", False, "no clearance attribute", consumer__attributes={}),
    case("purpose-restricted", False, "unknown clearance", consumer__attributes={"clearance": "top"}),
    case("purpose-restricted", False, "org type not admitted", params={"purposes": ["research"],
                                                                       "org_types": ["government_agency"]}),
    case("purpose-restricted", True, "org type admitted", params={"purposes": ["research"],
                                                                  "org_types": ["enterprise"]}),
    case("purpose-restricted", False, "policy window ended", params={"purposes": ["research"], "not_after": 900}),
    case("purpose-restricted", False, "policy window not started", params={"purposes": ["research"],
                                                                           "not_before": 1100}),
    case("purpose-restricted", True, "max_rows obligation", params={"purposes": ["research"], "max_rows": 5}),
    # aggregation-only
    case("aggregation-only", False, "plain read refused"),
    case("aggregation-only", True, "encrypted query", action="query"),
    case("aggregation-only", False, "derive refused", action="derive"),
    case("aggregation-only", False, "query, low clearance", action="query", asset__classification="core"),
    case("aggregation-only", False, "query, purpose restricted", action="query",
         params={"purposes": ["audit"]}),
    case("aggregation-only", True, "query, custom epsilon", action="query",
         params={"epsilon_per_query": 0.1, "min_cohort": 25}),
    # geo-restricted
    case("geo-restricted", True, "inside bbox", params={"bbox": [121.4, 24.9, 121.7, 25.2]},
         request={"bbox": [121.5, 25.0, 121.6, 25.1]}),
    case("geo-restricted", False, "outside bbox", params={"bbox": [121.4, 24.9, 121.7, 25.2]},
         request={"bbox": [120.5, 25.0, 121.6, 25.1]}),
    case("geo-restricted", False, "no bbox requested", params={"bbox": [121.4, 24.9, 121.7, 25.2]}),
    case("geo-restricted", True, "exactly the bbox", params={"bbox": [121.4, 24.9, 121.7, 25.2]},
         request={"bbox": [121.4, 24.9, 121.7, 25.2]}),
    case("geo-restricted", False, "inside but expired", now=5000.0, params={"bbox": [121.4, 24.9, 121.7, 25.2]},
         request={"bbox": [121.5, 25.0, 121.6, 25.1]}),
    # unified authorisation
    case("unified-authorisation", True, "named operator", params={"operator_org_id": "c1"}),
    case("unified-authorisation", False, "other operator", params={"operator_org_id": "c7"}),
    case("unified-authorisation", False, "no operator named", params={}),
    case("unified-authorisation", False, "other provider", params={"operator_org_id": "c1", "provider_id": "p9"}),
    case("unified-authorisation", True, "same provider", params={"operator_org_id": "c1", "provider_id": "p1"}),
    case("unified-authorisation", True, "core data too", params={"operator_org_id": "c1"},
         asset__classification="core"),
    # domain authorisation
    case("domain-authorisation", True, "granted domain", params={"domain_grants": {"c1": ["transport", "water"]}}),
    case("domain-authorisation", False, "other domain", params={"domain_grants": {"c1": ["water"]}}),
    case("domain-authorisation", False, "grant to someone else", params={"domain_grants": {"c2": ["transport"]}}),
    case("domain-authorisation", False, "granted but low clearance",
         params={"domain_grants": {"c1": ["transport"]}}, asset__classification="sensitive"),
    # scenario authorisation
    case("scenario-authorisation", False, "not approved", params={"scenarios": ["parking_guidance"]}),
    case("scenario-authorisation", True, "approved", params={"scenarios": ["parking_guidance"]},
         approvals=["parking_guidance"]),
    case("scenario-authorisation", False, "scenario not offered", params={"scenarios": ["flood_response"]},
         approvals=["parking_guidance"]),
    case("scenario-authorisation", False, "approved other scenario", params={"scenarios": ["parking_guidance"]},
         approvals=["flood_response"]),
    case("scenario-authorisation", True, "request names approved scenario",
         params={"scenarios": ["parking_guidance", "flood_response"]}, approvals=["flood_response"],
         request={"scenario": "flood_response"}),
    # hierarchical authorisation
    case("hierarchical-authorisation", True, "first tier on raw", params={"first_tier": ["c1"], "second_tier": []}),
    case("hierarchical-authorisation", True, "first tier derives", action="derive",
         params={"first_tier": ["c1"], "second_tier": []}),
    case("hierarchical-authorisation", False, "second tier on raw", params={"first_tier": ["op1"],
                                                                           "second_tier": ["c1"]}),
    case("hierarchical-authorisation", True, "second tier on derived", params={"first_tier": ["op1"],
                                                                               "second_tier": ["c1"]},
         asset__provider_id="op1", asset__derived_from="a0"),
    case("hierarchical-authorisation", False, "derived by non-first-tier", params={"first_tier": ["op1"],
                                                                                  "second_tier": ["c1"]},
         asset__provider_id="p1", asset__derived_from="a0"),
    case("hierarchical-authorisation", False, "second tier may not derive", action="derive",
         params={"first_tier": ["op1"], "second_tier": ["c1"]}, asset__provider_id="op1", asset__derived_from="a0"),
    case("hierarchical-authorisation", False, "outside both tiers", params={"first_tier": ["op1"],
                                                                            "second_tier": ["c2"]}),
]
