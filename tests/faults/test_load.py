"""The broker under real concurrency on loopback: a real uvicorn process, SQLite, one worker, no Redis.

Functional assertions only (every request answered, with what, and whether the process exits), no
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

from tests.faults.harness import Broker, open_transfer, run_load


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path / "broker").prepare().start()
    yield b
    b.stop()


def test_256_concurrent_pulls_are_all_answered_200(broker):
    """Before: 16 requests in flight took all 15 pooled connections and waited for a second one each
    (replay store), and with more in flight threads waited for connections held by sessions parked
    between thread-pool hops: 0 of 16 pulls succeeded, all 500 after the 30 s pool timeout."""
    target = open_transfer(broker)
    result = run_load(target.host, target.port, [target.raw_request() for _ in range(512)], concurrency=256,
                      timeout=120)
    assert result.errors == []
    assert Counter(result.statuses) == {200: 512}, Counter(result.statuses)
    assert "pool" not in broker.log_text().lower() and "Traceback" not in broker.log_text()
    # and the server still answers afterwards, at once
    assert httpx.get(broker.url + "/readyz", timeout=10).status_code == 200


def test_healthz_answers_while_every_slot_is_busy(broker):
    target = open_transfer(broker)
    requests = [target.raw_request() for _ in range(768)]
    done = threading.Event()
    statuses: list[int] = []

    def probe() -> None:
        while not done.is_set():
            statuses.append(httpx.get(broker.url + "/healthz", timeout=30).status_code)
            time.sleep(0.2)

    thread = threading.Thread(target=probe)
    thread.start()
    try:
        result = run_load(target.host, target.port, requests, concurrency=256, timeout=120)
    finally:
        done.set()
        thread.join()
    assert statuses and set(statuses) == {200}
    assert set(result.statuses) == {200}


def test_sigterm_under_load_exits_within_five_seconds(tmp_path):
    broker = Broker(tmp_path / "broker", env={"TWINSPACE_GRACEFUL_SHUTDOWN_SECONDS": "1"}).prepare().start()
    try:
        target = open_transfer(broker)
        requests = [target.raw_request() for _ in range(4096)]
        loader = threading.Thread(target=run_load, args=(target.host, target.port, requests, 256, 30), daemon=True)
        loader.start()
        time.sleep(2)  # the load is on: every database slot busy, requests queued
        assert broker.proc.poll() is None
        broker.signal(signal.SIGTERM)
        try:
            code = broker.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pytest.fail("the broker did not exit within 5 s of SIGTERM under load")
        assert code is not None
    finally:
        broker.stop()


def test_overload_answers_503_with_retry_after_never_500(tmp_path):
    """One database slot and a short wait: the excess is refused with 503 + Retry-After (not a wedge,
    not a 500), and the broker serves normally as soon as the burst is over."""
    broker = Broker(tmp_path / "broker", env={"TWINSPACE_DB_POOL_SIZE": "1", "TWINSPACE_DB_POOL_RESERVE": "2",
                                              "TWINSPACE_DB_SLOT_TIMEOUT_SECONDS": "0.05"}).prepare().start()
    try:
        target = open_transfer(broker)
        result = run_load(target.host, target.port, [target.raw_request() for _ in range(256)], concurrency=128,
                          timeout=60)
        counts = Counter(result.statuses)
        assert result.errors == [] and set(counts) <= {200, 503}, counts
        assert counts[503] > 0 and counts[200] > 0, counts
        assert result.retry_after_missing == 0
        after = run_load(target.host, target.port, [target.raw_request() for _ in range(4)], concurrency=1)
        assert after.statuses == [200] * 4
    finally:
        broker.stop()
