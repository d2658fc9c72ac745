"""The encrypted-query and secure-aggregation paths on PostgreSQL (bytea ciphertexts, JSON columns,
the conditional-UPDATE budget ledger): the same tests as on SQLite, with the broker on PostgreSQL."""

from __future__ import annotations

import pytest

from broker.settings import Settings
from tests.privacy.test_query_api import (  # noqa: F401  (re-run here on PostgreSQL)
    bfv_keys, setup, test_masked_sum_count_and_mean_match_plaintext_within_the_noise,
    test_secure_aggregation_across_providers, test_the_budget_is_enforced_and_plain_reads_are_refused)

pytestmark = pytest.mark.postgres


@pytest.fixture
def settings(pg_url, tmp_path) -> Settings:
    return Settings(data_dir=tmp_path / "broker", database_url=pg_url, redis_url=None)
