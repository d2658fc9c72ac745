"""Contract fixtures: a provider with a published asset, consumers, and a helper to negotiate."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pytest

from connectors.publish import prepare
from twinspace.client.broker import negotiate

N_ROWS = 60


def table_bytes(n: int = N_ROWS, offset: int = 0) -> bytes:
    table = pa.table({"building_id": [f"B{offset + i:04d}" for i in range(n)],
                      "district": [["Daan", "Xinyi", "Zhongshan"][i % 3] for i in range(n)],
                      "floor_area": [100.0 + i for i in range(n)],
                      "owner_pseudonym": [f"p{(offset + i) * 7919 % 10007:05d}" for i in range(n)]})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


OFFERS = [{"id": "research", "policy_id": "purpose-restricted",
           "params": {"purposes": ["research", "traffic_planning"], "max_rows": 40}},
          {"id": "open", "policy_id": "open-data", "params": {}}]


def publish(provider, data: bytes | None = None, asset_id: str | None = None, offers=None) -> dict[str, Any]:
    data = data or table_bytes()
    meta = prepare(data, title="Buildings", classification="public", domain="planning",
                   offers=offers or OFFERS, twin_category="building_structure", entity_type="Building")
    return provider.client.catalog_publish(meta, data, asset_id=asset_id)


def offer_iri(asset: dict[str, Any], offer_id: str = "research") -> str:
    return f"urn:twinspace:offer:{asset['id']}:v{asset['version']}:{offer_id}"


@dataclass
class World:
    provider: Any
    provider2: Any
    consumer: Any
    consumer2: Any
    operator: Any
    auditor: Any
    asset: dict[str, Any]

    def agreement(self, consumer=None, **kw) -> dict[str, Any]:
        consumer = consumer or self.consumer
        kw.setdefault("purpose", "research")
        offer = kw.pop("offer", offer_iri(self.asset))
        return negotiate(consumer.client, self.provider.client, offer, **kw)


@pytest.fixture
def world(make_org) -> World:
    provider = make_org("provider", org_type="government_agency")
    w = World(provider=provider, provider2=make_org("provider"), consumer=make_org("consumer", org_type="enterprise"),
              consumer2=make_org("consumer", org_type="enterprise"), operator=make_org("operator"),
              auditor=make_org("auditor"), asset={})
    w.asset = publish(provider)
    return w
