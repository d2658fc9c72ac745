"""Embedded policy decisions are cached per canonical input: an identical input is not evaluated
again, any change to the input (a revoked agreement, another purpose) is."""

from __future__ import annotations

import copy

from broker.policy.engine import EmbeddedEngine
from broker.policy.library import load_library
from tests.policy.cases import BASE


def test_identical_inputs_are_decided_once_and_changes_are_seen_at_once(monkeypatch):
    engine = EmbeddedEngine(load_library())
    calls = []
    real = engine.evaluate
    monkeypatch.setattr(engine, "evaluate", lambda source, doc: calls.append(1) or real(source, doc))
    first = engine.decide("open-data", BASE)
    again = engine.decide("open-data", copy.deepcopy(BASE))
    assert first == again and first.allow and len(calls) == 1
    changed = copy.deepcopy(BASE)
    changed["action"] = "delete-everything"
    other = engine.decide("open-data", changed)
    assert len(calls) == 2 and other.input_hash != first.input_hash


def test_engine_failures_are_not_cached(monkeypatch):
    engine = EmbeddedEngine(load_library())
    monkeypatch.setattr(engine, "evaluate", lambda source, doc: (_ for _ in ()).throw(RuntimeError("down")))
    assert not engine.decide("open-data", BASE).allow
    monkeypatch.undo()
    assert engine.decide("open-data", BASE).allow
