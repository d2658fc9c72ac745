"""``twinspace contract ...``: verify an exported agreement offline; list, export and revoke through the API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

contract_app = typer.Typer(help="Signed data-use agreements: verify offline, list, export, revoke.",
                           no_args_is_help=True)
console = Console()

Url = typer.Option(..., help="Broker base URL, e.g. https://broker.example")
OrgId = typer.Option(..., "--org", help="Your organisation id.")
KeyFile = typer.Option(..., "--key", help="Your organisation's private key (PEM).")
Audience = typer.Option("twinspace-broker", help="The broker's issuer name.")


def _client(url: str, org: str, key: Path, audience: str):
    from twinspace.client.broker import BrokerClient

    return BrokerClient.connect(url, org, key, audience=audience)


def _fail(exc: Exception) -> None:
    console.print(f"[bold red]error:[/] {exc}")
    raise typer.Exit(2)


@contract_app.command("verify")
def verify(file: Path = typer.Argument(..., exists=True, dir_okay=False, help="Exported agreement (JSON)."),
           broker_key: list[str] = typer.Option([], "--broker-key", help="Trusted broker public key (base64url "
                                                "raw Ed25519, from `GET /.well-known/jwks.json` or the operator), "
                                                "repeatable. Without it the bundled key is used."),
           as_json: bool = typer.Option(False, "--json", help="Print the verification report as JSON.")) -> None:
    """Verify an agreement offline: canonical document hash, both party signatures with the registered
    keys in the bundle, and the broker's countersignature. Exit 0 valid, 1 invalid."""
    from twinspace.agreements import verify_bundle

    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        console.print(f"[bold red]INVALID[/] cannot read {file}: {exc}")
        raise typer.Exit(1)
    report = verify_bundle(data, trusted_broker_keys=broker_key or None)
    if as_json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        table = Table(show_header=False, title=f"Agreement {report.get('agreement_id')}")
        for label, key in (("document sha256", "document_sha256"), ("provider", "provider_id"),
                           ("consumer", "consumer_id"), ("asset", "asset"), ("validity", "validity"),
                           ("finalised", "finalized_at")):
            table.add_row(label, str(report.get(key)))
        console.print(table)
        for warning in report["warnings"]:
            console.print(f"[yellow]warning:[/] {warning}")
        for error in report["errors"]:
            console.print(f"[red]error:[/] {error}")
        console.print("[bold green]VALID[/]" if report["valid"] else "[bold red]INVALID[/]")
    raise typer.Exit(0 if report["valid"] else 1)


@contract_app.command("list")
def list_agreements(url: str = Url, org: str = OrgId, key: Path = KeyFile, audience: str = Audience,
                    status: Optional[str] = typer.Option(None, help="FINALIZED, REVOKED, ...")) -> None:
    """List the agreements you are party to (operators and auditors: all)."""
    try:
        items = _client(url, org, key, audience).contract_agreements(status=status)["items"]
    except Exception as exc:  # noqa: BLE001
        _fail(exc)
    table = Table("agreement", "status", "asset", "consumer", "provider", "purpose", "valid until")
    for a in items:
        table.add_row(a["id"], a["status"], f"{a['asset_id']} v{a['asset_version']}", a["consumer_id"],
                      a["provider_id"], a["purpose"], a["not_after"])
    console.print(table)


@contract_app.command("export")
def export(agreement_id: str, url: str = Url, org: str = OrgId, key: Path = KeyFile, audience: str = Audience,
           out: Path = typer.Option(None, help="Output file (default <agreement id>.json).")) -> None:
    """Download the offline-verifiable agreement file."""
    try:
        bundle = _client(url, org, key, audience).contract_export(agreement_id)
    except Exception as exc:  # noqa: BLE001
        _fail(exc)
    out = out or Path(f"{agreement_id}.json")
    out.write_text(json.dumps(bundle, indent=2, ensure_ascii=False), encoding="utf-8")
    console.print(f"wrote {out}; verify with: twinspace contract verify {out} --broker-key "
                  f"{bundle['registry']['broker_key']['public_key']}  (check that key out of band)")


@contract_app.command("revoke")
def revoke(agreement_id: str, url: str = Url, org: str = OrgId, key: Path = KeyFile, audience: str = Audience,
           reason: Optional[str] = typer.Option(None, help="Why (recorded in the audit log).")) -> None:
    """Revoke an agreement (its provider or the operator); effective on the next access."""
    try:
        result = _client(url, org, key, audience).contract_revoke(agreement_id, reason)
    except Exception as exc:  # noqa: BLE001
        _fail(exc)
    console.print(f"agreement {result['id']} is {result['status']} (at {result['revoked_at']})")
