"""Seeded synthetic twin-entity tables for demos and tests (no real people or buildings)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from twinspace.entity_codes import entity_code
from connectors.tables import with_meta

TAIPEI_DISTRICTS = ["中正區", "大同區", "中山區", "松山區", "大安區", "萬華區", "信義區", "士林區", "北投區",
                    "內湖區", "南港區", "文山區"]
_BBOX = (121.46, 24.97, 121.62, 25.18)


def building_stock(n: int = 600, seed: int = 7, region: str = "TW-TPE") -> pa.Table:
    """A building-stock register: one row per building, with an owner (a person) to be de-identified."""
    rng = np.random.default_rng(seed)
    ids = [f"B{100000 + i}" for i in range(n)]
    lon = rng.uniform(_BBOX[0], _BBOX[2], n)
    lat = rng.uniform(_BBOX[1], _BBOX[3], n)
    table = pa.table({
        "source_id": ids,
        "entity_code": [entity_code(region, "building_structure", "Building", i) for i in ids],
        "district": rng.choice(TAIPEI_DISTRICTS[:6], n).tolist(),
        "use": rng.choice(["residential", "office", "retail", "industrial"], n, p=[.6, .2, .15, .05]).tolist(),
        "year_built": rng.integers(1950, 2024, n).tolist(),
        "floors": rng.integers(1, 30, n).tolist(),
        "floor_area_m2": np.round(rng.gamma(4.0, 300.0, n), 1).tolist(),
        "owner_name": [f"Owner {i}" for i in rng.integers(0, 10**6, n)],
        "owner_national_id": [f"A{v:09d}" for v in rng.integers(0, 10**9, n)],
        "lon": lon.tolist(), "lat": lat.tolist(),
    })
    meta = {"entity_type": "Building", "twin_category": "building_structure", "source_format": "synthetic",
            "rows": n, "region": region, "bbox": [float(lon.min()), float(lat.min()), float(lon.max()), float(lat.max())],
            "time_start": None, "time_end": None, "units": {"floor_area_m2": "m2", "lon": "degree", "lat": "degree"}}
    return table.replace_schema_metadata(with_meta(table.schema, meta).metadata)


def persons(n: int = 2000, seed: int = 11, region: str = "TW-TPE") -> pa.Table:
    """A person-level table (residents): direct identifiers, quasi-identifiers and a sensitive attribute."""
    rng = np.random.default_rng(seed)
    ids = [f"P{i:07d}" for i in rng.choice(10**7, n, replace=False)]
    birth = rng.integers(np.datetime64("1940-01-01").astype(int), np.datetime64("2005-12-31").astype(int), n)
    table = pa.table({
        "source_id": ids,
        "name": [f"Resident {i}" for i in range(n)],
        "national_id": [f"A{v:09d}" for v in rng.integers(0, 10**9, n)],
        "phone": [f"09{v:08d}" for v in rng.integers(0, 10**8, n)],
        "birth_date": pa.array(birth.astype("datetime64[D]"), pa.date32()),
        "age": (2025 - (1970 + birth // 365.25)).astype(int).tolist(),
        "sex": rng.choice(["F", "M"], n).tolist(),
        "district": rng.choice(TAIPEI_DISTRICTS, n).tolist(),
        "household_income": np.round(rng.lognormal(13.5, 0.5, n), 0).tolist(),
        "diagnosis": rng.choice(["none", "asthma", "diabetes", "hypertension", "cardiac"], n,
                                p=[.5, .12, .13, .17, .08]).tolist(),
        "lon": rng.uniform(_BBOX[0], _BBOX[2], n).tolist(),
        "lat": rng.uniform(_BBOX[1], _BBOX[3], n).tolist(),
    })
    meta = {"entity_type": "Person", "twin_category": "natural_person", "source_format": "synthetic", "rows": n,
            "region": region, "bbox": list(_BBOX), "time_start": None, "time_end": None}
    return table.replace_schema_metadata(with_meta(table.schema, meta).metadata)
