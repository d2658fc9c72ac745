"""``twinspace query ...``: encrypted aggregate queries from the consumer's machine.

The TenSEAL secret key is made here (``keygen``), kept in a 0600 file and never sent: the broker gets
the public context and ciphertexts, and answers with ciphertexts this machine decrypts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from twinspace.cli.contract import Audience, KeyFile, OrgId, Url, _client

query_app = typer.Typer(help="Privacy-preserving queries: homomorphic encryption, DP noise, budgets.",
                        no_args_is_help=True)
console = Console()
HeKey = typer.Option(Path(".twinspace/he/bfv.tenseal"), "--he-key",
                     help="Your TenSEAL context with its secret key (from `twinspace query keygen`).")
Epsilon = typer.Option(None, help="Privacy cost of this query (default and ceiling: the agreement's policy).")


def _fail(exc: Exception) -> None:
    console.print(f"[bold red]error:[/] {exc}")
    raise typer.Exit(2)


def _query_client(url: str, org: str, key: Path, audience: str, he_key: Path):
    from twinspace.client.query import ConsumerKeys, QueryClient

    if not he_key.exists():
        _fail(FileNotFoundError(f"{he_key} not found: run `twinspace query keygen --out {he_key}` first"))
    return QueryClient(_client(url, org, key, audience), ConsumerKeys.load(he_key))


def _mask(mask_file: Optional[Path], all_rows: bool, rows: int):
    import numpy as np

    """A 0/1 row mask from a file (one value per line, or a JSON list) or every row."""
    if all_rows == (mask_file is not None):
        _fail(ValueError("give exactly one of --mask-file or --all"))
    if all_rows:
        return np.ones(rows, dtype=np.int64)
    text = mask_file.read_text(encoding="utf-8").strip()
    values = json.loads(text) if text.startswith("[") else [int(v) for v in text.split()]
    mask = np.asarray(values, dtype=np.int64)
    if not np.isin(mask, (0, 1)).all():
        _fail(ValueError("a mask holds only 0 and 1"))
    return mask


def _rows(client, agreement_id: str) -> int:
    """How many rows the agreement's asset version has (public catalog metadata), to size a full mask."""
    from twinspace.client.broker import BrokerError

    try:
        agreement = client.broker.contract_agreement(agreement_id)
        return int(client.broker.catalog_get(agreement["asset_id"], agreement["asset_version"])["row_count"])
    except BrokerError as exc:
        _fail(exc)


def _show(answer: dict, title: str) -> None:
    table = Table("result", "value (decrypted here, with DP noise)", title=title)
    for name, value in answer["values"].items():
        table.add_row(str(name), "-" if value is None else f"{value:,.4f}".rstrip("0").rstrip("."))
    console.print(table)
    budget = answer.get("budget") or {}
    if budget:
        console.print(f"epsilon {answer.get('epsilon')} spent; budget {budget['epsilon_spent']:g} of "
                      f"{budget['epsilon_total']:g} used, {budget['epsilon_remaining']:g} left")


def _run(call, title: str) -> None:
    from twinspace.client.broker import BrokerError

    try:
        _show(call(), title)
    except BrokerError as exc:
        _fail(exc)


@query_app.command()
def keygen(scheme: str = typer.Option("bfv", help="bfv (exact integers) or ckks (real numbers)."),
           out: Path = typer.Option(None, help="Where to keep the secret context (default .twinspace/he/<scheme>.tenseal)."),
           force: bool = typer.Option(False, help="Overwrite an existing key.")) -> None:
    """Make a TenSEAL context (128-bit security) and keep its secret key in a 0600 file on this machine."""
    from twinspace.client.query import ConsumerKeys

    out = out or Path(f".twinspace/he/{scheme}.tenseal")
    if out.exists() and not force:
        _fail(FileExistsError(f"{out} exists (use --force to replace it; old results become unreadable)"))
    try:
        keys = ConsumerKeys.create(scheme)
    except ValueError as exc:
        _fail(exc)
    keys.save(out)
    console.print(f"{keys.params.name} context with its secret key written to {out} (mode 0600); "
                  f"public part: {len(keys.public_context_bytes()):,} bytes")


@query_app.command()
def aggregate(agreement_id: str, column: str = typer.Option(...), bound: float = typer.Option(..., help="Clip "
              "values to ±bound (the sum's DP sensitivity)."),
              mask_file: Optional[Path] = typer.Option(None, exists=True, help="0/1 per row (the selection stays "
                                                       "encrypted)."),
              all_rows: bool = typer.Option(False, "--all", help="Select every row."),
              scale: int = typer.Option(0, help="BFV fixed point: values × 10^scale."), epsilon: Optional[float] = Epsilon,
              url: str = Url, org: str = OrgId, key: Path = KeyFile, audience: str = Audience,
              he_key: Path = HeKey) -> None:
    """Encrypted-mask sum, count and mean of a numeric column."""
    q = _query_client(url, org, key, audience, he_key)
    mask = _mask(mask_file, all_rows, _rows(q, agreement_id))
    _run(lambda: q.aggregate(agreement_id, column, mask, bound=bound, scale=scale, epsilon=epsilon),
         f"{column}: encrypted aggregate")


@query_app.command()
def histogram(agreement_id: str, column: str = typer.Option(...),
              category: list[str] = typer.Option(..., help="Category to count (repeatable)."),
              mask_file: Optional[Path] = typer.Option(None, exists=True), all_rows: bool = typer.Option(False, "--all"),
              epsilon: Optional[float] = Epsilon, url: str = Url, org: str = OrgId, key: Path = KeyFile,
              audience: str = Audience, he_key: Path = HeKey) -> None:
    """Encrypted-mask counts per category."""
    q = _query_client(url, org, key, audience, he_key)
    mask = _mask(mask_file, all_rows, _rows(q, agreement_id))
    _run(lambda: q.histogram(agreement_id, column, category, mask, epsilon=epsilon), f"{column}: histogram")


