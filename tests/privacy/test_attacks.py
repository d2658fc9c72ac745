"""The attacks of issue #18, replayed against the broker: each one must fail.

- the free oracle: a binary search on refusals recovered exact values at no cost;
- weighted encrypted masks removed the noise;
- a second agreement started a fresh budget (tests/privacy/test_query_api.py, shared budget);
- circuit privacy: the returned ciphertext's noise depended on the computation and the data;
- secure aggregation with a consumer-linked "provider".
"""

from __future__ import annotations

import base64

import numpy as np
import pytest
import tenseal as ts
import tenseal.sealapi as sealapi

from twinspace.privacy import he
from twinspace.client.query import ConsumerKeys, QueryClient, contribute_pending
from twinspace.client.broker import BrokerError, negotiate
from tests.privacy.test_query_api import N, make_table, publish, setup  # noqa: F401  (fixture)
from twinspace.privacy import mechanisms

PROBE_EPSILON = mechanisms.MIN_EPSILON_PER_QUERY
STEPS = 19  # [0, 512) down to a width of 0.001: an exact value if every decision is right


def binary_search(answered) -> tuple[float, float]:
    """The issue's attack: 'answered' means the target's value is below x (the cohort reaches k)."""
    lo, hi = 0.0, 512.0
    for _ in range(STEPS):
        mid = (lo + hi) / 2
        if answered(mid):
            hi = mid
        else:
            lo = mid
    return lo, hi


def test_the_refusal_oracle_recovers_no_value_and_every_probe_is_charged(setup, engine):
    q = QueryClient(setup["consumer"].client, ConsumerKeys.create("bfv"))
    agreement_id, table = setup["agreement"]["id"], setup["table"]
    ids, area = table.column("building_id").to_pylist(), table.column("floor_area").to_numpy()
    k = 5  # the offer's min_cohort: 4 decoys + the target reach it only if the target matches
    recovered, codes = [], set()
    for target in (7, 31):
        decoys = [ids[i] for i in range(k - 1) if i != target]
        truth = float(area[target])
        # against an exact threshold (the old behaviour) the search pins the value down
        lo, hi = binary_search(lambda x: len(decoys) + (truth < x) >= k)
        assert lo < truth <= hi or lo <= truth < hi

        def probe(x: float) -> bool:
            where = [{"column": "building_id", "op": "in", "value": [ids[target], *decoys]},
                     {"column": "floor_area", "op": "lt", "value": x}]
            try:
                q.predicate(agreement_id, where, kind="count", epsilon=PROBE_EPSILON)
                return True
            except BrokerError as err:
                codes.add((err.status, err.code))
                return False

        lo, hi = binary_search(probe)
        recovered.append(lo <= truth < hi)
    assert not any(recovered)                      # P(an exact hit by chance) ≈ 2^-19 per target
    assert codes <= {(403, "query_refused")}       # one code, whatever the reason
    budget = q.budget(agreement_id)                # and no probe was free
    assert budget["queries"] == 2 * STEPS
    assert budget["epsilon_spent"] == pytest.approx(2 * STEPS * PROBE_EPSILON)


def test_overflow_and_tiny_epsilon_are_no_oracle(setup):
    """The second oracle: a tiny epsilon made large cohorts overflow. The minimum epsilon stops it, and
    the overflow check sees only public facts, so small and large cohorts get the same free answer."""
    q = QueryClient(setup["consumer"].client, ConsumerKeys.create("bfv"))
    agreement_id = setup["agreement"]["id"]
    small = [{"column": "building_id", "op": "eq", "value": "B0-0001"}]
    large = [{"column": "storeys", "op": "ge", "value": 0}]
    for where in (small, large):
        with pytest.raises(BrokerError) as err:
            q.predicate(agreement_id, where, kind="sum", column="floor_area", bound=1e9, scale=6)
        assert err.value.code == "sum_may_overflow"
        with pytest.raises(BrokerError) as err:
            q.predicate(agreement_id, where, kind="sum", column="floor_area", bound=500, epsilon=1e-4)
        assert err.value.status == 422
    assert q.budget(agreement_id)["queries"] == 0  # decided before any data was read


def test_a_weighted_mask_gets_no_answer_at_all(setup):
    """A mask weighting one row by 2^19 returned that row within 1.3. Now no encrypted mask is accepted,
    although the offer sets encrypted_masks: true: the error is unbounded (there is no answer)."""
    keys = ConsumerKeys.create("bfv")
    q = QueryClient(setup["consumer"].client, keys)
    mask = np.zeros(N, dtype=np.int64)
    mask[[3, 4]] = [1, 2 ** 19]
    with pytest.raises(BrokerError) as err:
        q._send(setup["agreement"]["id"], {"type": "aggregate", "column": "floor_area", "bound": 500,
                                           "mask": [base64.b64encode(c).decode()
                                                    for c in keys.encrypt_vector(mask)]}, None)
    assert (err.value.status, err.value.code) == (403, "encrypted_mask_not_allowed")
    assert q.budget(setup["agreement"]["id"])["queries"] == 0


