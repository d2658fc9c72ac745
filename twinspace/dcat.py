"""DCAT-AP 3.0.1 mapping of catalog assets (pure: plain mappings in, JSON-LD out; no database, no web).

One place maps an asset to ``dcat:Dataset`` + ``dcat:Distribution`` (:func:`dataset_node`); the
catalog export (``GET /catalog/dcat``) streams those nodes as JSON-LD or Turtle, and the DSP catalog
may reuse the same node, IRIs and vocabularies. Controlled vocabularies are IRIs from the EU
Publications Office authority tables (hard-coded below: the export never fetches anything).
TwinSpace-specific facts (twin category, unified entity code, classification level) are documented
extensions in the ``twin:`` namespace (docs/catalog.md#dcat-ap-extensions).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from functools import lru_cache
from typing import Any

TWIN_NS = "https://twinspace.dev/ns/twin#"
EU = "http://publications.europa.eu/resource/authority/"

CONTEXT: dict[str, str] = {
    "dcat": "http://www.w3.org/ns/dcat#",
    "dct": "http://purl.org/dc/terms/",
    "dcatap": "http://data.europa.eu/r5r/",
    "odrl": "http://www.w3.org/ns/odrl/2/",
    "foaf": "http://xmlns.com/foaf/0.1/",
    "vcard": "http://www.w3.org/2006/vcard/ns#",
    "skos": "http://www.w3.org/2004/02/skos/core#",
    "spdx": "http://spdx.org/rdf/terms#",
    "xsd": "http://www.w3.org/2001/XMLSchema#",
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "rdfs": "http://www.w3.org/2000/01/rdf-schema#",
    "geo": "http://www.opengis.net/ont/geosparql#",
    "twin": TWIN_NS,
}

# --------------------------------------------------------------------------- controlled vocabularies
# Access rights (EU "access-right" table): what a consumer must do to obtain the data.
ACCESS_RIGHTS = {"PUBLIC": "Public", "RESTRICTED": "Restricted", "NON_PUBLIC": "Non-public"}


def access_right(classification: str, open_offer: bool) -> str:
    """public + an offer open to everyone -> PUBLIC; public/internal behind an audience -> RESTRICTED;
    sensitive/core -> NON_PUBLIC (only a cleared audience ever sees the metadata)."""
    if classification in ("sensitive", "core"):
        return "NON_PUBLIC"
    return "PUBLIC" if classification == "public" and open_offer else "RESTRICTED"


# Licences (EU "licence" table), keyed by the SPDX id a provider may name in an offer's
# ``params.license``; with no licence named, the ODRL offers themselves are the terms of use.
LICENCES = {"CC-BY-4.0": ("CC_BY_4_0", "Attribution"), "CC-BY-SA-4.0": ("CC_BYSA_4_0", "ViralEffect-ShareAlike"),
            "CC0-1.0": ("CC0", "PublicDomain"), "ODbL-1.0": ("ODC_ODBL", "ViralEffect-ShareAlike"),
            "ODC-By-1.0": ("ODC_BY", "Attribution"), "PDDL-1.0": ("ODC_PDDL", "PublicDomain")}
LICENCE_TYPE = "http://purl.org/adms/licencetype/"

# File type (EU "file-type" table has no Apache Arrow entry: BIN, with the IANA media type exact).
FILE_TYPE_BIN = EU + "file-type/BIN"
ARROW_MEDIA_TYPE = "https://www.iana.org/assignments/media-types/application/vnd.apache.arrow.file"
AVAILABLE = EU + "planned-availability/AVAILABLE"
LANGUAGE_ENG = EU + "language/ENG"

# Data themes (EU "data-theme" table) per TwinSpace domain; unknown domains -> REGI (regions & cities).
THEMES = {"AGRI": "Agriculture, fisheries, forestry and food", "ECON": "Economy and finance",
          "EDUC": "Education, culture and sport", "ENER": "Energy", "ENVI": "Environment",
          "GOVE": "Government and public sector", "HEAL": "Health", "INTR": "International issues",
          "JUST": "Justice, legal system and public safety", "REGI": "Regions and cities",
          "SOCI": "Population and society", "TECH": "Science and technology", "TRAN": "Transport"}
DOMAIN_THEMES = {"transport": "TRAN", "mobility": "TRAN", "parking": "TRAN", "traffic": "TRAN",
                 "environment": "ENVI", "water": "ENVI", "air_quality": "ENVI", "weather": "ENVI",
                 "energy": "ENER", "health": "HEAL", "planning": "REGI", "buildings": "REGI", "urban": "REGI",
                 "government": "GOVE", "public_safety": "JUST", "safety": "JUST", "economy": "ECON",
                 "finance": "ECON", "education": "EDUC", "culture": "EDUC", "population": "SOCI",
                 "social": "SOCI", "agriculture": "AGRI", "technology": "TECH", "telecom": "TECH"}

# Publisher types (ADMS publisher type vocabulary) per TwinSpace org_type.
PUBLISHER_TYPE = "http://purl.org/adms/publishertype/"
ORG_TYPES = {"government_agency": "LocalAuthority", "national_authority": "NationalAuthority",
             "regional_authority": "RegionalAuthority", "enterprise": "Company", "company": "Company",
             "industry": "Industry", "university": "Academia-ScientificOrganisation",
             "research": "Academia-ScientificOrganisation", "ngo": "NonGovernmentalOrganisation",
             "non_profit": "NonProfitOrganisation", "audit_office": "NationalAuthority"}

# TwinSpace extensions: the eight twin categories and the four classification levels as SKOS concepts.
TWIN_CATEGORIES = {"natural_person": "Natural person", "legal_person": "Legal person",
                   "natural_entity": "Natural entity", "management_entity": "Management entity",
                   "building_structure": "Building or structure", "goods_equipment": "Goods and equipment",
                   "vehicle": "Vehicle", "other": "Other"}
CATEGORY_CODES = {"natural_person": "NP", "legal_person": "LP", "natural_entity": "NE",
                  "management_entity": "ME", "building_structure": "BS", "goods_equipment": "GE",
                  "vehicle": "VH", "other": "OT"}
CLASSIFICATIONS = {"public": "Public", "internal": "Internal", "sensitive": "Sensitive", "core": "Core"}
ENTITY_CODE_SCHEME = "<region>:<category code>:<entity type>:<local id>"


def _concept(iri: str, label: str, scheme: str) -> dict[str, Any]:
    return {"@id": iri, "@type": "skos:Concept", "skos:prefLabel": {"@value": label, "@language": "en"},
            "skos:inScheme": {"@id": scheme}}


def theme_iri(domain: str) -> str:
    return f"{EU}data-theme/{DOMAIN_THEMES.get(domain, 'REGI')}"


# --------------------------------------------------------------------------- IRIs
def dataset_iri(asset_id: str, version: int) -> str:
    return f"urn:twinspace:asset:{asset_id}:v{version}"


def distribution_iri(asset_id: str, version: int) -> str:
    return f"urn:twinspace:distribution:{asset_id}:v{version}"


def offer_iri(asset_id: str, version: int, offer_id: str) -> str:
    return f"urn:twinspace:offer:{asset_id}:v{version}:{offer_id}"


def org_iri(org_id: str) -> str:
    return f"urn:twinspace:org:{org_id}"


def _dt(value: str | None) -> dict[str, str] | None:
    return {"@value": value, "@type": "xsd:dateTime"} if value else None


def _wkt_box(b: list[float]) -> str:
    w, s, e, n = b
    return f"POLYGON(({w} {s}, {e} {s}, {e} {n}, {w} {n}, {w} {s}))"


def location(bbox: list[float]) -> dict[str, Any]:
    w, s, e, n = bbox
    return {"@type": "dct:Location", "dcat:bbox": {"@value": _wkt_box(bbox), "@type": "geo:wktLiteral"},
            "dcat:centroid": {"@value": f"POINT({(w + e) / 2} {(s + n) / 2})", "@type": "geo:wktLiteral"}}


def agent(org_id: str, name: str, org_type: str) -> dict[str, Any]:
    """A publisher (``foaf:Agent`` with its name and ADMS publisher type)."""
    kind = ORG_TYPES.get(org_type)
    node: dict[str, Any] = {"@id": org_iri(org_id), "@type": "foaf:Agent", "foaf:name": name}
    if kind:
        node["dct:type"] = _concept(PUBLISHER_TYPE + kind, kind, PUBLISHER_TYPE)
    return node


def contact(org_id: str, name: str) -> dict[str, Any]:
    """The contact point: the provider organisation as registered with the broker (which relays to it)."""
    return {"@id": f"urn:twinspace:contact:{org_id}", "@type": ["vcard:Kind", "vcard:Organization"], "vcard:fn": name}


def data_service(base_url: str, *, publisher: Mapping[str, Any] | None = None,
                 contact_point: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The broker's data plane behind every distribution (contract negotiation + transfer over DSP)."""
    node: dict[str, Any] = {
        "@id": f"{base_url}/dsp", "@type": "dcat:DataService",
        "dct:title": "TwinSpace data plane (Dataspace Protocol 2025-1)",
        "dct:description": "Negotiate an ODRL agreement for an offer, then pull the table with a transfer token.",
        "dcat:endpointURL": {"@id": f"{base_url}/dsp"},
        "dcat:endpointDescription": {"@id": f"{base_url}/openapi.json"},
        "dct:conformsTo": {"@id": "https://w3id.org/dspace/2025/1/", "@type": "dct:Standard"},
        "dcat:keyword": ["dataspace protocol", "digital twin"],
        "dcat:theme": _concept(f"{EU}data-theme/REGI", THEMES["REGI"], f"{EU}data-theme"),
    }
    if publisher is not None:
        node["dct:publisher"] = dict(publisher)
    if contact_point is not None:
        node["dcat:contactPoint"] = dict(contact_point)
    return node


