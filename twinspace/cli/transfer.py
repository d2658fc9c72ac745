"""``twinspace transfer start|show`` and ``twinspace download``: get the data an agreement allows.

The broker holds no rows: ``download`` asks the broker for a fresh DataAddress (the provider connector's
URL and a single-use transfer token), pulls from that connector with a proof of possession signed here by
your key, writes the file, and countersigns the connector's receipt (``transfer_acknowledge``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import typer

from twinspace.cli.common import (CliError, Connection, JsonOpt, choice, connected, console, download_progress,
                                  emit_json, err_console, human)

transfer_app = typer.Typer(help="Transfers under an agreement (DSP transfer process).", no_args_is_help=True)
FORMATS = ("csv", "json", "parquet")


def _state(tp: dict) -> str:
    return str(tp.get("state", "")).split(":")[-1]


def _print(tp: dict, as_json: bool) -> None:
    if as_json:
        emit_json(tp)
        return
    console.print(f"transfer {tp.get('providerPid')}  state {_state(tp)}  agreement {human(tp.get('agreementId'))}")


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


def _connector_failure(exc: Exception, endpoint: str) -> CliError:
    """An error of the provider's connector (not the broker's) in one sentence with a hint."""
    import httpx

    from twinspace.client.broker import BrokerError

    if isinstance(exc, BrokerError):
        p = exc.problem if isinstance(exc.problem, dict) else {}
        detail = p.get("detail") or p.get("title") or f"HTTP {exc.status}"
        hint = {"expired_transfer_token": "run the download again (each run gets a fresh token)",
                "agreement_revoked": "the provider revoked the agreement; no further pulls are allowed",
                "quota_exceeded": "the agreement's access quota is used up",
                "broker_busy": "the broker is busy; try again shortly",
                "data_not_found": "the connector no longer serves the published table; ask the provider"}.get(
            exc.code, "the connector enforces the agreement; `twinspace contract show` lists its terms")
        return CliError(f"the provider's connector refused ({exc.code}): {detail}", hint, 1)
    if isinstance(exc, httpx.ConnectError):
        return CliError(f"cannot reach the provider's connector at {endpoint}",
                        "the provider's connector must be running and reachable from here", 2)
    if isinstance(exc, httpx.TimeoutException):
        return CliError(f"the provider's connector at {endpoint} did not answer in time", "try again later", 2)
    return CliError(f"pulling from the provider's connector at {endpoint} failed: {exc}", None, 2)


def _process(client, transfer_id: str) -> dict[str, Any]:
    """The transfer to pull: an agreement id opens a new one (DSP TransferRequestMessage); a transfer id
    must name a STARTED PULL transfer of ours."""
    if transfer_id.startswith("agr_"):
        return client.transfer_request(transfer_id)
    tp = client.transfer_get(transfer_id)
    state = _state(tp)
    if state != "STARTED":
        client.transfer_token(transfer_id)  # the broker names the cause first (a revoked agreement: 410)
        hint = {"REQUESTED": "the provider has not started it yet; try again shortly",
                "SUSPENDED": "it is suspended; resume it first, or download by agreement id to open a new one",
                "COMPLETED": "it is completed; download by agreement id to open a new one",
                "TERMINATED": "it was terminated; download by agreement id to open a new one"}.get(
            state, "`twinspace transfer show` tells its state")
        raise CliError(f"transfer {transfer_id} is {state or 'in no known state'}, not STARTED", hint, 1)
    return tp


@connected
def download(transfer_id: str = typer.Argument(..., help="Transfer id from `transfer start` (or an agreement id: "
                                               "a transfer is opened for it)."),
             out: Path = typer.Option(..., "--out", "-o", help="Where to write the data."),
             fmt: str = typer.Option("csv", "--format", help=f"{', '.join(FORMATS)}."),
             columns: Optional[str] = typer.Option(None, help="Comma-separated subset of columns."),
             acknowledge: bool = typer.Option(True, "--ack/--no-ack",
                                              help="Countersign the connector's receipt (SHA-256 and size of what "
                                                   "arrived)."),
             as_json: bool = JsonOpt, *, conn: Connection) -> None:
    """Pull the data of a transfer from the provider's connector (fresh transfer token from the broker,
    proof of possession signed with your key); shows progress and countersigns the receipt."""
    choice(fmt, FORMATS, "--format")
    cols = [c.strip() for c in columns.split(",") if c.strip()] if columns else None
    out = out.expanduser()
    if out.is_dir():
        raise CliError(f"--out {out} is a directory", "name the file to write, e.g. -o data.csv")
    if not out.parent.exists():
        raise CliError(f"the directory {out.parent} does not exist", "create it first, or choose another --out")
    client = conn.client()
    with download_progress(f"download {out.name}") as progress:
        task = progress.add_task("transfer", total=None)
        tp = _process(client, transfer_id)
        pid = tp.get("providerPid", transfer_id)
        start_msg = client.transfer_token(pid)  # a fresh, single-use DataAddress
        try:
            endpoint, _ = client.data_address(start_msg)
        except (KeyError, TypeError):
            raise CliError(f"transfer {pid} has no data address", "is it a STARTED PULL transfer? "
                           "`twinspace transfer show`") from None
        progress.update(task, description="pull")

        def moved(nbytes: int, headers) -> None:  # bytes as they arrive; the rows are known from the start
            rows = headers.get("X-TwinSpace-Rows")
            progress.update(task, advance=nbytes, description=f"pull {rows} rows" if rows else "pull")

        tmp = out.with_name(f".{out.name}.{os.getpid()}.part")
        try:
            with tmp.open("wb") as fh:  # streamed to disk: a large transfer is never held in memory
                got = client.transfer_pull_to(start_msg, fh, fmt=fmt, columns=cols, fresh_token=False,
                                              acknowledge=False, on_chunk=moved)
        except Exception as exc:  # noqa: BLE001 - every connector failure becomes one sentence
            tmp.unlink(missing_ok=True)
            raise _connector_failure(exc, endpoint) from None
        progress.update(task, total=got["bytes"], completed=got["bytes"])
    os.replace(tmp, out)
    sha, nbytes = got["sha256"], got["bytes"]
    receipt = got["receipt"]
    acked, ack_error = None, None
    if acknowledge and receipt:
        try:
            acked = bool(client.transfer_acknowledge(pid, receipt, sha, nbytes).get("matches"))
        except Exception as exc:  # noqa: BLE001 - the data is written; the countersignature is reported
            problem = getattr(exc, "problem", None)
            ack_error = str((problem.get("detail") if isinstance(problem, dict) else None) or exc)[:200]
    if as_json:
        emit_json({"transfer": pid, "agreement": tp.get("agreementId"), "connector": endpoint, "out": str(out),
                   "bytes": nbytes, "sha256": sha, "format": fmt, "receipt": receipt, "acknowledged": acked,
                   **({"ack_error": ack_error} if ack_error else {})})
        return
    console.print(f"wrote {nbytes:,} bytes ({fmt}) to {out}")
    console.print(f"  from {endpoint}  sha256 {sha}")
    if receipt:
        note = {True: "countersigned", False: "countersigned, but it does not match what arrived",
                None: "not acknowledged" + (f" ({ack_error})" if ack_error else "")}[acked]
        console.print(f"  receipt {receipt}: {note}")
    if acked is False or ack_error:
        err_console.print("[yellow]warning:[/] the receipt was not confirmed; the broker's audit log shows it")
