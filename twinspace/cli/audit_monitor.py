"""``twinspace audit monitor``: an auditor's witness of the broker's log, run from cron.

It keeps the last checkpoint it trusted (tree size and root, in a state file). Each run fetches
the newest signed checkpoint, checks its signature with the log key obtained out of band (pinned
on the first run), and checks the broker's consistency proof from the trusted tree to the new
one (RFC 6962/9162) locally. A smaller tree is a rollback, a different root for the same size or
a proof that does not verify is a fork: both exit 3 and leave the trusted checkpoint as it was.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import typer

from twinspace.cli.common import CliError, Connection, JsonOpt, connected, console, emit_json, err_console

FORK_EXIT = 3


def _state(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        raise CliError(f"state file {path} is not JSON", "restore it from backup (it holds your trusted "
                       "checkpoint) or remove it to start over") from None


def _save(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True), encoding="utf-8")
    tmp.replace(path)


def check(client, state: dict, log_key: Optional[str]) -> tuple[str, dict, str]:
    """(verdict, new state, message); verdict is ok, first or fork. Pure apart from the client calls."""
    from twinspace.audit.merkle import ProofError, verify_consistency
    from twinspace.audit.note import NoteError, open_checkpoint, parse_vkey

    vkey = log_key or state.get("log_key")
    if not vkey:
        vkey = client.get("/audit/key")["vkey"]
        pinned = f"no --log-key given: pinned the key the broker announces ({vkey}); compare it out of band"
    else:
        pinned = ""
    if state.get("log_key") and log_key and log_key != state["log_key"]:
        return "fork", state, f"the log key changed from the pinned {state['log_key']} to {log_key}"
    try:
        verifier = parse_vkey(vkey)
    except (NoteError, ValueError) as exc:
        raise CliError(f"--log-key is not a log verifier key: {exc}", "get it with `twinspace audit key`") from None
    latest = client.get("/audit/checkpoints/latest")
    try:
        cp = open_checkpoint(latest["note"], verifier)
    except (NoteError, ValueError) as exc:
        return "fork", state, f"the newest checkpoint does not verify with the log key: {exc}"
    root_hex = base64.b64encode(cp.root_hash).decode()  # the checkpoint's own encoding
    new = {"log_key": vkey, "tree_size": cp.tree_size, "root_hash": root_hex, "note": latest["note"],
           "checked_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    old_size, old_root = state.get("tree_size"), state.get("root_hash")
    if old_size is None:
        return "first", new, (pinned + "; " if pinned else "") + f"trusting tree size {cp.tree_size}, root {root_hex}"
    if cp.tree_size < old_size:
        return "fork", state, f"rollback: the log shrank from {old_size} to {cp.tree_size} entries"
    if cp.tree_size == old_size:
        if root_hex != old_root:
            return "fork", state, f"fork: tree size {cp.tree_size} has root {root_hex}, trusted root is {old_root}"
        return "ok", {**state, "checked_at": new["checked_at"]}, f"unchanged at tree size {cp.tree_size}"
    proof = client.get("/audit/proofs/consistency", params={"first": old_size, "second": cp.tree_size})
    try:
        verify_consistency(old_size, cp.tree_size, base64.b64decode(old_root), cp.root_hash,
                           [base64.b64decode(p) for p in proof["proof"]])
    except (ProofError, ValueError) as exc:
        return "fork", state, (f"fork: tree size {cp.tree_size} is not an extension of the trusted tree size {old_size} "
                               f"({exc})")
    return "ok", new, f"consistent: {old_size} → {cp.tree_size} entries, root {root_hex}"


@connected
def monitor(state_file: Path = typer.Option(Path(".twinspace/audit-monitor.json"), "--state",
                                            help="Where the trusted checkpoint is kept (back it up)."),
            log_key: Optional[str] = typer.Option(None, "--log-key", envvar="TWINSPACE_LOG_KEY",
                                                  help="The log's vkey, obtained out of band (pinned on first run)."),
            as_json: bool = JsonOpt, *, conn: Connection) -> None:
    """Check the log grew append-only since the last run; exit 3 on a fork or rollback."""
    state = _state(state_file)
    verdict, new, message = check(conn.client(), state, log_key)
    if verdict != "fork":
        _save(state_file, new)
    if as_json:
        emit_json({"verdict": verdict, "message": message, "tree_size": new.get("tree_size"),
                   "root_hash": new.get("root_hash"), "state": str(state_file)})
    elif verdict == "fork":
        err_console.print(f"[bold red]ALERT[/] {message}")
        err_console.print(f"  the trusted checkpoint in {state_file} was kept; keep the broker's answer as evidence")
    else:
        console.print(f"[green]{verdict}[/]: {message}")
    if verdict == "fork":
        raise typer.Exit(FORK_EXIT)
