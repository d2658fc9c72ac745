"""``twinspace audit ...``: the auditor's and operator's command line."""

from __future__ import annotations

import base64
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Column, Table

from twinspace.cli.audit_monitor import monitor
from twinspace.cli.common import Connection, choice, connected, guarded, human

audit_app = typer.Typer(help="Tamper-evident audit log: entries, proofs, checkpoints, anchors, verification.",
                        no_args_is_help=True)
console = Console(emoji=False, highlight=False)

DataDir = typer.Option(None, "--data-dir", help="Broker state directory (default: $TWINSPACE_DATA_DIR or .twinspace).")


def _runtime(data_dir: Optional[Path]):
    from broker.runtime import Runtime
    from broker.settings import Settings

    return Runtime.start(Settings(data_dir=data_dir) if data_dir else Settings())


def _fail(exc: Exception) -> None:
    code = getattr(exc, "code", type(exc).__name__)
    console.print(f"[bold red]error[/] ({code}): {getattr(exc, 'detail', exc)}")
    raise typer.Exit(2)


OUTCOMES = ("ok", "allow", "deny", "error")
_OUTCOME_ALIASES = {"denied": "deny", "refused": "deny", "allowed": "allow", "failed": "error", "success": "ok"}


def _outcomes(value: Optional[str]) -> list[Optional[str]]:
    """The stored outcome values for a filter: ``deny`` also finds the older ``denied`` spelling."""
    if value is None:
        return [None]
    v = _OUTCOME_ALIASES.get(value.lower(), value.lower())
    with guarded():
        choice(v, OUTCOMES, "--outcome")
    return ["deny", "denied"] if v == "deny" else [v]


@audit_app.command("list")
def list_entries(org: Optional[str] = typer.Option(None, "--actor", help="Only entries by this org id (or naming it "
                                                  "as org_id in the details)."),
                 kind: Optional[str] = typer.Option(None, help="Event kind; trailing * for a prefix."),
                 asset: Optional[str] = typer.Option(None, "--asset"), agreement: Optional[str] = typer.Option(None, "--agreement"),
                 outcome: Optional[str] = typer.Option(None, help="ok, allow, deny (or denied), error."),
                 since: Optional[datetime] = typer.Option(None), until: Optional[datetime] = typer.Option(None),
                 after_seq: int = typer.Option(0), limit: int = typer.Option(50, max=1000),
                 as_json: bool = typer.Option(False, "--json", help="Print JSON lines instead of a table."),
                 data_dir: Optional[Path] = DataDir) -> None:
    """List and filter entries."""
    from sqlmodel import Session

    from broker.audit import service

    outcomes = _outcomes(outcome)
    rt = _runtime(data_dir)
    entries = []
    with Session(rt.engine) as session:
        for value in outcomes:
            f = service.EntryFilter(org=org, kind=kind, asset_id=asset, agreement_id=agreement, outcome=value,
                                    since=since, until=until, after_seq=after_seq, limit=limit)
            entries += [service.entry_json(e) for e in service.query_entries(session, f)]
    entries = sorted({e["seq"]: e for e in entries}.values(), key=lambda e: e["seq"])[:limit]
    if as_json:
        for e in entries:
            sys.stdout.write(json.dumps(e) + "\n")
        return
    table = Table("seq", "time", "kind", Column("actor", no_wrap=True), "outcome", Column("asset", no_wrap=True),
                  Column("agreement", no_wrap=True), Column("details", overflow="fold"),
                  title=f"{len(entries)} entries" + ("" if entries else " (no entry matches these filters)"))
    for e in entries:
        b = e["entry"]
        table.add_row(str(e["seq"]), b["time"][:19], b["kind"], b["actor"] or "—", b["outcome"], b["asset_id"] or "—",
                      b["agreement_id"] or "—", human(b["details"]))
    console.print(table)


