"""``require_active_agreement`` (used by the data plane and the encrypted-query engine) and audit events."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import Session, select

from broker.audit.models import AuditEntry
from broker.contracts import lookups, service
from broker.contracts.models import Agreement
from twinspace.errors import Conflict, Forbidden, Gone, NotFound, ServiceUnavailable
from tests.contracts.helpers import offer_iri, publish, table_bytes


def _call(engine, agreement_id, consumer_id):
    with Session(engine) as s:
        return service.require_active_agreement(s, agreement_id, consumer_id)


def test_require_active_agreement(world, engine, monkeypatch):
    agreement = world.agreement()
    ok = _call(engine, agreement["id"], world.consumer.org_id)
    assert ok.status == "FINALIZED" and ok.asset_version == 1
    cases = [("agr_missing", world.consumer.org_id, NotFound, "agreement_not_found"),
             (agreement["id"], world.consumer2.org_id, Forbidden, "not_agreement_consumer")]
    for agreement_id, consumer, exc, code in cases:
        with pytest.raises(exc) as err:
            _call(engine, agreement_id, consumer)
        assert err.value.code == code
    real_now = lookups.now
    monkeypatch.setattr(lookups, "now", lambda: real_now() + timedelta(days=31))
    with pytest.raises(Gone) as err:
        _call(engine, agreement["id"], world.consumer.org_id)
    assert err.value.code == "agreement_expired"
    monkeypatch.setattr(lookups, "now", lambda: real_now() - timedelta(days=1))
    with pytest.raises(Forbidden) as err:
        _call(engine, agreement["id"], world.consumer.org_id)
    assert err.value.code == "agreement_not_yet_valid"
    monkeypatch.setattr(lookups, "now", real_now)
    # a row edited behind the signature's back is not trusted
    with Session(engine) as s:
        row = s.get(Agreement, agreement["id"])
        row.obligations = {}
        s.add(row)
        s.commit()
    with pytest.raises(ServiceUnavailable) as err:
        _call(engine, agreement["id"], world.consumer.org_id)
    assert err.value.code == "agreement_integrity"


def test_unfinished_withdrawn_and_changed(world, engine):
    c, p = world.consumer.client, world.provider.client
    pid = c.contract_request(offer_iri(world.asset), "research")["providerPid"]
    p.contract_offer(pid)
    c.contract_accept(pid)
    p.contract_agree(pid)
    pending = c.contract_get(pid)["agreement"]["id"]
    with pytest.raises(Conflict) as err:
        _call(engine, pending, world.consumer.org_id)
    assert err.value.code == "agreement_not_finalized"
    done = world.agreement()
    publish(world.provider, table_bytes(10, offset=900), asset_id=world.asset["id"])
    with pytest.raises(Conflict) as err:
        _call(engine, done["id"], world.consumer.org_id)
    assert err.value.code == "asset_version_changed"
    # finalising a negotiation over the old version is refused too
    c.contract_verify(pid)
    with pytest.raises(Exception) as exc_info:
        p.contract_finalize(pid)
    assert exc_info.value.code == "asset_version_changed"
    p.catalog_withdraw(world.asset["id"])
    with pytest.raises(Gone) as err:
        _call(engine, done["id"], world.consumer.org_id)
    assert err.value.code == "asset_withdrawn"


def test_every_step_is_audited(world, engine):
    agreement = world.agreement()
    with Session(engine) as s:
        entries = list(s.exec(select(AuditEntry).where(AuditEntry.kind.like("contract.%"))))
    kinds = [e.kind for e in entries]
    for kind in ("contract.requested", "contract.offered", "contract.accepted", "contract.agreed",
                 "contract.verified", "contract.finalized", "contract.countersigned"):
        assert kind in kinds, kind
    assert kinds.count("contract.signed") == 2
    assert all(e.actor for e in entries)
    assert any(e.agreement_id == agreement["id"] and e.kind == "contract.countersigned" for e in entries)
