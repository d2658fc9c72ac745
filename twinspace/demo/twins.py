"""Demo step for twin entities: the Taipei Department of Transportation publishes an entity profile
(实体画像) of its parking-lot asset, and the City Planning Bureau publishes the Delft CityJSON
buildings with their profile — each profile computed at the provider's connector, bound to the
source asset's id, version and SHA-256, with small cohorts suppressed by the k-threshold rule."""

from __future__ import annotations

import os
from pathlib import Path

from rich.table import Table

from connectors.ingest import ingest_taipei_parking
from connectors.tables import write_table
from connectors.twins.cityjson import objects_table, read_cityjson
from connectors.twins.profiles import building_profile, parking_profile
from connectors.twins.publish import load_source, publish_profile, publish_with_profile

OPEN = [{"id": "open", "policy_id": "open-data", "params": {}}]


def shared_data() -> Path | None:
    """``$TWINSPACE_SHARED_DATA``, else ``shared/data`` beside the clone (or beside its worktree folder)."""
    root = Path(__file__).resolve().parents[2]
    env = os.environ.get("TWINSPACE_SHARED_DATA")
    for c in ([Path(env)] if env else []) + [root.parent / "shared" / "data", root.parent.parent / "shared" / "data"]:
        if (c / "taipei-parking" / "TCMSV_alldesc.json").is_file():
            return c
    return None


def _parking(ctx, data: Path, work: Path):
    """Profile the catalog step's parking asset when it is the real feed; else publish the feed with it."""
    client = ctx.client("provider")
    published = (ctx.state.get("catalog_assets") or {}).get("parking")
    deid = work / "parking.deid.arrow"
    if published and deid.is_file():
        asset = client.catalog_get(published)
        table, sha = load_source(deid)
        if asset["content_hash"] == sha and "total_car" in table.column_names:
            prof = parking_profile(table, source_hash=sha)
            return asset, prof, publish_profile(client, prof.with_source(asset), work, title="Taipei parking profile",
                                                classification="public", domain="transport", offers=OPEN,
                                                connector=ctx.connector("provider"))
    path = work / "taipei-parking.arrow"
    write_table(path, ingest_taipei_parking(data / "taipei-parking" / "TCMSV_alldesc.json").table
                .drop_columns(["telephone"]))
    table, sha = load_source(path)
    prof = parking_profile(table, source_hash=sha)
    asset, p = publish_with_profile(
        client, path, prof, work, connector=ctx.connector("provider"),
        source={"title": "Taipei public parking lots (feed)", "classification": "public", "domain": "transport",
                "keywords": ["parking", "停車場", "Taipei"], "offers": OPEN},
        profile_meta={"title": "Taipei parking profile", "classification": "public", "domain": "transport",
                      "offers": OPEN})
    return asset, prof, p


def step_twin_profiles(ctx) -> None:
    """Providers publish entity profiles (实体画像): Taipei parking and Delft CityJSON buildings."""
    data = shared_data()
    if data is None:
        ctx.console.print("[yellow]Twin-entity profiles skipped:[/] the shared data (taipei-parking, cityjson) "
                          "was not found; set TWINSPACE_SHARED_DATA.")
        return
    p_asset, p_prof, p_pub = _parking(ctx, data, ctx.work_dir("provider"))
    work = ctx.work_dir("provider2")
    model = read_cityjson(data / "cityjson" / "delft.city.json", region="NL-ZH")
    bpath = work / "delft-buildings.arrow"
    write_table(bpath, objects_table(model, "Building", district_attribute="bronhouder"))
    table, sha = load_source(bpath)
    b_prof = building_profile(table, source_hash=sha)
    b_asset, b_pub = publish_with_profile(
        ctx.client("provider2"), bpath, b_prof, work, connector=ctx.connector("provider2"),
        source={"title": "Delft buildings (CityJSON 2.0, LoD1)", "classification": "public", "domain": "planning",
                "keywords": ["buildings", "CityJSON", "Delft"],
                "description": "160 buildings of the Delft BGT/IMGeo extract (cjio test data): footprints, heights, "
                               "unified codes.", "offers": OPEN},
        profile_meta={"title": "Delft building profile", "classification": "public", "domain": "planning",
                      "offers": OPEN})
    ctx.state["twin_profiles"] = {"parking": p_pub["id"], "buildings": b_pub["id"]}
    t = Table("profile", "of asset", "entities", "key figures", "suppressed", "codes", title="Entity profiles")
    f = p_prof.figures
    t.add_row(p_pub["id"], f"{p_asset['title']} ({p_asset['id']} v{p_asset['version']})", f"{p_prof.entities} car parks",
              f"{f['spaces_car']:,} car / {f['spaces_motorcycle']:,} motorcycle spaces, {f['spaces_ev_charging']:,} EV, "
              f"{f['spaces_accessible']:,} accessible, {f['districts']} districts",
              str(sum(p_prof.deid["groups_suppressed"].values())), p_prof.code_prefix)
    g = b_prof.figures
    t.add_row(b_pub["id"], f"{b_asset['title']} ({b_asset['id']} v{b_asset['version']})", f"{b_prof.entities} buildings",
              f"{g['footprint_area_m2']:,.0f} m² footprint, median height {g['height_m_median']} m",
              str(sum(b_prof.deid["groups_suppressed"].values())), b_prof.code_prefix)
    ctx.console.print(t)
    ctx.console.print(f"k-threshold k={p_prof.deid['k']}; each profile's table declares its source asset, version and "
                      "SHA-256 and its method; the catalog lists it with the twin category and a code: keyword.")