@audit_app.command("export")
def export(out: Path = typer.Argument(..., help="Entries JSONL (one canonical entry per line)."),
           checkpoints: Optional[Path] = typer.Option(None, help="Also write signed checkpoints (JSONL) here."),
           data_dir: Optional[Path] = DataDir) -> None:
    """Export the full log (and its checkpoints) for offline verification."""
    from broker.audit import service
    from broker.audit.tools import db_entry_count

    rt = _runtime(data_dir)
    try:
        service.create_checkpoint(rt)
    except Exception as exc:  # noqa: BLE001 - export what is stored even if signing refuses (tampered log)
        console.print(f"[yellow]warning[/]: no fresh checkpoint: {getattr(exc, 'detail', exc)}")
    total = db_entry_count(rt.engine)
    n = 0
    with open(out, "wb") as fh, _progress() as progress:
        task = progress.add_task("export", total=total)
        for line in service.export_lines(rt.engine):
            fh.write(line)
            n += 1
            if n % 10_000 == 0:
                progress.update(task, completed=n)
        progress.update(task, completed=n)
    console.print(f"wrote {n} entries to {out}")
    if checkpoints:
        from sqlmodel import Session

        with Session(rt.engine) as session, open(checkpoints, "w") as fh:
            cps = service.list_checkpoints(session, limit=10**9)
            for cp in cps:
                fh.write(json.dumps(service.checkpoint_json(cp)) + "\n")
        console.print(f"wrote {len(cps)} checkpoints to {checkpoints}")
    console.print(f"log key: {service.log_vkey(rt)}")


@audit_app.command("fetch")
@connected
def fetch(out_dir: Path = typer.Option(Path("audit-bundle"), help="The bundle directory to write (entries.jsonl, "
                                                             "checkpoints.jsonl, log.vkey)."),
          *, conn: Connection) -> None:
    """Download the full log and all checkpoints through the API, for `twinspace audit verify`."""
    from twinspace.audit.bundle import fetch_bundle

    result = fetch_bundle(conn.client(), out_dir)
    console.print(f"wrote {result['entries']} entries and {result['checkpoints']} checkpoints to {out_dir}")
    console.print(f"the broker says its log key is {result['claimed_vkey']} — verify with the key you "
                  "obtained out of band:")
    console.print(f"  twinspace audit verify --bundle {out_dir} --key '<vkey>'")


audit_app.command("monitor")(monitor)


@audit_app.command("key")
def key(data_dir: Optional[Path] = DataDir) -> None:
    """Print the log's verifier key (C2SP vkey) to hand to auditors out of band."""
    from broker.audit import service

    print(service.log_vkey(_runtime(data_dir)))


@audit_app.command("checkpoint")
def checkpoint(data_dir: Optional[Path] = DataDir) -> None:
    """Sign a checkpoint of the current log now and print it (a C2SP signed note)."""
    from broker.audit import service

    try:
        cp = service.current_checkpoint(_runtime(data_dir))
    except Exception as exc:  # noqa: BLE001
        _fail(exc)
    sys.stdout.write(cp.note)


@audit_app.command("prove")
def prove(seq: int = typer.Argument(..., help="Entry sequence number (leaf index = seq - 1)."),
          tree_size: Optional[int] = typer.Option(None, help="Default: the newest checkpoint."),
          data_dir: Optional[Path] = DataDir) -> None:
    """Print an inclusion proof (JSON)."""
    from sqlmodel import Session

    from broker.audit import service

    rt = _runtime(data_dir)
    try:
        with Session(rt.engine) as session:
            print(json.dumps(service.inclusion_proof(rt, session, seq, tree_size), indent=2))
    except Exception as exc:  # noqa: BLE001
        _fail(exc)


@audit_app.command("consistency")
def consistency(first: int, second: Optional[int] = typer.Argument(None), data_dir: Optional[Path] = DataDir) -> None:
    """Print a consistency proof between two tree sizes (JSON)."""
    from sqlmodel import Session

    from broker.audit import service

    rt = _runtime(data_dir)
    try:
        with Session(rt.engine) as session:
            print(json.dumps(service.consistency_proof(rt, session, first, second), indent=2))
    except Exception as exc:  # noqa: BLE001
        _fail(exc)


