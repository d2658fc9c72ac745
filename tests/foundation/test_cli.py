"""The CLI: init, onboarding with a 0600 key file, and the demo exit code."""

from __future__ import annotations

import stat

from typer.testing import CliRunner

from twinspace.cli.main import app

runner = CliRunner()


def test_init_and_org_create_write_private_keys_0600(tmp_path):
    data = tmp_path / "state"
    result = runner.invoke(app, ["init", "--data-dir", str(data)])
    assert result.exit_code == 0, result.output
    keys = list((data / "keys").glob("*.pem"))
    assert len(keys) == 1 and stat.S_IMODE(keys[0].stat().st_mode) == 0o600
    assert stat.S_IMODE((data / "broker_ed25519.pem").stat().st_mode) == 0o600
    again = runner.invoke(app, ["init", "--data-dir", str(data)])
    assert again.exit_code == 0 and "already exists" in again.output

    result = runner.invoke(app, ["org", "create", "Water Authority", "--role", "provider", "--org-type",
                                 "government_agency", "--attr", "region=TW-TPE", "--data-dir", str(data)])
    assert result.exit_code == 0, result.output
    key_file = data / "keys" / "water-authority.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in key_file.read_bytes()
    listing = runner.invoke(app, ["org", "list", "--data-dir", str(data)])
    assert "Water" in listing.output and "provider" in listing.output
    dup = runner.invoke(app, ["org", "create", "Water Authority", "--role", "provider", "--data-dir", str(data)])
    assert dup.exit_code != 0


def test_bad_attribute_syntax_is_refused(tmp_path):
    result = runner.invoke(app, ["org", "create", "X Org", "--role", "consumer", "--attr", "novalue",
                                 "--data-dir", str(tmp_path)])
    assert result.exit_code != 0
