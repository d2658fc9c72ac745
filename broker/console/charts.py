"""Server-side SVG: the map of spatial extents and the access/denial charts. Pure functions, no I/O;
every text goes through ``markupsafe.escape`` (the SVG is inlined in the page)."""

from __future__ import annotations

import json
import math
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any

from markupsafe import Markup, escape

PALETTE = ["#2b6cb0", "#2f855a", "#b7791f", "#9b2c2c", "#6b46c1", "#2c7a7b", "#c05621", "#4a5568"]
ACCESS_PREFIXES = ("transfer.", "catalog.", "contract.", "policy.", "dataplane.")


def entry_row(e) -> dict[str, Any]:
    """An audit entry as the console tables and charts use it (``e`` is an ``AuditEntry`` row)."""
    body = json.loads(e.body)
    created = e.created_at if e.created_at.tzinfo else e.created_at.replace(tzinfo=timezone.utc)
    return {"seq": e.seq, "time": created, "kind": e.kind, "actor": e.actor, "outcome": e.outcome,
            "asset_id": e.asset_id, "agreement_id": e.agreement_id, "details": body.get("details") or {}}


def _buckets(rows: list[dict[str, Any]]) -> tuple[list[datetime], timedelta, str]:
    times = [r["time"] for r in rows]
    lo, hi = min(times), max(times)
    if hi - lo <= timedelta(hours=2):
        step, fmt = timedelta(minutes=5), "%H:%M"
        start = lo.replace(minute=lo.minute - lo.minute % 5, second=0, microsecond=0)
    elif hi - lo <= timedelta(days=2):
        step, fmt = timedelta(hours=1), "%d %H:00"
        start = lo.replace(minute=0, second=0, microsecond=0)
    else:
        step, fmt = timedelta(days=1), "%m-%d"
        start = lo.replace(hour=0, minute=0, second=0, microsecond=0)
    edges = [start]
    while edges[-1] + step <= hi:
        edges.append(edges[-1] + step)
    return edges[-60:], step, fmt


