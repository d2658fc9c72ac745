"""Console page for an entity profile (实体画像), from its catalog metadata only.

The broker holds no table: a profile's figures (its rows) live in the provider's connector like any other
asset's. The page shows what the catalog knows: the title, the description (which carries the profile's
key figures: entities, method, k-threshold, groups suppressed), the keywords, the twin category, the
unified-code prefix (keyword ``code:<prefix>``), the map of its extent and the declaration of its source
asset (id, version and that version's content hash, looked up in the catalog). The figures themselves are
at the provider's connector, reached like any asset's rows.

Only the provider that published the profile sees it here; anyone else reaches content through a contract.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request
from markupsafe import Markup, escape
from sqlmodel import Session

from broker.api.deps import Principal, db_session
from broker.console import charts
from broker.console.auth import console_roles
from twinspace.errors import NotFound, Unprocessable

router = APIRouter()
PROFILE_KEYWORD = "entity-profile"
MAX_BARS = 24
_SOURCE = re.compile(r"derived from asset (?P<asset_id>[A-Za-z0-9_-]{1,64}) v(?P<version>\d{1,9})")
_ENTITIES = re.compile(r"of (?P<entities>[\d,]+) (?P<entity_type>\S+) entities")
_METHOD = re.compile(r" by (?P<name>[\w.:-]+) v(?P<version>[\w.-]+): ")
_K = re.compile(r"k-threshold k\s*=\s*(?P<k>\d+)")
_SUPPRESSED = re.compile(r"(?P<n>\d+) group\(s\) suppressed")


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


def declaration(view: dict[str, Any]) -> dict[str, Any]:
    """What the catalog metadata declares about a profile; 422 for an asset that is not one."""
    keywords = [str(k) for k in view.get("keywords") or []]
    if PROFILE_KEYWORD not in keywords:
        raise Unprocessable("This asset is not an entity profile.", code="not_an_entity_profile")
    description = str(view.get("description") or "")
    code_prefix = next((k.split(":", 1)[1] for k in keywords if k.startswith("code:")), None)
    kind = next((k.split(":", 1)[1] for k in keywords if k.startswith("profile:")), None)
    source = _SOURCE.search(description)
    entities = _ENTITIES.search(description)
    method = _METHOD.search(description)
    k = _K.search(description)
    suppressed = _SUPPRESSED.search(description)
    return {"kind": kind, "code_prefix": code_prefix, "description": description,
            "entities": entities.group("entities") if entities else None,
            "entity_type": view.get("entity_type") or (entities.group("entity_type") if entities else None),
            "method": {"name": method.group("name"), "version": method.group("version")} if method else None,
            "k": int(k.group("k")) if k else None,
            "groups_suppressed": int(suppressed.group("n")) if suppressed else None,
            "source": {"asset_id": source.group("asset_id"), "version": int(source.group("version"))}
            if source else None,
            "keywords": [kw for kw in keywords if kw != PROFILE_KEYWORD and not kw.startswith(("code:", "profile:"))]}


def _source_asset(session: Session, decl: dict[str, Any]) -> dict[str, Any] | None:
    """The declared source version as the catalog knows it (its content hash names the exact bytes)."""
    from broker.catalog import service

    src = decl.get("source")
    if not src:
        return None
    try:
        asset = service.get_asset(session, src["asset_id"], src["version"])
    except NotFound:
        return {**src, "found": False}
    return {**src, "found": True, "title": asset.title, "content_hash": asset.content_hash,
            "rows": asset.row_count, "provider_id": asset.provider_id}


@router.get("/assets/{asset_id}/profile")
def profile_page(asset_id: str, request: Request, principal: Principal = console_roles("provider"),
                 session: Session = db_session):
    from broker.catalog import service
    from broker.console.views import render

    try:
        asset = service.get_asset(session, asset_id, None)
    except NotFound:
        asset = None
    if asset is None or asset.provider_id != principal.org_id:
        raise NotFound(f"No entity profile {asset_id} of yours.", code="asset_not_found")
    view = service.asset_view(asset)
    decl = declaration(view)
    source = _source_asset(session, decl)
    root = request.scope.get("root_path", "") or ""
    return render(request, "profile.html", principal, session, asset=view, decl=decl, source=source,
                  map_svg=charts.extent_map([view], root, None))
