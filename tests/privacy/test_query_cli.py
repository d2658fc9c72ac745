"""`twinspace query ...` against a broker served on loopback: keygen keeps the secret key in a 0600
file, queries decrypt on the consumer's side, refusals exit non-zero with the problem code."""

from __future__ import annotations

import stat

import pytest
from typer.testing import CliRunner

from twinspace.cli.main import app as cli
from twinspace.crypto import save_private_key
from twinspace.client.broker import negotiate
from tests.privacy.test_query_api import make_table, publish
from tests.serving import serve_app

runner = CliRunner()


@pytest.fixture
def served(app):
    with serve_app(app) as url:
        yield url


def test_keygen_aggregate_where_budget_and_refusal(make_org, served, tmp_path):
    provider = make_org("provider", org_type="government_agency")
    consumer = make_org("consumer", org_type="enterprise")
    asset = publish(provider, make_table())
    agreement = negotiate(consumer.client, provider.client, f"urn:twinspace:offer:{asset['id']}:v1:agg", "research")
    key_file = tmp_path / "consumer.pem"
    save_private_key(key_file, consumer.private_key)
    he_key = tmp_path / "he" / "bfv.tenseal"
    auth = ["--url", served, "--org", consumer.org_id, "--key", str(key_file), "--he-key", str(he_key)]

    r = runner.invoke(cli, ["query", "keygen", "--out", str(he_key)])
    assert r.exit_code == 0, r.output
    assert stat.S_IMODE(he_key.stat().st_mode) == 0o600
    assert runner.invoke(cli, ["query", "keygen", "--out", str(he_key)]).exit_code == 2  # never overwritten silently

    # encrypted masks are refused by the broker whatever the offer says (they cannot be proven 0/1)
    r = runner.invoke(cli, ["query", "aggregate", agreement["id"], "--column", "floor_area", "--bound", "500",
                            "--all", *auth])
    assert r.exit_code == 2 and "encrypted_mask_not_allowed" in r.output, r.output

    r = runner.invoke(cli, ["query", "where", agreement["id"], "--where", "district:eq:Daan", *auth])
    assert r.exit_code == 0, r.output
    assert "budget 10 of 45 used" in r.output, r.output
    r = runner.invoke(cli, ["query", "where", agreement["id"], "--where", "building_id:eq:B0-0003", *auth])
    assert r.exit_code == 2 and "query_refused" in r.output  # charged, like an answer
    r = runner.invoke(cli, ["query", "budget", agreement["id"], *auth[:6]])
    assert r.exit_code == 0 and "20 of 45 spent in 2 queries" in r.output, r.output
    mask = tmp_path / "mask.txt"
    mask.write_text("1\n0\n2\n")
    r = runner.invoke(cli, ["query", "aggregate", agreement["id"], "--column", "floor_area", "--bound", "5",
                            "--mask-file", str(mask), *auth])
    assert r.exit_code == 2 and "only 0 and 1" in r.output
    # a linear score per named group; --group-by alone is refused before anything is sent
    r = runner.invoke(cli, ["query", "score", agreement["id"], "--feature", "floor_area", "--weight", "2",
                            "--bound", "500", "--group-by", "district", *auth])
    assert r.exit_code == 2 and "--group" in r.output
    r = runner.invoke(cli, ["query", "score", agreement["id"], "--feature", "floor_area", "--weight", "2",
                            "--bound", "500", "--group-by", "district", "--group", "Daan", "--group", "Xinyi", *auth])
    assert r.exit_code == 0 and "Daan" in r.output, r.output
