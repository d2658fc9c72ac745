"""The demo's twin-entity step: the Taipei parking profile and the Delft building profile are
published from the shared data, bound to their source assets, with figures from the raw files."""

from __future__ import annotations

import json

from rich.console import Console

from twinspace.demo import run as demo_module
from twinspace.demo import twins as twins_demo


import pytest


@pytest.mark.parametrize("catalog_has_feed", [True, False])
def test_demo_publishes_parking_and_building_profiles(tmp_path, monkeypatch, data, catalog_has_feed):
    """With the real feed published by the catalog step, the profile binds to that asset; without it
    (a synthetic stand-in there), the step publishes the feed and its profile as a pair."""
    from twinspace.demo import catalog as catalog_demo

    monkeypatch.setenv("TWINSPACE_SHARED_DATA", str(data))
    monkeypatch.setattr(catalog_demo, "SHARED_TAIPEI", data / "taipei-parking" / "TCMSV_alldesc.json"
                        if catalog_has_feed else tmp_path / "absent.json")
    steps = [demo_module.STEPS[0], __import__("twinspace.demo.catalog", fromlist=["x"]).step_catalog_publish,
             twins_demo.step_twin_profiles]
    assert twins_demo.step_twin_profiles in demo_module.STEPS
    monkeypatch.setattr(demo_module, "STEPS", steps)
    console = Console(record=True, width=240)
    assert demo_module.run_demo(data_dir=tmp_path / "demo", console=console) == 0, console.export_text()
    out = console.export_text()
    raw = json.loads((data / "taipei-parking" / "TCMSV_alldesc.json").read_text(encoding="utf-8"))["data"]["park"]
    assert f"{sum(p['totalcar'] for p in raw):,} car" in out and f"{len(raw)} car parks" in out
    assert "160 buildings" in out and "NL-ZH:BS:Building" in out and "TW-TPE:BS:OffStreetParking" in out
    assert "Demo completed" in out
    assert ("Taipei public parking lots (feed)" in out) is not catalog_has_feed
