"""The console's entity-profile page, from catalog metadata only (the broker holds no table): the provider
sees the title, the description with the key figures, the code prefix, the map and the declaration of its
Taipei parking profile (the source asset, version and content hash from the catalog), and is told the
figures themselves are at its connector; other organisations and non-profile assets are refused."""

from __future__ import annotations

from connectors.tables import write_table
from connectors.twins.profiles import parking_profile
from connectors.twins.publish import load_source, publish_with_profile
from tests.console.conftest import console_login, https_client  # noqa: F401  (fixture)

OPEN = [{"id": "open", "policy_id": "open-data", "params": {}}]


def test_profile_page(tmp_path, make_org, parking, https_client):
    prov = make_org("provider", org_type="government_agency")
    path = tmp_path / "parking.arrow"
    write_table(path, parking.drop_columns(["telephone"]))
    table, sha = load_source(path)
    asset, prof = publish_with_profile(
        prov.client, path, parking_profile(table, k=82, source_hash=sha), tmp_path, connector=prov.connector(),
        source={"title": "Taipei public parking lots", "classification": "public", "domain": "transport", "offers": OPEN},
        profile_meta={"title": "Taipei parking profile", "classification": "public", "domain": "transport",
                      "offers": OPEN})
    console_login(https_client, prov.org_id, prov.private_key)
    page = https_client.get(f"/console/assets/{prof['id']}/profile")
    assert page.status_code == 200, page.text
    text = page.text
    assert "Taipei parking profile" in text and "TW-TPE:BS:OffStreetParking:*" in text
    assert "1,765" in text or "1765" in text  # the car parks, as the description declares them
    assert f'href="/console/catalog/{asset["id"]}"' in text and f'v{asset["version"]}' in text
    assert asset["content_hash"] in text and sha == asset["content_hash"]  # the source version's exact bytes
    assert "k-threshold k = 82" in text and "group(s) suppressed" in text
    assert prof["content_hash"] in text and prov.connector().endpoint in text  # the figures are at the connector
    assert 'data-dimension="district"' not in text and "中山區" not in text  # no rows at the broker
    assert "<svg" in text and 'id="extent-map"' in text
    # the source asset is not a profile; someone else's profile is not shown
    assert https_client.get(f"/console/assets/{asset['id']}/profile").status_code == 422
    other = make_org("provider", org_type="enterprise")
    https_client.cookies.clear()
    console_login(https_client, other.org_id, other.private_key)
    assert https_client.get(f"/console/assets/{prof['id']}/profile").status_code == 404
    consumer = make_org("consumer", org_type="enterprise")
    https_client.cookies.clear()
    console_login(https_client, consumer.org_id, consumer.private_key)
    assert https_client.get(f"/console/assets/{prof['id']}/profile").status_code == 403