def _open_offer(offers: Iterable[Mapping[str, Any]]) -> bool:
    return any(not (o.get("params") or {}).get("audience") for o in offers)


def _licence(offers: list[Mapping[str, Any]], asset_id: str, version: int) -> dict[str, Any]:
    named = {str((o.get("params") or {}).get("license")) for o in offers} & set(LICENCES)
    if len(named) == 1:
        code, kind = LICENCES[named.pop()]
        return {"@id": f"{EU}licence/{code}", "@type": "dct:LicenseDocument",
                "dct:type": _concept(LICENCE_TYPE + kind, kind, LICENCE_TYPE)}
    return {"@id": f"urn:twinspace:terms:{asset_id}:v{version}", "@type": "dct:LicenseDocument",
            "rdfs:label": "The usage terms of the ODRL offer agreed through the Dataspace Protocol",
            "dct:type": _concept(LICENCE_TYPE + "OtherRestrictiveClauses", "Other restrictive clauses", LICENCE_TYPE)}


def dataset_node(view: Mapping[str, Any], *, base_url: str, publisher: Mapping[str, Any] | None = None,
                 include_offers: bool = True) -> dict[str, Any]:
    """One asset version (the catalog's ``asset_view``, ``deid_report`` not needed) as a DCAT-AP 3.0.1
    ``dcat:Dataset`` with one ``dcat:Distribution`` (the Arrow IPC table behind the data plane)."""
    aid, ver = view["id"], int(view["version"])
    ds_iri = dataset_iri(aid, ver)
    offers = list(view.get("offers") or [])
    keywords = list(dict.fromkeys([*view.get("keywords", []), view["entity_type"], view["domain"]]))
    access = access_right(view["classification"], _open_offer(offers))
    ds: dict[str, Any] = {
        "@id": ds_iri, "@type": "dcat:Dataset",
        "dct:identifier": aid,
        "dct:title": view["title"],
        "dct:description": view.get("description") or view["title"],
        "dcat:keyword": keywords,
        "dcat:version": str(ver),
        "dct:issued": _dt(view.get("created_at")),
        "dcat:theme": _concept(theme_iri(view["domain"]), THEMES[DOMAIN_THEMES.get(view["domain"], "REGI")],
                               f"{EU}data-theme"),
        "dct:accessRights": {"@id": f"{EU}access-right/{access}", "@type": "dct:RightsStatement",
                             "rdfs:label": ACCESS_RIGHTS[access]},
        "twin:twinCategory": _concept(f"{TWIN_NS}category-{view['twin_category']}",
                                      TWIN_CATEGORIES.get(view["twin_category"], view["twin_category"]),
                                      f"{TWIN_NS}TwinCategories"),
        "twin:classification": _concept(f"{TWIN_NS}classification-{view['classification']}",
                                        CLASSIFICATIONS.get(view["classification"], view["classification"]),
                                        f"{TWIN_NS}ClassificationLevels"),
        "twin:entityType": view["entity_type"],
        "twin:entityCodeScheme": ENTITY_CODE_SCHEME,
        "twin:rowCount": {"@value": str(int(view["row_count"])), "@type": "xsd:nonNegativeInteger"},
        "twin:column": [{"@type": "twin:Column", "twin:columnName": c["name"], "twin:arrowType": c["type"],
                         **({"twin:unit": c["unit"]} if c.get("unit") else {})} for c in view.get("columns", [])],
        "twin:status": view.get("status", "active"),
    }
    if view.get("region"):
        code = CATEGORY_CODES.get(view["twin_category"], "OT")
        ds["twin:entityCodePrefix"] = f"{view['region']}:{code}:{view['entity_type']}:"
    if view.get("withdrawn_at"):
        ds["dct:modified"] = _dt(view["withdrawn_at"])
    if publisher is not None:
        ds["dct:publisher"] = dict(publisher)
        ds["dcat:contactPoint"] = contact(view["provider_id"], publisher["foaf:name"])
    else:
        ds["dct:publisher"] = {"@id": org_iri(view["provider_id"])}
    if view.get("bbox"):
        ds["dct:spatial"] = location(view["bbox"])
    if view.get("time_start") or view.get("time_end"):
        period: dict[str, Any] = {"@type": "dct:PeriodOfTime"}
        if view.get("time_start"):
            period["dcat:startDate"] = _dt(view["time_start"])
        if view.get("time_end"):
            period["dcat:endDate"] = _dt(view["time_end"])
        ds["dct:temporal"] = period
    if view.get("deid_report_hash"):
        ds["twin:deidReportHash"] = view["deid_report_hash"]
    if include_offers:
        ds["odrl:hasPolicy"] = [{
            "@id": offer_iri(aid, ver, o["id"]), "@type": "odrl:Offer",
            "odrl:assigner": {"@id": org_iri(view["provider_id"])}, "odrl:target": {"@id": ds_iri},
            "twin:policyId": o["policy_id"],
            "twin:params": {"@value": json.dumps(o.get("params") or {}, sort_keys=True, separators=(",", ":")),
                            "@type": "rdf:JSON"},
        } for o in offers]
    service = f"{base_url}/dsp"
    ds["dcat:distribution"] = [{
        "@id": distribution_iri(aid, ver), "@type": "dcat:Distribution",
        "dct:title": f"{view['title']} (Apache Arrow IPC file)",
        "dct:description": "The de-identified table, served by the data plane under a contract agreement.",
        "dcat:accessURL": {"@id": f"{base_url}/catalog/assets/{aid}?version={ver}"},
        "dcat:accessService": {"@id": service, "@type": "dcat:DataService", "dcat:servesDataset": {"@id": ds_iri}},
        "dct:format": {"@id": FILE_TYPE_BIN, "@type": "dct:MediaTypeOrExtent"},
        "dcat:mediaType": {"@id": ARROW_MEDIA_TYPE, "@type": "dct:MediaType"},
        "dcat:byteSize": {"@value": str(int(view["byte_size"])), "@type": "xsd:nonNegativeInteger"},
        "spdx:checksum": {"@type": "spdx:Checksum", "spdx:algorithm": {"@id": "spdx:checksumAlgorithm_sha256"},
                          "spdx:checksumValue": {"@value": view["content_hash"], "@type": "xsd:hexBinary"}},
        "dct:license": _licence(offers, aid, ver),
        "dcatap:availability": _concept(AVAILABLE, "Available", f"{EU}planned-availability"),
        "dct:issued": _dt(view.get("created_at")),
    }]
    ds["dcat:distribution"] = [{k: v for k, v in d.items() if v is not None} for d in ds["dcat:distribution"]]
    return {k: v for k, v in ds.items() if v is not None}


