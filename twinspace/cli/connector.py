"""``twinspace connector``: what a provider runs on its own machine — ingest, de-identify, publish, and
the connector node itself (``serve``, ``register``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from connectors.errors import ConnectorError
from twinspace.cli.common import Connection, JsonOpt, connected, emit_json, fail
from twinspace.errors import TwinSpaceError

connector_app = typer.Typer(help="Provider-side connector: ingest, de-identify and publish twin-entity assets.",
                            no_args_is_help=True)
# Data (names, ids, file paths) is printed as is: no emoji codes (`:id:`), no markup, no highlighting.
console = Console(stderr=True, emoji=False, highlight=False)


def _fail(exc: ConnectorError) -> None:
    console.print(f"[bold red]error[/] ({exc.code}): {escape(exc.message)}")
    raise typer.Exit(1)


def _progress(label: str) -> Progress:
    return Progress(TextColumn(f"[cyan]{escape(label)}"), BarColumn(), TextColumn("{task.percentage:>5.1f}%"),
                    TimeRemainingColumn(), console=console, transient=True)


@connector_app.command()
def ingest(inputs: list[Path] = typer.Argument(..., exists=True, dir_okay=False, help="Input file(s)."),
           out: Path = typer.Option(..., "--out", "-o", help="Output Arrow IPC file (.arrow)."),
           fmt: str = typer.Option("auto", "--format", help="auto, csv, geojson, ngsi or taipei."),
           entity_type: Optional[str] = typer.Option(None, help="Entity type (required for CSV; filters NGSI)."),
           category: Optional[str] = typer.Option(None, help="Twin category (default from the entity type)."),
           region: Optional[str] = typer.Option(None, help="ISO 3166 region for entity codes, e.g. TW-TPE."),
           delimiter: Optional[str] = typer.Option(None, help="CSV separator (default: detected among , ; tab |)."),
           encoding: Optional[str] = typer.Option(None, help="CSV text encoding (default: detected among UTF-8, "
                                                  "GBK, Big5; else utf-8, gbk, big5, cp950, latin-1...)."),
           require: list[str] = typer.Option([], help="CSV column that must be present (repeatable)."),
           column_type: list[str] = typer.Option([], help="CSV column type name=arrow_type (repeatable)."),
           id_column: Optional[str] = typer.Option(None, help="CSV column with the provider's entity id."),
           time_column: Optional[str] = typer.Option(None, help="CSV column giving the time coverage.")) -> None:
    """Read CSV / GeoJSON / NGSI-LD / the Taipei parking feed into an Arrow table."""
    from connectors import ingest as ing
    from connectors.tables import write_table

    try:
        kind = ing.detect_format(inputs[0]) if fmt == "auto" else fmt
        if kind == "csv":
            if len(inputs) != 1:
                raise ConnectorError("CSV ingest takes one file")
            types = {}
            for spec in column_type:
                name, sep, typ = spec.partition("=")
                if not sep:
                    raise ConnectorError(f"--column-type expects name=type, got {spec!r}")
                types[name] = typ
            with _progress(f"ingest {inputs[0].name}") as progress:
                task = progress.add_task("csv", total=inputs[0].stat().st_size)
                result = ing.ingest_csv(inputs[0], out, delimiter=delimiter, encoding=encoding,
                                        require_columns=list(require), column_types=types,
                                        entity_type=entity_type or "Record", category=category, region=region,
                                        id_column=id_column, time_column=time_column,
                                        on_progress=lambda done, total: progress.update(task, completed=done))
        else:
            if kind == "geojson":
                result = ing.ingest_geojson(inputs[0], entity_type=entity_type, category=category, region=region)
            elif kind == "ngsi":
                result = ing.ingest_ngsi(list(inputs), entity_type=entity_type, category=category, region=region)
            elif kind == "taipei":
                result = ing.ingest_taipei_parking(inputs[0], region=region or "TW-TPE")
            else:
                raise ConnectorError(f"unknown format {kind!r}; choose one of auto, {', '.join(ing.FORMATS)}")
            result.content_hash = write_table(out, result.table)
        for w in result.warnings:
            console.print(f"[yellow]warning[/]: {escape(w)}")
    except ConnectorError as exc:
        _fail(exc)
    m = result.meta
    bbox = ", ".join(str(v) for v in m["bbox"]) if m.get("bbox") else "none (no location)"
    dialect = f"  read as {m['csv_dialect']}" if m.get("csv_dialect") else ""
    typer.echo(f"{m['rows']} {m['entity_type']} rows ({m['twin_category']}) → {out}  bbox={bbox}  "
               f"sha256={result.content_hash}{dialect}")


@connector_app.command()
def deidentify(table: Path = typer.Argument(..., exists=True, dir_okay=False, help="Arrow table from ingest."),
               config: Path = typer.Option(..., "--config", "-c", exists=True, help="YAML or JSON config."),
               out: Path = typer.Option(..., "--out", "-o", help="De-identified Arrow table."),
               report: Optional[Path] = typer.Option(None, help="Report path (default <out>.report.json)."),
               quiet: bool = typer.Option(False, help="Do not print the text report.")) -> None:
    """Apply the config, check k-anonymity / l-diversity, write the table and its report (JSON + text).
    Exits 1 when the privacy model is not met (the output is kept for inspection; publish refuses it)."""
    from connectors.deid import deidentify as run, load_config
    from connectors.deid.engine import render_report, unmet_message
    from connectors.tables import get_meta, iter_batches

    try:
        cfg = load_config(config)
        schema, _ = iter_batches(table)
        total = int(get_meta(schema).get("rows") or 0)
        with _progress(f"de-identify {table.name}") as progress:
            task = progress.add_task("deid", total=total or None)
            result = run(table, cfg, out, on_progress=lambda done, t: progress.update(task, completed=done))
    except ConnectorError as exc:
        _fail(exc)
    report = report or out.with_name(out.name + ".report.json")
    report.write_text(json.dumps(result.report, ensure_ascii=False, indent=2), encoding="utf-8")
    text = render_report(result.report)
    report.with_suffix(".txt").write_text(text, encoding="utf-8")
    if not quiet:
        typer.echo(text)
    typer.echo(f"report: {report} (sha256 {result.report_hash})")
    if not result.meets_policy:
        console.print(f"[bold red]{unmet_message(result.report)}[/]")
        raise typer.Exit(1)


@connector_app.command()
@connected
def publish(table: Path = typer.Argument(..., exists=True, dir_okay=False),
            title: str = typer.Option(...), classification: str = typer.Option(...), domain: str = typer.Option(...),
            offer: list[str] = typer.Option([], help="Offer id=policy_id[:{json params}] (repeatable)."),
            offers_file: Optional[Path] = typer.Option(None, exists=True, help="JSON list of offers."),
            report: Optional[Path] = typer.Option(None, help="De-identification report (JSON)."),
            description: str = typer.Option(""), keyword: list[str] = typer.Option([]),
            asset_id: Optional[str] = typer.Option(None, help="Publish as a new version of this asset."),
            connector_dir: Path = typer.Option(..., "--connector-dir", envvar="TWINSPACE_CONNECTOR_DIR",
                                               file_okay=False, help="The data directory of this provider's "
                                               "`twinspace connector serve --data-dir`: the table is placed there."),
            connector_url: str = typer.Option(..., "--connector", "--data-endpoint", envvar="TWINSPACE_CONNECTOR_URL",
                                              help="The public URL of that connector (registered with "
                                              "`twinspace connector register`)."),
            as_json: bool = JsonOpt, *, conn: Connection) -> None:
    """Check the table against its report locally, place it in the connector's data directory, and
    publish its metadata with the connector as data endpoint (no row goes to the broker)."""
    from connectors.publish import LocalConnector, load_report, parse_offer, publish_file
    from twinspace.client.broker import BrokerError

    try:
        from twinspace.dataplane import normalise_endpoint

        endpoint = normalise_endpoint(connector_url)
    except TwinSpaceError as exc:
        fail(f"--connector {connector_url!r}: {exc.detail}", "e.g. --connector http://127.0.0.1:8100", 2)
    try:
        offers = [parse_offer(s) for s in offer]
        if offers_file:
            offers += json.loads(offers_file.read_text(encoding="utf-8"))
        rep = load_report(report) if report else None
        client = conn.client()
        asset = publish_file(client, table, connector=LocalConnector(endpoint, connector_dir), report=rep,
                             asset_id=asset_id, title=title, description=description, keywords=list(keyword),
                             classification=classification, domain=domain, offers=offers)
    except ConnectorError as exc:
        _fail(exc)
    except BrokerError as exc:
        console.print(f"[bold red]broker refused[/] ({exc.code}): {escape(str(exc.problem.get('detail', '')))}")
        raise typer.Exit(1)
    if as_json:
        emit_json(asset)
        return
    typer.echo(f"published {asset['id']} v{asset['version']} ({asset['row_count']} rows, sha256 {asset['content_hash']}) "
               f"served by {endpoint}")


@connector_app.command()
@connected
def withdraw(asset_id: str, reason: Optional[str] = typer.Option(None), *, conn: Connection) -> None:
    """Withdraw one of this provider's assets (all versions)."""
    from twinspace.client.broker import BrokerClient, BrokerError

    try:
        conn.client().catalog_withdraw(asset_id, reason)
    except BrokerError as exc:
        console.print(f"[bold red]broker refused[/] ({exc.code}): {escape(str(exc.problem.get('detail', '')))}")
        raise typer.Exit(1)
    typer.echo(f"withdrew {asset_id}")


