"""The documents tell the truth about the code: every ``twinspace`` command and option they show
exists, every HTTP route they name is served, and the endpoint table in docs/api.md is current."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
from typer.main import get_command

from twinspace.cli.main import app as cli

REPO = Path(__file__).resolve().parent.parent
DOCS = sorted((REPO / "docs").glob("*.md")) + [REPO / "README.md"]


def _commands(text: str):
    text = re.sub(r"\\\n\s*", " ", text)  # shell line continuations
    for match in re.finditer(r"(?:^|`|\$ |\n\s*)(twinspace(?: [^`\n#|]*)?)", text):
        yield match.group(1).strip()


def _resolve(words: list[str]):
    command, i = get_command(cli), 1
    while i < len(words) and hasattr(command, "commands") and words[i] in command.commands:
        command, i = command.commands[words[i]], i + 1
    return command, i


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_command_and_option_shown_exists(doc):
    problems = []
    for line in _commands(doc.read_text()):
        words = line.split()
        command, i = _resolve(words)
        if hasattr(command, "commands") and i < len(words) and re.fullmatch(r"[a-z][a-z-]+", words[i]):
            problems.append(f"{line!r}: no command {words[i]!r}")
        options = {o for p in command.params for o in [*getattr(p, "opts", []), *getattr(p, "secondary_opts", [])]}
        options.add("--help")
        for word in words[i:]:
            name = word.strip("[]").split("=")[0].rstrip(",")
            if name.startswith("--") and name not in options:
                problems.append(f"{line!r}: no option {name}")
    assert problems == []


def test_the_checker_catches_a_wrong_command_and_option():
    assert _resolve("twinspace audit verify".split())[1] == 3
    command, i = _resolve("twinspace audit verfiy".split())
    assert hasattr(command, "commands") and i == 2
    command, _ = _resolve("twinspace org create".split())
    assert "--role" in {o for p in command.params for o in p.opts} and "--rol" not in {o for p in command.params
                                                                                       for o in p.opts}


def _routes(app) -> set[tuple[str, str]]:
    return {(method, re.sub(r"\{[^}]+\}", "{}", route.path)) for route in app.state.api_routes
            for method in route.methods}


def _connector_routes(tmp_path):
    from connectors.node.app import create_node_app
    from connectors.node.config import NodeConfig
    from twinspace.crypto import generate_key

    config = NodeConfig(endpoint="http://127.0.0.1:9", data_dir=tmp_path, private_key=generate_key(), org_id="org_x",
                        broker=None, broker_issuer="twinspace-broker", broker_public_key=generate_key().public_key())
    from starlette.routing import Route

    from broker.api.routes import api_routes

    router = create_node_app(config).router
    plain = [r for r in router.routes if isinstance(r, Route) and r.methods]  # the Starlette pull route
    return {(method, re.sub(r"\{[^}]+\}", "{}", route.path)) for route in [*api_routes(router), *plain]
            for method in route.methods}


def test_every_route_the_documents_name_is_served(app, tmp_path):
    """By the broker, or — for the data plane's routes — by a connector."""
    served = _routes(app) | _connector_routes(tmp_path)
    missing = []
    for doc in DOCS:
        for method, path in re.findall(r"\b(GET|POST|PUT|PATCH|DELETE) (/[A-Za-z0-9_{}./\-]*)", doc.read_text()):
            normal = re.sub(r"\{[^}]+\}", "{}", path.rstrip(".,)")).split("?")[0]
            if normal.startswith("/v1/"):  # OPA's Data API (docs/policies.md), not the broker's
                continue
            if (method, normal) not in served:
                missing.append(f"{doc.name}: {method} {path}")
    assert missing == []


def test_api_md_endpoint_table_is_current():
    spec = importlib.util.spec_from_file_location("gen_api", REPO / "docs" / "gen_api.py")
    gen_api = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen_api)
    text = (REPO / "docs" / "api.md").read_text()
    table = text.split(gen_api.MARK_START)[1].split(gen_api.MARK_END)[0]
    documented = [line for line in table.strip().splitlines()[2:]]
    assert documented == gen_api.endpoint_rows(), "run .venv/bin/python docs/gen_api.py"


def _cli_variables() -> set[str]:
    """Every ``TWINSPACE_*`` variable an option of the CLI reads (participants' and connectors' side)."""
    from typer.main import get_command

    from twinspace.cli.main import app as cli

    found, todo = set(), [get_command(cli)]
    while todo:
        command = todo.pop()
        todo.extend(getattr(command, "commands", {}).values())
        for param in command.params:
            for var in ([param.envvar] if isinstance(param.envvar, str) else param.envvar or []):
                found.add(var.removeprefix("TWINSPACE_"))
    return found


# Variables read by the participant-side CLIs and the tests, not by the broker's Settings.
CLIENT_SIDE = {"BROKER_PUBLIC_KEY", "PSEUDONYM_SECRET", "TEST_PG", "TEST_REDIS", "SHARED_DATA", "PROFILE_FILE",
               *_cli_variables()}


def test_every_setting_is_documented_and_every_documented_variable_exists():
    from broker.settings import Settings

    fields = {name.upper() for name in Settings.model_fields}
    sources = [*DOCS, REPO / "docker-compose.yml", REPO / "Dockerfile"]
    named = {v for path in sources for v in re.findall(r"TWINSPACE_([A-Z0-9_]+)", path.read_text())}
    assert named - fields - CLIENT_SIDE == set(), "variables the broker does not read"
    assert fields - named == set(), "settings no document explains"
