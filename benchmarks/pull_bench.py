"""Authorised pull vs a bare FastAPI endpoint, in one run, on loopback.

Run from the repository root:  .venv/bin/python benchmarks/pull_bench.py [--quick] [--backends sqlite,postgresql]

All servers are real uvicorn processes with one worker: the baseline, a FastAPI app with one route
that returns the same CSV bytes the pull serves (60 rows); the broker; and the provider's connector
(``twinspace connector serve``). The pull is the whole data path at the connector: the consumer's
transfer token (fetched from the broker beforehand, reusable until it expires) with a fresh proof of
possession per request (signed before the clock starts, as the bare requests are built before it),
the proof verified and claimed once, a leased broker decision (asked for once, in the warm-up; the
broker pushes revocations), the permitted rows encoded (once per decision and query) and served, a
signed receipt written durably to the connector's outbox with the proof's claim before the response
is sent, and the receipts delivered to the broker in batches (which checks, counts and audits each)
— the broker's share of that work runs in the same run on the same cores. The load generator
(tests/faults/harness.py) is raw HTTP/1.1 over asyncio with keep-alive, one connection per unit of
concurrency. The "broker decision alone" column posts ``/dataplane/decisions`` straight to the broker
(a decision per request, as for agreements whose policy counts usage). PostgreSQL (broker database):
a throw-away schema in 127.0.0.1:5432/test. After each pull run the bench waits until the broker has
recorded every receipt of it (the drain time is printed: nothing acknowledged is lost).
The last line printed is the pull/bare ratio at concurrency 32 (the first backend run).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.faults.harness import Broker, free_port, open_transfer, run_load, start_connector  # noqa: E402

PG_BASE = os.environ.get("TWINSPACE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
CONCURRENCY = (1, 32, 256)

BARE_APP = textwrap.dedent('''
    from fastapi import FastAPI
    from fastapi.responses import Response
    app = FastAPI()
    BODY = open({path!r}, "rb").read()

    @app.get("/bare")
    def bare():
        return Response(BODY, media_type="text/csv; charset=utf-8")
''')


def start_bare(body: bytes, tmp: Path) -> tuple[subprocess.Popen, int]:
    """The baseline server; ``start_bare.seconds`` is its time from exec to the first answer."""
    started = time.perf_counter()
    (tmp / "body.csv").write_bytes(body)
    (tmp / "bare_app.py").write_text(BARE_APP.format(path=str(tmp / "body.csv")))
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "bare_app:app", "--port", str(port), "--log-level",
                             "warning", "--workers", "1"], cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import httpx

    for _ in range(200):
        try:
            httpx.get(f"http://127.0.0.1:{port}/bare", timeout=1)
            start_bare.seconds = time.perf_counter() - started
            return proc, port
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError("bare app did not start")


def csv_body(rows: int) -> bytes:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from tests.faults.harness import table_bytes

    table = pa.ipc.open_file(pa.BufferReader(table_bytes(rows))).read_all()
    sink = pa.BufferOutputStream()
    pacsv.write_csv(table, sink)
    return sink.getvalue().to_pybytes()


def bare_request(port: int) -> bytes:
    return f"GET /bare HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()


def requests_for(c: int, quick: bool) -> int:
    return {1: 400, 32: 4000, 256: 6144}[c] // (4 if quick else 1)


def measure(make, port: int, c: int, n: int) -> dict:
    """``make()`` builds one request; all of them are built before the clock starts (a pull's proof of
    possession is signed by the consumer: the load generator's signing is not the servers' work)."""
    warm = min(n, 2 * c, 64)
    warmed = run_load("127.0.0.1", port, [make() for _ in range(warm)], c)  # warm-up
    batch = [make() for _ in range(n)]
    result = run_load("127.0.0.1", port, batch, c, timeout=120)
    counts = Counter(result.statuses)
    return {"rps": result.rps, "ok": counts.get(200, 0), "n": n, "errors": len(result.errors),
            "other": {k: v for k, v in counts.items() if k != 200}, "warm_ok": warmed.statuses.count(200)}


def wait_for_receipts(broker: Broker, transfer_id: str, expected: int, timeout: float = 60.0) -> float:
    """Seconds until the broker has recorded ``expected`` receipts of the transfer (they follow the bodies,
    in batches, from the connector's outbox); raises if they do not all arrive."""
    from sqlalchemy import create_engine, text

    engine = create_engine(broker.settings().effective_database_url)
    started = time.perf_counter()
    try:
        while True:
            with engine.connect() as conn:
                got = conn.execute(text("SELECT count(*) FROM dataplane_receipt WHERE transfer_id = :t"),
                                   {"t": transfer_id}).scalar()
            if got >= expected:
                return time.perf_counter() - started
            if time.perf_counter() - started > timeout:
                raise RuntimeError(f"only {got} of {expected} receipts reached the broker")
            time.sleep(0.02)
    finally:
        engine.dispose()


def decision_request(broker: Broker, bearer: str, transfer_id: str) -> bytes:
    """``POST /dataplane/decisions`` as the connector sends it (the broker's half of a pull, alone)."""
    import json
    import secrets

    body = json.dumps({"transfer_id": transfer_id, "token_jti": "bench_" + secrets.token_hex(8),
                       "token_generation": 0, "nonce": secrets.token_urlsafe(24), "format": "csv"}).encode()
    return (f"POST /dataplane/decisions HTTP/1.1\r\nHost: 127.0.0.1:{broker.port}\r\n"
            f"Authorization: Bearer {bearer}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def pg_schema() -> tuple[str, callable]:
    import psycopg

    schema = "bench_" + uuid.uuid4().hex[:10]
    plain = PG_BASE.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(plain, autocommit=True, connect_timeout=3) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')

    def drop() -> None:
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')

    return f"{PG_BASE}?options=-csearch_path%3D{schema}", drop


def run_backend(backend: str, quick: bool, bare_port: int, tmp: Path) -> list[dict]:
    drop = None
    url = None
    if backend == "postgresql":
        url, drop = pg_schema()
    broker = Broker(tmp / f"broker-{backend}", database_url=url).prepare()
    started = time.perf_counter()
    broker.start()
    startup = time.perf_counter() - started
    print(f"{backend:10} start-up to first /readyz 200: broker {startup:.2f} s, bare {start_bare.seconds:.2f} s, "
          f"ratio {startup / start_bare.seconds:.2f}", flush=True)
    rows = []
    connector = None
    try:
        connector = start_connector(broker, tmp / f"connector-{backend}")
        target = open_transfer(broker, connector)
        served = 0
        for c in CONCURRENCY:
            n = requests_for(c, quick)
            bare = measure(lambda: bare_request(bare_port), bare_port, c, n)
            target.prefetch()  # one transfer token (reusable until it expires), fetched before the clock
            pull = measure(target.raw_request, target.port, c, n)
            served += pull["ok"] + pull["warm_ok"]  # the warm-up's pulls have receipts too
            pull["drain"] = wait_for_receipts(broker, target.transfer_id, served)
            bearer = broker.client("provider").token()
            decide = measure(lambda: decision_request(broker, bearer, target.transfer_id), broker.port, c, n)
            rows.append({"backend": backend, "c": c, "bare": bare, "pull": pull, "decide": decide,
                         "ratio": pull["rps"] / bare["rps"] if bare["rps"] else 0.0})
            print(f"{backend:10} c={c:<3} bare {bare['rps']:8.0f} req/s   pull {pull['rps']:7.0f} req/s "
                  f"({pull['ok']}/{n} ok{', other ' + str(pull['other']) if pull['other'] else ''}"
                  f"{', errors ' + str(pull['errors']) if pull['errors'] else ''}; all receipts at the broker "
                  f"{pull['drain']:.2f} s later)   ratio {rows[-1]['ratio']:.3f}   "
                  f"broker decision alone {decide['rps']:6.0f} req/s ({decide['ok']}/{n} ok)",
                  flush=True)
    finally:
        if connector is not None:
            connector.stop()
        broker.stop()
        if drop:
            drop()
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a quarter of the requests")
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--markdown", action="store_true", help="also print a markdown table")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="pull-bench-"))
    print(f"# pull_bench {time.strftime('%Y-%m-%d %H:%M')}, load average {os.getloadavg()[0]:.1f}, "
          f"{os.cpu_count()} cores", flush=True)
    # The bare baseline serves the bytes an authorised pull returns (the same 60-row table as CSV).
    body = csv_body(60)
    bare_proc, bare_port = start_bare(body, tmp)
    rows = []
    try:
        for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
            try:
                rows += run_backend(backend, args.quick, bare_port, tmp)
            except Exception as exc:  # noqa: BLE001 - e.g. PostgreSQL not running
                print(f"{backend}: skipped ({type(exc).__name__}: {exc})", flush=True)
    finally:
        bare_proc.terminate()
        bare_proc.wait(10)
    if args.markdown:
        print("\n| broker db | concurrency | bare req/s | pull at connector req/s | pull ok | pull ÷ bare "
              "| broker decision alone req/s |")
        print("|---|--:|--:|--:|--:|--:|--:|")
        for r in rows:
            print(f"| {r['backend']} | {r['c']} | {r['bare']['rps']:,.0f} | {r['pull']['rps']:,.0f} | "
                  f"{r['pull']['ok']}/{r['pull']['n']} | {r['ratio']:.3f} | {r['decide']['rps']:,.0f} |")
    at32 = [r for r in rows if r["c"] == 32]
    for r in at32[1:]:
        print(f"{r['backend']} pull/bare at c=32: {r['ratio']:.3f}")
    if at32:
        print(f"pull/bare ratio at c=32 ({at32[0]['backend']}): {at32[0]['ratio']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
