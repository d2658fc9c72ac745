"""The unified entity code scheme for twin-entity rows.

    <region>:<category code>:<entity type>:<local id>
    e.g. TW-TPE:BS:Building:building-a85e3da145c1, TW-TPE:GE:OffStreetParking:139

* region: ISO 3166-1 alpha-2 country, optionally with an ISO 3166-2 subdivision (``TW-TPE``).
* category code: two letters for the eight twin categories (table ``CATEGORY_CODES``).
* entity type: the Smart Data Models / NGSI-LD type name (``Building``, ``WaterPipe``...).
* local id: the provider's own identifier, reduced to ``[A-Za-z0-9._-]``; for NGSI-LD ids
  (``urn:ngsi-ld:<Type>:<id>``) the part after the type. When the local id would identify a
  person (``natural_person`` assets), the connector uses the keyed pseudonym of it instead.

The code is a pure function of (region, category, type, source id[, pseudonym secret]), so it is
stable across publishes and new versions of an asset.
"""

from __future__ import annotations

import re

TWIN_CATEGORIES = ("natural_person", "legal_person", "natural_entity", "management_entity",
                   "building_structure", "goods_equipment", "vehicle", "other")
CATEGORY_CODES = {"natural_person": "NP", "legal_person": "LP", "natural_entity": "NE",
                  "management_entity": "ME", "building_structure": "BS", "goods_equipment": "GE",
                  "vehicle": "VH", "other": "OT"}
REGION_RE = re.compile(r"^[A-Z]{2}(-[A-Z0-9]{1,3})?$")
TYPE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
CODE_RE = re.compile(r"^[A-Z]{2}(-[A-Z0-9]{1,3})?:(NP|LP|NE|ME|BS|GE|VH|OT):[A-Za-z][A-Za-z0-9_]{0,63}:[A-Za-z0-9._-]{1,128}$")
_LOCAL_BAD = re.compile(r"[^A-Za-z0-9._-]+")


def local_id(source_id: str, entity_type: str | None = None) -> str:
    s = str(source_id).strip()
    if s.startswith("urn:ngsi-ld:"):
        rest = s[len("urn:ngsi-ld:"):]
        if entity_type and rest.startswith(entity_type + ":"):
            rest = rest[len(entity_type) + 1:]
        s = rest
    s = _LOCAL_BAD.sub("-", s).strip("-")
    if not s:
        raise ValueError(f"source id {source_id!r} has no usable characters for an entity code")
    return s[:128]


def entity_code(region: str, category: str, entity_type: str, source_id: str) -> str:
    if not REGION_RE.match(region):
        raise ValueError(f"region {region!r} is not an ISO 3166 code such as 'TW' or 'TW-TPE'")
    if category not in CATEGORY_CODES:
        raise ValueError(f"twin category {category!r} is not one of {', '.join(TWIN_CATEGORIES)}")
    if not TYPE_RE.match(entity_type):
        raise ValueError(f"entity type {entity_type!r} must be an identifier such as 'Building'")
    return f"{region}:{CATEGORY_CODES[category]}:{entity_type}:{local_id(source_id, entity_type)}"


def is_entity_code(code: str) -> bool:
    return bool(CODE_RE.match(code))
