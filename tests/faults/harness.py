"""A real broker process on loopback, a real connector process for the provider (it holds the rows and
is the policy enforcement point: per pull it asks the broker for a decision and posts a receipt), a
consumer with a STARTED transfer, and a raw HTTP/1.1 load generator (asyncio streams, keep-alive).
Used by the fault suite and ``benchmarks/pull_bench.py``.

The load generator is deliberately minimal (no httpx) so that on a 2-core machine the client costs
far less than the server it measures.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pyarrow as pa

from broker.identity.onboarding import create_org_with_key
from broker.runtime import Runtime
from broker.settings import Settings
from twinspace.client.broker import BrokerClient, negotiate
from twinspace.demo.connectors import ConnectorProcess
from twinspace.testing.serving import free_port  # noqa: F401  (re-exported for the fault tests)
from twinspace.transfer_tokens import make_pop

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Broker:
    """A broker data directory with a provider and a consumer registered, and its server process."""

    data_dir: Path
    database_url: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    proc: subprocess.Popen | None = None
    orgs: dict[str, object] = field(default_factory=dict)

    def settings(self) -> Settings:
        return Settings(data_dir=self.data_dir, database_url=self.database_url, redis_url=self.env.get("TWINSPACE_REDIS_URL"))

    def prepare(self) -> "Broker":
        runtime = Runtime.start(self.settings())
        try:
            for role, org_type in (("provider", "government_agency"), ("consumer", "enterprise")):
                self.orgs[role] = create_org_with_key(runtime.engine, name=f"{role.title()} {uuid.uuid4().hex[:6]}",
                                                      role=role, org_type=org_type,
                                                      key_dir=self.data_dir / "keys")
        finally:
            runtime.engine.dispose()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, workers: int = 1, wait: float = 60) -> "Broker":
        self.port = self.port or free_port()
        env = {**os.environ, "TWINSPACE_DATA_DIR": str(self.data_dir), "TWINSPACE_LOG_LEVEL": "WARNING",
               "TWINSPACE_RATE_LIMIT_DATA_ORG": "", "TWINSPACE_RATE_LIMIT_AUTH_ORG": "",
               "TWINSPACE_RATE_LIMIT_AUTH_IP": "", "TWINSPACE_AUDIT_CHECKPOINT_INTERVAL_SECONDS": "0",
               "TWINSPACE_CONNECTOR_ALLOW_NETWORKS": '["127.0.0.0/8"]',
               **({"TWINSPACE_DATABASE_URL": self.database_url} if self.database_url else {}), **self.env}
        code = f"from broker.app import serve; serve(port={self.port}, workers={workers})"
        self.log = open(self.data_dir / "server.log", "ab")
        self.proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=REPO_ROOT,
                                     stdout=subprocess.DEVNULL, stderr=self.log)
        self.wait_ready(wait)
        return self

    def wait_ready(self, timeout: float = 60) -> float:
        """Seconds until /readyz answered 200."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"broker exited: {self.log_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return time.monotonic() - start
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("broker did not become ready")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc is not None:
            self.log.close()
        self.proc = None

    def log_text(self) -> str:
        path = self.data_dir / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def client(self, role: str) -> BrokerClient:
        org = self.orgs[role]
        return BrokerClient.connect(self.url, org.org_id, org.key_file)


def table_bytes(n: int) -> bytes:
    table = pa.table({"building_id": [f"B{i:06d}" for i in range(n)],
                      "district": [["Daan", "Xinyi", "Zhongshan"][i % 3] for i in range(n)],
                      "floor_area": [100.0 + i for i in range(n)]})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


class Connector(ConnectorProcess):
    """The provider's connector: ``twinspace connector serve`` in a process of its own (``demo.connectors``)."""

    @classmethod
    def for_provider(cls, broker: Broker, data_dir: Path) -> "Connector":
        org = broker.orgs["provider"]
        return cls(label="provider", org_id=org.org_id, key_file=org.key_file, data_dir=data_dir,
                   broker_url=broker.url, audience=broker.settings().issuer)

    @property
    def proc(self) -> subprocess.Popen | None:
        return self.process

    def signal(self, sig: int) -> None:
        self.process.send_signal(sig)

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file and self.log_file.exists() else ""


@dataclass
class PullTarget:
    """Everything a consumer needs to pull under one STARTED transfer, at the provider's connector.

    A transfer token is reused until shortly before it expires (``current_token``; a new one is fetched
    from the broker then); every request carries its own fresh proof of possession. ``requests(n)``: the
    requests built when sent (long runs); ``requests(n, prebuilt=True)``: built now, before the clock
    (a benchmark measures the servers, not the load generator's signing)."""

    host: str
    port: int
    path: str
    consumer: BrokerClient
    transfer_id: str
    tokens: list[str] = field(default_factory=list)
    token_margin: float = 60.0

    def new_token(self) -> str:
        token = BrokerClient.data_address(self.consumer.transfer_token(self.transfer_id))[1]
        self.tokens.append(token)
        return token

    def current_token(self) -> str:
        if self.tokens:
            payload = self.tokens[-1].split(".")[1]
            exp = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["exp"]
            if exp - self.token_margin > time.time():
                return self.tokens[-1]
        return self.new_token()

    def prefetch(self, n: int = 1, threads: int = 4) -> "PullTarget":
        """Make sure a current token is held (tokens are reusable: one serves every request)."""
        self.consumer.token()  # the client's token cache is not thread-safe: fill it first
        self.current_token()
        return self

    def raw_request(self, fmt: str = "csv") -> bytes:
        token = self.current_token()
        pop = make_pop(self.consumer.private_key, method="GET", path=self.path, token=token)
        return (f"GET {self.path}?format={fmt} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"TwinSpace-Transfer-Token: {token}\r\nTwinSpace-PoP: {pop}\r\n\r\n").encode()

    def requests(self, n: int, *, prebuilt: bool = False) -> list:
        """``n`` requests for the load generator: built when sent (a proof is short-lived), or now."""
        self.prefetch()
        if prebuilt:
            return [self.raw_request() for _ in range(n)]
        return [self.raw_request for _ in range(n)]


def start_connector(broker: Broker, data_dir: Path | None = None) -> Connector:
    """Start the provider's connector and register it with the broker (which checks its ownership proof)."""
    connector = Connector.for_provider(broker, data_dir or broker.data_dir.parent / "connector").start()
    broker.client("provider").connector_register(connector.endpoint)
    return connector


def open_transfer(broker: Broker, connector: Connector, rows: int = 60) -> PullTarget:
    """Place a table in the connector's store, publish its metadata (an open-data asset served by the
    connector), negotiate an agreement and start a transfer, all over HTTP."""
    from connectors.node.store import DataStore
    from connectors.publish import prepare

    provider, consumer = broker.client("provider"), broker.client("consumer")
    data = table_bytes(rows)
    DataStore(connector.data_dir).put(data)
    meta = prepare(data, title="Buildings", classification="public", domain="planning",
                   offers=[{"id": "open", "policy_id": "open-data", "params": {}}],
                   twin_category="building_structure", entity_type="Building")
    asset = provider.catalog_publish({**meta, "data_endpoint": connector.endpoint})
    agreement = negotiate(consumer, provider, f"urn:twinspace:offer:{asset['id']}:v{asset['version']}:open",
                          purpose="research")
    tp = consumer.transfer_request(agreement["id"])
    endpoint, token = consumer.data_address(tp)
    url = httpx.URL(endpoint)
    return PullTarget(url.host, url.port, url.path, consumer, tp["providerPid"], [token])


# --------------------------------------------------------------------------- load generator
@dataclass
class LoadResult:
    statuses: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    retry_after_missing: int = 0
    elapsed: float = 0.0

    def count(self, status: int) -> int:
        return self.statuses.count(status)

    @property
    def rps(self) -> float:
        return len(self.statuses) / self.elapsed if self.elapsed else 0.0


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[bytes, bytes]]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if b":" in line:
            k, v = line.split(b":", 1)
            headers[k.strip().lower()] = v.strip()
    if b"content-length" in headers:
        await reader.readexactly(int(headers[b"content-length"]))
    elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status, headers


async def _worker(host: str, port: int, requests: "asyncio.Queue", result: LoadResult,
                  timeout: float) -> None:
    reader = writer = None
    while True:
        try:
            raw = requests.get_nowait()
        except asyncio.QueueEmpty:
            break
        if callable(raw):  # built when sent (proofs of possession expire after a minute)
            try:
                raw = raw()
            except Exception as exc:  # noqa: BLE001 - e.g. no fresh transfer token while the broker is down
                result.errors.append(f"request not built: {type(exc).__name__}")
                continue
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            writer.write(raw)
            status, headers = await asyncio.wait_for(_read_response(reader), timeout)
            result.statuses.append(status)
            if status in (429, 503) and b"retry-after" not in headers:
                result.retry_after_missing += 1
            if headers.get(b"connection", b"").lower() == b"close":
                writer.close()
                reader = writer = None
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError, IndexError) as exc:
            result.errors.append(type(exc).__name__)
            if writer is not None:
                writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()


async def fire(host: str, port: int, requests: list, concurrency: int, timeout: float = 60) -> LoadResult:
    """Send ``requests`` (bytes, or callables returning them) over ``concurrency`` keep-alive
    connections; collect every status."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for r in requests:
        queue.put_nowait(r)
    result = LoadResult()
    start = time.perf_counter()
    await asyncio.gather(*(_worker(host, port, queue, result, timeout) for _ in range(concurrency)))
    result.elapsed = time.perf_counter() - start
    return result


def run_load(host: str, port: int, requests: list, concurrency: int, timeout: float = 60) -> LoadResult:
    return asyncio.run(fire(host, port, requests, concurrency, timeout))
