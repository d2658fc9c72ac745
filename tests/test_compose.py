"""docker-compose.yml, checked by reading (Docker does not run here): two broker replicas on one
PostgreSQL, Redis, OPA and anvil, wired with settings the broker really reads and commands the CLI
really has."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import yaml
from typer.main import get_command

from twinspace.cli.main import app as cli
from broker.settings import Settings

REPO = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def _env(service: str) -> dict[str, str]:
    return {k: str(v) for k, v in SERVICES[service]["environment"].items()}


def _flag(argv: list[str], name: str) -> str:
    for i, word in enumerate(argv):
        if word == name:
            return argv[i + 1]
        if word.startswith(name + "="):
            return word.split("=", 1)[1]
    raise AssertionError(f"{name} not in {argv}")


def test_the_services_are_there():
    assert {"postgres", "redis", "opa", "anvil", "init", "broker"} <= set(SERVICES)
    assert SERVICES["postgres"]["image"].startswith("postgres:")
    assert SERVICES["opa"]["image"].startswith("openpolicyagent/opa")
    assert SERVICES["anvil"]["image"].startswith("ghcr.io/foundry-rs/foundry")
    assert SERVICES["broker"]["deploy"]["replicas"] == 2
    assert SERVICES["broker"]["depends_on"]["init"]["condition"] == "service_completed_successfully"


def test_every_broker_variable_is_a_setting_and_parses():
    for service in ("init", "broker"):
        env = _env(service)
        fields = {name.upper() for name in Settings.model_fields}
        assert {k.removeprefix("TWINSPACE_") for k in env} <= fields
        settings = Settings(**{k.removeprefix("TWINSPACE_").lower(): v for k, v in env.items()})
        assert settings.effective_database_url.startswith("postgresql+psycopg://")
    assert _env("init") == _env("broker"), "init must migrate the database the replicas use"


def test_urls_point_at_the_services_and_their_ports():
    env = _env("broker")
    pg = SERVICES["postgres"]["environment"]
    db = urlparse(env["TWINSPACE_DATABASE_URL"])
    assert (db.hostname, db.port, db.username, db.password, db.path.lstrip("/")) == \
        ("postgres", 5432, pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"], pg["POSTGRES_DB"])
    assert urlparse(env["TWINSPACE_REDIS_URL"]).hostname == "redis"
    opa = urlparse(env["TWINSPACE_OPA_URL"])
    assert opa.hostname == "opa" and str(opa.port) == _flag(SERVICES["opa"]["command"], "--addr").rsplit(":", 1)[1]
    chain = urlparse(env["TWINSPACE_CHAIN_RPC_URL"])
    anvil = SERVICES["anvil"]["entrypoint"]
    assert anvil[0] == "anvil" and chain.hostname == "anvil" and str(chain.port) == _flag(anvil, "--port")
    assert _flag(anvil, "--host") == "0.0.0.0"
    assert env["TWINSPACE_AUDIT_ANCHORING"] == "rpc"
    # The policies directory is where the Dockerfile copies the library.
    assert env["TWINSPACE_POLICIES_DIR"] == "/app/policies"
    assert "COPY policies ./policies" in (REPO / "Dockerfile").read_text()
    assert "WORKDIR /app" in (REPO / "Dockerfile").read_text()


def test_commands_exist_in_the_cli():
    root = get_command(cli)
    for service in ("init", "broker"):
        argv = SERVICES[service]["command"]
        assert argv[0] == "twinspace"
        command = root.commands[argv[1]]
        options = {o for p in command.params for o in p.opts}
        assert {w for w in argv[2:] if w.startswith("--")} <= options, (service, argv)
    broker = SERVICES["broker"]["command"]
    assert _flag(broker, "--host") == "0.0.0.0" and int(_flag(broker, "--workers")) >= 1
    port = _flag(broker, "--port")
    assert all(p.endswith(":" + port) for p in SERVICES["broker"]["ports"])
    assert f"127.0.0.1:{port}/readyz" in " ".join(SERVICES["broker"]["healthcheck"]["test"])


def _shell_words(service: str) -> list[str]:
    """The words of a ``sh -c`` command (compose's ``$$`` is a literal ``$``)."""
    import shlex

    argv = SERVICES[service]["command"]
    assert argv[:2] == ["sh", "-c"], service
    return shlex.split(argv[2].replace("$$", "$").removeprefix("exec "))


def test_two_provider_connectors_each_with_its_own_key_and_storage():
    """The data plane: two connectors, each its own process, key volume and data volume; the broker reaches
    them on the project's network only (its SSRF guard admits that subnet and nothing else private)."""
    import ipaddress
    import json

    root = get_command(cli)
    serve = root.commands["connector"].commands["serve"]
    serve_options = {o for p in serve.params for o in p.opts}
    subnet = ipaddress.ip_network(COMPOSE["networks"]["default"]["ipam"]["config"][0]["subnet"])
    allowed = [ipaddress.ip_network(n) for n in json.loads(_env("broker")["TWINSPACE_CONNECTOR_ALLOW_NETWORKS"])]
    assert allowed == [subnet]
    keys, data = set(), set()
    for name in ("connector-a", "connector-b"):
        words = _shell_words(name)
        assert words[:3] == ["twinspace", "connector", "serve"]
        assert {w for w in words[3:] if w.startswith("--")} <= serve_options, words
        public = urlparse(_flag(words, "--public-url"))
        assert public.hostname == name and str(public.port) == _flag(words, "--port")
        env = SERVICES[name]["environment"]
        assert urlparse(env["TWINSPACE_BROKER_URL"]).hostname == "broker"
        mounts = dict(v.split(":")[:2][::-1] for v in SERVICES[name]["volumes"])
        assert mounts[_flag(words, "--data-dir")].endswith("-data")
        assert env["TWINSPACE_ORG_KEY"].startswith("/keys/")
        keys.add(mounts["/keys"])
        data.add(mounts[_flag(words, "--data-dir")])
        assert SERVICES[name]["depends_on"]["onboard"]["condition"] == "service_completed_successfully"
    assert len(keys) == 2 and len(data) == 2, "each connector has its own key and its own storage"
    # Onboarding registers one provider per key volume with commands the CLI has.
    create = root.commands["org"].commands["create"]
    words = _shell_words("onboard")
    options = {o for p in create.params for o in p.opts}
    assert {w for w in words if w.startswith("--") and not w.startswith("--org-type=")} <= options | {"--role"}
    assert "broker-state" not in keys | data
