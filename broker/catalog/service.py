"""Catalog domain logic: publish / new version / withdraw, visibility, search, views, DCAT export.

Visibility rule (who sees an asset's metadata):
* auditors and operators see every asset (all versions and statuses);
* a provider sees all of its own assets, and other providers' assets like a consumer does;
* a consumer sees the latest version of an *active* asset when (a) its ``clearance`` attribute
  (public < internal < sensitive < core; missing = public) is at least the asset's classification,
  and (b) at least one offer's audience admits it: an offer without ``params.audience`` admits
  everyone; otherwise the consumer's ``org_type`` must be in ``audience.org_types`` or its org id in
  ``audience.org_ids``.
The catalog never holds or serves row data: the de-identified table lives in the provider's connector.
"""

from __future__ import annotations

from collections.abc import Callable

import hashlib
import secrets
from datetime import datetime, timezone
from typing import Any

from sqlmodel import Session, col, select

from broker.audit import record_event
from twinspace.canonical import canonical_json
from broker.catalog import endpoints, netguard, query
from broker.catalog.models import Asset
from broker.catalog.schemas import CLASSIFICATION_ORDER, AssetMetadata
from twinspace.dataplane import MANIFEST
from twinspace.errors import BadRequest, Conflict, Forbidden, Gone, NotFound, Unprocessable
from broker.settings import Settings

ENTITY_CODE_SCHEME = "<region>:<category code>:<entity type>:<local id> (docs/connectors.md#entity-codes)"


def _utc(dt: datetime | None) -> datetime | None:
    if dt is None:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def _iso(dt: datetime | None) -> str | None:
    return _utc(dt).isoformat() if dt else None


# --------------------------------------------------------------------------- the connector's manifest
def _fetch_manifest(session: Session, provider_id: str, meta: AssetMetadata, settings: Settings) -> dict[str, Any]:
    """The verified claims of the manifest the provider's verified connector serves for ``content_hash``.
    The broker never sees the rows: the manifest (signed with the provider's key) says what they are."""
    if meta.data_endpoint is None:
        raise BadRequest("data_endpoint (the provider's registered connector) is required.",
                         code="missing_data_endpoint")
    connector = endpoints.verified(session, provider_id, meta.data_endpoint)
    owner = session.exec(select(Asset.provider_id).where(Asset.content_hash == meta.content_hash,
                                                         Asset.provider_id != provider_id).limit(1)).first()
    if owner is not None:
        raise Conflict("Another provider already published content with this hash.", code="content_owned_elsewhere")
    response = netguard.request(settings, "GET", connector.endpoint, f"/assets/{meta.content_hash}/manifest",
                                max_bytes=4 * 1024 * 1024)
    if response.status_code == 404:
        raise Unprocessable("The connector does not serve content with this hash.", code="manifest_not_found")
    try:
        token = response.json().get("manifest") if response.status_code == 200 else None
    except ValueError:
        token = None
    if not isinstance(token, str):
        raise netguard.unreachable()
    refused = Unprocessable("The connector's manifest is not signed by an active key of your organisation "
                            "for this broker.", code="manifest_invalid")
    claims = endpoints.verify_org_message(session, token, provider_id, MANIFEST, audience=settings.issuer,
                                          error=refused)
    if claims.get("sha256") != meta.content_hash:
        raise Unprocessable("The manifest describes other content (sha256).", code="content_hash_mismatch")
    if claims.get("endpoint") != connector.endpoint:
        raise Unprocessable("The manifest names another connector endpoint.", code="manifest_invalid")
    if claims.get("org", provider_id) != provider_id:
        raise Unprocessable("The manifest names another organisation.", code="manifest_invalid")
    size = claims.get("bytes")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise Unprocessable("The manifest has no byte size.", code="manifest_invalid")
    if size > settings.catalog_max_upload_bytes:
        raise Unprocessable(f"The table exceeds the catalog limit of {settings.catalog_max_upload_bytes} bytes.",
                            code="table_too_large")
    return claims


