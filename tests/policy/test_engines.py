"""Both engines (embedded regopy, OPA REST API) give the same decisions on the same table, and fail closed."""

from __future__ import annotations

import pytest

from broker.policy.engine import EmbeddedEngine, OpaServerEngine, PolicyDecisionPoint, decide_with
from broker.policy.library import PolicySource, load_library
from broker.policy.opa_standin import create_opa_standin
from tests.policy.cases import BASE, CASES
from tests.serving import free_port, serve_app

SHARED, BUILTINS = load_library()


@pytest.fixture(scope="module")
def opa_url():
    with serve_app(create_opa_standin()) as url:
        yield url


@pytest.fixture(scope="module")
def engines(opa_url):
    return {"embedded": EmbeddedEngine(SHARED), "opa": OpaServerEngine(opa_url, SHARED)}


def test_table_is_large_and_covers_every_policy():
    assert len(CASES) >= 50
    assert {c[0] for c in CASES} == set(BUILTINS)
    assert {c[3] for c in CASES} == {True, False}


@pytest.mark.parametrize("policy,label,doc,expected", CASES, ids=[f"{c[0]}:{c[1]}" for c in CASES])
def test_engines_agree_and_match_expectation(engines, policy, label, doc, expected):
    source = BUILTINS[policy]
    embedded = decide_with(engines["embedded"], source, doc)
    opa = decide_with(engines["opa"], source, doc)
    assert embedded.allow is expected, (label, embedded.reasons)
    assert (opa.allow, opa.reasons, opa.obligations) == (embedded.allow, embedded.reasons, embedded.obligations)
    assert embedded.input_hash == opa.input_hash and len(embedded.input_hash) == 64
    if not expected:
        assert embedded.reasons, "a deny must say which rule failed"


def test_obligations_are_returned(engines):
    doc = dict(BASE, action="query", params={"epsilon_per_query": 0.2, "min_cohort": 30})
    decision = decide_with(engines["embedded"], BUILTINS["aggregation-only"], doc)
    assert decision.allow and decision.obligations["add_dp_noise"] == {"epsilon": 0.2}
    assert decision.obligations["min_cohort"] == 30


def test_compile_error_denies():
    broken = PolicySource("broken", "v1", "twinspace.policies.broken", "package twinspace.policies.broken\nallow if {")
    decision = decide_with(EmbeddedEngine(SHARED), broken, BASE)
    assert not decision.allow and "does not compile" in decision.reasons[0]


def test_policy_without_decision_denies():
    empty = PolicySource("empty", "v1", "twinspace.policies.empty", "package twinspace.policies.empty\nx := 1\n")
    decision = decide_with(EmbeddedEngine(SHARED), empty, BASE)
    assert not decision.allow and "no decision" in decision.reasons[0]


def test_evaluation_error_denies():
    # Conflicting complete-rule values are an evaluation error in Rego: must deny, not allow.
    rego = ("package twinspace.policies.conflict\nimport rego.v1\n"
            "decision := {\"allow\": true, \"deny\": [], \"obligations\": {}} if input.action == \"read\"\n"
            "decision := {\"allow\": true, \"deny\": [\"x\"], \"obligations\": {}} if input.now > 0\n")
    source = PolicySource("conflict", "v1", "twinspace.policies.conflict", rego)
    decision = decide_with(EmbeddedEngine(SHARED), source, BASE)
    assert not decision.allow


def test_opa_down_or_slow_denies():
    engine = OpaServerEngine(f"http://127.0.0.1:{free_port()}", SHARED, timeout=0.5)
    decision = decide_with(engine, BUILTINS["open-data"], BASE)
    assert not decision.allow and "OPA server unavailable" in decision.reasons[0]


def test_unknown_policy_denies():
    pdp = PolicyDecisionPoint(EmbeddedEngine(SHARED), lambda pid, ver: (_ for _ in ()).throw(KeyError(pid)))
    decision = pdp.decide("nope", BASE)
    assert not decision.allow and decision.reasons


def test_opa_standin_refuses_bad_modules(opa_url):
    from opa_client.opa import OpaClient

    port = int(opa_url.rsplit(":", 1)[1])
    client = OpaClient(host="127.0.0.1", port=port)
    with pytest.raises(Exception):
        client.update_policy_from_string("package x\nallow if {", "bad", rego_compat=False)
    assert client.update_policy_from_string("package y\nimport rego.v1\nallow := true\n", "good", rego_compat=False)
    assert client.query_rule({}, "y", "allow") == {"result": True}
    assert client.update_or_create_data({"limit": 3}, "twinspace/limits")
    assert client.get_data("twinspace/limits")["result"] == {"limit": 3}