@connector_app.command()
@connected
def serve(data_dir: Path = typer.Option(..., "--data-dir", envvar="TWINSPACE_CONNECTOR_DIR", file_okay=False,
                                        help="The connector's data directory (Arrow files, its state)."),
          host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
          port: int = typer.Option(8100, min=1, max=65535, help="Port to listen on."),
          public_url: Optional[str] = typer.Option(None, "--public-url", envvar="TWINSPACE_CONNECTOR_URL",
                                                   help="The URL consumers and the broker reach this connector at "
                                                   "(its audience); default http://HOST:PORT."),
          broker_key: Optional[str] = typer.Option(None, "--broker-key", envvar="TWINSPACE_BROKER_PUBLIC_KEY",
                                                   help="Pin the broker's Ed25519 public key (base64url); default: "
                                                   "fetched once from the broker's /.well-known/jwks.json."),
          pop_max_age: int = typer.Option(120, "--pop-max-age", envvar="TWINSPACE_CONNECTOR_POP_MAX_AGE", min=5,
                                          max=3600, help="Oldest proof of possession (seconds) a pull may carry; "
                                          "each is single-use either way."),
          graceful_shutdown: float = typer.Option(3.0, "--graceful-shutdown", min=0, max=60,
                                                  help="Seconds in-flight pulls get after SIGTERM before the "
                                                  "connector exits anyway (undelivered receipts stay in the outbox)."),
          cors_origin: list[str] = typer.Option([], "--cors-origin", envvar="TWINSPACE_CONNECTOR_CORS_ORIGINS",
                                                help="A browser origin allowed to pull from here, e.g. the broker "
                                                "console's http://127.0.0.1:8000 (repeatable; default: none)."),
          register_self: bool = typer.Option(False, "--register", help="Once serving, register this connector "
                                             "with the broker (its ownership challenge); retried for a minute."),
          *, conn: Connection) -> None:
    """Run this provider's connector: it holds the rows and is the policy enforcement point; consumers
    pull from it directly under broker-countersigned agreements (docs/data-plane.md)."""
    import uvicorn

    from connectors.node.app import create_node_app
    from connectors.node.config import NodeConfig
    from twinspace.crypto import public_key_from_b64

    pinned = None
    if broker_key:
        try:
            pinned = public_key_from_b64(broker_key)
        except (ValueError, TypeError) as exc:
            fail(f"--broker-key is not an Ed25519 public key: {exc}", "copy the x value of the broker's JWKS", 2)
    endpoint = public_url or f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    client = conn.client()
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(data_dir, 0o700)
        config = NodeConfig(endpoint=endpoint, data_dir=data_dir, private_key=client.private_key, org_id=conn.org,
                            broker=client, broker_issuer=conn.audience, broker_public_key=pinned,
                            pop_max_age=pop_max_age)
        config.broker_key()  # fail now, not on the first pull
    except TwinSpaceError as exc:
        fail(f"{exc.detail}", f"check --broker {conn.broker} (and --public-url)", 2)
    console.print(f"connector of {escape(conn.org)} at {escape(config.endpoint)} serving {escape(str(data_dir))} "
                  f"({len(config.store.list())} files)")
    try:
        app = create_node_app(config, cors_origins=list(cors_origin))
    except (ValueError, TwinSpaceError) as exc:
        fail(f"--cors-origin: {exc}", "give exact origins such as https://console.example.org", 2)
    if register_self:
        _register_when_serving(conn, config.endpoint)
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=graceful_shutdown,
                timeout_keep_alive=5)
    from twinspace.shutdown import exit_after_shutdown

    exit_after_shutdown()


