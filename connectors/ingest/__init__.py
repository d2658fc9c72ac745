"""Ingest twin-entity data into Arrow tables: CSV (streamed, encoding and dialect guessed), GeoJSON
FeatureCollections, NGSI-LD / NGSI-v2 entities (FIWARE Smart Data Models, also their flattened
CSV exports) and the Taipei parking feed. One idea per module:

- ``common``: result type, JSON loading, extent, column inference, categories and entity codes
- ``geometry``: shapely centroids, geodesic areas, validity
- ``sniff``: CSV encoding and dialect detection; ``csv``: the streaming CSV reader;
  ``sdm_csv``: Smart Data Models flattened CSV
- ``ngsi``, ``geojson``, ``taipei``: one reader each

Every reader returns (or writes) an Arrow table with the asset-level facts in its schema metadata
(see ``connectors.tables``): ``entity_type``, ``twin_category``, ``source_format``, ``bbox``
``[min_lon, min_lat, max_lon, max_lat]`` (WGS84), ``time_start``/``time_end`` and ``rows``.
Rows keep the provider's id in ``source_id``; when a region is given an ``entity_code`` column
(see ``twinspace.entity_codes``) is added. Geometry becomes ``lon``/``lat`` (true centroid),
``area_m2`` for polygons, plus a ``geometry`` column holding the GeoJSON text. No network I/O.
"""

from __future__ import annotations

from pathlib import Path

from connectors.errors import IngestError
from connectors.ingest.common import DEFAULT_CATEGORY, Extent, IngestResult, Progress, load_json, rows_to_table
from connectors.ingest.geometry import analyse, geometry_positions
from connectors.ingest.csv import ingest_csv
from connectors.ingest.geojson import ingest_geojson
from connectors.ingest.ngsi import ingest_ngsi, ngsi_entity_to_row
from connectors.ingest.taipei import ingest_taipei_parking

FORMATS = ("csv", "geojson", "ngsi", "taipei")
# The names of the single-module ingest, kept for code written against it (connectors/twins).
_Extent, _load_json = Extent, load_json


def detect_format(path: Path) -> str:
    """The reader for a file, from its name and, for JSON, its first bytes."""
    name = Path(path).name.lower()
    if name.endswith((".csv", ".tsv", ".txt")):
        return "csv"
    if name.startswith("tcmsv_"):
        return "taipei"
    if name.endswith(".geojson") or "geojson" in name:
        return "geojson"
    if name.endswith((".jsonld", ".json")):
        try:
            with open(path, "rb") as fh:
                head = fh.read(4096).decode("utf-8", errors="replace")
        except OSError:
            return "ngsi"
        if '"FeatureCollection"' in head.replace(" ", "") or '"type":"FeatureCollection"' in head.replace(" ", ""):
            return "geojson"
        return "ngsi"
    raise IngestError(f"cannot tell the format of {Path(path).name}; pass --format ({', '.join(FORMATS)})",
                      code="ingest_unknown_format")


__all__ = ["DEFAULT_CATEGORY", "FORMATS", "Extent", "IngestError", "IngestResult", "Progress", "analyse",
           "detect_format", "geometry_positions", "ingest_csv", "ingest_geojson", "ingest_ngsi", "ingest_taipei_parking",
           "load_json", "ngsi_entity_to_row", "rows_to_table"]