@query_app.command()
def score(agreement_id: str, feature: list[str] = typer.Option(..., help="Feature column (repeatable)."),
          weight: list[float] = typer.Option(..., help="Your private weight per feature (BFV: integers)."),
          bound: float = typer.Option(..., help="Clip each feature to ±bound."),
          group_by: Optional[str] = typer.Option(None),
          group: Optional[list[str]] = typer.Option(None, help="A group of --group-by to answer for (repeatable)."),
          scale: int = typer.Option(0),
          epsilon: Optional[float] = Epsilon, url: str = Url, org: str = OrgId, key: Path = KeyFile,
          audience: str = Audience, he_key: Path = HeKey) -> None:
    """Encrypted linear score Σ w·x, in total or per named group; the weights stay encrypted."""
    if len(feature) != len(weight):
        _fail(ValueError("give one --weight per --feature"))
    if bool(group_by) != bool(group):
        _fail(ValueError("--group-by needs the groups you want, as --group (repeatable)"))
    q = _query_client(url, org, key, audience, he_key)
    _run(lambda: q.linear_score(agreement_id, feature, weight, bound=bound, scale=scale, group_by=group_by,
                                groups=group, epsilon=epsilon), "linear score")


def _condition(text: str) -> dict:
    """``column:op:value`` with op in eq, ne, lt, le, gt, ge, in (values separated by |)."""
    try:
        column, op, value = text.split(":", 2)
    except ValueError:
        _fail(ValueError(f"--where expects column:op:value, got {text!r}"))

    def typed(v: str):
        try:
            return json.loads(v)
        except ValueError:
            return v

    return {"column": column, "op": op, "value": [typed(v) for v in value.split("|")] if op == "in" else typed(value)}


@query_app.command()
def where(agreement_id: str, condition: list[str] = typer.Option(..., "--where", help="column:op:value (repeatable)."),
          kind: str = typer.Option("count", help="count or sum"), column: Optional[str] = typer.Option(None),
          bound: float = typer.Option(1.0), scale: int = typer.Option(0), epsilon: Optional[float] = Epsilon,
          url: str = Url, org: str = OrgId, key: Path = KeyFile, audience: str = Audience,
          he_key: Path = HeKey) -> None:
    """Plaintext-predicate count or sum (the provider side checks the cohort size and adds DP noise)."""
    q = _query_client(url, org, key, audience, he_key)
    conditions = [_condition(c) for c in condition]
    _run(lambda: q.predicate(agreement_id, conditions, kind=kind, column=column, bound=bound, scale=scale,
                             epsilon=epsilon), f"{kind} where {' and '.join(condition)}")


@query_app.command()
def budget(agreement_id: str, url: str = Url, org: str = OrgId, key: Path = KeyFile,
           audience: str = Audience) -> None:
    """The agreement's privacy budget."""
    from twinspace.client.broker import BrokerError

    try:
        b = _client(url, org, key, audience).get(f"/queries/budgets/{agreement_id}")
    except BrokerError as exc:
        _fail(exc)
    console.print(f"{agreement_id}: epsilon {b['epsilon_spent']:g} of {b['epsilon_total']:g} spent in "
                  f"{b['queries']} queries; {b['epsilon_remaining']:g} left")


@query_app.command("across")
def across(agreement_ids: list[str], column: str = typer.Option(...), bound: float = typer.Option(...),
           scale: int = typer.Option(0), epsilon: Optional[float] = Epsilon,
           min_providers: Optional[int] = typer.Option(None), url: str = Url, org: str = OrgId, key: Path = KeyFile,
           audience: str = Audience, he_key: Path = HeKey) -> None:
    """Open a secure-aggregation round over several providers' assets (one agreement each)."""
    from twinspace.client.broker import BrokerError

    q = _query_client(url, org, key, audience, he_key)
    try:
        rnd = q.open_round(agreement_ids, column, bound=bound, scale=scale, epsilon=epsilon,
                           min_providers=min_providers)
    except BrokerError as exc:
        _fail(exc)
    console.print(f"Round {rnd['round_id']} open: waiting for {rnd['min_providers']} providers' encrypted "
                  f"statistics; then `twinspace query result {rnd['round_id']}`")


@query_app.command()
def result(round_id: str, url: str = Url, org: str = OrgId, key: Path = KeyFile, audience: str = Audience,
           he_key: Path = HeKey) -> None:
    """Decrypt a secure-aggregation total (released once enough providers contributed)."""
    q = _query_client(url, org, key, audience, he_key)
    _run(lambda: q.round_result(round_id), f"round {round_id}: total across providers")


@query_app.command()
def contribute(data: list[str] = typer.Option(..., help="asset_id=FILE.arrow of your own data (repeatable)."),
               url: str = Url, org: str = OrgId, key: Path = KeyFile, audience: str = Audience) -> None:
    """Provider side: answer pending secure-aggregation rounds from local data (encrypted here)."""
    import pyarrow as pa

    from twinspace.client.query import contribute_pending
    from twinspace.client.broker import BrokerError

    tables = {}
    for item in data:
        asset_id, sep, path = item.partition("=")
        if not sep:
            _fail(ValueError(f"--data expects asset_id=FILE, got {item!r}"))
        tables[asset_id] = pa.ipc.open_file(pa.memory_map(path)).read_all()
    try:
        sent = contribute_pending(_client(url, org, key, audience), tables)
    except BrokerError as exc:
        _fail(exc)
    console.print(f"Contributed to {len(sent)} round(s).")