@audit_app.command("receipt")
def receipt(seq: int, out: Optional[Path] = typer.Option(None), data_dir: Optional[Path] = DataDir) -> None:
    """Write an offline receipt (entry, inclusion proof, signed checkpoint, log key)."""
    from sqlmodel import Session

    from broker.audit import service

    rt = _runtime(data_dir)
    try:
        with Session(rt.engine) as session:
            rec = service.make_receipt(rt, session, seq)
    except Exception as exc:  # noqa: BLE001
        _fail(exc)
    text = json.dumps(rec, indent=2) + "\n"
    if out:
        out.write_text(text)
        console.print(f"receipt for entry {seq} written to {out}")
    else:
        sys.stdout.write(text)


@audit_app.command("verify-receipt")
def verify_receipt_cmd(path: Path, key: str = typer.Option(..., "--key", help="The log's vkey, obtained out of band.")) -> None:
    """Check a receipt with nothing but the log key."""
    from broker.audit.service import verify_receipt

    try:
        entry = verify_receipt(json.loads(path.read_text()), key)
    except Exception as exc:  # noqa: BLE001
        console.print(f"[bold red]receipt INVALID[/]: {exc}")
        raise typer.Exit(1)
    console.print(f"[green]receipt valid[/]: entry {entry['_seq']} ({entry['kind']}) is in the signed log")


@audit_app.command("anchor")
def anchor(data_dir: Optional[Path] = DataDir) -> None:
    """Anchor the newest checkpoint on the configured chain now."""
    from broker.audit.anchor import get_anchorer

    try:
        result = get_anchorer(_runtime(data_dir)).anchor_latest()
    except Exception as exc:  # noqa: BLE001
        _fail(exc)
    print(json.dumps(result, indent=2))


@audit_app.command("status")
def status(data_dir: Optional[Path] = DataDir) -> None:
    """Log size, newest checkpoint and anchoring status (lag)."""
    from broker.audit.anchor import get_anchorer

    print(json.dumps(get_anchorer(_runtime(data_dir)).status(), indent=2))


def _progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=Console(stderr=True), transient=True)


