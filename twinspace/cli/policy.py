"""``twinspace policy eval|explain|test``: policy decisions as OPA users expect them — each with a
``decision_id`` (also in its audit entry), an explanation naming the rule that decided, and the
library's Rego unit tests run like ``opa test``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from twinspace.cli.common import CliError, Connection, JsonOpt, connected, console, emit_json, err_console, handled

policy_app = typer.Typer(help="Usage policies: evaluate, explain, test.", no_args_is_help=True)


def _input(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}", "pass --input with a JSON file") from None
    except ValueError as exc:
        raise CliError(f"{path} is not JSON: {exc}", "fix the file (a policy input is one JSON object)") from None
    if not isinstance(doc, dict):
        raise CliError(f"{path} holds a JSON {type(doc).__name__}, not an object", "a policy input is one object")
    return doc.get("input", doc) if set(doc) == {"input"} else doc


def _decide(conn: Connection, policy_id: str, input_file: Path, version: Optional[str], explain: bool) -> dict:
    params = {"explain": "true"} if explain else None
    return conn.client().post(f"/policies/{policy_id}/evaluate", params=params,
                              json={"input": _input(input_file), "version": version})


def _show(d: dict) -> None:
    verdict = "[bold green]ALLOW[/]" if d["allow"] else "[bold red]DENY[/]"
    console.print(f"{verdict}  {d['policy_id']} {d['policy_version']}  decision_id {d['decision_id']}")
    for r in d["reasons"]:
        console.print(f"  reason: {r}")
    for k, v in (d.get("obligations") or {}).items():
        console.print(f"  obligation: {k} = {v}")
    ex = d.get("explanation")
    if ex:
        console.print("decided by: " + ", ".join(ex["decided_by"]))
        for rule in ex["rules"]:
            mark = "[green]pass[/]" if rule["passed"] else "[red]deny[/]"
            console.print(f"  {mark} {rule['check']}" + ("" if rule["passed"] else f": {'; '.join(rule['reasons'])}"))


@policy_app.command("eval")
@connected
def evaluate(policy_id: str, input_file: Path = typer.Option(..., "--input", "-i", help="Policy input (JSON)."),
             version: Optional[str] = typer.Option(None, help="Policy version, e.g. v2 (default: current)."),
             as_json: bool = JsonOpt, *, conn: Connection) -> None:
    """Ask the broker for a decision on an input (operators, auditors); recorded in the audit log."""
    d = _decide(conn, policy_id, input_file, version, explain=False)
    emit_json(d) if as_json else _show(d)


@policy_app.command("explain")
@connected
def explain(policy_id: str, input_file: Path = typer.Option(..., "--input", "-i", help="Policy input (JSON)."),
            version: Optional[str] = typer.Option(None), as_json: bool = JsonOpt, *, conn: Connection) -> None:
    """Like eval, and name the rule (check) behind each reason and the ones that passed."""
    d = _decide(conn, policy_id, input_file, version, explain=True)
    emit_json(d) if as_json else _show(d)


@policy_app.command("test")
@handled
def test(policies: Optional[Path] = typer.Argument(None, help="Policies directory (default: the built-in library)."),
         as_json: bool = JsonOpt) -> None:
    """Run the Rego unit tests (`test_*` rules) with the embedded engine, like `opa test`. Exit 1 on a failure."""
    from broker.policy.library import load_library
    from broker.policy.rego_tests import discover, make_interpreter, run_test

    if policies is not None and not policies.is_dir():
        raise CliError(f"{policies} is not a directory", "pass the directory holding your .rego files")
    try:
        library = load_library(policies) if policies else load_library()
        interpreter = make_interpreter(library)
    except Exception as exc:  # noqa: BLE001 - a compile error in the user's Rego
        err_console.print(f"[bold red]error:[/] the policies do not load: {str(exc).strip()[:300]}")
        raise typer.Exit(2)
    tests = discover(library)
    results = {}
    with Progress(TextColumn("rego tests"), BarColumn(), MofNCompleteColumn(), console=err_console,
                  transient=True) as progress:
        task = progress.add_task("t", total=len(tests))
        for t in tests:
            results[f"{t.package}.{t.name}"] = run_test(interpreter, t)
            progress.advance(task)
    failed = {k: v for k, v in results.items() if v}
    if as_json:
        emit_json({"passed": len(results) - len(failed), "failed": failed})
    else:
        for name, why in failed.items():
            console.print(f"[red]FAIL[/] {name}: {why}")
        console.print(f"{len(results) - len(failed)}/{len(results)} tests passed")
    raise typer.Exit(1 if failed else 0)


bundle_app = typer.Typer(help="Signed policy bundles (OPA layout, EdDSA-signed file hashes, revision).",
                         no_args_is_help=True)
policy_app.add_typer(bundle_app, name="bundle")


@bundle_app.command("build")
@handled
def bundle_build(policies: Path = typer.Argument(..., help="Policies directory (e.g. policies/)."),
                 key: Path = typer.Option(..., "--key", help="Ed25519 private key (PEM) that signs the bundle."),
                 revision: str = typer.Option(..., help="The bundle's revision, e.g. a git commit or 2026-12-03.1."),
                 out: Path = typer.Option(Path("bundle.tar.gz"), "--out", "-o"), as_json: bool = JsonOpt) -> None:
    """Pack and sign the policy library: every file's SHA-256 under one EdDSA signature."""
    from broker.policy.bundle import BundleError, build_bundle
    from twinspace.cli.common import load_key
    from twinspace.crypto import key_id, load_private_key

    if not policies.is_dir():
        raise CliError(f"{policies} is not a directory", "pass the directory holding your .rego files")
    private = load_key(key, load_private_key)
    kid = key_id(private.public_key())
    try:
        data = build_bundle(policies, private, revision=revision, kid=kid)
    except BundleError as exc:
        raise CliError(str(exc)) from None
    out.write_bytes(data)
    if as_json:
        emit_json({"out": str(out), "revision": revision, "keyid": kid, "bytes": len(data)})
    else:
        console.print(f"wrote {out}: revision {revision}, signed by key {kid}")


@bundle_app.command("verify")
@handled
def bundle_verify(bundle: Path = typer.Argument(..., help="Bundle file (.tar.gz)."),
                  public_key: str = typer.Option(..., "--public-key", help="The signer's Ed25519 public key "
                                                 "(base64url raw, as in /.well-known/jwks.json)."),
                  as_json: bool = JsonOpt) -> None:
    """Check every file against the signature and print the revision; exit 1 if anything differs."""
    from broker.policy.bundle import BundleError, verify_bundle
    from twinspace.crypto import public_key_from_b64

    try:
        key = public_key_from_b64(public_key)
    except ValueError as exc:
        raise CliError(f"--public-key is not an Ed25519 public key: {exc}") from None
    try:
        result = verify_bundle(bundle.read_bytes(), key)
    except OSError as exc:
        raise CliError(f"cannot read {bundle}: {exc.strerror}") from None
    except BundleError as exc:
        err_console.print(f"[bold red]INVALID[/] {exc}")
        raise typer.Exit(1)
    if as_json:
        emit_json({"valid": True, "revision": result["revision"], "roots": result["roots"],
                   "files": sorted(result["files"]), "keyid": result["keyid"]})
    else:
        console.print(f"[bold green]VALID[/] revision {result['revision']}: {len(result['files'])} files signed by "
                      f"{result['keyid']}")