def catalog_node(*, base_url: str, catalog_id: str, title: str, description: str,
                 publisher: Mapping[str, Any], operator_id: str, issued: str | None, modified: str | None,
                 bbox: list[float] | None) -> dict[str, Any]:
    """The ``dcat:Catalog`` without its datasets (they are streamed after it)."""
    node: dict[str, Any] = {
        "@context": CONTEXT, "@id": catalog_id, "@type": "dcat:Catalog",
        "dct:title": title, "dct:description": description,
        "dct:publisher": dict(publisher),
        "foaf:homepage": {"@id": f"{base_url}/", "@type": "foaf:Document"},
        "dct:language": {"@id": LANGUAGE_ENG, "@type": "dct:LinguisticSystem"},
        "dcat:themeTaxonomy": [
            {"@id": f"{EU}data-theme", "@type": "skos:ConceptScheme", "dct:title": "Data theme"},
            {"@id": f"{TWIN_NS}TwinCategories", "@type": "skos:ConceptScheme", "dct:title": "TwinSpace twin categories"},
        ],
        "dcat:service": [data_service(base_url, publisher=publisher,
                                      contact_point=contact(operator_id, publisher["foaf:name"]))],
        "dct:issued": _dt(issued), "dct:modified": _dt(modified or issued),
    }
    if bbox:
        node["dct:spatial"] = location(bbox)
    return {k: v for k, v in node.items() if v is not None}


