"""``twinspace catalog search|show``: what a consumer looks for, with full ids to paste next."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from twinspace.cli.common import CliError, Connection, JsonOpt, choice, connected, console, emit_json, human

catalog_app = typer.Typer(help="Find data assets and their offers.", no_args_is_help=True)
CATEGORIES = ("natural_person", "legal_person", "natural_entity", "management_entity", "building_structure",
              "goods_equipment", "vehicle", "other")
CLASSIFICATIONS = ("public", "internal", "sensitive", "core")


def licence(asset: dict) -> str:
    return human(asset.get("license") or asset.get("licence") or (asset.get("dcat") or {}).get("license"))


@catalog_app.command("search")
@connected
def search(q: Optional[str] = typer.Argument(None, help="Words to look for in titles, descriptions, keywords."),
           category: Optional[str] = typer.Option(None, help=f"Twin category: {', '.join(CATEGORIES)}."),
           classification: Optional[str] = typer.Option(None, help=f"{', '.join(CLASSIFICATIONS)}."),
           provider: Optional[str] = typer.Option(None, help="Provider org id."),
           entity_type: Optional[str] = typer.Option(None, help="e.g. OffStreetParking."),
           bbox: Optional[str] = typer.Option(None, help="min_lon,min_lat,max_lon,max_lat (intersects)."),
           limit: int = typer.Option(50, min=1, max=200), as_json: bool = JsonOpt, *, conn: Connection) -> None:
    """Search the catalog; prints each asset's full id and its offers."""
    choice(category, CATEGORIES, "--category")
    choice(classification, CLASSIFICATIONS, "--classification")
    if bbox is not None:
        try:
            parts = [float(v) for v in bbox.split(",")]
            assert len(parts) == 4
        except (ValueError, AssertionError):
            raise CliError(f"--bbox {bbox!r} is not four numbers", "e.g. --bbox 121.4,24.9,121.7,25.2") from None
    page = conn.client().catalog_search(q=q, twin_category=category, classification=classification, provider=provider,
                                        entity_type=entity_type, bbox=bbox, limit=limit)
    if as_json:
        emit_json(page)
        return
    table = Table(title=f"{page['total']} asset(s)")
    table.add_column("asset id", no_wrap=True, overflow="fold")  # the id the next command takes: never cut
    for name in ("v", "title", "category", "class", "rows", "licence", "offers"):
        table.add_column(name, overflow="fold")
    for a in page["items"]:
        offers = ", ".join(o.get("id", "") for o in a.get("offers") or []) or "—"
        table.add_row(a["id"], str(a["version"]), a.get("title") or "—", a.get("twin_category") or "—",
                      a.get("classification") or "—", str(a.get("row_count") if a.get("row_count") is not None
                                                            else "—"), licence(a), offers)
    console.print(table)
    if page["items"]:
        console.print("next: twinspace catalog show <asset id>; twinspace negotiate request <asset id>:<offer> "
                      "--purpose <purpose>")


@catalog_app.command("show")
@connected
def show(asset_id: str = typer.Argument(..., help="Asset id (from `catalog search`)."),
         version: Optional[int] = typer.Option(None, min=1), as_json: bool = JsonOpt, *, conn: Connection) -> None:
    """One asset: metadata, columns, de-identification, licence and offers (with their full IRIs)."""
    a = conn.client().catalog_get(asset_id, version)
    if as_json:
        emit_json(a)
        return
    t = Table(show_header=False, title=f"{a.get('title') or a['id']}")
    t.add_column(no_wrap=True)
    t.add_column(overflow="fold")
    rep = (a.get("deid_report") or {}).get("achieved") or {}
    for label, value in (("asset id", a["id"]), ("version", a["version"]), ("provider", a.get("provider_id")),
                         ("category", a.get("twin_category")), ("entity type", a.get("entity_type")),
                         ("classification", a.get("classification")), ("licence", licence(a)),
                         ("rows", a.get("row_count")), ("bbox", a.get("bbox")),
                         ("time", f"{a['time_start']} to {a['time_end']}" if a.get("time_start") else None),
                         ("columns", [c.get("name") for c in a.get("columns") or []]),
                         ("de-identification", f"k = {rep['k']}" + (f", l = {rep['l_min']}" if rep.get("l_min") else "")
                          if rep.get("k") else None),
                         ("sha256", a.get("content_hash"))):
        t.add_row(label, human(value))
    console.print(t)
    for o in a.get("offers") or []:
        iri = f"urn:twinspace:offer:{a['id']}:v{a['version']}:{o.get('id')}"
        console.print(f"offer {o.get('id')}: policy {o.get('policy_id')} {human(o.get('params'))}\n  {iri}")
