"""The DSP 2025-1 catalog documents (``Catalog``, ``Dataset``, the version document) built from plain
asset views, and the catalog request filter. Pure: the broker passes what the caller may see.

Every dataset carries its offers as ODRL 2.2 ``Offer``s (``twinspace.odrl``), so a DSP consumer
negotiates from the catalog without knowing TwinSpace's policy library."""

from __future__ import annotations

from typing import Any

from twinspace.dsp.contexts import DSP_CONTEXT
from twinspace.odrl import policy as odrl

PULL, PUSH = "HttpData-PULL", "HttpData-PUSH"
FORMATS = (PULL, PUSH)
VERSION = "2025-1"

# Catalog request filter: one object per criterion, keyed by the IRI of the property it matches
# (after JSON-LD compaction with the DSP context: ``dct:identifier`` and so on). Value: a string.
FILTER_KEYS = {"dct:identifier": "asset_id", "dcat:keyword": "q", "dct:title": "q", "dcat:theme": "domain",
               "dct:publisher": "provider", "twin:query": "q", "twin:category": "twin_category",
               "twin:classification": "classification", "@id": "dataset"}


class FilterProblem(ValueError):
    """A catalog request filter TwinSpace does not understand (answered with a CatalogError)."""


def dataset_iri(asset_id: str, version: int) -> str:
    return f"urn:twinspace:asset:{asset_id}:v{version}"


def parse_dataset_iri(iri: str) -> tuple[str, int | None]:
    """``(asset_id, version)`` from a dataset IRI, or ``(iri, None)`` for a bare asset id."""
    parts = iri.split(":")
    if len(parts) == 5 and parts[:3] == ["urn", "twinspace", "asset"] and parts[4][1:].isdigit():
        return parts[3], int(parts[4][1:])
    return iri, None


def offer_iri(asset_id: str, version: int, offer_id: str) -> str:
    return f"urn:twinspace:offer:{asset_id}:v{version}:{offer_id}"


def data_service(service_id: str, endpoint_url: str) -> dict[str, Any]:
    return {"@id": service_id, "@type": "DataService", "endpointURL": endpoint_url}


def dataset(asset: dict[str, Any], *, service_id: str, with_context: bool = False) -> dict[str, Any]:
    """A DSP ``Dataset``: ``asset`` has id, version, title, description, keywords, provider_id,
    classification, domain and offers (``[{"id", "policy_id", "params"}]``)."""
    iri = dataset_iri(asset["id"], asset["version"])
    doc: dict[str, Any] = {"@id": iri, "@type": "Dataset", "dct:identifier": asset["id"],
                           "dct:title": asset.get("title") or asset["id"]}
    if asset.get("description"):
        doc["dct:description"] = asset["description"]
    if asset.get("keywords"):
        doc["dcat:keyword"] = list(asset["keywords"])
    doc["dct:publisher"] = {"@id": odrl.party_iri(asset["provider_id"])}
    doc["hasPolicy"] = [odrl.offer(offer_iri(asset["id"], asset["version"], o["id"]), policy_id=o["policy_id"],
                                   params=o.get("params") or {}, assigner=asset["provider_id"],
                                   classification=asset.get("classification"))
                        for o in asset.get("offers") or []]
    doc["distribution"] = [{"@type": "Distribution", "format": fmt, "accessService": service_id} for fmt in FORMATS]
    if with_context:
        doc = {"@context": [DSP_CONTEXT], **doc}
    return doc


def catalog(datasets: list[dict[str, Any]], *, participant_id: str, catalog_id: str, service: dict[str, Any],
            title: str = "TwinSpace catalog") -> dict[str, Any]:
    doc: dict[str, Any] = {"@context": [DSP_CONTEXT], "@id": catalog_id, "@type": "Catalog",
                           "participantId": participant_id, "dct:title": title, "service": [service]}
    if datasets:  # the schema wants at least one entry when the key is present
        doc["dataset"] = datasets
    return doc


def version_document(path: str = "/dsp") -> dict[str, Any]:
    """``/.well-known/dspace-version``."""
    return {"protocolVersions": [{"version": VERSION, "path": path, "binding": "HTTPS"}]}


def parse_filter(items: list[Any] | None) -> dict[str, str]:
    """The catalog search arguments a normalised ``filter`` asks for (FilterProblem when unknown)."""
    out: dict[str, str] = {}
    for item in items or []:
        if not isinstance(item, dict) or not item:
            raise FilterProblem("each filter entry is an object such as {\"dct:identifier\": \"ast_1\"}")
        for key, value in item.items():
            if key == "@type":
                continue
            name = FILTER_KEYS.get(key)
            if name is None:
                raise FilterProblem(f"unsupported filter property {str(key)[:80]}; use one of "
                                    + ", ".join(sorted(FILTER_KEYS)))
            if isinstance(value, dict):
                value = value.get("@value", value.get("@id"))
            if isinstance(value, list) and len(value) == 1:
                value = value[0]
            if not isinstance(value, str) or not value or len(value) > 300:
                raise FilterProblem(f"filter {key} needs one string value")
            out[name] = value
    return out