# --------------------------------------------------------------------------- serialisation
def jsonld_chunks(header: Mapping[str, Any], datasets: Iterable[Mapping[str, Any]]) -> Iterator[str]:
    """The catalog as one JSON-LD document, written incrementally: the header, then each dataset."""
    head = json.dumps(dict(header), ensure_ascii=False)
    yield head[:-1] + ', "dcat:dataset": ['
    first = True
    for ds in datasets:
        yield ("" if first else ",") + json.dumps(ds, ensure_ascii=False)
        first = False
    yield "]}"


def turtle_chunks(header: Mapping[str, Any], datasets: Iterable[Mapping[str, Any]]) -> Iterator[str]:
    """The same catalog as Turtle, written incrementally (one subject block per node, terms escaped
    as Turtle requires). rdflib's own JSON-LD parser + Turtle serialiser take ~6 ms per dataset (10 min at 100k);
    this writer covers exactly the JSON-LD subset :func:`dataset_node` emits, and the tests check that
    rdflib reads it as a graph isomorphic to the JSON-LD document."""
    yield "".join(f"@prefix {p}: <{iri}> .\n" for p, iri in CONTEXT.items()) + "\n"
    cat = header["@id"]
    yield _blocks({k: v for k, v in header.items() if k != "@context"})
    for ds in datasets:
        yield f"<{_iri(cat)}> dcat:dataset <{_iri(ds['@id'])}> .\n" + _blocks(ds)