# --------------------------------------------------------------------------- validation
def _check_table(meta: AssetMetadata, manifest: dict[str, Any], settings: Settings) -> None:
    """The metadata against the connector's signed manifest (rows, columns in order, content hash) and
    the de-identification report against both."""
    rows = manifest.get("rows")
    if rows != meta.row_count:
        raise Unprocessable(f"row_count {meta.row_count} does not match the connector's manifest ({rows}).",
                            code="row_count_mismatch")
    columns = manifest.get("columns")
    try:
        actual = [(str(c["name"]), str(c["type"])) for c in columns]
    except (KeyError, TypeError):
        raise Unprocessable("The manifest's columns are not [{name, type}].", code="manifest_invalid") from None
    declared = [(c.name, c.type) for c in meta.columns]
    if declared != actual:
        raise Unprocessable("columns do not match the connector's manifest (names and Arrow types, in order).",
                            code="schema_mismatch", extra={"table_columns": [{"name": n, "type": t} for n, t in actual]})
    column_names = [n for n, _t in actual]
    report = meta.deid_report
    if report is not None:
        if hashlib.sha256(canonical_json(report)).hexdigest() != meta.deid_report_hash:
            raise BadRequest("deid_report_hash is not the SHA-256 of the report's canonical JSON.",
                             code="deid_report_hash_mismatch")
        try:
            out = report["output"]
            qis, sens = list(report["quasi_identifiers"]), list(report["sensitive_attributes"])
            req_k, req_l = int(report["privacy_model"]["k"]), int(report["privacy_model"]["l"])
        except (KeyError, TypeError, ValueError) as exc:
            raise Unprocessable("deid_report lacks output, quasi_identifiers, sensitive_attributes or "
                                "privacy_model.", code="deid_report_invalid") from exc
        if out.get("content_sha256") != meta.content_hash or out.get("rows") != meta.row_count:
            raise Unprocessable("The de-identification report describes a different table.",
                                code="deid_report_mismatch")
        missing = [c for c in qis + sens if c not in column_names]
        if missing:
            raise Unprocessable(f"Report columns missing from the table: {', '.join(missing)}",
                                code="deid_report_mismatch")
        # The rows stay at the connector (which checks them with twinspace.privacy.kanonymity before it
        # signs a manifest); the broker checks the report's own claims.
        achieved = report.get("achieved") or {}
        k, l_min = achieved.get("k"), achieved.get("l_min")
        if (not report.get("meets_policy") or not isinstance(k, int) or k < req_k
                or (sens and req_l > 1 and (not isinstance(l_min, int) or l_min < req_l))):
            raise Unprocessable(f"The table does not meet its privacy model: k={k} (required {req_k}), "
                                f"l={l_min} (required {req_l}).", code="privacy_model_not_met")
    if meta.twin_category == "natural_person":
        min_k = settings.catalog_min_k_natural_person
        if report is None or int(report["privacy_model"]["k"]) < min_k:
            raise Unprocessable(f"Person-level assets need a de-identification report with k >= {min_k}.",
                                code="deid_required")


def _check_offers(meta: AssetMetadata, known_policy: Callable[[str], bool]) -> None:
    """Every offer names a policy the broker can decide. The catalog sits below the policy feature, so
    the caller hands in the lookup (``Runtime.known_policy``, wired by the app)."""
    for offer in meta.offers:
        if not known_policy(offer.policy_id):
            raise Unprocessable(f"Offer {offer.id!r} references unknown policy {offer.policy_id!r}.",
                                code="unknown_policy")


def _new_row(asset_id: str, version: int, provider_id: str, meta: AssetMetadata, manifest: dict[str, Any]) -> Asset:
    bbox = meta.bbox or [None] * 4
    return Asset(id=asset_id, version=version, provider_id=provider_id, status="active", is_latest=True,
                 title=meta.title, description=meta.description, keywords=list(meta.keywords),
                 twin_category=meta.twin_category, entity_type=meta.entity_type,
                 entity_code_scheme=ENTITY_CODE_SCHEME, region=meta.region, classification=meta.classification,
                 domain=meta.domain, min_lon=bbox[0], min_lat=bbox[1], max_lon=bbox[2], max_lat=bbox[3],
                 time_start=_utc(meta.time_start), time_end=_utc(meta.time_end),
                 columns=[c.model_dump(exclude_none=True) for c in meta.columns], row_count=meta.row_count,
                 content_hash=meta.content_hash, byte_size=int(manifest["bytes"]), deid_report=meta.deid_report,
                 deid_report_hash=meta.deid_report_hash, offers=[o.model_dump() for o in meta.offers],
                 data_endpoint=manifest["endpoint"],
                 audience_restricted=query.audience_rows(asset_id, version, [o.model_dump() for o in meta.offers])[0],
                 search_text=search_text(meta.title, meta.description, meta.keywords, meta.entity_type, meta.domain))


def search_text(title: str, description: str, keywords: list[str], entity_type: str, domain: str) -> str:
    return "\n".join([title, description, " ".join(keywords), entity_type, domain]).lower()


