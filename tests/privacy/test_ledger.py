"""The epsilon ledger never overspends, even with concurrent queries on several connections."""

from __future__ import annotations

import threading

import pytest

from twinspace.errors import TooManyRequests
from broker.privacy import ledger
from broker.runtime import Runtime
from broker.settings import Settings
from broker.storage.db import session_scope


def test_reserve_commit_release(engine):
    with session_scope(engine) as s:
        ledger.ensure_budget(s, "ag1", 1.0)
    with session_scope(engine) as s:
        r = ledger.reserve(s, "ag1", 0.4, actor="c1")
        assert ledger.remaining(s, "ag1") == pytest.approx(0.6)
        ledger.commit(s, r, actor="c1")
    with session_scope(engine) as s:
        r = ledger.reserve(s, "ag1", 0.5, actor="c1")
        ledger.release(s, r)  # refused query: nothing spent
        assert ledger.remaining(s, "ag1") == pytest.approx(0.6)
    with session_scope(engine) as s, pytest.raises(TooManyRequests) as err:
        ledger.reserve(s, "ag1", 0.7, actor="c1")
    assert err.value.code == "privacy_budget_exhausted"


def test_exact_budget_admits_the_last_query(engine):
    with session_scope(engine) as s:
        ledger.ensure_budget(s, "ag2", 1.0)
    for _ in range(10):
        with session_scope(engine) as s:
            ledger.commit(s, ledger.reserve(s, "ag2", 0.1, actor="c1"), actor="c1")
    with session_scope(engine) as s, pytest.raises(TooManyRequests):
        ledger.reserve(s, "ag2", 0.1, actor="c1")


def test_concurrent_reservations_never_overspend(tmp_path, database_url):
    runtime = Runtime.start(Settings(data_dir=tmp_path / "l", database_url=database_url))
    with session_scope(runtime.engine) as s:
        ledger.ensure_budget(s, "ag3", 1.0)
    granted, refused = [], []

    def worker():
        for _ in range(10):
            try:
                with session_scope(runtime.engine) as s:
                    ledger.commit(s, ledger.reserve(s, "ag3", 0.1, actor="c"), actor="c")
                granted.append(1)
            except TooManyRequests:
                refused.append(1)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with session_scope(runtime.engine) as s:
        assert ledger.remaining(s, "ag3") == pytest.approx(0.0, abs=1e-9)
    assert len(granted) == 10 and len(refused) == 30
    runtime.engine.dispose()
