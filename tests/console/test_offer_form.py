"""The console's ODRL offer form: fields become the offer the policy library reads; bad fields are
a 400 naming the field."""

from __future__ import annotations

import pytest

from broker.catalog.schemas import Offer
from broker.console.pages.catalog import offer_from_form
from twinspace.errors import BadRequest


def form(**kw):
    base = dict(offer_id="o1", purposes="", bbox="", not_before="", not_after="", max_accesses="", max_rows="",
                aggregation_only=False)
    return offer_from_form(**{**base, **kw})


def test_fields_choose_the_policy_and_its_params():
    assert form() == {"id": "o1", "policy_id": "open-data", "params": {}}
    assert form(max_accesses="10", max_rows="50")["params"] == {"max_accesses": 10, "max_rows": 50}
    p = form(purposes="traffic_planning, research", not_before="2026-01-01", not_after="2026-12-31",
             max_accesses="3")
    assert p["policy_id"] == "purpose-restricted"
    assert p["params"] == {"purposes": ["traffic_planning", "research"], "max_accesses": 3,
                           "not_before": "2026-01-01T00:00:00+00:00", "not_after": "2026-12-31T00:00:00+00:00"}
    g = form(bbox="121.4,24.9,121.7,25.2", purposes="research")
    assert g == {"id": "o1", "policy_id": "geo-restricted",
                 "params": {"bbox": [121.4, 24.9, 121.7, 25.2], "purposes": ["research"]}}
    a = form(aggregation_only=True, purposes="research", max_rows="5")
    assert a == {"id": "o1", "policy_id": "aggregation-only", "params": {"purposes": ["research"]}}
    for offer in (p, g, a):
        Offer.model_validate(offer)  # what the catalog accepts


@pytest.mark.parametrize("kw,what", [
    ({"offer_id": "has space"}, "offer id"), ({"max_accesses": "-1"}, "max accesses"),
    ({"max_rows": "ten"}, "max rows"), ({"not_after": "31/12/2026", "purposes": "x"}, "not after"),
    ({"bbox": "1,2,3"}, "area"), ({"bbox": "5,5,1,1"}, "area"),
])
def test_bad_fields_name_the_field(kw, what):
    with pytest.raises(BadRequest) as info:
        form(**kw)
    assert what in info.value.detail and info.value.code == "bad_offers"
