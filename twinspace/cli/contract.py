"""``twinspace contract ...``: verify an exported agreement offline; list, export and revoke through the API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from twinspace.cli.common import Connection, JsonOpt, choice, connected, emit_json, human
from rich.console import Console
from rich.table import Column, Table

contract_app = typer.Typer(help="Signed data-use agreements: verify offline, list, export, revoke.",
                           no_args_is_help=True)
console = Console(emoji=False, highlight=False)

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


def _describe(value) -> str:
    """An agreement field for a person (asset {id, version, content_hash} as `id v1 (sha256 …)`)."""
    if isinstance(value, dict) and "id" in value:
        extra = f" (sha256 {value['content_hash']})" if value.get("content_hash") else ""
        return f"{value['id']} v{value.get('version', '?')}{extra}"
    if isinstance(value, dict) and ("not_before" in value or "not_after" in value):
        return f"{human(value.get('not_before'))} to {human(value.get('not_after'))}"
    return human(value)


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
            table.add_row(label, _describe(report.get(key)))
        console.print(table)
        for warning in report["warnings"]:
            console.print(f"[yellow]warning:[/] {warning}")
        for error in report["errors"]:
            console.print(f"[red]error:[/] {error}")
        console.print("[bold green]VALID[/]" if report["valid"] else "[bold red]INVALID[/]")
    raise typer.Exit(0 if report["valid"] else 1)


@contract_app.command("list")
@connected
def list_agreements(status: Optional[str] = typer.Option(None, help="FINALIZED, REVOKED, ..."),
                    as_json: bool = JsonOpt, *, conn: Connection) -> None:
    """List the agreements you are party to (operators and auditors: all)."""
    choice(status.upper() if status else None, ("FINALIZED", "REVOKED", "EXPIRED", "SUSPENDED"), "--status")
    items = conn.client().contract_agreements(status=status.upper() if status else None)["items"]
    if as_json:
        emit_json(items)
        return
    table = Table(Column("agreement", no_wrap=True, min_width=28),  # the id to paste next: never cut
                  "status", "asset", "consumer", "provider", "purpose", "valid until")
    for a in items:
        table.add_row(a["id"], a["status"], f"{a['asset_id']} v{a['asset_version']}", a["consumer_id"],
                      a["provider_id"], a["purpose"], a["not_after"])
    console.print(table)


@contract_app.command("export")
@connected
def export(agreement_id: str,
           out: Path = typer.Option(None, help="Output file (default <agreement id>.json)."), *, conn: Connection) -> None:
    """Download the offline-verifiable agreement file."""
    bundle = conn.client().contract_export(agreement_id)
    out = out or Path(f"{agreement_id}.json")
    out.write_text(json.dumps(bundle, indent=2, ensure_ascii=False), encoding="utf-8")
    console.print(f"wrote {out}; verify with: twinspace contract verify {out} --broker-key "
                  f"{bundle['registry']['broker_key']['public_key']}  (check that key out of band)")


@contract_app.command("revoke")
@connected
def revoke(agreement_id: str,
           reason: Optional[str] = typer.Option(None, help="Why (recorded in the audit log)."), *, conn: Connection) -> None:
    """Revoke an agreement (its provider or the operator); effective on the next access."""
    result = conn.client().contract_revoke(agreement_id, reason)
    console.print(f"agreement {result['id']} is {result['status']} (at {result['revoked_at']})")
