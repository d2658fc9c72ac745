"""The negotiation and data plane on PostgreSQL (row locks, JSON columns, atomic usage counters): a pull
from the provider's connector (decision, receipt, usage) and the deny after revocation."""

from __future__ import annotations

import io
import time
import warnings

import pyarrow.csv as pacsv
import pytest

from broker.app import create_app
from broker.identity.onboarding import create_org_with_key
from broker.policy.service import get_usage
from broker.runtime import Runtime
from broker.settings import Settings
from tests.conftest import HostingClient
from tests.contracts.helpers import offer_iri, publish
from twinspace.client.broker import BrokerClient, BrokerError, negotiate
from twinspace.testing.connector import ConnectorHarness

pytestmark = pytest.mark.postgres


def test_contract_and_pull_on_postgres(pg_url, tmp_path):
    warnings.filterwarnings("ignore")
    from fastapi.testclient import TestClient
    from sqlmodel import Session

    settings = Settings(data_dir=tmp_path / "pg", database_url=pg_url, redis_url=None,
                        connector_allow_networks=["127.0.0.0/8"])
    runtime = Runtime.start(settings)
    connectors: list[ConnectorHarness] = []
    try:
        with TestClient(create_app(settings, runtime=runtime)) as http:
            def org(role):
                new = create_org_with_key(runtime.engine, name=f"{role} pg", role=role,
                                          key_dir=settings.data_dir / "keys", org_type="enterprise")

                def connector():  # the provider's own connector, talking to this broker
                    if not connectors:
                        link = BrokerClient(http, new.org_id, new.private_key, audience=settings.issuer)
                        harness = ConnectorHarness(new.org_id, new.private_key, broker=link,
                                                   broker_issuer=settings.issuer,
                                                   broker_public_key=runtime.broker_key.public_key(),
                                                   data_dir=tmp_path / "connector").start()
                        connectors.append(harness)
                        client.connector_register(harness.endpoint)
                    return connectors[0]

                client = HostingClient(http, new.org_id, new.private_key, audience=settings.issuer,
                                       connector_factory=connector if role == "provider" else None)
                return type("O", (), {"client": client, "org_id": new.org_id})()

            provider, consumer = org("provider"), org("consumer")
            asset = publish(provider)
            agreement = negotiate(consumer.client, provider.client, offer_iri(asset), "research", max_rows=7)
            tp = consumer.client.transfer_request(agreement["id"])
            assert consumer.client.data_address(tp)[0].startswith(connectors[0].endpoint + "/")
            assert pacsv.read_csv(io.BytesIO(consumer.client.transfer_pull(tp))).num_rows == 7
            early = consumer.client.transfer_token(tp["providerPid"])
            deadline = time.time() + 5
            while get_usage(Session(runtime.engine), agreement["id"])["rows"] < 7 and time.time() < deadline:
                time.sleep(0.05)  # the receipt follows the body
            assert get_usage(Session(runtime.engine), agreement["id"])["rows"] == 7
            provider.client.contract_revoke(agreement["id"])
            with pytest.raises(BrokerError) as err:
                consumer.client.transfer_pull(tp)
            assert err.value.code == "agreement_revoked"
            with pytest.raises(BrokerError) as err:  # a token from before the revocation, at the connector
                consumer.client.transfer_pull(early, fresh_token=False)
            assert err.value.code == "access_denied" and "agreement_revoked" in err.value.problem["reasons"]
    finally:
        for harness in connectors:
            harness.stop()
        runtime.engine.dispose()
