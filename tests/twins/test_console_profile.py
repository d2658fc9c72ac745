"""The console's entity-profile page: the provider sees the figures, charts, map and declaration of
its Taipei parking profile; other organisations and non-profile assets are refused."""

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
        prov.client, path, parking_profile(table, k=82, source_hash=sha), tmp_path,
        source={"title": "Taipei public parking lots", "classification": "public", "domain": "transport", "offers": OPEN},
        profile_meta={"title": "Taipei parking profile", "classification": "public", "domain": "transport",
                      "offers": OPEN})
    console_login(https_client, prov.org_id, prov.private_key)
    page = https_client.get(f"/console/assets/{prof['id']}/profile")
    assert page.status_code == 200, page.text
    text = page.text
    assert "Taipei parking profile" in text and "TW-TPE:BS:OffStreetParking:*" in text
    assert "178,284" in text and "1,765" in text  # car spaces and car parks, from the profile table
    assert f'href="/console/catalog/{asset["id"]}"' in text and sha in text
    assert "k-threshold k = 82" in text and "district 2" in text
    assert 'data-dimension="district"' in text and "中山區" in text and "萬華區" not in text  # suppressed, not named
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
