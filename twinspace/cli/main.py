"""The one command-line entry point: ``twinspace``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from twinspace.extras import MissingExtra, extra_for
from twinspace.roles import Role

app = typer.Typer(help="TwinSpace: trusted data space for digital-twin city assets.", no_args_is_help=True,
                  pretty_exceptions_show_locals=False)
org_app = typer.Typer(help="Manage participant organisations on a local broker.", no_args_is_help=True)
app.add_typer(org_app, name="org")
console = Console()


def _settings(data_dir: Optional[Path]):
    from broker.settings import Settings

    return Settings(data_dir=data_dir) if data_dir else Settings()


DataDir = typer.Option(None, "--data-dir", help="Broker state directory (default: $TWINSPACE_DATA_DIR or .twinspace).")


@app.command()
def init(data_dir: Optional[Path] = DataDir,
         operator_name: str = typer.Option("TwinSpace Operator", help="Name of the operator organisation.")) -> None:
    """Create a local broker: database schema, broker signing key and an operator organisation."""
    from broker.identity.onboarding import create_org_with_key, find_org
    from broker.runtime import Runtime

    settings = _settings(data_dir)
    runtime = Runtime.start(settings)
    console.print(f"Database: [bold]{settings.effective_database_url}[/] (migrated)")
    console.print(f"Broker key: {settings.effective_broker_key_file} (kid {runtime.broker_kid})")
    existing = find_org(runtime.engine, operator_name)
    if existing:
        console.print(f"Operator org already exists: {existing.id}")
        return
    new = create_org_with_key(runtime.engine, name=operator_name, role=Role.operator.value,
                              key_dir=settings.data_dir / "keys", org_type="operator")
    console.print(f"Operator org [bold]{new.org_id}[/]; private key written to {new.key_file} (0600)")


@org_app.command("create")
def org_create(name: str, role: Role = typer.Option(..., help="provider, consumer, auditor or operator"),
               org_type: str = typer.Option("other", help="e.g. government_agency, enterprise, audit_office"),
               attr: list[str] = typer.Option([], help="Attribute key=value (repeatable), e.g. clearance=internal"),
               key_out: Optional[Path] = typer.Option(None, help="Where to write the private key (0600)."),
               org_id_out: Optional[Path] = typer.Option(None, help="Also write the new org id to this file "
                                                         "(for scripts, e.g. docker-compose's onboarding)."),
               as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
               data_dir: Optional[Path] = DataDir) -> None:
    """Register an organisation: its key pair is generated here and only the public key is registered."""
    from broker.identity.onboarding import create_org_with_key
    from broker.runtime import Runtime

    settings = _settings(data_dir)
    attributes = {}
    for item in attr:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--attr expects key=value, got {item!r}")
        attributes[key] = value
    runtime = Runtime.start(settings)
    new = create_org_with_key(runtime.engine, name=name, role=role.value, key_dir=settings.data_dir / "keys",
                              org_type=org_type, attributes=attributes, key_file=key_out)
    if org_id_out is not None:
        Path(org_id_out).write_text(new.org_id + "\n", encoding="utf-8")
    if as_json:
        import json

        typer.echo(json.dumps({"org_id": new.org_id, "name": new.name, "role": new.role, "kid": new.kid,
                               "key_file": str(new.key_file)}))
        return
    console.print(f"Registered [bold]{new.name}[/] as {new.role}: org id {new.org_id}, key id {new.kid}")
    console.print(f"Private key: {new.key_file} (mode 0600) — keep it on this machine.")


@org_app.command("list")
def org_list(data_dir: Optional[Path] = DataDir) -> None:
    """List registered organisations and their keys."""
    from broker.identity.service import list_orgs, org_keys
    from broker.runtime import Runtime
    from broker.storage.db import session_scope

    runtime = Runtime.start(_settings(data_dir))
    table = Table()
    table.add_column("org id", no_wrap=True, min_width=20)  # the id other commands take: never cut
    for name in ("name", "role", "type", "status", "keys"):
        table.add_column(name)
    with session_scope(runtime.engine) as session:
        for org in list_orgs(session):
            keys = ", ".join(f"{k.kid[:10]}…({k.status})" for k in org_keys(session, org.id))
            table.add_row(org.id, org.name, org.role, org.org_type, org.status, keys)
    console.print(table)


@org_app.command("revoke-key")
def org_revoke_key(org_id: str, kid: str, data_dir: Optional[Path] = DataDir) -> None:
    """Revoke a participant key (takes effect on the next request)."""
    from broker.identity.service import revoke_key
    from broker.runtime import Runtime
    from broker.storage.db import session_scope

    runtime = Runtime.start(_settings(data_dir))
    with session_scope(runtime.engine) as session:
        revoke_key(session, org_id, kid, actor="cli")
    console.print(f"Revoked key {kid} of {org_id}")


@app.command()
def serve(host: str = typer.Option("127.0.0.1"), port: int = typer.Option(8000), workers: int = typer.Option(1, min=1),
          data_dir: Optional[Path] = DataDir) -> None:
    """Run the broker HTTP API (uvicorn)."""
    import os

    from broker.app import serve as serve_broker

    if data_dir:
        os.environ["TWINSPACE_DATA_DIR"] = str(data_dir)
    serve_broker(host=host, port=port, workers=workers)


@app.command()
def demo(data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Keep demo state here (default: a temporary directory)."),
         serve_after: bool = typer.Option(False, "--serve", help="Leave the broker running with the demo data."),
         port: int = typer.Option(8000, help="Port for --serve."),
         audit_bundle: Path = typer.Option(Path("twinspace-demo-audit"), file_okay=False,
                                           help="Where to write the audit bundle an auditor verifies offline.")) -> None:
    """Run the data space end to end on embedded defaults (no network, no services)."""
    from twinspace.demo.run import run_demo

    raise typer.Exit(run_demo(data_dir=data_dir, serve=serve_after, port=port, audit_bundle=audit_bundle))


# Feature sub-apps: one line each.
app.add_typer(__import__("twinspace.cli.connector", fromlist=["connector_app"]).connector_app, name="connector")
app.add_typer(__import__("twinspace.cli.audit", fromlist=["audit_app"]).audit_app, name="audit")
app.add_typer(__import__("twinspace.cli.contract", fromlist=["contract_app"]).contract_app, name="contract")
app.add_typer(__import__("twinspace.cli.query", fromlist=["query_app"]).query_app, name="query")
app.add_typer(__import__("twinspace.cli.catalog", fromlist=["catalog_app"]).catalog_app, name="catalog")
app.add_typer(__import__("twinspace.cli.negotiate", fromlist=["negotiate_app"]).negotiate_app, name="negotiate")
app.add_typer(__import__("twinspace.cli.transfer", fromlist=["transfer_app"]).transfer_app, name="transfer")
app.command("download")(__import__("twinspace.cli.transfer", fromlist=["download"]).download)
app.add_typer(__import__("twinspace.cli.policy", fromlist=["policy_app"]).policy_app, name="policy")
app.add_typer(__import__("twinspace.cli.twins", fromlist=["twin_app"]).twin_app, name="twin")


def main() -> None:
    """The console script: a command whose optional extra is missing says which one, not a traceback."""
    try:
        app()
    except MissingExtra as exc:
        console.print(f"[bold red]error[/] ({exc.code}): {escape(exc.detail)}", highlight=False)
        raise SystemExit(2) from None
    except ModuleNotFoundError as exc:
        extra = extra_for(exc)
        if extra is None:
            raise
        console.print(f"[bold red]error[/] (missing_extra): this command needs the {escape(f'[{extra}]')} extra "
                      f"({exc.name} is not installed): {escape(f'pip install twinspace[{extra}]')}", highlight=False)
        raise SystemExit(2) from None


if __name__ == "__main__":  # python -m twinspace.cli.main (the demo starts connectors this way)
    main()
