"""Scale-out on PostgreSQL + Redis: one broker worker, two workers, two replicas behind a reverse proxy.

Run from the repository root:  .venv/bin/python benchmarks/scale_bench.py [--quick] [--markdown]

Three broker configurations, each on a fresh PostgreSQL schema (127.0.0.1:5432/test, dropped afterwards),
a fresh data directory and Redis (``TWINSPACE_REDIS_URL``, replay protection) — measured in one run:

  1. ``workers1``  one broker process, one uvicorn worker (``broker.app.serve(workers=1)``, what
                   ``twinspace serve --workers 1`` runs);
  2. ``workers2``  one broker process, two uvicorn workers (``--workers 2``);
  3. ``replicas2`` two broker processes (one worker each) on two ports, same database, same data
                   directory (the broker key), same Redis, behind a reverse proxy on a third port:
                   nginx (round robin per request, upstream keep-alive) when ``nginx`` is installed,
                   else a minimal asyncio TCP proxy (round robin per connection) in a process of its own.

For each: authorised pulls at a provider's connector (a real ``twinspace connector serve`` process
whose broker URL is that configuration's front: the broker, or the proxy) at concurrency 32 — per pull
a fresh decision from the broker and a signed receipt posted to it; the broker's
``POST /dataplane/decisions`` alone at concurrency 32; and two providers' connectors (two processes, each
its own org, key and data) pulled at the same time, 32 connections each, against the same broker front.
Single-use transfer tokens are fetched before the clock starts (``tests/faults/harness.py``); the load
generator is its raw HTTP/1.1 client; latencies are from the request being written to its last byte read.
Rate limits are off (as in the harness): this measures capacity, not limits.

Besides the table, the CPU time each role spent during the single-connector pull run (from /proc):
broker processes (all workers / replicas), connector, proxy, and all ``postgres`` processes on the
machine (shared with whatever else runs there).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.pull_bench import pg_schema  # noqa: E402
from tests.faults import harness  # noqa: E402
from tests.faults.harness import Broker, LoadResult, free_port, open_transfer, start_connector  # noqa: E402

REDIS_URL = os.environ.get("TWINSPACE_TEST_REDIS", "redis://127.0.0.1:6379/15")
CONCURRENCY = 32
CONFIGS = ("workers1", "workers2", "replicas2")


# --------------------------------------------------------------------------- timed load
class _TimedStatuses(list):
    """``LoadResult.statuses`` that also records each response's latency: the harness's worker builds a
    request (``_stamped`` notes the time for the current task), writes it, reads the whole response, then
    appends the status — here."""

    def __init__(self, starts: dict) -> None:
        super().__init__()
        self.starts, self.latencies = starts, []

    def append(self, status: int) -> None:
        now = time.perf_counter()
        self.latencies.append(now - self.starts.pop(asyncio.current_task(), now))
        super().append(status)


def _stamped(make, starts: dict):
    def build() -> bytes:
        raw = make()
        starts[asyncio.current_task()] = time.perf_counter()
        return raw
    return build


async def _fire_timed(port: int, make, n: int, concurrency: int, timeout: float = 120) -> LoadResult:
    starts: dict = {}
    queue: asyncio.Queue = asyncio.Queue()
    for _ in range(n):
        queue.put_nowait(_stamped(make, starts))
    result = LoadResult(statuses=_TimedStatuses(starts))
    started = time.perf_counter()
    await asyncio.gather(*(harness._worker("127.0.0.1", port, queue, result, timeout) for _ in range(concurrency)))
    result.elapsed = time.perf_counter() - started
    return result


@dataclass
class Run:
    """One timed load (or several at once): throughput over the wall clock, latency over every response."""

    n: int
    elapsed: float
    statuses: list[int] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    transport_errors: int = 0

    @classmethod
    def of(cls, results: list[LoadResult], n: int, elapsed: float) -> "Run":
        run = cls(n, elapsed)
        for r in results:
            run.statuses += list(r.statuses)
            run.latencies += r.statuses.latencies
            run.transport_errors += len(r.errors)
        return run

    @property
    def ok(self) -> int:
        return self.statuses.count(200)

    @property
    def rps(self) -> float:
        return self.ok / self.elapsed if self.elapsed else 0.0

    @property
    def errors(self) -> int:
        return self.n - self.ok

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        if len(self.latencies) == 1:
            return self.latencies[0] * 1000
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[int(q) - 1] * 1000

    def detail(self) -> str:
        other = {k: v for k, v in Counter(self.statuses).items() if k != 200}
        return (f"{self.ok}/{self.n} ok" + (f", other {other}" if other else "")
                + (f", transport errors {self.transport_errors}" if self.transport_errors else ""))


def load(jobs: list[tuple[int, object, int]], concurrency: int = CONCURRENCY) -> Run:
    """``jobs``: (port, request maker, n) run at the same time, ``concurrency`` connections each."""
    async def go():
        started = time.perf_counter()
        results = await asyncio.gather(*(_fire_timed(port, make, n, concurrency) for port, make, n in jobs))
        return results, time.perf_counter() - started

    results, elapsed = asyncio.run(go())
    return Run.of(results, sum(n for _, _, n in jobs), elapsed)


# --------------------------------------------------------------------------- CPU accounting (/proc)
_TICK = os.sysconf("SC_CLK_TCK")


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                todo += [int(c) for c in Path(f"/proc/{p}/task/{task}/children").read_text().split()]
        except OSError:
            pass
    return pids


def _cpu(pids: list[int]) -> float:
    total = 0.0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return total


def _postgres_pids() -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if Path(f"/proc/{entry}/comm").read_text().strip() == "postgres":
                    pids.append(int(entry))
            except OSError:
                pass
    return pids


class CpuMeter:
    """CPU seconds per role between ``start()`` and ``stop()``; process trees are resolved at start."""

    def __init__(self, roles: dict[str, list[int]]) -> None:
        self.roles = roles

    def _sample(self) -> dict[str, float]:
        busy = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        # the whole machine (every process, other sessions' included): all but idle and iowait
        return {**{role: _cpu(pids) for role, pids in self.pids.items()},
                "machine": (sum(busy) - busy[3] - busy[4]) / _TICK}

    def start(self) -> "CpuMeter":
        self.pids = {role: [p for root in roots for p in _tree(root)] for role, roots in self.roles.items()}
        self.pids["postgres"] = _postgres_pids()
        self.before = self._sample()
        return self

    def stop(self) -> dict[str, float]:
        after = self._sample()
        return {role: after[role] - self.before[role] for role in after}


# --------------------------------------------------------------------------- reverse proxy
NGINX_CONF = textwrap.dedent("""
    worker_processes 1;
    error_log {prefix}/error.log warn;
    pid {prefix}/nginx.pid;
    {user}
    events {{ worker_connections 4096; }}
    http {{
        access_log off;
        client_body_temp_path {prefix}/body;
        proxy_temp_path {prefix}/proxy;
        fastcgi_temp_path {prefix}/fastcgi;
        uwsgi_temp_path {prefix}/uwsgi;
        scgi_temp_path {prefix}/scgi;
        upstream brokers {{
            {servers}
            keepalive 64;
            # below the broker's own idle keep-alive (uvicorn, 5 s): nginx must not reuse a connection the
            # broker is closing (a POST sent on it is not retried: the connector would see a 502)
            keepalive_timeout 4s;
        }}
        server {{
            listen 127.0.0.1:{port};
            location / {{
                proxy_pass http://brokers;
                proxy_http_version 1.1;
                proxy_set_header Connection "";
                proxy_set_header Host $http_host;
                proxy_set_header X-Forwarded-For $remote_addr;
                proxy_read_timeout 120s;
            }}
        }}
    }}