def _register_when_serving(conn: Connection, endpoint: str, attempts: int = 30) -> None:
    """In the background: the broker's challenge needs this connector to answer, so register after start-up."""
    import threading
    import time

    def run() -> None:
        client = conn.client()  # its own client: the node's is used by pulls
        last = "not tried"
        for attempt in range(attempts):
            time.sleep(min(2.0, 0.3 * (attempt + 1)))
            try:
                row = client.connector_register(endpoint)
            except Exception as exc:  # noqa: BLE001 - not serving yet, broker not up yet: try again
                last = getattr(exc, "code", type(exc).__name__)
                continue
            console.print(f"registered {escape(row['endpoint'])} as {escape(row['id'])}")
            return
        console.print(f"[bold red]error[/]: could not register {escape(endpoint)} ({escape(str(last))}); "
                      "run `twinspace connector register`")

    threading.Thread(target=run, name="twinspace-register", daemon=True).start()


@connector_app.command()
@connected
def register(endpoint: str = typer.Option("http://127.0.0.1:8100", "--endpoint", envvar="TWINSPACE_CONNECTOR_URL",
                                          help="The connector's public URL (as given to `serve --public-url`)."),
             as_json: bool = JsonOpt, *, conn: Connection) -> None:
    """Register this provider's running connector with the broker (the broker challenges it to prove it
    holds the provider's key)."""
    from twinspace.dataplane import normalise_endpoint

    try:
        endpoint = normalise_endpoint(endpoint)
    except TwinSpaceError as exc:
        fail(f"--endpoint {endpoint!r}: {exc.detail}", "e.g. --endpoint https://connector.example.org", 2)
    answer = conn.client().post("/connectors", json={"endpoint": endpoint})
    if as_json:
        emit_json(answer)
        return
    if isinstance(answer, dict):
        typer.echo(f"registered {answer.get('endpoint', endpoint)} for {answer.get('org_id', conn.org)}"
                   + (f" (status {answer['status']})" if answer.get("status") else ""))
    else:
        typer.echo(f"registered {endpoint}")
