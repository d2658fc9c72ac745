"""``twinspace demo``: the data space end to end, in process, on embedded defaults.

Each feature contributes steps (functions taking the DemoContext) to ``STEPS``; they run in order
against one broker served in-process through FastAPI's TestClient (no sockets, no services).
"""

from __future__ import annotations

import shutil
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import warnings

from fastapi import FastAPI

warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
from fastapi.testclient import TestClient  # noqa: E402  (after the filter: the demo's output stays clean)
from rich.console import Console
from rich.table import Table

from broker.app import create_app
from broker.identity.onboarding import NewOrg, create_org_with_key
from broker.runtime import Runtime
from broker.settings import Settings
from twinspace.client.broker import BrokerClient


@dataclass
class Participant:
    org: NewOrg
    client: BrokerClient


@dataclass
class DemoContext:
    console: Console
    settings: Settings
    runtime: Runtime
    app: FastAPI
    http: TestClient
    participants: dict[str, Participant] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)

    def add_participant(self, label: str, *, name: str, role: str, org_type: str,
                        attributes: dict[str, Any] | None = None) -> Participant:
        org = create_org_with_key(self.runtime.engine, name=name, role=role, key_dir=self.settings.data_dir / "keys",
                                  org_type=org_type, attributes=attributes, actor="demo")
        client = BrokerClient(self.http, org.org_id, org.private_key, audience=self.settings.issuer)
        self.participants[label] = Participant(org, client)
        return self.participants[label]

    def client(self, label: str) -> BrokerClient:
        return self.participants[label].client


def step_participants(ctx: DemoContext) -> None:
    """Register the cast and authenticate each with its own key (RFC 7523 client assertion)."""
    ctx.add_participant("operator", name="TwinSpace Operator", role="operator", org_type="operator")
    ctx.add_participant("provider", name="Taipei Department of Transportation", role="provider",
                        org_type="government_agency", attributes={"region": "TW-TPE", "domains": ["transport"]})
    ctx.add_participant("provider2", name="City Planning Bureau", role="provider", org_type="government_agency",
                        attributes={"region": "TW-TPE", "domains": ["planning"]})
    ctx.add_participant("consumer", name="Smart Mobility Ltd", role="consumer", org_type="enterprise",
                        attributes={"clearance": "internal", "purposes": ["traffic_planning", "research"],
                                    "scenarios": ["parking_guidance"]})
    ctx.add_participant("auditor", name="City Audit Office", role="auditor", org_type="audit_office",
                        attributes={"clearance": "core"})
    table = Table("participant", "role", "org id", "key id", "authenticated as", title="Participants")
    for label, p in ctx.participants.items():
        me = p.client.whoami()
        table.add_row(p.org.name, p.org.role, p.org.org_id, p.org.kid[:12] + "…", f"{me['name']} ({me['role']})")
    ctx.console.print(table)


# Steps run in this order; features append theirs (one line each).
STEPS: list[Callable[[DemoContext], None]] = [
    step_participants,
    __import__("twinspace.demo.catalog", fromlist=["x"]).step_catalog_publish,
    __import__("twinspace.demo.catalog", fromlist=["x"]).step_catalog_list,
    __import__("twinspace.demo.twins", fromlist=["x"]).step_twin_profiles,
    __import__("twinspace.demo.standards", fromlist=["x"]).step_standards,
    __import__("twinspace.demo.policy", fromlist=["x"]).step_policies,
    __import__("twinspace.demo.contracts", fromlist=["x"]).step_contract_negotiate,
    __import__("twinspace.demo.contracts", fromlist=["x"]).step_contract_download,
    __import__("twinspace.demo.privacy", fromlist=["x"]).step_encrypted_query,
    __import__("twinspace.demo.privacy", fromlist=["x"]).step_secure_aggregation,
    __import__("twinspace.demo.audit", fromlist=["x"]).step_audit_verify,  # keep last: verifies everything above
]


def run_demo(*, data_dir: Path | None = None, serve: bool = False, port: int = 8000,
             console: Console | None = None, audit_bundle: Path | None = Path("twinspace-demo-audit")) -> int:
    """Run every step; 0 on success, 1 with a clear message on the first failure."""
    console = console or Console()
    keep = data_dir is not None or serve
    root = Path(data_dir) if data_dir else (Path(".twinspace-demo") if serve else Path(tempfile.mkdtemp(prefix="twinspace-demo-")))
    if root.exists() and keep:
        shutil.rmtree(root)
    settings = Settings(data_dir=root, database_url=None, redis_url=None)
    console.rule("[bold]TwinSpace demo[/] — embedded defaults (SQLite, in-process policies and chain)")
    console.print(f"Broker state: {settings.data_dir}")
    try:
        runtime = Runtime.start(settings)
        app = create_app(settings, runtime=runtime)
        with TestClient(app) as http:
            ctx = DemoContext(console, settings, runtime, app, http)
            if audit_bundle is not None:  # what an auditor takes away: kept after the demo's state is removed
                ctx.state["audit_bundle_dir"] = Path(audit_bundle).resolve()
            for step in STEPS:
                console.rule(f"[cyan]{(step.__doc__ or step.__name__).strip().splitlines()[0]}")
                step(ctx)
    except Exception as exc:  # the demo reports any failure plainly and exits non-zero
        console.print(f"[bold red]Demo failed:[/] {type(exc).__name__}: {exc}")
        console.print(traceback.format_exc(limit=6), style="dim")
        return 1
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    console.rule("[bold green]Demo completed")
    if serve:
        import os

        import uvicorn

        from broker.settings import get_settings

        # Serve the demo's own settings and runtime (not a factory reading the environment: get_settings() is
        # cached and was already filled with the defaults, so the served broker opened an empty ./.twinspace).
        os.environ["TWINSPACE_DATA_DIR"] = str(settings.data_dir)
        for name in ("TWINSPACE_DATABASE_URL", "TWINSPACE_REDIS_URL"):  # the demo ran on embedded defaults
            os.environ.pop(name, None)
        get_settings.cache_clear()
        who = Table("participant", "role", "org id (--org)", "key file (--key, or console login)",
                    title="Log in to the console, or use the CLI, as")
        for p in ctx.participants.values():
            who.add_row(p.org.name, p.org.role, p.org.org_id, str(p.org.key_file))
        console.print(who)
        console.print(f"Serving the demo broker on http://127.0.0.1:{port} (console at "
                      f"http://127.0.0.1:{port}/console; log in with a key from {settings.data_dir / 'keys'}). "
                      "Ctrl-C stops it.")
        uvicorn.run(create_app(settings, runtime=runtime), host="127.0.0.1", port=port)
    return 0