def _add_audience(session: Session, asset: Asset) -> None:
    """The derived rows that let SQL decide visibility and ``q`` (``broker.catalog.query``)."""
    for row in query.audience_rows(asset.id, asset.version, list(asset.offers))[1]:
        session.add(row)
    for term in query.term_rows(asset.id, asset.version, asset.search_text):
        session.add(term)


# --------------------------------------------------------------------------- commands
def publish(session: Session, provider_id: str, meta: AssetMetadata, *, settings: Settings,
            known_policy: Callable[[str], bool]) -> Asset:
    """Create a new asset (version 1) whose rows the provider's verified connector serves; the broker
    checks the connector's signed manifest and stores metadata only. Asset row and audit event commit
    together or not at all."""
    _check_offers(meta, known_policy)
    manifest = _fetch_manifest(session, provider_id, meta, settings)
    _check_table(meta, manifest, settings)
    asset = _new_row("ast_" + secrets.token_hex(10), 1, provider_id, meta, manifest)
    session.add(asset)
    session.flush()
    _add_audience(session, asset)
    record_event(session, "catalog.publish", actor=provider_id, asset_id=asset.id,
                 details={"version": 1, "content_hash": meta.content_hash, "classification": meta.classification,
                          "deid_report_hash": meta.deid_report_hash, "rows": meta.row_count,
                          "data_endpoint": asset.data_endpoint})
    session.flush()
    return asset


def _owned_latest(session: Session, provider_id: str, asset_id: str) -> Asset:
    latest = query.latest(session, asset_id)
    if latest is None:
        raise NotFound(f"No asset {asset_id}.", code="asset_not_found")
    if latest.provider_id != provider_id:
        raise Forbidden("Only the asset's provider may change it.", code="not_asset_owner")
    if latest.status == "withdrawn":
        raise Gone(f"Asset {asset_id} was withdrawn.", code="asset_withdrawn")
    return latest


def new_version(session: Session, provider_id: str, asset_id: str, meta: AssetMetadata, *,
                settings: Settings, known_policy: Callable[[str], bool]) -> Asset:
    latest = _owned_latest(session, provider_id, asset_id)
    _check_offers(meta, known_policy)
    manifest = _fetch_manifest(session, provider_id, meta, settings)
    _check_table(meta, manifest, settings)
    latest.is_latest = False
    latest.status = "superseded"
    session.add(latest)
    session.flush()
    version = latest.version + 1
    asset = _new_row(asset_id, version, provider_id, meta, manifest)
    session.add(asset)
    session.flush()
    _add_audience(session, asset)
    record_event(session, "catalog.new_version", actor=provider_id, asset_id=asset_id,
                 details={"version": version, "previous_version": latest.version, "content_hash": meta.content_hash,
                          "deid_report_hash": meta.deid_report_hash, "rows": meta.row_count,
                          "data_endpoint": asset.data_endpoint})
    session.flush()
    return asset


def withdraw(session: Session, provider_id: str, asset_id: str, reason: str | None = None) -> Asset:
    latest = _owned_latest(session, provider_id, asset_id)
    now = datetime.now(timezone.utc)
    for row in session.exec(select(Asset).where(Asset.id == asset_id)).all():
        row.status = "withdrawn"
        row.withdrawn_at = now
        session.add(row)
    record_event(session, "catalog.withdraw", actor=provider_id, asset_id=asset_id,
                 details={"version": latest.version, "reason": (reason or "")[:200]})
    session.flush()
    return latest


# --------------------------------------------------------------------------- queries
def get_asset(session: Session, asset_id: str, version: int | None = None) -> Asset:
    """One version (the latest when ``version`` is None), whatever its status; NotFound otherwise."""
    if version is None:
        asset = query.latest(session, asset_id)
    else:
        asset = session.get(Asset, (asset_id, version))
    if asset is None:
        raise NotFound(f"No asset {asset_id}" + (f" version {version}." if version else "."), code="asset_not_found")
    return asset


def clearance_of(attributes: dict[str, Any] | None) -> str:
    value = (attributes or {}).get("clearance", "public")
    return value if value in CLASSIFICATION_ORDER else "public"


def offer_admits(offer: dict[str, Any], org_id: str, org_type: str) -> bool:
    audience = (offer.get("params") or {}).get("audience")
    if not audience:
        return True
    return org_type in (audience.get("org_types") or []) or org_id in (audience.get("org_ids") or [])


