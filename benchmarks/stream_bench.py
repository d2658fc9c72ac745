"""Streaming at the connector: memory and time to first byte of a pull, and memory of publishing, by size.

Run from the repository root:  .venv/bin/python benchmarks/stream_bench.py [--sizes 1,10,100] [--formats csv]

A real broker process and a real connector process (``twinspace connector serve``, tests/faults/harness.py)
on loopback. For each size (MB of CSV the pull returns; synthetic numeric + string columns, written as
the ingest pipeline writes them: Arrow IPC, zstd, 65,536-row batches) the table is published by a
process of its own (``publish_file`` with a ``LocalConnector``: the privacy/metadata check and the
streaming copy into the connector's store; its peak RSS − its RSS before, vs the file and table sizes),
an agreement is negotiated and a transfer started. Then, per format, the connector is restarted (no
verified file, no cached table), warmed up with a pull of a 60-row asset (imports, first-request
costs), its idle VmRSS read, its VmHWM reset (``/proc/<pid>/clear_refs`` 5), and the asset pulled twice
through the real client path (a fresh single-use transfer token from the broker and a fresh proof of
possession each time; httpx ``stream``, body discarded as it arrives): *cold* (the first pull of the
file hashes it once) and *warm*. Peak = VmHWM over each pull (reset in between). TTFB = request sent →
first body byte at the consumer; warm figures: median of ``--warm`` pulls (default 3), highest peak. The last lines are the ratios against the targets: peak − idle ≤ 64 MiB,
TTFB(100 MB) ÷ TTFB(1 MB) (warm) near 1, publish peak vs table size.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

from tests.faults.harness import Broker, open_transfer, start_connector  # noqa: E402
from twinspace.client.broker import BrokerClient, negotiate  # noqa: E402
from twinspace.transfer_tokens import make_pop  # noqa: E402

MiB = 1 << 20
CSV_BYTES_PER_ROW = 60  # measured for the synthetic table below (≈ 59–61)
TARGET_MIB = 64


def status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon, RssFile of a process, in KiB."""
    out = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key = line.split(":", 1)[0]
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key] = int(line.split()[1])
    return out


def reset_hwm(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def write_table(path: Path, mb: float, seed: int = 7) -> dict:
    """The synthetic table (int64 id, float64 value, int32 count, a 6-value category, a 16-hex-digit
    name), ~``mb`` MB as CSV, written as ingest does (zstd IPC, 65,536-row batches)."""
    from connectors.tables import IPC_OPTIONS, with_meta

    rows = max(1000, int(mb * 1e6 / CSV_BYTES_PER_ROW))
    rng = np.random.default_rng(seed)
    cats = np.array(["Daan", "Xinyi", "Zhongshan", "Beitou", "Shilin", "Wanhua"])
    schema = with_meta(pa.schema([("id", pa.int64()), ("value", pa.float64()), ("count", pa.int32()),
                                  ("category", pa.string()), ("name", pa.string())]),
                       {"twin_category": "building_structure", "entity_type": "Building"})
    nbytes = 0
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, schema, options=IPC_OPTIONS) as writer:
        for start in range(0, rows, 65536):
            n = min(65536, rows - start)
            names = np.char.mod("%016x", rng.integers(0, 2 ** 62, n))
            batch = pa.record_batch([pa.array(np.arange(start, start + n)), pa.array(rng.random(n) * 1000),
                                     pa.array(rng.integers(0, 100000, n).astype(np.int32)),
                                     pa.array(cats[rng.integers(0, len(cats), n)]), pa.array(names)],
                                    schema=schema)
            nbytes += batch.nbytes
            writer.write_batch(batch)
    return {"rows": rows, "file_bytes": path.stat().st_size, "table_bytes": nbytes}


PUBLISH = textwrap.dedent('''
    import json, sys, time
    sys.path.insert(0, {root!r})
    from connectors.publish import LocalConnector, publish_file
    from twinspace.client.broker import BrokerClient

    def status():
        out = {{}}
        for line in open("/proc/self/status"):
            k = line.split(":", 1)[0]
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(line.split()[1])
        return out

    client = BrokerClient.connect({url!r}, {org!r}, {key!r})
    client.token()
    before = status()
    open("/proc/self/clear_refs", "w").write("5")
    t0 = time.perf_counter()
    asset = publish_file(client, {path!r}, connector=LocalConnector({endpoint!r}, {data_dir!r}), report=None,
                         title="Stream bench", classification="public", domain="planning",
                         offers=[{{"id": "open", "policy_id": "open-data", "params": {{}}}}])
    seconds = time.perf_counter() - t0
    after = status()
    print(json.dumps({{"asset": asset, "idle_kib": before["VmRSS"], "peak_kib": after["VmHWM"], "seconds": seconds}}))
''')


