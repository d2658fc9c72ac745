"""The consumer's encrypted-queries page lists its active agreements with their live privacy budgets."""

from __future__ import annotations

from twinspace.client.query import ConsumerKeys, QueryClient
from tests.console.conftest import console_login
from tests.privacy.test_query_api import setup  # noqa: F401  (fixture)


def test_queries_page_shows_budgets_and_the_cli(setup, https_client):
    consumer, agreement_id = setup["consumer"], setup["agreement"]["id"]
    QueryClient(consumer.client, ConsumerKeys.create("bfv")).predicate(
        agreement_id, [{"column": "district", "op": "eq", "value": "Daan"}], kind="count")
    console_login(https_client, consumer.org_id, consumer.private_key)
    page = https_client.get("/console/queries")
    assert page.status_code == 200
    assert agreement_id in page.text and "10 of 45 spent" in page.text and "(1 queries)" in page.text
    assert "twinspace query keygen" in page.text and f"--org {consumer.org_id}" in page.text
    # providers are refused this consumer page
    provider = setup["provider"]
    https_client.cookies.clear()
    console_login(https_client, provider.org_id, provider.private_key)
    assert https_client.get("/console/queries").status_code == 403
