"""The encrypted-query and secure-aggregation paths on PostgreSQL (bytea ciphertexts, JSON columns,
the ledger), and the issue's race: 24 concurrent queries against a broker with 2 worker processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from broker.privacy import ledger
from broker.settings import Settings
from twinspace.client.query import ConsumerKeys, QueryClient
from twinspace.client.broker import BrokerClient, BrokerError, negotiate
from tests.privacy.test_query_api import (  # noqa: F401  (re-run here on PostgreSQL)
    bfv_keys, make_table, publish, setup, test_predicate_sum_and_count_match_plaintext_within_the_noise,
    test_secure_aggregation_across_providers, test_the_budget_is_enforced_and_plain_reads_are_refused,
    test_two_agreements_on_one_asset_share_one_budget)
from tests.serving import free_port

pytestmark = pytest.mark.postgres
QUERIES, WORKERS, FITS = 24, 2, 8


@pytest.fixture
def settings(pg_url, tmp_path) -> Settings:
    # the providers' connectors listen on loopback: the broker's SSRF guard must admit it
    return Settings(data_dir=tmp_path / "broker", database_url=pg_url, redis_url=None,
                    connector_allow_networks=["127.0.0.0/8"])


@pytest.fixture
def two_workers(settings):
    """``uvicorn --workers 2`` on the same data dir and PostgreSQL schema as the in-process broker."""
    port = free_port()
    env = {**os.environ, "TWINSPACE_DATA_DIR": str(settings.data_dir), "TWINSPACE_DATABASE_URL": settings.database_url,
           "TWINSPACE_CONNECTOR_ALLOW_NETWORKS": '["127.0.0.0/8"]'}
    env.pop("TWINSPACE_REDIS_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "broker.app:create_app", "--factory", "--host",
                             "127.0.0.1", "--port", str(port), "--workers", str(WORKERS), "--log-level", "warning"],
                            env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code < 500:
                break
        except httpx.HTTPError:
            pass
        if time.time() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail("the two-worker broker did not start")
        time.sleep(0.3)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


def test_24_concurrent_queries_on_two_workers_spend_exactly_the_budget(setup, two_workers, engine):
    """Budget for 8 queries: exactly 8 answers, 16 × 429, no 500, nothing left reserved (the issue saw
    1 answer, 9 × 500 from a deadlock and 1.75 of 2.0 epsilon reserved for ever)."""
    provider, consumer = setup["provider"], setup["consumer"]
    asset = publish(provider, make_table(), offers=[{"id": "agg", "policy_id": "aggregation-only", "params": {
        "epsilon_per_query": 0.25, "privacy_budget": 0.25 * FITS, "min_cohort": 5}}])
    agreement = negotiate(consumer.client, provider.client, f"urn:twinspace:offer:{asset['id']}:v1:agg", "research")
    keys = ConsumerKeys.create("bfv")
    where = [{"column": "district", "op": "eq", "value": "Daan"}]

    def one(_: int) -> int:
        with httpx.Client(base_url=two_workers, timeout=120) as http:
            q = QueryClient(BrokerClient(http, consumer.org_id, consumer.private_key), keys)
            try:
                q.predicate(agreement["id"], where, kind="count")
                return 200
            except BrokerError as err:
                return err.status

    with ThreadPoolExecutor(QUERIES) as pool:
        statuses = list(pool.map(one, range(QUERIES)))
    assert sorted(statuses) == [200] * FITS + [429] * (QUERIES - FITS), statuses
    key = ledger.account_key(consumer.org_id, asset["id"])
    assert ledger.remaining(engine, key) == 0 and ledger.reserved(engine, key) == 0
    assert QueryClient(consumer.client, keys).budget(agreement["id"])["epsilon_spent"] == 0.25 * FITS
