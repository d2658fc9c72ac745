"""Both engines (embedded regopy, OPA REST API) give the same decisions on the same table, and fail closed."""

from __future__ import annotations

import threading
import time

import pytest
from fastapi import FastAPI, Request

from broker.policy.engine import EmbeddedEngine, OpaServerEngine, PolicyDecisionPoint, decide_with
from broker.policy.library import Library, PolicySource, load_library
from twinspace.testing.opa_standin import create_opa_standin
from tests.policy.cases import BASE, CASES
from tests.serving import free_port, serve_app

LIBRARY = load_library()
BUILTINS = LIBRARY.builtins


@pytest.fixture(scope="module")
def standin():
    app = create_opa_standin()
    with serve_app(app) as url:
        yield url, app.state.store


@pytest.fixture(scope="module")
def engines(standin):
    return {"embedded": EmbeddedEngine(LIBRARY), "opa": OpaServerEngine(standin[0], LIBRARY)}


def test_table_is_large_and_covers_every_policy():
    assert len(CASES) >= 50
    assert {c[0] for c in CASES} == set(BUILTINS)
    for policy in BUILTINS:  # each policy has allow and deny cases
        assert {c[3] for c in CASES if c[0] == policy} == {True, False}, policy


@pytest.mark.parametrize("policy,label,doc,expected", CASES, ids=[f"{c[0]}:{c[1]}" for c in CASES])
def test_engines_agree_and_match_expectation(engines, policy, label, doc, expected):
    embedded = engines["embedded"].decide(policy, doc)
    opa = engines["opa"].decide(policy, doc)
    assert embedded.allow is expected, (label, embedded.reasons)
    assert opa.as_dict() == embedded.as_dict()
    assert embedded.policy_version == BUILTINS[policy].version and len(embedded.input_hash) == 64
    if not expected:
        assert embedded.reasons and not any("engine error" in r for r in embedded.reasons), embedded.reasons
        assert embedded.obligations == {}


def test_engines_are_decision_points(engines):
    assert all(isinstance(e, PolicyDecisionPoint) for e in engines.values())


def test_obligations_are_returned(engines):
    doc = dict(BASE, action="query", params={"epsilon_per_query": 0.2, "min_cohort": 30})
    for engine in engines.values():
        decision = engine.decide("aggregation-only", doc)
        assert decision.allow and decision.obligations["add_dp_noise"] == {"epsilon": 0.2}
        assert decision.obligations["min_cohort"] == 30 and decision.obligations["log_level"] == "full"


def test_the_data_document_is_pushed_to_opa(engines, standin):
    engines["opa"].decide("open-data", BASE)
    store = standin[1]
    assert store.data["twinspace"]["config"] == LIBRARY.data["twinspace"]["config"]
    assert "twinspace/lib" in store.modules and "twinspace/policies/open_data" in store.modules


def test_missing_reference_data_fails_closed():
    """Without data.twinspace.config (levels, actions) nothing is allowed."""
    bare = Library(LIBRARY.shared, LIBRARY.builtins, {}, {})
    decision = EmbeddedEngine(bare).decide("purpose-restricted", BASE)
    assert not decision.allow and any("clearance level is unknown" in r for r in decision.reasons)


def test_compile_error_denies():
    broken = PolicySource("broken", "v1", "twinspace.policies.broken", "package twinspace.policies.broken\nallow if {")
    decision = decide_with(EmbeddedEngine(LIBRARY), broken, BASE)
    assert not decision.allow and "does not compile" in decision.reasons[0] and "fail closed" in decision.reasons[0]


def test_policy_without_decision_denies():
    empty = PolicySource("empty", "v1", "twinspace.policies.empty", "package twinspace.policies.empty\nx := 1\n")
    decision = decide_with(EmbeddedEngine(LIBRARY), empty, BASE)
    assert not decision.allow and "no decision" in decision.reasons[0]


CONFLICT = ("package twinspace.policies.conflict\nimport rego.v1\n"
            "decision := {\"allow\": true, \"deny\": [], \"obligations\": {}} if input.action == \"read\"\n"
            "decision := {\"allow\": true, \"deny\": [\"x\"], \"obligations\": {}} if input.now > 0\n")


