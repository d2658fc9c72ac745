"""Demo steps for the catalog: two providers run their connectors (ingest → de-identify → publish),
then each role lists what it may see."""

from __future__ import annotations

import secrets
from pathlib import Path

from rich.table import Table

from connectors.deid import deidentify
from connectors.deid.config import parse_config
from connectors.publish import publish_file
from connectors.tables import write_table

SHARED_TAIPEI = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "taipei-parking" / "TCMSV_alldesc.json"


def step_catalog_publish(ctx) -> None:
    """Providers ingest, de-identify and publish assets (Taipei parking lots, a building stock)."""
    from connectors import ingest
    from twinspace.testing import synthetic

    work = ctx.work_dir("provider")
    # 1. Taipei Department of Transportation: the real parking-lot feed (public; operator phones dropped)
    if SHARED_TAIPEI.is_file():
        parking = ingest.ingest_taipei_parking(SHARED_TAIPEI).table
        source = "Taipei open data (TCMSV_alldesc.json)"
    else:  # shared material absent: a synthetic stand-in keeps the demo self-contained
        parking = synthetic.building_stock(200, seed=3).drop_columns(["owner_name", "owner_national_id"])
        source = "synthetic stand-in (shared data not found)"
    write_table(work / "parking.arrow", parking)
    cfg = parse_config({"columns": {"telephone": {"technique": "drop"}}} if "telephone" in parking.column_names else {})
    res = deidentify(work / "parking.arrow", cfg, work / "parking.deid.arrow")
    a1 = publish_file(ctx.client("provider"), res.path, connector=ctx.connector("provider"), report=res.report,
                      title="Taipei public parking lots", description=f"Car parks with space counts; {source}.",
                      keywords=["parking", "停車場", "Taipei"], classification="public", domain="transport",
                      offers=[{"id": "open", "policy_id": "open-data", "params": {}}])
    # 2. City Planning Bureau: a building stock with owners (pseudonymised, k-anonymous over QIs)
    stock = synthetic.building_stock(600, seed=7)
    work = ctx.work_dir("provider2")
    write_table(work / "buildings.arrow", stock)
    cfg = parse_config({
        "quasi_identifiers": ["district", "use", "year_built"],
        "privacy": {"k": 3, "max_suppression": 0.1},
        "columns": {"owner_name": {"technique": "drop"},
                    "owner_national_id": {"technique": "pseudonym", "context": "owner"},
                    "year_built": {"technique": "range", "width": 20},
                    "lon": {"technique": "geo_grid", "cell": 0.01}, "lat": {"technique": "geo_grid", "cell": 0.01}}})
    res = deidentify(work / "buildings.arrow", cfg, work / "buildings.deid.arrow",
                     secrets={"owner_national_id": secrets.token_bytes(32)})
    res.require_policy()
    a2 = publish_file(ctx.client("provider2"), res.path, connector=ctx.connector("provider2"), report=res.report,
                      title="Building stock (de-identified)",
                      description="Buildings with use, age band and floor area; owners pseudonymised.",
                      keywords=["buildings", "planning"], classification="internal", domain="planning",
                      offers=[{"id": "research", "policy_id": "purpose-restricted",
                               "params": {"purposes": ["research", "traffic_planning"],
                                          "audience": {"org_types": ["enterprise", "government_agency"]}}}])
    ctx.state["catalog_assets"] = {"parking": a1["id"], "buildings": a2["id"]}
    table = Table("asset", "title", "provider", "rows", "classification", "k", "sha256", title="Published")
    for a in (a1, a2):
        rep = a["deid_report"] or {}
        k = rep.get("achieved", {}).get("k") if rep.get("quasi_identifiers") else "-"
        table.add_row(a["id"], a["title"], a["provider_id"], str(a["row_count"]), a["classification"], str(k),
                      a["content_hash"][:12] + "…")
    ctx.console.print(table)


def step_catalog_list(ctx) -> None:
    """Each role searches the catalog and sees what its clearance and the offers allow."""
    table = Table("participant", "role", "sees", title="Catalog by role")
    for label in ("consumer", "provider", "auditor"):
        if label not in ctx.participants:
            continue
        result = ctx.client(label).catalog_search()
        titles = ", ".join(f"{a['title']} ({a['classification']})" for a in result["items"])
        table.add_row(ctx.participants[label].org.name, ctx.participants[label].org.role, titles or "(nothing)")
    ctx.console.print(table)
    dcat = ctx.client("consumer").catalog_dcat()
    ctx.console.print(f"DCAT-3 export for the consumer: {len(dcat['dcat:dataset'])} dcat:Dataset entries, "
                      f"offers as odrl:hasPolicy")
