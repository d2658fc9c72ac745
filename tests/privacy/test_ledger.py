"""The (consumer, asset) ledger never overspends and never keeps budget reserved: on SQLite and on
PostgreSQL, with concurrent connections, failed commits, stale reservations and deadlocks."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy.exc import OperationalError

from twinspace.errors import ServiceUnavailable, TooManyRequests
from broker.privacy import ledger
from broker.runtime import Runtime
from broker.settings import Settings


@pytest.fixture
def rt(tmp_path, database_url):
    runtime = Runtime.start(Settings(data_dir=tmp_path / "l", database_url=database_url, redis_url=None))
    yield runtime
    runtime.engine.dispose()


def test_reserve_commit_release(rt):
    e = rt.engine
    key = ledger.open_account(e, "c1", "asset1", 1.0)
    r = ledger.reserve(e, key, 0.4)
    assert ledger.remaining(e, key) == pytest.approx(0.6)
    ledger.commit(e, r, actor="c1")
    r = ledger.reserve(e, key, 0.5)
    ledger.release(e, r)  # failed before reading data: nothing spent
    ledger.release(e, r)  # idempotent
    assert ledger.remaining(e, key) == pytest.approx(0.6) and ledger.reserved(e, key) == 0
    with pytest.raises(TooManyRequests) as err:
        ledger.reserve(e, key, 0.7)
    assert err.value.code == "privacy_budget_exhausted"


def test_a_new_agreement_never_adds_budget(rt):
    e = rt.engine
    key = ledger.open_account(e, "c1", "asset1", 1.0)
    assert ledger.open_account(e, "c1", "asset1", 50.0) == key  # a more generous offer: still 1.0
    assert ledger.remaining(e, key) == pytest.approx(1.0)
    ledger.open_account(e, "c1", "asset1", 0.5)                   # a stricter one lowers it
    assert ledger.remaining(e, key) == pytest.approx(0.5)


def test_exact_budget_admits_the_last_query(rt):
    e = rt.engine
    key = ledger.open_account(e, "c1", "a2", 1.0)
    for _ in range(10):
        ledger.commit(e, ledger.reserve(e, key, 0.1), actor="c1")
    with pytest.raises(TooManyRequests):
        ledger.reserve(e, key, 0.1)


def test_a_failed_commit_releases_its_reservation(rt, monkeypatch):
    e = rt.engine
    key = ledger.open_account(e, "c1", "a3", 1.0)
    r = ledger.reserve(e, key, 0.3)

    def broken(*args, **kwargs):
        raise RuntimeError("audit log unavailable")

    monkeypatch.setattr(ledger, "record_event", broken)
    with pytest.raises(RuntimeError):
        ledger.commit(e, r, actor="c1")
    assert ledger.reserved(e, key) == 0 and ledger.remaining(e, key) == pytest.approx(1.0)


def test_stale_reservations_expire_and_a_late_commit_cannot_overspend(rt, monkeypatch):
    e = rt.engine
    key = ledger.open_account(e, "c1", "a4", 1.0)
    monkeypatch.setattr(ledger, "RESERVATION_TTL", -1)  # expired as soon as made (a crashed worker)
    stale = ledger.reserve(e, key, 0.6)
    monkeypatch.setattr(ledger, "RESERVATION_TTL", 600)
    fresh = ledger.reserve(e, key, 0.7)  # expires the stale one first, so 0.7 fits
    assert ledger.reserved(e, key) == pytest.approx(0.7)
    with pytest.raises(TooManyRequests):
        ledger.commit(e, stale, actor="c1")  # its budget was given back and is now held by another
    ledger.commit(e, fresh, actor="c1")
    assert ledger.reserved(e, key) == 0 and ledger.remaining(e, key) == pytest.approx(0.3)


def test_deadlocks_are_retried_then_refused_with_503(rt, monkeypatch):
    e = rt.engine
    key = ledger.open_account(e, "c1", "a5", 1.0)
    real, calls = ledger._lock, {"n": 0}

    def flaky(session, k):
        calls["n"] += 1
        if calls["n"] <= 2:
            raise OperationalError("SELECT", {}, Exception("deadlock detected"))
        return real(session, k)

    monkeypatch.setattr(ledger, "_lock", flaky)
    ledger.commit(e, ledger.reserve(e, key, 0.1), actor="c1")
    assert calls["n"] > 2
    monkeypatch.setattr(ledger, "_lock", lambda s, k: (_ for _ in ()).throw(
        OperationalError("SELECT", {}, Exception("deadlock detected"))))
    monkeypatch.setattr(ledger.time, "sleep", lambda s: None)
    with pytest.raises(ServiceUnavailable) as err:
        ledger.reserve(e, key, 0.1)
    assert err.value.code == "ledger_busy"


def test_concurrent_reservations_never_overspend(rt):
    e = rt.engine
    key = ledger.open_account(e, "c", "a6", 1.0)
    granted, refused = [], []

    def worker():
        for _ in range(10):
            try:
                ledger.commit(e, ledger.reserve(e, key, 0.1), actor="c")
                granted.append(1)
            except TooManyRequests:
                refused.append(1)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert ledger.remaining(e, key) == pytest.approx(0.0, abs=1e-9) and ledger.reserved(e, key) == 0
    assert len(granted) == 10 and len(refused) == 30


def test_an_account_keeps_one_measure(rt):
    from twinspace.errors import Forbidden

    key = ledger.open_account(rt.engine, "c1", "a7", 1.0, "zcdp")
    with pytest.raises(Forbidden) as err:  # ε and ρ never add up on one account
        ledger.open_account(rt.engine, "c1", "a7", 1.0, "pure")
    assert err.value.code == "invalid_privacy_terms"
    assert ledger.remaining(rt.engine, key) == pytest.approx(1.0)