@audit_app.command("verify")
def verify(bundle: Optional[Path] = typer.Option(None, "--bundle", file_okay=False,
                                                help="An audit bundle directory (entries, checkpoints, log key, "
                                                     "anchors), e.g. the one `twinspace demo` writes."),
           entries: Optional[Path] = typer.Option(None, help="Exported entries JSONL; default: read the local "
                                                   "broker database directly."),
           checkpoints: Optional[Path] = typer.Option(None, help="Signed checkpoints (JSONL export or one note); "
                                                      "several files: repeat --extra-checkpoint."),
           extra_checkpoint: list[Path] = typer.Option([], help="More checkpoints you kept earlier."),
           key: Optional[str] = typer.Option(None, "--key", help="The log's vkey (name+id+key), from out of band. "
                                             "Default: the bundle's log.vkey, or (local mode) the broker key file."),
           rpc_url: Optional[str] = typer.Option(None, help="Your own chain node, to check the anchors."),
           contract: Optional[str] = typer.Option(None, help="AuditAnchor contract address."),
           anchors_file: Optional[Path] = typer.Option(None, "--anchors", help="Anchors you read from your own "
                                                       "node earlier (JSONL of tree_size + root_hash in base64 or hex, or an "
                                                       "anchors.json)."),
           as_json: bool = typer.Option(False, "--json"), data_dir: Optional[Path] = DataDir) -> None:
    """Recompute the tree from the entries, check every checkpoint signature and their consistency, the
    on-chain anchors, and name the first bad entry. Exit code 0 = verified, 1 = problems found.

    With --bundle or --entries this runs on the light install (no broker, no database)."""
    from twinspace.audit.bundle import BundleError, file_lines, read_bundle, read_checkpoint_file
    from twinspace.audit.note import NoteError, parse_vkey
    from twinspace.audit.verify import verify_log

    head = total = None
    notes: list[str] = []
    anchors = None
    column_mismatches: list[tuple[int, str]] = []
    local: dict = {}  # local mode: the checkpoint table's root column and the broker's anchor records
    try:
        if bundle is not None:
            b = read_bundle(bundle)
            if key is None:
                key = b.vkey
                console.print(f"[yellow]note[/]: using the log key in {bundle}/log.vkey; compare it with the key "
                              "you obtained out of band (or pass --key)", highlight=False)
            lines, notes, anchors, source = file_lines(b.entries), list(b.notes), b.anchors, str(bundle)
            reread = lambda: file_lines(b.entries)  # noqa: E731
        elif entries is None:
            lines, total, notes, head, key, source, rpc_url, contract = _local_log(
                data_dir, key, checkpoints, rpc_url, contract, column_mismatches, local)
            reread = lambda: _local_log(data_dir, key, checkpoints, None, None, [], None)[0]  # noqa: E731
        else:
            if key is None:
                raise typer.BadParameter("--key is required when verifying an export", param_hint="--key")
            lines, source = file_lines(entries), str(entries)
            reread = lambda: file_lines(entries)  # noqa: E731
        if checkpoints is not None:
            notes += read_checkpoint_file(checkpoints)
        for extra in extra_checkpoint:
            notes += read_checkpoint_file(extra)
        saved_anchors = _read_anchor_file(anchors_file) if anchors_file is not None else None
    except (BundleError, OSError) as exc:
        console.print(f"[bold red]error[/]: {exc}", highlight=False)
        raise typer.Exit(2)
    try:
        parse_vkey(key or "")
    except NoteError as exc:
        raise typer.BadParameter(f"not a valid log key: {exc}", param_hint="--key") from None
    if rpc_url or contract:
        if not (rpc_url and contract):
            raise typer.BadParameter("--rpc-url and --contract go together")
        from twinspace.audit.chain import read_anchors_from_node
        from twinspace.extras import MissingExtra

        try:
            anchors = read_anchors_from_node(rpc_url, contract)
        except MissingExtra:
            raise
        except Exception as exc:  # noqa: BLE001
            console.print(f"[bold red]cannot read anchors from {rpc_url}[/]: {type(exc).__name__}: {exc}")
            raise typer.Exit(2)
    if saved_anchors is not None:
        anchors = sorted({(a.tree_size, a.root_hash): a for a in [*(anchors or []), *saved_anchors]}.values(),
                         key=lambda a: a.tree_size)
    elif anchors is None and local.get("anchors"):
        anchors = local["anchors"]  # no chain node given: the broker's own anchor records still bind the size
    with _progress() as progress:
        task = progress.add_task(f"verifying {source}", total=total)
        report = verify_log(lines, notes, key, anchors=anchors, head=head, stored_roots=local.get("roots"),
                            progress=lambda n: progress.update(task, completed=n))
    for seq, column in column_mismatches[:100]:
        report.add(seq, "altered", f"entry {seq} was altered: its stored {column} column differs from the "
                                   "signed entry (it would be hidden from or misfiled in filtered queries)")
    from twinspace.audit.receipts import check_receipts

    receipts = check_receipts(reread())  # the connectors' signed receipts, matched to the broker's decisions
    if as_json:
        out = report.to_json()
        out["root_hash"] = base64.b64encode(report.root_hash).decode()  # one encoding for roots: base64
        out["receipts"] = {"receipts": receipts.receipts, "verified": receipts.verified, "matched": receipts.matched,
                           "acknowledged": receipts.acknowledged, "problems": receipts.problems[:100],
                           "ok": receipts.ok}
        print(json.dumps(out, indent=2))
    else:
        print_report(console, report)
        _print_receipts(receipts)
    raise typer.Exit(0 if report.ok and receipts.ok else 1)