def volume_chart(rows: list[dict[str, Any]], width: int = 640, height: int = 200) -> Markup:
    """Stacked bars per time bucket: access events allowed (blue) and denied (red)."""
    rows = [r for r in rows if r["kind"].startswith(ACCESS_PREFIXES) or r["outcome"] == "deny"]
    if not rows:
        return Markup('<p class="muted">No access events yet.</p>')
    edges, step, fmt = _buckets(rows)
    ok, deny = [0] * len(edges), [0] * len(edges)
    for r in rows:
        i = int((r["time"] - edges[0]) / step)
        if 0 <= i < len(edges):
            (deny if r["outcome"] == "deny" else ok)[i] += 1
    top = max(a + b for a, b in zip(ok, deny)) or 1
    pad_l, pad_b, pad_t = 36, 28, 10
    plot_w, plot_h = width - pad_l - 8, height - pad_b - pad_t
    bw = plot_w / len(edges)
    parts = [f'<svg class="chart" role="img" aria-label="Access volume" viewBox="0 0 {width} {height}" '
             f'width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">',
             f'<title>Access events per {escape(_step_name(step))}: {sum(ok)} allowed, {sum(deny)} denied</title>',
             f'<line x1="{pad_l}" y1="{pad_t + plot_h}" x2="{width - 8}" y2="{pad_t + plot_h}" stroke="#999"/>',
             f'<text x="{pad_l - 4}" y="{pad_t + 8}" text-anchor="end" font-size="10">{top}</text>',
             f'<text x="{pad_l - 4}" y="{pad_t + plot_h}" text-anchor="end" font-size="10">0</text>']
    label_every = max(1, len(edges) // 8)
    for i, edge in enumerate(edges):
        x = pad_l + i * bw + 1
        h_ok, h_deny = plot_h * ok[i] / top, plot_h * deny[i] / top
        y_ok = pad_t + plot_h - h_ok
        tip = f"{edge.strftime(fmt)}: {ok[i]} allowed, {deny[i]} denied"
        parts.append(f'<g class="bar"><title>{escape(tip)}</title>'
                     f'<rect x="{x:.1f}" y="{y_ok:.1f}" width="{max(bw - 2, 1):.1f}" height="{h_ok:.1f}" fill="#2b6cb0"/>'
                     f'<rect x="{x:.1f}" y="{y_ok - h_deny:.1f}" width="{max(bw - 2, 1):.1f}" height="{h_deny:.1f}" '
                     f'fill="#c53030"/></g>')
        if i % label_every == 0:
            parts.append(f'<text x="{x + bw / 2:.1f}" y="{height - 10}" text-anchor="middle" font-size="10">'
                         f'{escape(edge.strftime(fmt))}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def _step_name(step: timedelta) -> str:
    return {timedelta(minutes=5): "5 minutes", timedelta(hours=1): "hour"}.get(step, "day")


def _denial_reasons(row: dict[str, Any]) -> list[str]:
    """What a denial is labelled with: its code or reason; a policy decision's reasons (each one); the
    event kind only when nothing else says why."""
    d = row.get("details") or {}
    if d.get("code") or d.get("reason"):
        return [str(d.get("code") or d.get("reason"))]
    reasons = d.get("reasons")
    if isinstance(reasons, list) and reasons:
        return [str(x) for x in reasons]
    return [str(row["kind"])]


def denial_chart(rows: list[dict[str, Any]], width: int = 640) -> Markup:
    """Horizontal bars: denials by reason code (or event kind when there is no code)."""
    denied = [r for r in rows if r["outcome"] in ("deny", "denied")]
    if not denied:
        return Markup('<p class="muted">No denials.</p>')
    counts = Counter(label[:60] for r in denied for label in _denial_reasons(r))
    items = counts.most_common(10)
    top = items[0][1]
    bar_h, label_w = 22, 220
    height = bar_h * len(items) + 10
    parts = [f'<svg class="chart" role="img" aria-label="Denials by reason" viewBox="0 0 {width} {height}" '
             f'width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">',
             f'<title>{len(denied)} denials by reason</title>']
    for i, (label, n) in enumerate(items):
        y = 5 + i * bar_h
        w = (width - label_w - 50) * n / top
        parts.append(f'<g class="bar"><title>{escape(label)}: {n}</title>'
                     f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end" font-size="11">{escape(label)}</text>'
                     f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{bar_h - 6}" fill="#c53030"/>'
                     f'<text x="{label_w + w + 4:.1f}" y="{y + 15}" font-size="11">{n}</text></g>')
    parts.append("</svg>")
    return Markup("".join(parts))


def extent_map(assets: list[dict[str, Any]], root: str, selected: list[float] | None,
               width: int = 640, height: int = 360) -> Markup:
    """The assets' bounding boxes (WGS84) on a plain equirectangular frame, each linking to its page.
    Drag on the map (console.js) to search by a box; the graticule gives the scale (no tile server)."""
    boxes = [(a, a["bbox"]) for a in assets if a.get("bbox")]
    extents = [b for _, b in boxes] + ([selected] if selected else [])
    if not extents:
        w, s, e, n = 119.0, 21.5, 122.5, 25.5  # Taiwan, a sensible empty frame
    else:
        w, s = min(b[0] for b in extents), min(b[1] for b in extents)
        e, n = max(b[2] for b in extents), max(b[3] for b in extents)
    dx, dy = max(e - w, 0.01), max(n - s, 0.01)
    w, e, s, n = w - dx * 0.15, e + dx * 0.15, s - dy * 0.15, n + dy * 0.15
    # keep the aspect of degrees roughly true at this latitude
    k = math.cos(math.radians((s + n) / 2)) or 1
    span_x, span_y = (e - w) * k, n - s
    scale = min(width / span_x, height / span_y)
    ox = (width - span_x * scale) / 2
    oy = (height - span_y * scale) / 2

    def px(lon: float, lat: float) -> tuple[float, float]:
        return ox + (lon - w) * k * scale, oy + (n - lat) * scale

    parts = [f'<svg id="extent-map" class="map" role="img" aria-label="Spatial extents" viewBox="0 0 {width} {height}" '
             f'width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg" '
             f'data-w="{w}" data-n="{n}" data-k="{k}" data-scale="{scale}" data-ox="{ox}" data-oy="{oy}">',
             f'<rect x="0" y="0" width="{width}" height="{height}" fill="#f4f8fb"/>']
    step = _nice_step(max(e - w, n - s))
    lon = math.floor(w / step) * step
    while lon <= e:
        x, _ = px(lon, n)
        parts.append(f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{height}" stroke="#d9e2ec"/>'
                     f'<text x="{x + 2:.1f}" y="{height - 4}" font-size="9" fill="#62707f">{lon:.{_dp(step)}f}°E</text>')
        lon += step
    lat = math.floor(s / step) * step
    while lat <= n:
        _, y = px(w, lat)
        parts.append(f'<line x1="0" y1="{y:.1f}" x2="{width}" y2="{y:.1f}" stroke="#d9e2ec"/>'
                     f'<text x="2" y="{y - 2:.1f}" font-size="9" fill="#62707f">{lat:.{_dp(step)}f}°N</text>')
        lat += step
    for i, (asset, (bw_, bs, be, bn)) in enumerate(boxes):
        x0, y0 = px(bw_, bn)
        x1, y1 = px(be, bs)
        color = PALETTE[i % len(PALETTE)]
        href = f"{root}/catalog/{asset['id']}"
        parts.append(f'<a href="{escape(href)}" class="extent"><title>{escape(asset["title"])} '
                     f'[{bw_}, {bs}, {be}, {bn}]</title>'
                     f'<rect x="{x0:.1f}" y="{y0:.1f}" width="{max(x1 - x0, 3):.1f}" height="{max(y1 - y0, 3):.1f}" '
                     f'fill="{color}" fill-opacity="0.18" stroke="{color}" stroke-width="2"/>'
                     f'<text x="{x0 + 4:.1f}" y="{y0 + 13:.1f}" font-size="11" fill="{color}">'
                     f'{escape(asset["title"][:40])}</text></a>')
    if selected:
        x0, y0 = px(selected[0], selected[3])
        x1, y1 = px(selected[2], selected[1])
        parts.append(f'<rect class="selection" x="{x0:.1f}" y="{y0:.1f}" width="{x1 - x0:.1f}" height="{y1 - y0:.1f}" '
                     f'fill="none" stroke="#222" stroke-dasharray="5 3"/>')
    parts.append('<rect id="drag-box" x="0" y="0" width="0" height="0" fill="#222" fill-opacity="0.08" '
                 'stroke="#222" stroke-dasharray="4 2" visibility="hidden"/></svg>')
    return Markup("".join(parts))


def _nice_step(span: float) -> float:
    for step in (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 45):
        if span / step <= 8:
            return step
    return 90


def _dp(step: float) -> int:
    return 0 if step >= 1 else max(0, -int(math.floor(math.log10(step))))