@pytest.mark.parametrize("engine_name", ["embedded", "opa"])
def test_evaluation_error_denies(engines, engine_name):
    # Conflicting complete-rule values are an evaluation error in Rego: must deny, not allow.
    source = PolicySource("conflict", "v1", "twinspace.policies.conflict", CONFLICT)
    decision = decide_with(engines[engine_name], source, BASE)
    assert not decision.allow and "fail closed" in decision.reasons[0]


def test_a_policy_claiming_allow_with_reasons_is_a_deny(engines):
    rego = ("package twinspace.policies.liar\nimport rego.v1\n"
            "decision := {\"allow\": true, \"deny\": [\"nope\"], \"obligations\": {\"x\": 1}}\n")
    decision = decide_with(engines["embedded"], PolicySource("liar", "v1", "twinspace.policies.liar", rego), BASE)
    assert not decision.allow and decision.reasons == ["nope"] and decision.obligations == {}


def test_opa_down_denies():
    engine = OpaServerEngine(f"http://127.0.0.1:{free_port()}", LIBRARY, timeout=0.5)
    decision = engine.decide("open-data", BASE)
    assert not decision.allow and "OPA server unavailable" in decision.reasons[0]


def test_opa_timeout_denies():
    """A server that answers too slowly is a deny, within about the configured timeout."""
    slow = FastAPI()
    release = threading.Event()

    @slow.api_route("/{path:path}", methods=["GET", "PUT", "POST"])
    def hang(path: str, request: Request):
        release.wait(5)
        return {}

    with serve_app(slow) as url:
        engine = OpaServerEngine(url, LIBRARY, timeout=0.3)
        start = time.monotonic()
        decision = engine.decide("open-data", BASE)
        elapsed = time.monotonic() - start
        release.set()
    assert not decision.allow and "OPA server unavailable" in decision.reasons[0]
    assert elapsed < 3


def test_opa_recovers_after_a_restart(standin):
    """Modules are pushed again when the server lost them (restart): still the right decision."""
    url, store = standin
    engine = OpaServerEngine(url, LIBRARY)
    assert engine.decide("open-data", BASE).allow
    for module_id in list(store.modules):
        store.delete_module(module_id)
    decision = engine.decide("open-data", BASE)
    assert decision.allow and "twinspace/policies/open_data" in store.modules


def test_unknown_policy_denies(engines):
    for engine in engines.values():
        decision = engine.decide("nope", BASE)
        assert not decision.allow and "no policy 'nope'" in decision.reasons[0]
        decision = engine.decide("open-data", BASE, version="v99")
        assert not decision.allow


def test_embedded_engine_is_thread_safe():
    engine = EmbeddedEngine(LIBRARY, pool_size=3)
    expected = {label: exp for _, label, _, exp in CASES}
    errors: list[str] = []

    def work():
        for policy, label, doc, _ in CASES:
            if engine.decide(policy, doc).allow is not expected[label]:
                errors.append(label)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_opa_standin_speaks_the_rest_api_the_client_uses(standin):
    from opa_client.errors import RegoParseError
    from opa_client.opa import OpaClient

    url, _ = standin
    client = OpaClient(host="127.0.0.1", port=int(url.rsplit(":", 1)[1]), retries=0)
    assert client.check_connection()
    with pytest.raises(RegoParseError):
        client.update_policy_from_string("package x\nallow if {", "bad", rego_compat=False)
    assert client.update_policy_from_string("package y\nimport rego.v1\nallow if input.n < data.limits.n\n", "good",
                                            rego_compat=False)
    assert client.get_policy("good")["result"]["id"] == "good"
    assert "good" in client.get_policies_list()
    assert client.update_or_create_data({"n": 3}, "limits")
    assert client.get_data("limits")["result"] == {"n": 3}
    assert client.query_rule({"n": 2}, "y", "allow") == {"result": True}
    assert client.query_rule({"n": 5}, "y", "allow") == {}  # undefined
    assert client.delete_data("limits")
    assert client.query_rule({"n": 2}, "y", "allow") == {}
    assert client.delete_policy("good")
    with pytest.raises(Exception):
        client.get_policy("good")
