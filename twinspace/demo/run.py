"""``twinspace demo``: the data space end to end, in process, on embedded defaults.

Each feature contributes steps (functions taking the DemoContext) to ``STEPS``; they run in order
against one broker served on a loopback port, with each provider's connector a process of its own
(``twinspace/demo/connectors.py``): the providers' rows stay in their connectors' directories.
"""

from __future__ import annotations

import shutil
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
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
    http: Any  # an httpx.Client on the broker (a TestClient in tests)
    participants: dict[str, Participant] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    root: Path | None = None  # the demo's directory (broker, keys, providers, connectors beside each other)
    # (ctx, label) -> a started connector with .endpoint, .put(bytes) and .stop(); None: in-thread harness
    connector_factory: Callable[["DemoContext", str], Any] | None = None
    connectors: dict[str, Any] = field(default_factory=dict)

    @property
    def base(self) -> Path:
        return self.root or self.settings.data_dir.parent

    def add_participant(self, label: str, *, name: str, role: str, org_type: str,
                        attributes: dict[str, Any] | None = None) -> Participant:
        org = create_org_with_key(self.runtime.engine, name=name, role=role, key_dir=self.base / "keys",
                                  org_type=org_type, attributes=attributes, actor="demo")
        client = BrokerClient(self.http, org.org_id, org.private_key, audience=self.settings.issuer)
        self.participants[label] = Participant(org, client)
        return self.participants[label]

    def client(self, label: str) -> BrokerClient:
        return self.participants[label].client

    def work_dir(self, label: str) -> Path:
        """A provider's own working files (raw and de-identified tables): never the broker's directory."""
        path = self.base / "providers" / label
        path.mkdir(parents=True, exist_ok=True)
        return path

    def connector(self, label: str) -> Any:
        """The provider's connector, started and registered with the broker (ownership proven) on first use."""
        if label not in self.connectors:
            connector = (self.connector_factory or _harness)(self, label)
            self.connectors[label] = connector
            row = self.client(label).connector_register(connector.endpoint)
            self.console.print(f"{self.participants[label].org.name} runs its connector at {connector.endpoint} "
                               f"(its own process, key and data directory); registered as {row['id']} after "
                               "answering the broker's ownership challenge with its key.")
        return self.connectors[label]

    def publish(self, label: str, metadata: dict[str, Any], data: bytes, asset_id: str | None = None) -> dict:
        """The provider places the table in its connector and publishes the metadata only."""
        connector = self.connector(label)
        connector.put(data)
        return self.client(label).catalog_publish({**metadata, "data_endpoint": connector.endpoint},
                                                  asset_id=asset_id)

    def stop_connectors(self) -> None:
        for connector in self.connectors.values():
            connector.stop()


def _harness(ctx: DemoContext, label: str) -> Any:
    """In-thread connector for a broker reached through a TestClient (tests of single steps)."""
    from twinspace.testing.connector import ConnectorHarness

    org = ctx.participants[label].org
    link = BrokerClient(ctx.http, org.org_id, org.private_key, audience=ctx.settings.issuer)
    harness = ConnectorHarness(org.org_id, org.private_key, broker=link, broker_issuer=ctx.settings.issuer,
                               broker_public_key=ctx.runtime.broker_key.public_key(),
                               data_dir=ctx.base / "connectors" / label)
    harness.start()
    return harness


def _connector_process(ctx: DemoContext, label: str) -> Any:
    from twinspace.demo.connectors import ConnectorProcess

    org = ctx.participants[label].org
    broker_url = str(ctx.http.base_url).rstrip("/")
    console = [broker_url, broker_url.replace("://127.0.0.1:", "://localhost:")]  # the console pulls from the browser
    return ConnectorProcess(label, org.org_id, org.key_file, ctx.base / "connectors" / label, broker_url=broker_url,
                            audience=ctx.settings.issuer, cors_origins=console).start()


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
    # The broker's state is a directory of its own: the canary test (tests/transfer/test_canary.py) reads
    # all of it and finds no provider row there.
    settings = Settings(data_dir=root / "broker", database_url=None, redis_url=None,
                        connector_allow_networks=["127.0.0.0/8"])  # the demo's connectors listen on loopback
    console.rule("[bold]TwinSpace demo[/] — embedded defaults (SQLite, in-process policies and chain)")
    console.print(f"Broker state: {settings.data_dir}; provider connectors: {root / 'connectors'}")
    served, ctx = None, None
    try:
        from twinspace.testing.serving import ThreadedServer

        runtime = Runtime.start(settings)
        app = create_app(settings, runtime=runtime)
        served = ThreadedServer(app, port=port if serve else 0, name="demo-broker").start()
        http = httpx.Client(base_url=served.url, timeout=120.0)
        ctx = DemoContext(console, settings, runtime, app, http, root=root, connector_factory=_connector_process)
        if audit_bundle is not None:  # what an auditor takes away: kept after the demo's state is removed
            ctx.state["audit_bundle_dir"] = Path(audit_bundle).resolve()
        for step in STEPS:
            console.rule(f"[cyan]{(step.__doc__ or step.__name__).strip().splitlines()[0]}")
            step(ctx)
        console.rule("[bold green]Demo completed")
        if serve:
            _serve_forever(ctx, served)
    except Exception as exc:  # the demo reports any failure plainly and exits non-zero
        console.print(f"[bold red]Demo failed:[/] {type(exc).__name__}: {exc}")
        console.print(traceback.format_exc(limit=6), style="dim")
        return 1
    finally:
        if ctx is not None:
            ctx.stop_connectors()
        if served is not None:
            served.stop()
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


def _serve_forever(ctx: DemoContext, served) -> None:
    """``--serve``: the broker and the connectors stay up on the demo data until Ctrl-C."""
    import time

    who = Table("participant", "role", "org id (--org)", "key file (--key, or console login)",
                title="Log in to the console, or use the CLI, as")
    for p in ctx.participants.values():
        who.add_row(p.org.name, p.org.role, p.org.org_id, str(p.org.key_file))
    ctx.console.print(who)
    for label, connector in ctx.connectors.items():
        ctx.console.print(f"Connector of {ctx.participants[label].org.name}: {connector.endpoint}")
    ctx.console.print(f"Serving the demo broker on {served.url} (console at {served.url}/console; log in with a "
                      f"key from {ctx.base / 'keys'}). Ctrl-C stops it.")
    try:
        while served.thread is not None and served.thread.is_alive():
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
