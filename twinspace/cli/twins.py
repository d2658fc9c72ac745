"""``twinspace twin``: twin entities at the provider's connector — read a CityJSON model or a pipe
network into a table, compute an entity profile (实体画像), publish a table and its profile as a
pair (or a profile of an asset already published), and link two sources to one unified code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from connectors.errors import ConnectorError

twin_app = typer.Typer(help="Twin entities: CityJSON models, pipe networks, entity profiles and linking.",
                       no_args_is_help=True)
console = Console(stderr=True)
KINDS = ("parking", "buildings", "network")


def _fail(exc: ConnectorError) -> None:
    console.print(f"[bold red]error[/] ({exc.code}): {exc.message}")
    raise typer.Exit(1)


@twin_app.command()
def cityjson(model: Path = typer.Argument(..., exists=True, dir_okay=False, help="CityJSON 2.0 file."),
             out: Path = typer.Option(..., "--out", "-o", help="Output Arrow table (.arrow)."),
             region: str = typer.Option(..., help="ISO 3166 region for entity codes, e.g. NL-ZH."),
             city_type: str = typer.Option("Building", "--type", help="City object type: one asset, one type."),
             crs: Optional[str] = typer.Option(None, help="Declare the CRS when the file has none, e.g. EPSG:7415."),
             district_attribute: Optional[str] = typer.Option(None, help="Attribute that names the district.")) -> None:
    """Read a CityJSON 2.0 model; write the objects of one type (footprint, area, height, codes)."""
    from connectors.tables import write_table
    from connectors.twins.cityjson import objects_table, read_cityjson

    try:
        m = read_cityjson(model, region=region, crs=crs)
        table = objects_table(m, city_type, district_attribute=district_attribute)
    except ConnectorError as exc:
        _fail(exc)
    for w in m.warnings:
        console.print(f"[yellow]warning[/]: {w}")
    digest = write_table(out, table)
    counts = {}
    for o in m.objects:
        counts[o.type] = counts.get(o.type, 0) + 1
    typer.echo(f"{m.path}: CityJSON {m.version}, {len(m.objects)} objects ({', '.join(f'{v} {k}' for k, v in sorted(counts.items()))}), "
               f"{m.crs} → WGS84")
    typer.echo(f"{table.num_rows} {city_type} rows → {out}  bbox={m.bbox}  sha256={digest}")


@twin_app.command()
def network(inputs: list[Path] = typer.Argument(..., exists=True, dir_okay=False,
                                                help="NGSI entity files (Junction, Pipe, ...) or one GeoJSON."),
            out: Path = typer.Option(..., "--out", "-o", help="Output topology table (.arrow)."),
            region: str = typer.Option(..., help="ISO 3166 region for entity codes."),
            snap_m: float = typer.Option(0.5, help="GeoJSON: join line ends within this many metres."),
            from_property: Optional[str] = typer.Option(None, help="GeoJSON: property naming a link's start node."),
            to_property: Optional[str] = typer.Option(None, help="GeoJSON: property naming a link's end node."),
            crs: Optional[str] = typer.Option(None, help="GeoJSON: the CRS of the coordinates when not WGS84, "
                                              "e.g. EPSG:28992 (a legacy 'crs' member is read too).")) -> None:
    """Build a pipe network graph; write its topology (nodes and links with unified codes) as a table."""
    from connectors.ingest import _load_json
    from connectors.tables import write_table
    from connectors.twins.geojson_network import network_from_geojson
    from connectors.twins.network import load_entities, network_from_entities

    try:
        first = _load_json(inputs[0], "network")
        if isinstance(first, dict) and first.get("type") == "FeatureCollection":
            if len(inputs) != 1:
                raise ConnectorError("a GeoJSON network is one file")
            net = network_from_geojson(first, region=region, name=inputs[0].name, snap_m=snap_m,
                                       from_property=from_property, to_property=to_property, crs=crs)
        else:
            net = network_from_entities(load_entities(list(inputs)), region=region, name=inputs[0].stem)
    except ConnectorError as exc:
        _fail(exc)
    digest = write_table(out, net.topology_table())
    s = net.summary()
    typer.echo(f"{s['nodes']} nodes, {s['links']} links, {s['components']} component(s), pipe length "
               f"{s['pipe_length_m']:.1f} m (declared {s['declared_pipe_length_m']}), {len(s['dead_ends'])} dead end(s)")
    typer.echo(f"topology → {out}  sha256={digest}")


def _build(kind: str, table_path: Path, k: int):
    from connectors.twins import profiles
    from connectors.twins.network import network_from_topology
    from connectors.twins.publish import load_source

    if kind not in KINDS:
        raise ConnectorError(f"--kind must be one of {', '.join(KINDS)}", code="profile_bad_kind")
    table, sha = load_source(table_path)
    if kind == "network":
        return profiles.network_profile(network_from_topology(table), k=k, topology=table, source_hash=sha)
    builder = profiles.parking_profile if kind == "parking" else profiles.building_profile
    return builder(table, k=k, source_hash=sha)


def _show(profile) -> None:
    t = Table("dimension", "group", "measure", "value", "entities", title=f"Entity profile: {profile.kind} "
              f"({profile.entities} {profile.entity_type}, codes {profile.code_prefix}:*)")
    for r in profile.rows:
        t.add_row(r["dimension"], r["group"], r["measure"], f"{r['value']:g}", str(r["entities"]))
    Console().print(t)
    sup = profile.deid["groups_suppressed"]
    typer.echo(f"k-threshold {profile.deid['k']}: suppressed groups {json.dumps(sup, ensure_ascii=False)}")


@twin_app.command()
def profile(table: Path = typer.Argument(..., exists=True, dir_okay=False, help="Table from ingest / cityjson / network."),
            kind: str = typer.Option(..., help="parking, buildings or network."),
            k: int = typer.Option(10, help="k-threshold: smallest cohort a group may describe."),
            out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the profile table here.")) -> None:
    """Compute an entity profile locally and show it (nothing is sent)."""
    from connectors.tables import write_table

    try:
        prof = _build(kind, table, k)
    except ConnectorError as exc:
        _fail(exc)
    _show(prof)
    if out:
        typer.echo(f"profile → {out}  sha256={write_table(out, prof.table())}")


@twin_app.command()
def publish(table: Path = typer.Argument(..., exists=True, dir_okay=False),
            kind: str = typer.Option(..., help="parking, buildings or network."),
            broker: str = typer.Option(..., envvar="TWINSPACE_BROKER_URL", help="Broker base URL."),
            org_id: str = typer.Option(..., envvar="TWINSPACE_ORG_ID"),
            key: Path = typer.Option(..., envvar="TWINSPACE_ORG_KEY", exists=True, help="The org's private key (PEM)."),
            title: str = typer.Option(..., help="Title of the source asset (or of the profile with --source-asset)."),
            profile_title: Optional[str] = typer.Option(None, help="Title of the profile asset."),
            classification: str = typer.Option(...), domain: str = typer.Option(...),
            offer: list[str] = typer.Option([], help="Source offer id=policy_id[:{json}] (repeatable)."),
            profile_offer: list[str] = typer.Option([], help="Profile offer (repeatable; default: the source's)."),
            source_asset: Optional[str] = typer.Option(None, help="Profile an asset already published from TABLE "
                                                       "(its SHA-256 must match) instead of publishing TABLE."),
            k: int = typer.Option(10, help="k-threshold for the profile."),
            work_dir: Path = typer.Option(Path("."), help="Where the profile table is written."),
            connector: str = typer.Option(..., "--connector", envvar="TWINSPACE_CONNECTOR_URL",
                                          help="Your connector's endpoint (registered with the broker)."),
            connector_dir: Path = typer.Option(..., "--connector-dir", envvar="TWINSPACE_CONNECTOR_DIR",
                                               help="Your connector's data directory (the tables are placed there)."),
            audience: str = typer.Option("twinspace-broker", help="The broker's issuer name.")) -> None:
    """Publish TABLE and its entity profile as a pair (or only the profile of --source-asset). The tables go
    to your connector; the broker receives their metadata only."""
    from connectors.publish import LocalConnector, parse_offer
    from connectors.twins.publish import publish_profile, publish_with_profile
    from twinspace.client.broker import BrokerClient, BrokerError

    try:
        prof = _build(kind, table, k)
        offers = [parse_offer(s) for s in offer]
        p_offers = [parse_offer(s) for s in profile_offer] or offers
        meta = {"title": profile_title or f"{title} — entity profile", "classification": classification,
                "domain": domain, "offers": p_offers}
        client = BrokerClient.connect(broker, org_id, key, audience=audience)
        host = LocalConnector(connector, connector_dir)
        if source_asset:
            src = client.catalog_get(source_asset)
            p = publish_profile(client, prof.with_source(src), work_dir, connector=host, **meta)
            typer.echo(f"published profile {p['id']} v{p['version']} of {src['id']} v{src['version']}")
            return
        asset, p = publish_with_profile(client, table, prof, work_dir, connector=host,
                                        source={"title": title, "classification": classification, "domain": domain,
                                                "offers": offers}, profile_meta=meta)
    except ConnectorError as exc:
        _fail(exc)
    except BrokerError as exc:
        console.print(f"[bold red]broker refused[/] ({exc.code}): {exc.problem.get('detail', '')}")
        raise typer.Exit(1)
    typer.echo(f"published {asset['id']} v{asset['version']} ({asset['row_count']} rows) and its profile "
               f"{p['id']} v{p['version']} ({prof.entities} entities, k={k})")


@twin_app.command()
def link(left: Path = typer.Argument(..., exists=True, dir_okay=False),
         right: Path = typer.Argument(..., exists=True, dir_okay=False),
         out: Path = typer.Option(..., "--out", "-o", help="Crosswalk table: right code → unified code."),
         left_key: Optional[str] = typer.Option(None, help="Identifier column (or attributes.<name>) on the left."),
         right_key: Optional[str] = typer.Option(None, help="Identifier column on the right."),
         tolerance_m: Optional[float] = typer.Option(None, help="Spatial match: centroids within this many metres."),
         min_iou: float = typer.Option(0.5, help="Spatial match of polygons: least intersection over union.")) -> None:
    """Link the same entities in two tables to one unified code (by identifier, or spatially)."""
    from connectors.tables import get_meta, read_table, write_table
    from connectors.twins.linking import link_by_identifier, link_spatial

    try:
        lt, rt = read_table(left), read_table(right)
        if left_key and right_key:
            res = link_by_identifier(lt, rt, left_key=left_key, right_key=right_key)
        elif tolerance_m is not None:
            res = link_spatial(lt, rt, tolerance_m=tolerance_m, min_iou=min_iou)
        else:
            raise ConnectorError("give --left-key and --right-key, or --tolerance-m", code="link_no_method")
    except ConnectorError as exc:
        _fail(exc)
    digest = write_table(out, res.crosswalk(region=get_meta(rt.schema).get("region")))
    typer.echo(f"{len(res.matches)} linked ({res.method}), {len(res.unmatched_left)} left and "
               f"{len(res.unmatched_right)} right unmatched → {out}  sha256={digest}")
