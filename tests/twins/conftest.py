"""Fixtures for twin-entity tests: the real shared data, read once per module. The data must be
present (these tests are the acceptance of issue #16), so a missing folder fails, never skips."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def shared_data() -> Path:
    candidates = [Path(os.environ["TWINSPACE_SHARED_DATA"])] if os.environ.get("TWINSPACE_SHARED_DATA") else []
    candidates += [REPO_ROOT.parent / "shared" / "data", REPO_ROOT.parent.parent / "shared" / "data"]
    for c in candidates:
        if (c / "cityjson" / "delft.city.json").is_file():
            return c
    pytest.fail(f"shared data not found (looked in {', '.join(map(str, candidates))}; set TWINSPACE_SHARED_DATA)")


@pytest.fixture(scope="session")
def data() -> Path:
    return shared_data()


@pytest.fixture(scope="session")
def delft(data):
    from connectors.twins.cityjson import read_cityjson

    return read_cityjson(data / "cityjson" / "delft.city.json", region="NL-ZH")


@pytest.fixture(scope="session")
def rotterdam(data):
    from connectors.twins.cityjson import read_cityjson

    return read_cityjson(data / "cityjson" / "rotterdam_subset.city.json", region="NL-ZH", crs="EPSG:7415")


@pytest.fixture(scope="session")
def parking(data):
    from connectors.ingest import ingest_taipei_parking

    return ingest_taipei_parking(data / "taipei-parking" / "TCMSV_alldesc.json").table