def _print_receipts(receipts) -> None:
    if not receipts.receipts and not receipts.problems:
        return
    style = "green" if receipts.ok else "bold red"
    console.print(f"[{style}]data-plane receipts[/]: {receipts.receipts} signed by the serving provider "
                  f"({receipts.verified} verified), {receipts.matched} matched to an allowing decision, "
                  f"{receipts.acknowledged} acknowledged by the consumer", highlight=False)
    for problem in receipts.problems[:20]:
        console.print(f"  [red]•[/] {escape(problem)}", highlight=False)


def _read_anchor_file(path: Path):
    """Anchors saved earlier: JSONL of {"tree_size", "root_hash" (base64 or hex), ...} or a bundle's anchors.json."""
    from twinspace.audit.bundle import BundleError, anchors_from_json

    raw = Path(path).read_text(encoding="utf-8")
    try:
        doc = json.loads(raw)
        items = doc.get("anchors", []) if isinstance(doc, dict) and "anchors" in doc else None
    except ValueError:
        items = None
    if items is None:
        try:
            items = [json.loads(line) for line in raw.splitlines() if line.strip()]
        except ValueError as exc:
            raise BundleError(f"{path}: not JSON lines of anchors ({exc})") from None
    return anchors_from_json(items)


def _local_log(data_dir, key, checkpoints, rpc_url, contract, column_mismatches, local=None):
    """The entries, checkpoints, head and anchor target straight from this machine's broker database."""
    from broker.audit import tools
    from broker.audit.service import log_vkey

    rt = _runtime(data_dir)
    key = key or log_vkey(rt)
    if local is not None:
        local["roots"] = tools.db_checkpoint_roots(rt.engine)
        local["anchors"] = tools.db_anchor_records(rt.engine)
    lines = tools.db_lines_checked(rt.engine, column_mismatches)
    notes = tools.db_checkpoint_notes(rt.engine) if checkpoints is None else []
    if rpc_url is None and contract is None and rt.settings.chain_rpc_url:
        target = tools.db_anchor_target(rt.engine)
        rpc_url = rt.settings.chain_rpc_url
        contract = rt.settings.chain_contract_address or (target[1] if target else None)
        if contract is None:
            rpc_url = None
    return (lines, tools.db_entry_count(rt.engine), notes, tools.db_head(rt.engine), key,
            f"database {rt.settings.effective_database_url}", rpc_url, contract)


def print_report(out: Console, report) -> None:
    table = Table(show_header=False, title="Audit log verification")
    table.add_row("entries", str(report.entries))
    # base64, as in signed checkpoints, proofs and the console: one encoding for the root everywhere
    table.add_row("root (recomputed)", base64.b64encode(report.root_hash).decode())
    table.add_row("checkpoints", f"{report.checkpoints_verified}/{report.checkpoints_total} signatures valid; "
                                 f"latest size {report.latest_checkpoint}; {report.consistency_checked} consistency "
                                 "proofs checked")
    if report.latest_anchor is not None:
        a = report.latest_anchor
        table.add_row("anchors", f"{report.anchors_checked} checked; latest size {a.tree_size} in block "
                                 f"{a.block_number} (tx {a.tx_hash})")
    else:
        table.add_row("anchors", "not checked (no chain given)" if not report.anchors_checked else "none")
    out.print(table)
    for w in report.warnings:
        out.print(f"[yellow]warning[/]: {w}")
    if report.ok:
        out.print("[bold green]VERIFIED[/]: every entry, checkpoint and anchor is consistent")
        return
    first = report.first_bad
    out.print(f"[bold red]FAILED[/]: first bad entry: {first.seq} — {first.message}")
    for p in report.to_json()["problems"][:20]:
        out.print(f"  [red]•[/] [{p['kind']}] {p['message']}")