def can_see(asset: Asset, *, org_id: str, role: str, org_type: str = "other",
            attributes: dict[str, Any] | None = None) -> bool:
    if role in ("auditor", "operator"):
        return True
    if role == "provider" and asset.provider_id == org_id:
        return True
    if asset.status != "active" or not asset.is_latest:
        return False
    if CLASSIFICATION_ORDER[asset.classification] > CLASSIFICATION_ORDER[clearance_of(attributes)]:
        return False
    return any(offer_admits(o, org_id, org_type) for o in asset.offers)


def search(session: Session, *, org_id: str, role: str, org_type: str = "other",
           attributes: dict[str, Any] | None = None, q: str | None = None, twin_category: str | None = None,
           entity_type: str | None = None, domain: str | None = None, classification: str | None = None,
           provider: str | None = None, bbox: list[float] | None = None, time_from: datetime | None = None,
           time_to: datetime | None = None, include_history: bool = False, limit: int = 50,
           offset: int = 0, audit: bool = True) -> tuple[list[Asset], int]:
    """Assets the caller may see that match every given filter, newest first; (page, total)."""
    page = search_page(session, org_id=org_id, role=role, org_type=org_type, attributes=attributes, q=q,
                       twin_category=twin_category, entity_type=entity_type, domain=domain,
                       classification=classification, provider=provider, bbox=bbox, time_from=time_from,
                       time_to=time_to, include_history=include_history, limit=limit, offset=offset, audit=audit)
    return page.items, page.total


def search_page(session: Session, *, org_id: str, role: str, org_type: str = "other",
                attributes: dict[str, Any] | None = None, limit: int = 50, offset: int = 0,
                cursor: str | None = None, count_cap: int | None = None, audit: bool = True,
                **filters: Any) -> query.Page:
    """One page of :func:`search` with its ``next_cursor``; visibility, filters, order, paging and the
    count all run in SQL (``broker.catalog.query``). The large ``deid_report`` is not loaded."""
    page = query.search(session, org_id=org_id, role=role, org_type=org_type, clearance=clearance_of(attributes),
                        limit=limit, offset=offset, cursor=cursor, count_cap=count_cap, **filters)
    if audit:
        named = {k: v for k, v in filters.items() if v is not None and k != "include_history"}
        for key in ("time_from", "time_to"):
            if key in named:
                named[key] = _iso(named[key])
        record_event(session, "catalog.search", actor=org_id,
                     details={"filters": named, "total": page.total, "returned": len(page.items)})
    return page


# --------------------------------------------------------------------------- views
def asset_policy_view(asset: Asset) -> dict[str, Any]:
    """What the policy engine receives about an asset (no row data)."""
    report = asset.deid_report or {}
    achieved = report.get("achieved") or {}
    return {"id": asset.id, "version": asset.version, "provider_id": asset.provider_id, "status": asset.status,
            "classification": asset.classification, "domain": asset.domain, "twin_category": asset.twin_category,
            "entity_type": asset.entity_type, "bbox": asset.bbox, "time_start": _iso(asset.time_start),
            "time_end": _iso(asset.time_end), "offers": list(asset.offers), "content_hash": asset.content_hash,
            "row_count": asset.row_count, "columns": [c["name"] for c in asset.columns],
            "deid": ({"k": achieved.get("k"), "l": achieved.get("l_min"), "report_hash": asset.deid_report_hash}
                     if asset.deid_report else None)}


def asset_view(asset: Asset, *, full: bool = True) -> dict[str, Any]:
    """The public metadata of one asset version, as the catalog API returns it; list items
    (``full=False``) leave out the de-identification report (its hash stays), which GET returns."""
    view = {"id": asset.id, "version": asset.version, "provider_id": asset.provider_id, "status": asset.status,
            "is_latest": asset.is_latest, "title": asset.title, "description": asset.description,
            "keywords": list(asset.keywords), "twin_category": asset.twin_category, "entity_type": asset.entity_type,
            "entity_code_scheme": asset.entity_code_scheme, "region": asset.region,
            "classification": asset.classification, "domain": asset.domain, "bbox": asset.bbox,
            "time_start": _iso(asset.time_start), "time_end": _iso(asset.time_end), "columns": list(asset.columns),
            "row_count": asset.row_count, "content_hash": asset.content_hash, "byte_size": asset.byte_size,
            "deid_report_hash": asset.deid_report_hash,
            "offers": list(asset.offers), "created_at": _iso(asset.created_at),
            "withdrawn_at": _iso(asset.withdrawn_at), "storage": "connector", "data_endpoint": asset.data_endpoint}
    if full:
        view["deid_report"] = asset.deid_report
    return view


def versions(session: Session, asset_id: str) -> list[Asset]:
    return list(session.exec(select(Asset).where(Asset.id == asset_id).order_by(col(Asset.version))).all())


