"""The negotiation and data plane on PostgreSQL (row locks, JSON columns, atomic usage counters)."""

from __future__ import annotations

import io
import warnings

import pyarrow.csv as pacsv
import pytest

from broker.app import create_app
from broker.identity.onboarding import create_org_with_key
from broker.runtime import Runtime
from broker.settings import Settings
from twinspace.client.broker import BrokerClient, BrokerError, negotiate
from tests.contracts.helpers import offer_iri, publish

pytestmark = pytest.mark.postgres


def test_contract_and_pull_on_postgres(pg_url, tmp_path):
    warnings.filterwarnings("ignore")
    from fastapi.testclient import TestClient

    settings = Settings(data_dir=tmp_path / "pg", database_url=pg_url, redis_url=None)
    runtime = Runtime.start(settings)
    try:
        with TestClient(create_app(settings, runtime=runtime)) as http:
            def org(role):
                new = create_org_with_key(runtime.engine, name=f"{role} pg", role=role,
                                          key_dir=settings.data_dir / "keys", org_type="enterprise")
                client = BrokerClient(http, new.org_id, new.private_key, audience=settings.issuer)
                return type("O", (), {"client": client, "org_id": new.org_id})()

            provider, consumer = org("provider"), org("consumer")
            asset = publish(provider)
            agreement = negotiate(consumer.client, provider.client, offer_iri(asset), "research", max_rows=7)
            tp = consumer.client.transfer_request(agreement["id"])
            assert pacsv.read_csv(io.BytesIO(consumer.client.transfer_pull(tp))).num_rows == 7
            provider.client.contract_revoke(agreement["id"])
            with pytest.raises(BrokerError) as err:
                consumer.client.transfer_pull(tp)
            assert err.value.code == "agreement_revoked"
    finally:
        runtime.engine.dispose()