def publish(broker: Broker, connector, path: Path) -> dict:
    """Publish ``path`` from a process of its own; its memory before and at peak."""
    org = broker.orgs["provider"]
    code = PUBLISH.format(root=str(ROOT), url=broker.url, org=org.org_id, key=str(org.key_file), path=str(path),
                          endpoint=connector.endpoint, data_dir=str(connector.data_dir))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"publish failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def pull(consumer: BrokerClient, pid: str, fmt: str) -> dict:
    """One pull through the real client path, the body streamed and discarded."""
    endpoint, token = BrokerClient.data_address(consumer.transfer_token(pid))
    path = httpx.URL(endpoint).path
    headers = {"TwinSpace-Transfer-Token": token,
               "TwinSpace-PoP": make_pop(consumer.private_key, method="GET", path=path, token=token)}
    nbytes = 0
    first = None
    with httpx.Client(timeout=600) as http:
        t0 = time.perf_counter()
        with http.stream("GET", endpoint, params={"format": fmt}, headers=headers) as response:
            if response.status_code != 200:
                response.read()
                raise RuntimeError(f"pull answered {response.status_code}: {response.text[:500]}")
            for chunk in response.iter_raw(1 << 16):
                if first is None and chunk:
                    first = time.perf_counter() - t0
                nbytes += len(chunk)
        total = time.perf_counter() - t0
        rows = int(response.headers.get("X-TwinSpace-Rows", -1))
    return {"bytes": nbytes, "ttfb": first or total, "seconds": total, "rows": rows,
            "bps": nbytes / total if total else 0.0}