""")

TCP_PROXY = textwrap.dedent("""
    import asyncio, itertools, sys
    port, backends = int(sys.argv[1]), itertools.cycle([int(p) for p in sys.argv[2:]])

    async def pipe(reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def handle(reader, writer):
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", next(backends))
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    asyncio.run(main())
""")


class Proxy:
    """A reverse proxy on loopback in front of ``backends`` (ports): nginx if installed, else asyncio TCP."""

    def __init__(self, backends: list[int], workdir: Path, kind: str = "auto") -> None:
        self.backends, self.workdir, self.port = backends, workdir, free_port()
        self.kind = ("nginx" if shutil.which("nginx") else "asyncio") if kind == "auto" else kind
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Proxy":
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.workdir / "proxy.log", "ab")
        if self.kind == "nginx":
            conf = self.workdir / "nginx.conf"
            servers = "\n            ".join(f"server 127.0.0.1:{p};" for p in self.backends)
            # As root, nginx's workers would switch to ``nobody``, which cannot enter a 0700 temp directory.
            user = "user root;" if os.geteuid() == 0 else ""
            conf.write_text(NGINX_CONF.format(prefix=self.workdir, port=self.port, servers=servers, user=user))
            cmd = [shutil.which("nginx"), "-p", str(self.workdir), "-c", str(conf), "-g", "daemon off;"]
        else:
            cmd = [sys.executable, "-c", TCP_PROXY, str(self.port), *map(str, self.backends)]
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=log)
        import httpx

        for _ in range(200):
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} proxy exited: {(self.workdir / 'proxy.log').read_text()[-1000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError("proxy did not answer")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


# --------------------------------------------------------------------------- one configuration
def sizes(quick: bool) -> dict[str, int]:
    full = {"pull": 240, "decide": 360, "pair": 120, "warm": 32}  # pair: per connector
    return {k: v // 4 for k, v in full.items()} if quick else full


def decision_maker(front: Broker, target, bearer: str):
    """``POST /dataplane/decisions`` as the connector sends it in steady state (the broker's half of a pull,
    alone): the transfer token's generation, and the SHA-256 of the agreement document it already holds (so
    the broker sends no bundle). The first call, without it, learns that SHA-256."""
    import base64
    import json
    import secrets

    import httpx

    payload = target.tokens[-1].split(".")[1]
    gen = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["gen"]

    def body(sha: str | None) -> bytes:
        return json.dumps({"transfer_id": target.transfer_id, "token_jti": "bench_" + secrets.token_hex(8),
                           "nonce": secrets.token_urlsafe(24), "format": "csv", "token_generation": gen,
                           **({"agreement_sha256": sha} if sha else {})}).encode()

    headers = {"Authorization": f"Bearer {bearer}", "Content-Type": "application/json"}
    first = httpx.post(front.url + "/dataplane/decisions", content=body(None), headers=headers, timeout=30)
    first.raise_for_status()
    sha = first.json()["agreement"]["document_sha256"]

    def make() -> bytes:
        data = body(sha)
        return (f"POST /dataplane/decisions HTTP/1.1\r\nHost: 127.0.0.1:{front.port}\r\n"
                f"Authorization: Bearer {bearer}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(data)}\r\n\r\n").encode() + data
    return make


def view(broker: Broker, port: int) -> Broker:
    """The same participants, reached at ``port`` (the proxy's, or the broker's own)."""
    return Broker(broker.data_dir, broker.database_url, broker.env, port=port, orgs=broker.orgs)


def run_config(name: str, quick: bool, tmp: Path, proxy_kind: str) -> dict:
    url, drop = pg_schema()
    data_dir = tmp / name / "broker"
    env = {"TWINSPACE_REDIS_URL": REDIS_URL}
    servers: list[Broker] = []
    connectors, proxy = [], None
    n = sizes(quick)
    try:
        first = Broker(data_dir, database_url=url, env=env).prepare()  # provider A, consumer A; key; schema
        second = Broker(data_dir, database_url=url, env=env).prepare()  # provider B, consumer B (same db)
        started = time.perf_counter()
        if name == "replicas2":
            servers = [first.start(workers=1), view(first, 0).start(workers=1)]  # same data dir: same key
            proxy = Proxy([s.port for s in servers], tmp / name / "proxy", proxy_kind).start()
            front_port = proxy.port
        else:
            servers = [first.start(workers=2 if name == "workers2" else 1)]
            front_port = first.port
        startup = time.perf_counter() - started
        setup = time.perf_counter()
        front_a, front_b = view(first, front_port), view(second, front_port)
        conn_a = start_connector(front_a, tmp / name / "connector-a")
        connectors.append(conn_a)
        conn_b = start_connector(front_b, tmp / name / "connector-b")
        connectors.append(conn_b)
        # Provider B's table has one more row: a content hash belongs to one provider.
        target_a, target_b = open_transfer(front_a, conn_a, rows=60), open_transfer(front_b, conn_b, rows=61)
        decide = decision_maker(front_a, target_a, front_a.client("provider").token())
        warm = n["warm"]
        target_a.prefetch(warm + n["pull"], threads=8)
        target_b.prefetch(warm, threads=8)
        load([(target_a.port, target_a.raw_request, warm), (target_b.port, target_b.raw_request, warm)])
        load([(front_port, decide, warm)])

        setup = time.perf_counter() - setup
        meter = CpuMeter({"broker": [s.proc.pid for s in servers], "connector": [conn_a.proc.pid],
                          **({"proxy": [proxy.proc.pid]} if proxy else {})}).start()
        pull = load([(target_a.port, target_a.raw_request, n["pull"])])
        cpu = meter.stop()
        decisions = load([(front_port, decide, n["decide"])])
        target_a.prefetch(n["pair"], threads=8)
        target_b.prefetch(n["pair"], threads=8)
        pair = load([(target_a.port, target_a.raw_request, n["pair"]),
                     (target_b.port, target_b.raw_request, n["pair"])])
        return {"config": name, "startup": startup, "setup": setup, "pull": pull, "decide": decisions,
                "pair": pair, "cpu": cpu, "proxy": proxy.kind if proxy else None}
    finally:
        for c in connectors:
            c.stop()
        if proxy:
            proxy.stop()
        for s in servers:
            s.stop()
        drop()


# --------------------------------------------------------------------------- report
def report(rows: list[dict], markdown: bool) -> None:
    base = rows[0]
    header = (f"{'config':10} {'pulls/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'decisions/s':>11} {'p50 ms':>7} "
              f"{'p99 ms':>7} {'2 conn pulls/s':>14} {'errors':>6}   ÷ {base['config']}: pulls decisions 2-conn")
    print("\n" + header)
    for r in rows:
        p, d, q = r["pull"], r["decide"], r["pair"]
        errors = p.errors + d.errors + q.errors

        def ratio(key: str) -> float:
            return r[key].rps / base[key].rps if base[key].rps else 0.0

        print(f"{r['config']:10} {p.rps:8.1f} {p.pct(50):7.0f} {p.pct(99):7.0f} {d.rps:11.1f} {d.pct(50):7.0f} "
              f"{d.pct(99):7.0f} {q.rps:14.1f} {errors:6d}   {ratio('pull'):>21.2f} {ratio('decide'):9.2f} "
              f"{ratio('pair'):6.2f}")
    print("\nCPU seconds per 100 pulls during the single-connector run (cores busy = CPU s / wall s):")
    for r in rows:
        ok = max(r["pull"].ok, 1)
        parts = "  ".join(f"{role} {secs / ok * 100:5.2f} s ({secs / r['pull'].elapsed:.2f} cores)"
                          for role, secs in r["cpu"].items() if role != "machine")
        parts += f"  | whole machine busy {r['cpu']['machine'] / r['pull'].elapsed:.2f} of {os.cpu_count()} cores"
        print(f"  {r['config']:10} {parts}")
    print("\nTwo connectors (two providers, 32 connections each) against the same broker front:")
    for r in rows:
        one, two = r["pull"], r["pair"]
        print(f"  {r['config']:10} one connector {one.rps:6.1f} pulls/s, two together {two.rps:6.1f} pulls/s "
              f"({two.rps / one.rps if one.rps else 0:.2f}×; p50 {two.pct(50):.0f} ms, p99 {two.pct(99):.0f} ms; "
              f"{two.detail()})")
    if markdown:
        print(f"\n| config | pulls/s | pull p50 / p99 ms | decisions/s | decision p50 / p99 ms "
              f"| two connectors pulls/s | errors | pulls ÷ {base['config']} | decisions ÷ {base['config']} |")
        print("|---|--:|--:|--:|--:|--:|--:|--:|--:|")
        for r in rows:
            p, d, q = r["pull"], r["decide"], r["pair"]
            print(f"| {r['config']} | {p.rps:,.1f} | {p.pct(50):.0f} / {p.pct(99):.0f} | {d.rps:,.1f} | "
                  f"{d.pct(50):.0f} / {d.pct(99):.0f} | {q.rps:,.1f} | {p.errors + d.errors + q.errors} | "
                  f"{p.rps / base['pull'].rps if base['pull'].rps else 0:.2f} | "
                  f"{d.rps / base['decide'].rps if base['decide'].rps else 0:.2f} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a quarter of the requests")
    ap.add_argument("--configs", default=",".join(CONFIGS), help=f"subset of {','.join(CONFIGS)}")
    ap.add_argument("--proxy", choices=("auto", "nginx", "asyncio"), default="auto",
                    help="reverse proxy for the replicas (auto: nginx when installed)")
    ap.add_argument("--rounds", type=int, default=1, help="run every config this many times (alternating order); "
                    "the table shows each config's round with the most pulls/s")
    ap.add_argument("--markdown", action="store_true", help="also print a markdown table")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="scale-bench-"))
    began = time.perf_counter()
    n = sizes(args.quick)
    print(f"# scale_bench {time.strftime('%Y-%m-%d %H:%M')}, load average {os.getloadavg()[0]:.1f}, "
          f"{os.cpu_count()} cores; PostgreSQL + Redis; c = {CONCURRENCY}; {n['pull']} pulls, {n['decide']} "
          f"decisions, 2 × {n['pair']} pulls per config", flush=True)
    names = [c.strip() for c in args.configs.split(",") if c.strip()]
    for name in names:
        if name not in CONFIGS:
            ap.error(f"unknown config {name!r}")
    best: dict[str, dict] = {}
    try:
        _run_rounds(args, names, tmp, best)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.rounds > 1:
        print(f"\nper config, the round with the most pulls/s of {args.rounds}:")
    report([best[name] for name in names], args.markdown)
    print(f"\nwall time {time.perf_counter() - began:.0f} s, load average at the end {os.getloadavg()[0]:.1f}")
    return 0


def _run_rounds(args, names: list[str], tmp: Path, best: dict[str, dict]) -> None:
    for round_no in range(args.rounds):
        # Alternate the order (1 2 3, 3 2 1, ...) so that a load change on a shared machine hits all alike.
        for name in names if round_no % 2 == 0 else names[::-1]:
            r = run_config(name, args.quick, tmp / f"round{round_no}", args.proxy)
            if name not in best or r["pull"].rps > best[name]["pull"].rps:
                best[name] = r
            via = f" (proxy: {r['proxy']})" if r["proxy"] else ""
            print(f"{name:10} up in {r['startup']:.1f} s{via}, set up + warm-up {r['setup']:.1f} s: "
                  f"pulls {r['pull'].rps:.1f}/s ({r['pull'].detail()}), decisions {r['decide'].rps:.1f}/s "
                  f"({r['decide'].detail()}), two connectors {r['pair'].rps:.1f}/s ({r['pair'].detail()})", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
