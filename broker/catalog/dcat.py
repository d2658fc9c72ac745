"""The DSP catalog response's DCAT shape (``POST /dsp/catalog/request``, owned with the DSP work):
a ``dcat:Catalog`` whose ``dcat:dataset`` entries carry their offers as ``odrl:hasPolicy``.
The DCAT-AP 3.0.1 export (``GET /catalog/dcat``) is ``twinspace.dcat`` + ``broker.catalog.export``;
the same asset -> Dataset/Distribution mapping is ``twinspace.dcat.dataset_node``."""

from __future__ import annotations

from typing import Any

from broker.catalog.models import Asset

CONTEXT = {
    "dcat": "http://www.w3.org/ns/dcat#",
    "dct": "http://purl.org/dc/terms/",
    "odrl": "http://www.w3.org/ns/odrl/2/",
    "dspace": "https://w3id.org/dspace/2025/1/",
    "xsd": "http://www.w3.org/2001/XMLSchema#",
    "geo": "http://www.opengis.net/ont/geosparql#",
    "spdx": "http://spdx.org/rdf/terms#",
    "twin": "https://twinspace.dev/ns/twin#",
}


def dataset_iri(asset: Asset) -> str:
    return f"urn:twinspace:asset:{asset.id}:v{asset.version}"


def _bbox_wkt(b: list[float]) -> str:
    w, s, e, n = b
    return f"POLYGON(({w} {s}, {e} {s}, {e} {n}, {w} {n}, {w} {s}))"


def dataset(asset: Asset) -> dict[str, Any]:
    ds: dict[str, Any] = {
        "@id": dataset_iri(asset),
        "@type": "dcat:Dataset",
        "dct:identifier": asset.id,
        "dct:title": asset.title,
        "dct:description": asset.description,
        "dcat:keyword": list(asset.keywords),
        "dcat:version": str(asset.version),
        "dct:publisher": {"@id": f"urn:twinspace:org:{asset.provider_id}"},
        "dct:issued": {"@value": asset.created_at.isoformat(), "@type": "xsd:dateTime"},
        "dcat:theme": {"@id": f"https://twinspace.dev/ns/domain#{asset.domain}"},
        "twin:category": asset.twin_category,
        "twin:entityType": asset.entity_type,
        "twin:entityCodeScheme": asset.entity_code_scheme,
        "twin:classification": asset.classification,
        "twin:rowCount": asset.row_count,
        "twin:columns": [dict(c) for c in asset.columns],
        "spdx:checksum": {"@type": "spdx:Checksum", "spdx:algorithm": "spdx:checksumAlgorithm_sha256",
                          "spdx:checksumValue": asset.content_hash},
        "odrl:hasPolicy": [{
            "@id": f"urn:twinspace:offer:{asset.id}:v{asset.version}:{o['id']}",
            "@type": "odrl:Offer",
            "odrl:assigner": {"@id": f"urn:twinspace:org:{asset.provider_id}"},
            "odrl:target": {"@id": dataset_iri(asset)},
            "twin:policyId": o["policy_id"],
            "twin:params": o.get("params") or {},
        } for o in asset.offers],
        "dcat:distribution": [{
            "@type": "dcat:Distribution",
            "dct:format": {"@id": "https://www.iana.org/assignments/media-types/application/vnd.apache.arrow.file"},
            "dcat:accessService": {"@id": "urn:twinspace:dataplane", "@type": "dcat:DataService",
                                   "dcat:endpointDescription": "TwinSpace data plane (agreement + transfer token)"},
        }],
    }
    if asset.bbox:
        ds["dct:spatial"] = {"@type": "dct:Location",
                             "dcat:bbox": {"@value": _bbox_wkt(asset.bbox), "@type": "geo:wktLiteral"}}
    if asset.time_start or asset.time_end:
        period: dict[str, Any] = {"@type": "dct:PeriodOfTime"}
        if asset.time_start:
            period["dcat:startDate"] = {"@value": asset.time_start.isoformat(), "@type": "xsd:dateTime"}
        if asset.time_end:
            period["dcat:endDate"] = {"@value": asset.time_end.isoformat(), "@type": "xsd:dateTime"}
        ds["dct:temporal"] = period
    if asset.deid_report_hash:
        ds["twin:deidReportHash"] = asset.deid_report_hash
    return ds


def catalog(assets: list[Asset], *, catalog_id: str = "urn:twinspace:catalog",
            title: str = "TwinSpace catalog") -> dict[str, Any]:
    return {"@context": CONTEXT, "@id": catalog_id, "@type": "dcat:Catalog", "dct:title": title,
            "dcat:dataset": [dataset(a) for a in assets]}
