"""Policy administration through the API, audited decisions, usage counters on both databases."""

from __future__ import annotations

import threading

from sqlmodel import Session, select

from broker.audit.models import AuditEntry
from broker.policy import service
from broker.runtime import Runtime
from broker.settings import Settings
from broker.storage.db import session_scope
from tests.policy.cases import BASE

GOOD = """package twinspace.policies.night_only
import rego.v1
import data.twinspace.lib
deny_for(inp) := {"only at night" | inp.request.hour < 20} | lib.binding_denied(inp)
decide(inp) := lib.decide(inp, deny_for(inp), {"log_level": "full"})
decision := decide(input)
"""


def test_operator_uploads_versions_and_everyone_reads(client, make_org):
    operator, consumer = make_org("operator"), make_org("consumer")
    r = client.put("/policies/night-only", json={"rego": GOOD}, headers=consumer.headers())
    assert r.status_code == 403
    r = client.put("/policies/night-only", json={"rego": GOOD, "description": "night"}, headers=operator.headers())
    assert r.status_code == 201 and r.json()["version"] == "v1"
    r = client.put("/policies/night-only", json={"rego": GOOD.replace("< 20", "< 21")}, headers=operator.headers())
    assert r.json()["version"] == "v2"
    listed = {p["policy_id"]: p for p in client.get("/policies", headers=consumer.headers()).json()}
    assert listed["night-only"]["version"] == "v2" and listed["purpose-restricted"]["builtin"]
    v1 = client.get("/policies/night-only?version=v1", headers=consumer.headers()).json()
    assert "< 20" in v1["rego"] and v1["package"].endswith("_v1")
    # Both versions stay resolvable and decide differently.
    doc = dict(BASE, request={"hour": 20})
    d1 = client.post("/policies/night-only/evaluate", json={"input": doc, "version": "v1"}, headers=operator.headers())
    d2 = client.post("/policies/night-only/evaluate", json={"input": doc}, headers=operator.headers())
    assert d1.json()["allow"] is True and d2.json()["allow"] is False
    assert d2.json()["reasons"] == ["only at night"] and d2.json()["policy_version"] == "v2"


def test_bad_uploads_are_refused_and_nothing_stored(client, make_org, engine):
    operator = make_org("operator")
    cases = [
        ("broken", "package twinspace.policies.broken\nallow if {", "policy_compile_error"),
        ("wrong-pkg", GOOD, "wrong_package"),
        ("purpose-restricted", GOOD.replace("night_only", "purpose_restricted"), "builtin_policy"),
        ("Bad_Id", GOOD, "invalid_policy_id"),
        ("no-decision", "package twinspace.policies.no_decision\nimport rego.v1\nx := 1\n", "policy_without_decision"),
    ]
    for policy_id, rego, code in cases:
        r = client.put(f"/policies/{policy_id}", json={"rego": rego}, headers=operator.headers())
        assert r.status_code in (400, 409), (policy_id, r.text)
        assert r.json()["code"] == code, (policy_id, r.json())
    with Session(engine) as s:
        assert service.list_policies(s, Settings()) and all(p["builtin"] for p in service.list_policies(s, Settings()))


def test_decisions_are_audited_with_reasons_and_input_hash(settings, engine, make_org):
    with session_scope(engine) as session:
        decision = service.decide(session, settings, "purpose-restricted", dict(BASE, request={"purpose": "ads"}),
                                  actor="c1", asset_id="a1", agreement_id="ag1")
    assert not decision.allow
    with Session(engine) as s:
        entry = s.exec(select(AuditEntry).where(AuditEntry.kind == "policy.decision")).all()[-1]
    assert entry.outcome == "deny" and entry.agreement_id == "ag1"
    assert decision.input_hash in entry.body and "purpose" in entry.body


def test_unknown_policy_is_a_deny(settings, engine):
    with session_scope(engine) as session:
        decision = service.decide(session, settings, "no-such-policy", BASE, actor="c1")
    assert not decision.allow and "no policy" in decision.reasons[0]


def _hammer(settings: Settings, threads: int = 4, per_thread: int = 25) -> dict:
    runtime = Runtime.start(settings)

    def work():
        for _ in range(per_thread):
            with session_scope(runtime.engine) as session:
                service.record_usage(session, "ag-x", rows=3)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    with session_scope(runtime.engine) as session:
        usage = service.get_usage(session, "ag-x")
    runtime.engine.dispose()
    return usage


def test_usage_counters_never_lose_increments(tmp_path, database_url):
    usage = _hammer(Settings(data_dir=tmp_path / "u", database_url=database_url))
    assert usage == {"accesses": 100, "rows": 300}


def test_policy_evaluate_needs_operator_or_auditor(client, make_org):
    provider = make_org("provider")
    r = client.post("/policies/open-data/evaluate", json={"input": BASE}, headers=provider.headers())
    assert r.status_code == 403
    auditor = make_org("auditor")
    r = client.post("/policies/open-data/evaluate", json={"input": BASE}, headers=auditor.headers())
    assert r.status_code == 200 and r.json()["allow"] is True


def test_opa_engine_configured_through_settings(tmp_path):
    """TWINSPACE_OPA_URL switches the broker to the OPA path; same decision as embedded."""
    from twinspace.testing.opa_standin import create_opa_standin
    from tests.serving import serve_app

    with serve_app(create_opa_standin()) as url:
        settings = Settings(data_dir=tmp_path / "o", opa_url=url)
        runtime = Runtime.start(settings)
        with session_scope(runtime.engine) as session:
            opa = service.decide(session, settings, "aggregation-only", dict(BASE, action="query"), actor="c1")
        assert service.engine_for(settings).name == "opa"
        embedded_settings = Settings(data_dir=tmp_path / "o")
        with session_scope(runtime.engine) as session:
            embedded = service.decide(session, embedded_settings, "aggregation-only", dict(BASE, action="query"),
                                      actor="c1")
        same = lambda d: {k: v for k, v in d.as_dict().items() if k != "decision_id"}  # noqa: E731 - one per decision
        assert same(opa) == same(embedded) and opa.allow and opa.decision_id != embedded.decision_id
