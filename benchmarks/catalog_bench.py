"""Catalog benchmark: list (limit 50), search, GET one and the full DCAT-AP export at 1k, 10k and 100k
assets, over HTTP against a real broker process (uvicorn, SQLite, one worker), as ratios against the
1k figures measured in the same run; server memory (RSS after start, peak RSS) per size.

    .venv/bin/python benchmarks/catalog_bench.py                  # 1k, 10k, 100k (about 5 minutes)
    .venv/bin/python benchmarks/catalog_bench.py --sizes 1000 10000 --repeat 20

Targets (issue #15): list, search and GET at 100k <= 1.5x their 1k time; the export of 100k complete
(every visible dataset present, checked by parsing it); memory flat in catalog size. Assets are
inserted straight into the migrated database (publishing 100k tables through the API would measure
the publish path); their shape is realistic: 20 columns, 1-2 offers, a 4 KiB de-identification
report on one in five, 10% audience-restricted, four classifications. ``q`` names a word that 20
assets carry at every size (a selective search) -- see docs/benchmarks.md for a broad one.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from broker.catalog import query, service  # noqa: E402
from broker.catalog.models import Asset, AssetAudience, AssetTerm  # noqa: E402
from broker.identity.onboarding import create_org_with_key  # noqa: E402
from broker.storage.db import make_engine, migrate  # noqa: E402
from twinspace.client.broker import BrokerClient  # noqa: E402

CLASSES = ["public", "public", "public", "internal", "sensitive", "core"]
DOMAINS = ["transport", "energy", "planning", "environment", "health", "water"]
T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
NEEDLE = "quokka"  # in 20 titles at every size


def populate(engine, n: int, providers: list[str], rng: random.Random) -> list[str]:
    """n latest, active asset versions (plus their audience rows); returns the ids of public open ones."""
    report = {"privacy_model": {"k": 5, "l": 2}, "achieved": {"k": 7, "l_min": 2},
              "columns": {f"c{i}": {"technique": "generalise", "note": "x" * 180} for i in range(20)}}
    needles = set(rng.sample(range(n), 20))
    public_ids: list[str] = []
    with engine.begin() as conn:
        batch, aud, words = [], [], []
        for i in range(n):
            aid = f"ast_{i:012d}"
            restricted = i % 10 == 0
            offers = [{"id": "open", "policy_id": "open-data",
                       "params": {"audience": {"org_types": ["government_agency"]}} if restricted else {}}]
            if i % 3 == 0:
                offers.append({"id": "research", "policy_id": "purpose-restricted",
                               "params": {"purposes": ["research"], "audience": {"org_types": ["university"]}}})
            cls = CLASSES[i % len(CLASSES)]
            title = f"{'Quokka ' if i in needles else ''}City twin layer {i}"
            description = f"Synthetic {DOMAINS[i % 6]} layer number {i} for the catalog benchmark."
            keywords = [DOMAINS[i % 6], f"tile{i % 97}"]
            lon, lat = 121.0 + (i % 100) / 100, 25.0 + (i % 37) / 100
            batch.append(dict(
                id=aid, version=1, provider_id=providers[i % len(providers)], status="active", is_latest=True,
                title=title, description=description, keywords=keywords, twin_category="building_structure",
                entity_type="Building", entity_code_scheme=service.ENTITY_CODE_SCHEME, region="TW-TPE",
                classification=cls, domain=DOMAINS[i % 6], min_lon=lon, min_lat=lat, max_lon=lon + 0.01,
                max_lat=lat + 0.01, time_start=T0, time_end=T0 + timedelta(days=365),
                columns=[{"name": f"c{j}", "type": "int64"} for j in range(20)], row_count=1000 + i,
                content_hash=f"{i:064x}", byte_size=100_000 + i,
                deid_report=report if i % 5 == 0 else None, deid_report_hash=f"{i:064x}" if i % 5 == 0 else None,
                offers=offers, created_at=T0 + timedelta(seconds=i), audience_restricted=restricted,
                search_text=service.search_text(title, description, keywords, "Building", DOMAINS[i % 6])))
            aud += [r.model_dump() for r in query.audience_rows(aid, 1, offers)[1]]
            words += [t.model_dump() for t in query.term_rows(aid, 1, batch[-1]["search_text"])]
            if cls == "public" and not restricted:
                public_ids.append(aid)
            if len(batch) == 5000:
                conn.execute(sa.insert(Asset.__table__), batch)
                conn.execute(sa.insert(AssetTerm.__table__), words)
                batch, words = [], []
        if batch:
            conn.execute(sa.insert(Asset.__table__), batch)
            conn.execute(sa.insert(AssetTerm.__table__), words)
        if aud:
            conn.execute(sa.insert(AssetAudience.__table__), aud)
    return public_ids


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid: int) -> tuple[int, int]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


class Broker:
    """One catalog size: its database, a broker process serving it, a consumer's authenticated client."""

    def __init__(self, n: int) -> None:
        self.n, self.rng = n, random.Random(n)
        self.tmp = Path(tempfile.mkdtemp(prefix=f"catbench{n}_"))
        engine = make_engine(f"sqlite:///{self.tmp / 'twinspace.db'}")
        migrate(engine)
        provs = [create_org_with_key(engine, name=f"Provider {i}", role="provider", key_dir=self.tmp / "keys",
                                     org_type="government_agency").org_id for i in range(5)]
        consumer = create_org_with_key(engine, name="Consumer", role="consumer", key_dir=self.tmp / "keys",
                                       org_type="enterprise", attributes={"clearance": "internal"})
        t = time.perf_counter()
        self.public_ids = populate(engine, n, provs, self.rng)
        print(f"  {n:,} assets inserted in {time.perf_counter() - t:.1f} s", flush=True)
        engine.dispose()
        port = free_port()
        self.server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "broker.app:create_app", "--factory", "--host", "127.0.0.1",
             "--port", str(port), "--log-level", "warning"], cwd=ROOT,
            env={**os.environ, "TWINSPACE_DATA_DIR": str(self.tmp)})
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=900)
        for _ in range(600):
            try:
                if self.http.get("/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.rss_start = rss_kib(self.server.pid)[0] / 1024
        self.headers = BrokerClient(self.http, consumer.org_id, consumer.private_key).headers()
        self.first = self.get("/catalog/assets", limit=50).json()
        assert len(self.first["items"]) == 50
        found = self.get("/catalog/assets", q=NEEDLE, limit=50).json()
        assert found["total"] >= 1 and all(NEEDLE in i["title"].lower() for i in found["items"]), found

    def get(self, path: str, **params) -> httpx.Response:
        r = self.http.get(path, params=params, headers=self.headers)
        r.raise_for_status()
        return r

    def ops(self) -> dict:
        return {"list": lambda: self.get("/catalog/assets", limit=50),
                "list_page2": lambda: self.get("/catalog/assets", limit=50, cursor=self.first["next_cursor"]),
                "search": lambda: self.get("/catalog/assets", q=NEEDLE, limit=50),
                "search_broad": lambda: self.get("/catalog/assets", q="layer", limit=50),
                "get": lambda: self.get(f"/catalog/assets/{self.rng.choice(self.public_ids)}")}

    def export(self, turtle: bool) -> dict[str, float]:
        out: dict[str, float] = {}
        visible = self.get("/catalog/assets", limit=1, exact_total="true").json()["total"]
        t = time.perf_counter()
        doc = self.get("/catalog/dcat").json()
        out["dcat"] = time.perf_counter() - t
        out["dcat_datasets"] = len(doc["dcat:dataset"])
        assert out["dcat_datasets"] == visible, f"export has {out['dcat_datasets']} of {visible} datasets"
        del doc
        if turtle:
            t = time.perf_counter()
            with self.http.stream("GET", "/catalog/dcat", params={"format": "turtle"}, headers=self.headers) as r:
                size = sum(len(c) for c in r.iter_bytes())
            out["turtle"] = time.perf_counter() - t
            out["turtle_mib"] = size / 2**20
        return out

    def close(self) -> None:
        self.server.terminate()
        self.server.wait(30)


def measure(brokers: list[Broker], repeat: int) -> dict[int, dict[str, float]]:
    """Median latency per op and size, the sizes interleaved request by request so that the load of a
    shared machine falls on every size alike."""
    samples: dict[int, dict[str, list[float]]] = {b.n: {} for b in brokers}
    for name in brokers[0].ops():
        for b in brokers:
            b.ops()[name]()  # warm
        for _ in range(repeat):
            for b in brokers:
                t = time.perf_counter()
                b.ops()[name]()
                samples[b.n].setdefault(name, []).append(time.perf_counter() - t)
    return {n: {k: statistics.median(v) for k, v in ops.items()} for n, ops in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--no-turtle", action="store_true")
    args = parser.parse_args()
    brokers: list[Broker] = []
    try:
        for n in args.sizes:
            print(f"size {n:,}", flush=True)
            brokers.append(Broker(n))
        results = measure(brokers, args.repeat)
        for b in brokers:
            results[b.n].update(b.export(not args.no_turtle))
            results[b.n]["rss_start"] = b.rss_start
            results[b.n]["rss_end"], results[b.n]["rss_peak"] = (v / 1024 for v in rss_kib(b.server.pid))
            print(f"  {b.n:,}: " + json.dumps({k: round(v, 4) for k, v in results[b.n].items()}), flush=True)
    finally:
        for b in brokers:
            b.close()
    base = results[args.sizes[0]]
    print()
    print("| assets | list, limit 50 | next page (cursor) | search (selective) | search (broad) | GET one "
          "| DCAT-AP export (JSON-LD) | Turtle | RSS after start / peak |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n, r in results.items():
        def cell(key: str) -> str:
            return f"{r[key] * 1000:.1f} ms ({r[key] / base[key]:.2f}×)"
        ttl = f"{r['turtle']:.1f} s, {r['turtle_mib']:.0f} MiB" if "turtle" in r else "—"
        print(f"| {n:,} | {cell('list')} | {cell('list_page2')} | {cell('search')} | {cell('search_broad')} "
              f"| {cell('get')} | {r['dcat']:.2f} s, {int(r['dcat_datasets']):,} datasets (complete) | {ttl} "
              f"| {r['rss_start']:.0f} / {r['rss_peak']:.0f} MiB |")
    last = results[args.sizes[-1]]
    print(f"\nratios at {args.sizes[-1]:,} vs {args.sizes[0]:,}: list {last['list'] / base['list']:.2f}×, "
          f"search {last['search'] / base['search']:.2f}×, GET {last['get'] / base['get']:.2f}× (target ≤ 1.5×); "
          f"peak RSS {last['rss_peak'] / base['rss_peak']:.2f}×")


if __name__ == "__main__":
    main()