def restart(connector) -> None:
    connector.stop()
    connector.start()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1,10,100", help="MB of CSV per table (default 1,10,100)")
    ap.add_argument("--formats", default="csv", help="formats pulled (csv,json,parquet; default csv)")
    ap.add_argument("--warm", type=int, default=3, help="warm pulls per size (median TTFB, highest peak; default 3)")
    args = ap.parse_args()
    sizes = [float(s) for s in args.sizes.split(",") if s.strip()]
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    tmp = Path(tempfile.mkdtemp(prefix="stream-bench-"))
    print(f"# stream_bench {time.strftime('%Y-%m-%d %H:%M')}, load average {os.getloadavg()[0]:.1f}, "
          f"{os.cpu_count()} cores, pyarrow {pa.__version__}", flush=True)
    broker = Broker(tmp / "broker").prepare().start()
    connector = None
    results, publishes = [], []
    try:
        connector = start_connector(broker, tmp / "connector")
        warm = open_transfer(broker, connector)  # a 60-row asset, for the warm-up pull after each restart
        provider, consumer = broker.client("provider"), broker.client("consumer")
        for mb in sizes:
            path = tmp / f"table-{mb:g}mb.arrow"
            info = write_table(path, mb)
            pub = publish(broker, connector, path)
            asset = pub["asset"]
            pub.update(info, mb=mb, delta_mib=(pub["peak_kib"] - pub["idle_kib"]) / 1024)
            publishes.append(pub)
            print(f"publish {mb:>5g} MB: {info['rows']:,} rows, file {info['file_bytes'] / MiB:.1f} MiB, "
                  f"table {info['table_bytes'] / MiB:.1f} MiB in memory; publisher idle "
                  f"{pub['idle_kib'] / 1024:.0f} MiB, peak {pub['peak_kib'] / 1024:.0f} MiB "
                  f"(+{pub['delta_mib']:.1f} MiB), {pub['seconds']:.2f} s", flush=True)
            agreement = negotiate(consumer, provider, f"urn:twinspace:offer:{asset['id']}:v{asset['version']}:open",
                                  purpose="research")
            pid = consumer.transfer_request(agreement["id"])["providerPid"]
            for fmt in formats:
                restart(connector)
                cpid = connector.process.pid
                pull(warm.consumer, warm.transfer_id, "csv")  # warm-up: imports and first-request costs
                idle = status(cpid)
                row = {"mb": mb, "fmt": fmt, "idle_kib": idle["VmRSS"], "rows": info["rows"]}
                for phase in ("cold", "warm"):
                    runs = []
                    for _ in range(1 if phase == "cold" else args.warm):
                        reset_hwm(cpid)
                        got = pull(consumer, pid, fmt)
                        st = status(cpid)
                        runs.append({**got, "peak_kib": st["VmHWM"], "anon_kib": st["RssAnon"],
                                     "file_kib": st["RssFile"]})
                    # the median TTFB and throughput, the highest peak of the runs
                    mid = sorted(runs, key=lambda r: r["ttfb"])[len(runs) // 2]
                    row[phase] = {**mid, "peak_kib": max(r["peak_kib"] for r in runs),
                                  "bps": sorted(r["bps"] for r in runs)[len(runs) // 2]}
                results.append(row)
                for phase in ("cold", "warm"):
                    r = row[phase]
                    print(f"pull {mb:>5g} MB {fmt:7} {phase}: {r['bytes'] / MiB:7.1f} MiB, {r['rows']:,} rows, "
                          f"TTFB {r['ttfb'] * 1000:7.1f} ms, {r['bps'] / MiB:6.1f} MiB/s; connector idle "
                          f"{row['idle_kib'] / 1024:.0f} MiB, peak {r['peak_kib'] / 1024:.0f} MiB "
                          f"(+{(r['peak_kib'] - row['idle_kib']) / 1024:.1f} MiB), after: anon "
                          f"{r['anon_kib'] / 1024:.0f} MiB, file-backed {r['file_kib'] / 1024:.0f} MiB", flush=True)
    finally:
        if connector is not None:
            connector.stop()
        broker.stop()

    print("\n| table (CSV) | format | rows | body | pull | TTFB | throughput | connector idle | peak | peak − idle |")
    print("|--:|---|--:|--:|---|--:|--:|--:|--:|--:|")
    for row in results:
        for phase in ("cold", "warm"):
            r = row[phase]
            print(f"| {row['mb']:g} MB | {row['fmt']} | {row['rows']:,} | {r['bytes'] / MiB:.1f} MiB | {phase} | "
                  f"{r['ttfb'] * 1000:.1f} ms | {r['bps'] / MiB:.1f} MiB/s | {row['idle_kib'] / 1024:.0f} MiB | "
                  f"{r['peak_kib'] / 1024:.0f} MiB | {(r['peak_kib'] - row['idle_kib']) / 1024:.1f} MiB |")
    print("\n| table (CSV) | rows | Arrow file | table in memory | publisher idle | peak | peak − idle | "
          "(peak − idle) ÷ table | seconds |")
    print("|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for p in publishes:
        print(f"| {p['mb']:g} MB | {p['rows']:,} | {p['file_bytes'] / MiB:.1f} MiB | {p['table_bytes'] / MiB:.1f} MiB "
              f"| {p['idle_kib'] / 1024:.0f} MiB | {p['peak_kib'] / 1024:.0f} MiB | {p['delta_mib']:.1f} MiB | "
              f"{p['delta_mib'] * MiB / p['table_bytes']:.2f} | {p['seconds']:.2f} |")
    csv_rows = [r for r in results if r["fmt"] == "csv"]
    if csv_rows:
        big, small = max(csv_rows, key=lambda r: r["mb"]), min(csv_rows, key=lambda r: r["mb"])
        for phase in ("cold", "warm"):
            delta = (big[phase]["peak_kib"] - big["idle_kib"]) / 1024
            print(f"peak − idle, {big['mb']:g} MB CSV pull ({phase}): {delta:.1f} MiB vs target {TARGET_MIB} MiB "
                  f"({'met' if delta <= TARGET_MIB else 'NOT met'})")
        for phase in ("cold", "warm"):
            ratio = big[phase]["ttfb"] / small[phase]["ttfb"]
            print(f"TTFB({big['mb']:g} MB) ÷ TTFB({small['mb']:g} MB), {phase}: {ratio:.2f}")
    if publishes:
        p = max(publishes, key=lambda p: p["mb"])
        print(f"publish peak − idle, {p['mb']:g} MB table: {p['delta_mib']:.1f} MiB = "
              f"{p['delta_mib'] * MiB / p['table_bytes']:.2f}× the table in memory, "
              f"{p['delta_mib'] * MiB / p['file_bytes']:.2f}× the file")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
