"""The data plane under real concurrency on loopback: a real broker process (uvicorn, SQLite, one
worker, no Redis) and a real connector process for the provider. Consumers pull at the connector,
which asks the broker for a decision and posts a receipt per pull.

Functional assertions only (every request answered, with what, and whether the processes exit), no
timing targets — those live in benchmarks/pull_bench.py.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections import Counter

import httpx
import pytest

from tests.faults.harness import Broker, open_transfer, run_load, start_connector


@pytest.fixture
def space(tmp_path):
    broker = Broker(tmp_path / "broker").prepare().start()
    connector = None
    try:
        connector = start_connector(broker)
        yield broker, connector
    finally:
        if connector is not None:
            connector.stop()
        broker.stop()


def _receipts(broker: Broker, transfer_id: str) -> int:
    from tests.faults.test_crashes import _count

    return _count(f"sqlite:///{broker.data_dir / 'twinspace.db'}",
                  "SELECT count(*) FROM dataplane_receipt WHERE transfer_id = :t", t=transfer_id)


def test_256_concurrent_pulls_are_all_answered_200(space):
    """Before (broker-served pulls): 16 requests in flight took all 15 pooled connections and waited for a
    second one each, and 0 of 16 pulls succeeded, all 500 after the 30 s pool timeout. Now the connector
    serves them, each with a fresh broker decision and a receipt: every one 200, nothing after a timeout."""
    broker, connector = space
    target = open_transfer(broker, connector)
    result = run_load(target.host, target.port, target.requests(512), concurrency=256, timeout=120)
    assert result.errors == []
    assert Counter(result.statuses) == {200: 512}, Counter(result.statuses)
    for log in (broker.log_text(), connector.log_text()):
        assert "pool" not in log.lower() and "Traceback" not in log, log[-2000:]
    # every pull has its receipt at the broker (sent at the end of the body, or by the outbox)
    deadline = time.monotonic() + 15
    while _receipts(broker, target.transfer_id) < 512 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _receipts(broker, target.transfer_id) == 512
    # and both still answer afterwards, at once
    assert httpx.get(broker.url + "/readyz", timeout=10).status_code == 200
    assert httpx.get(connector.endpoint + "/healthz", timeout=10).status_code == 200


def test_healthz_answers_while_every_slot_is_busy(space):
    broker, connector = space
    target = open_transfer(broker, connector)
    requests = target.requests(768)
    done = threading.Event()
    statuses: dict[str, list[int]] = {"broker": [], "connector": []}

    def probe() -> None:
        while not done.is_set():
            statuses["connector"].append(httpx.get(connector.endpoint + "/healthz", timeout=30).status_code)
            statuses["broker"].append(httpx.get(broker.url + "/healthz", timeout=30).status_code)
            time.sleep(0.2)

    thread = threading.Thread(target=probe)
    thread.start()
    try:
        result = run_load(target.host, target.port, requests, concurrency=256, timeout=120)
    finally:
        done.set()
        thread.join()
    assert statuses["connector"] and set(statuses["connector"]) == {200}, statuses
    assert statuses["broker"] and set(statuses["broker"]) == {200}, statuses
    assert set(result.statuses) == {200}, Counter(result.statuses)


@pytest.mark.parametrize("which", ["connector", "broker"])
def test_sigterm_under_load_exits_within_five_seconds(tmp_path, which):
    broker = Broker(tmp_path / "broker", env={"TWINSPACE_GRACEFUL_SHUTDOWN_SECONDS": "1"}).prepare().start()
    connector = None
    try:
        connector = start_connector(broker)
        target = open_transfer(broker, connector)
        requests = target.requests(1024)
        loader = threading.Thread(target=run_load, args=(target.host, target.port, requests, 256, 30), daemon=True)
        loader.start()
        time.sleep(2)  # the load is on: the connector's threads busy, the broker deciding, requests queued
        process = connector if which == "connector" else broker
        assert process.proc.poll() is None
        process.signal(signal.SIGTERM)
        try:
            code = process.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the {which} did not exit within 5 s of SIGTERM under load")
        assert code is not None
    finally:
        if connector is not None:
            connector.stop()
        broker.stop()


def _overloaded(tmp_path):
    """One database slot at the broker and a short wait: the connector's decisions queue up there."""
    return Broker(tmp_path / "broker", env={"TWINSPACE_DB_POOL_SIZE": "1", "TWINSPACE_DB_POOL_RESERVE": "2",
                                             "TWINSPACE_DB_SLOT_TIMEOUT_SECONDS": "0.05"}).prepare().start()


def test_overload_answers_503_never_500(tmp_path):
    """The broker sheds the excess decisions with 503; the connector passes that on as 503 with
    Retry-After (not a wedge, not a 500, not a 502), and serves normally as soon as the burst is over."""
    broker = _overloaded(tmp_path)
    connector = None
    try:
        connector = start_connector(broker)
        target = open_transfer(broker, connector)
        result = run_load(target.host, target.port, target.requests(256), concurrency=128, timeout=60)
        counts = Counter(result.statuses)
        assert result.errors == [] and set(counts) <= {200, 503}, counts
        assert counts[503] > 0 and counts[200] > 0, counts
        assert result.retry_after_missing == 0, (counts, result.retry_after_missing)
        after = run_load(target.host, target.port, target.requests(4), concurrency=1)
        assert after.statuses == [200] * 4
    finally:
        if connector is not None:
            connector.stop()
        broker.stop()