_NOT_IRI = re.compile(r'[<>"{}|^`\\\x00-\x20]')
XSD = "http://www.w3.org/2001/XMLSchema#"


@lru_cache(maxsize=4096)
def _iri(value: str) -> str:
    """A compact IRI (``dct:title``) expanded with :data:`CONTEXT`, refused if Turtle could not hold it."""
    prefix, sep, rest = value.partition(":")
    iri = CONTEXT[prefix] + rest if sep and prefix in CONTEXT else value
    if not sep or _NOT_IRI.search(iri):
        raise ValueError(f"not an absolute IRI: {value!r}")
    return iri


def _str(value: str) -> str:
    """A Turtle string literal: JSON string escapes are a subset of Turtle's (ECHAR and UCHAR)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate has no Turtle (or UTF-8) spelling
        value = value.encode("utf-8", "replace").decode("utf-8")
    return json.dumps(value, ensure_ascii=False)


def _blocks(node: Mapping[str, Any]) -> str:
    """Turtle for a node with an ``@id`` and for every nested node with an ``@id`` of its own."""
    out: list[str] = []
    _subject(node, out)
    return "".join(out)


def _subject(node: Mapping[str, Any], out: list[str]) -> None:
    body = _predicates(node, out)
    if body:
        out.append(f"<{_iri(node['@id'])}> {body} .\n")


def _predicates(node: Mapping[str, Any], out: list[str]) -> str:
    parts = []
    types = node.get("@type")
    if types:
        parts.append("a " + ", ".join(f"<{_iri(t)}>" for t in ([types] if isinstance(types, str) else types)))
    for key, value in node.items():
        if key.startswith("@") or value is None:
            continue
        objs = [_object(v, out) for v in (value if isinstance(value, list) else [value])]
        if objs:
            parts.append(f"<{_iri(key)}> " + ", ".join(objs))
    return " ; ".join(parts)


def _object(value: Any, out: list[str]) -> str:
    if isinstance(value, str):
        return _str(value)
    if isinstance(value, bool):
        return f'"{str(value).lower()}"^^<{XSD}boolean>'
    if isinstance(value, int):
        return f'"{value}"^^<{XSD}integer>'
    if isinstance(value, float):
        return f'"{value!r}"^^<{XSD}double>'
    if "@value" in value:
        text = _str(str(value["@value"]))
        if "@language" in value:
            return f"{text}@{value['@language']}"
        return f"{text}^^<{_iri(value['@type'])}>" if "@type" in value else text
    if "@id" in value:
        if len(value) > 1:
            _subject(value, out)
        return f"<{_iri(value['@id'])}>"
    return "[ " + _predicates(value, out) + " ]"
