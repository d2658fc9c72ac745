"""Console page for an entity profile (实体画像): its key figures, one bar chart per breakdown, the
map, and the declaration (source asset + version + hash, method, k-threshold de-identification).

Only the provider that published the profile sees it here: the figures are the asset's content, and
anyone else reaches content through a contract, never through a page. The profile is read from the
vault (or the provider's connector) like any other table; the broker reads only the generic table
shape and the declaration in its metadata, and imports nothing from the data plane.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from markupsafe import Markup, escape
from sqlmodel import Session

from broker.api.deps import Principal, db_session, get_runtime
from broker.console import charts
from broker.console.auth import console_roles
from twinspace.errors import NotFound, Unprocessable

router = APIRouter()
PROFILE_COLUMNS = {"dimension", "group", "measure", "value", "unit", "entities"}
MAX_BARS = 24


def bar_chart(bars: list[tuple[str, float]], unit: str, width: int = 560) -> Markup:
    """Horizontal bars, server-side SVG (no script, CSP-safe)."""
    bar_h, label_w = 22, 170
    top = max((v for _, v in bars), default=0) or 1
    parts = [f'<svg class="chart" role="img" viewBox="0 0 {width} {bar_h * len(bars) + 10}" width="{width}" '
             f'height="{bar_h * len(bars) + 10}" xmlns="http://www.w3.org/2000/svg">']
    for i, (label, v) in enumerate(bars):
        y = 5 + i * bar_h
        w = (width - label_w - 80) * v / top
        parts.append(f'<g class="bar"><title>{escape(label)}: {v:g} {escape(unit)}</title>'
                     f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end" font-size="11">{escape(label[:28])}</text>'
                     f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{bar_h - 6}" fill="#2b6cb0"/>'
                     f'<text x="{label_w + w + 4:.1f}" y="{y + 15}" font-size="11">{v:,.6g}</text></g>')
    parts.append("</svg>")
    return Markup("".join(parts))


def _declaration(table) -> dict[str, Any]:
    if not PROFILE_COLUMNS <= set(table.column_names):
        raise Unprocessable("This asset is not an entity profile.", code="not_an_entity_profile")
    raw = (table.schema.metadata or {}).get(b"twinspace")
    try:
        decl = json.loads(raw).get("profile") if raw else None
    except ValueError:
        decl = None
    if not isinstance(decl, dict):
        raise Unprocessable("This asset carries no entity-profile declaration.", code="not_an_entity_profile")
    return decl


def _sections(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The headline figures (dimension ``total``) and one chart per other dimension."""
    totals = [r for r in rows if r["dimension"] == "total"]
    sections = []
    for dim in dict.fromkeys(r["dimension"] for r in rows if r["dimension"] != "total"):
        mine = [r for r in rows if r["dimension"] == dim]
        measures = list(dict.fromkeys(r["measure"] for r in mine))
        # chart the most telling measure: the first quantity that is not the cohort count, else the count
        measure = next((m for m in measures if m != "entities"), "entities")
        bars = [(r["group"], r["value"]) for r in mine if r["measure"] == measure][:MAX_BARS]
        unit = next((r["unit"] for r in mine if r["measure"] == measure), "")
        groups = list(dict.fromkeys(r["group"] for r in mine))
        table = [{"group": g, **{m: next((r["value"] for r in mine if r["group"] == g and r["measure"] == m), None)
                                 for m in measures}} for g in groups]
        sections.append({"dimension": dim, "measure": measure, "measures": measures, "rows": table,
                         "chart": bar_chart(bars, unit) if bars else None})
    return totals, sections


@router.get("/assets/{asset_id}/profile")
def profile_page(asset_id: str, request: Request, principal: Principal = console_roles("provider"),
                 session: Session = db_session):
    from broker.catalog import service, vault
    from broker.console.views import render

    try:
        asset = service.get_asset(session, asset_id, None)
    except NotFound:
        asset = None
    if asset is None or asset.provider_id != principal.org_id:
        raise NotFound(f"No entity profile {asset_id} of yours.", code="asset_not_found")
    table = vault.load_table(session, asset.id, asset.version, settings=get_runtime(request).settings)
    decl = _declaration(table)
    totals, sections = _sections(table.to_pylist())
    view = service.asset_view(asset)
    return render(request, "profile.html", principal, session, asset=view, decl=decl, totals=totals,
                  sections=sections, map_svg=charts.extent_map([view], request.scope.get("root_path", "") or "", None))