def _noise_budget(keys: ConsumerKeys, data: bytes) -> int:
    decryptor = sealapi.Decryptor(keys.context.seal_context().data, keys.context.secret_key().data)
    return decryptor.invariant_noise_budget(ts.bfv_vector_from(keys.context, data).ciphertext()[0])


def test_the_returned_ciphertext_carries_no_trace_of_the_computation(setup):
    """Circuit privacy: the answer is a fresh encryption of the noised value plus a fresh blinding, so
    its noise budget is that of fresh ciphertexts whatever the data and the query (a masked product
    left 82 of 126 bits, which the key holder could read)."""
    keys = ConsumerKeys.create("bfv")
    q = QueryClient(setup["consumer"].client, keys)
    agreement_id = setup["agreement"]["id"]
    fresh = _noise_budget(keys, ts.bfv_vector(keys.context, [1] * keys.slots).serialize())
    seen = set()
    for where in ([{"column": "district", "op": "eq", "value": "Daan"}],
                  [{"column": "storeys", "op": "ge", "value": 10}]):
        answer = q.predicate(agreement_id, where, kind="sum", column="floor_area", bound=500)
        seen.add(_noise_budget(keys, base64.b64decode(answer["results"]["sum"])))
    assert all(fresh - 1 <= b <= fresh for b in seen)
    pc = he.load_public_context(keys.public_context_bytes())
    masked = he.masked_sum(pc, keys.encrypt_mask(np.ones(N)), np.arange(N) * 1000, bound=10**6, epsilon=None)
    assert _noise_budget(keys, masked) < fresh - 20  # why masks are not offered


def test_a_provider_linked_to_the_consumer_is_refused(setup, engine):
    make_org, consumer = setup["make_org"], setup["consumer"]
    # a "provider" run by the consumer's own legal entity, and one controlled by it
    consumer_entity = "TW-BAN-12345678"
    from broker.identity.models import Org
    from broker.storage.db import session_scope

    with session_scope(engine) as s:
        org = s.get(Org, consumer.org_id)
        org.attributes = {**(org.attributes or {}), "legal_entity_id": consumer_entity}
        s.add(org)
    stooge = make_org("provider", org_type="enterprise", attributes={"controlled_by": consumer_entity})
    asset = publish(stooge, make_table(40, seed=9))
    a2 = negotiate(consumer.client, stooge.client, f"urn:twinspace:offer:{asset['id']}:v1:agg", "research")
    q = QueryClient(consumer.client, ConsumerKeys.create("bfv"))
    with pytest.raises(BrokerError) as err:
        q.open_round([setup["agreement"]["id"], a2["id"]], "floor_area", bound=500)
    assert err.value.code == "providers_not_independent"
    # one legal entity cannot register a second provider organisation either
    with pytest.raises(Exception) as err:
        make_org("provider", attributes={"legal_entity_id": "TW-BAN-999"})
        make_org("provider", attributes={"legal_entity_id": "TW-BAN-999"})
    assert getattr(err.value, "code", "") == "legal_entity_exists"


def test_only_the_agreements_that_contributed_are_charged(setup):
    make_org, consumer = setup["make_org"], setup["consumer"]
    providers, tables, agreements = [setup["provider"]], [setup["table"]], [setup["agreement"]]
    for seed in (1, 2):
        p = make_org("provider", org_type="government_agency")
        t = make_table(50, seed=seed)
        a = publish(p, t)
        providers.append(p)
        tables.append(t)
        agreements.append(negotiate(consumer.client, p.client, f"urn:twinspace:offer:{a['id']}:v1:agg", "research"))
    q = QueryClient(consumer.client, ConsumerKeys.create("bfv"))
    rnd = q.open_round([a["id"] for a in agreements], "floor_area", bound=500, min_providers=2)
    assert all(q.budget(a["id"])["epsilon_spent"] == 0 for a in agreements)  # nothing charged at opening
    assets = {a["asset_id"]: t for a, t in zip(agreements, tables)}
    for p in providers[:2]:
        contribute_pending(p.client, assets)
    q.round_result(rnd["round_id"])
    spent = [q.budget(a["id"])["epsilon_spent"] for a in agreements]
    assert spent[0] > 0 and spent[1] > 0 and spent[2] == 0
