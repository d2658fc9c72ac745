"""``twinspace transfer start|show`` and ``twinspace download``: get the data an agreement allows."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from twinspace.cli.common import (CliError, Connection, JsonOpt, choice, connected, console, download_progress,
                                  emit_json, human)

transfer_app = typer.Typer(help="Transfers under an agreement (DSP transfer process).", no_args_is_help=True)
FORMATS = ("csv", "arrow", "json")


def _print(tp: dict, as_json: bool) -> None:
    if as_json:
        emit_json(tp)
        return
    state = str(tp.get("state", "")).split(":")[-1]
    console.print(f"transfer {tp.get('providerPid')}  state {state}  agreement {human(tp.get('agreementId'))}")


@transfer_app.command("start")
@connected
def start(agreement_id: str, as_json: bool = JsonOpt, *, conn: Connection) -> None:
    """Consumer: open a transfer for a FINALIZED agreement; prints the transfer id for `twinspace download`."""
    tp = conn.client().transfer_request(agreement_id)
    _print(tp, as_json)
    if not as_json:
        console.print(f"next: twinspace download {tp.get('providerPid')} -o data.csv")


@transfer_app.command("show")
@connected
def show(transfer_id: str, as_json: bool = JsonOpt, *, conn: Connection) -> None:
    _print(conn.client().transfer_get(transfer_id), as_json)


@connected
def download(transfer_id: str = typer.Argument(..., help="Transfer id from `transfer start` (or an agreement id: "
                                               "a transfer is opened for it)."),
             out: Path = typer.Option(..., "--out", "-o", help="Where to write the data."),
             fmt: str = typer.Option("csv", "--format", help=f"{', '.join(FORMATS)}."),
             columns: Optional[str] = typer.Option(None, help="Comma-separated subset of columns."),
             as_json: bool = JsonOpt, *, conn: Connection) -> None:
    """Pull the data of a started transfer (proof of possession signed with your key); shows progress."""
    choice(fmt, FORMATS, "--format")
    client = conn.client()
    tp = client.transfer_request(transfer_id) if transfer_id.startswith("agr_") else client.transfer_get(transfer_id)
    if "twin:startMessage" not in tp and "dataAddress" not in tp:
        tp = {**tp, "twin:startMessage": client.transfer_token(tp.get("providerPid", transfer_id))}
    try:
        with download_progress(f"download {out.name}") as progress:
            task = progress.add_task("pull", total=None)
            data = client.transfer_pull(tp, fmt=fmt, columns=columns.split(",") if columns else None)
            progress.update(task, total=len(data), completed=len(data))
    except KeyError:
        raise CliError(f"transfer {transfer_id} has no data address", "is it STARTED? `twinspace transfer show`") from None
    out.write_bytes(data)
    if as_json:
        emit_json({"transfer": tp.get("providerPid"), "out": str(out), "bytes": len(data), "format": fmt})
    else:
        console.print(f"wrote {len(data):,} bytes ({fmt}) to {out}")
