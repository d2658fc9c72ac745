"""Secure aggregation across independent providers: the consumer opens a round over several
agreements, each provider's connector contributes its own noised statistics encrypted under the
consumer's public context, and the broker releases only the sum of enough distinct providers, once,
charging only the agreements that contributed. No FastAPI imports. docs/privacy-queries.md.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timezone
from typing import Any

from sqlmodel import Session, select

from broker.audit import record_event
from broker.privacy import ledger
from broker.privacy.models import AggregationContribution, AggregationRound
from broker.privacy.schemas import AggregationRoundRequest, ContributionRequest, b64decode, b64encode
from broker.privacy.service import _authorize, _sha, contracts, homomorphic
from broker.storage.db import session_scope
from twinspace.errors import BadRequest, Conflict, Forbidden, NotFound, TooManyRequests, Unprocessable


def open_round(runtime, principal: Any, body: AggregationRoundRequest) -> dict[str, Any]:
    """Check every named agreement and the providers' independence, then open the round. Nothing is
    charged yet: at release, only the agreements that contributed are (``release``)."""
    raw = b64decode(body.context, "encryption context")
    ctx = homomorphic().load_public_context(raw)
    ids = list(dict.fromkeys(body.agreement_ids))
    if len(ids) != len(body.agreement_ids):
        raise BadRequest("An agreement is named twice.", code="duplicate_agreement")
    min_providers = body.min_providers or len(ids)
    if min_providers > len(ids):
        raise BadRequest("min_providers exceeds the number of agreements.", code="invalid_min_providers")
    round_id = "agg_" + secrets.token_hex(10)
    with session_scope(runtime.engine) as session:
        providers, epsilons, accounts = set(), [], {}
        for agreement_id in ids:
            terms = _authorize(session, runtime.settings, principal, agreement_id, body.epsilon, "secure_aggregation")
            if terms.columns is not None and body.column not in terms.columns:
                raise Unprocessable(f"Column {body.column!r} is not available under {agreement_id}.",
                                    code="column_not_permitted")
            if terms.agreement.asset_id in accounts:
                raise BadRequest("Two agreements name the same asset.", code="duplicate_asset")
            accounts[terms.agreement.asset_id] = (agreement_id, terms)
            if terms.measure != next(iter(accounts.values()))[1].measure:
                raise Forbidden("The agreements of a round must use one privacy measure.", code="invalid_privacy_terms")
            providers.add(terms.agreement.provider_id)
            epsilons.append(terms.epsilon)
        if len(providers) < min_providers:
            raise Forbidden("Secure aggregation needs agreements with at least min_providers distinct providers.",
                            code="too_few_providers")
        _check_independent(session, principal.org_id, sorted(providers))
    for asset_id, (agreement_id, terms) in accounts.items():  # after the decisions' transaction: lock order
        key = ledger.open_account(runtime.engine, principal.org_id, asset_id, terms.budget_total, terms.measure)
        if ledger.remaining(runtime.engine, key) + 1e-9 < min(epsilons):
            raise TooManyRequests(f"The privacy budget for the asset of {agreement_id} is exhausted.",
                                  code="privacy_budget_exhausted")
    with session_scope(runtime.engine) as session:
        epsilon = min(epsilons)  # every provider noises with the strictest epsilon
        measure = next(iter(accounts.values()))[1].measure
        spec = {"column": body.column, "bound": body.bound, "scale": body.scale,
                "statistics": ["sum", "count"], "epsilon": epsilon, "measure": measure}
        session.add(AggregationRound(id=round_id, consumer_id=principal.org_id, scheme=ctx.scheme, context=raw,
                                     context_sha256=_sha(raw), agreement_ids=ids, spec=spec,
                                     min_providers=min_providers, epsilon=epsilon))
        record_event(session, "privacy.aggregation_opened", actor=principal.org_id,
                     details={"round_id": round_id, "agreements": ids, "min_providers": min_providers, **spec})
        session.flush()
        return round_view(session, session.get(AggregationRound, round_id), principal)


def _entity(org: Any) -> tuple[str, str | None]:
    """(legal entity, controlling entity) of an organisation, from the attributes checked at onboarding
    (``broker/identity/service.py``); an organisation without them is its own entity."""
    attrs = org.attributes or {}
    return str(attrs.get("legal_entity_id") or org.id), (str(attrs["controlled_by"]) if attrs.get("controlled_by")
                                                        else None)


def _check_independent(session: Session, consumer_id: str, provider_ids: list[str]) -> None:
    """Providers of a round must be distinct legal entities, none the consumer or linked to it: a
    consumer-controlled "provider" would turn the sum into one real provider's release."""
    from broker.identity.models import Org

    consumer = _entity(session.get(Org, consumer_id))
    seen: set[str] = set()
    for provider_id in provider_ids:
        entity, parent = _entity(session.get(Org, provider_id))
        linked = {entity, parent} & {consumer[0], consumer[1]} - {None}
        if entity in seen or linked:
            raise Forbidden("The round's providers must be distinct legal entities, none linked to the consumer.",
                            code="providers_not_independent")
        seen.add(entity)


def _round(session: Session, round_id: str, principal: Any) -> AggregationRound:
    r = session.get(AggregationRound, round_id)
    if r is None:
        raise NotFound(f"No aggregation round {round_id}.", code="round_not_found")
    if principal.role in contracts.READ_ALL_ROLES or r.consumer_id == principal.org_id:
        return r
    if principal.role == "provider" and _my_agreements(session, r, principal):
        return r
    raise NotFound(f"No aggregation round {round_id}.", code="round_not_found")


def _my_agreements(session: Session, r: AggregationRound, principal: Any) -> list[Any]:
    from broker.contracts.models import Agreement

    return [a for a in (session.get(Agreement, i) for i in r.agreement_ids)
            if a is not None and a.provider_id == principal.org_id]


def _contributions(session: Session, round_id: str) -> list[AggregationContribution]:
    return list(session.exec(select(AggregationContribution).where(AggregationContribution.round_id == round_id)
                             .order_by(AggregationContribution.agreement_id)).all())


def round_view(session: Session, r: AggregationRound, principal: Any) -> dict[str, Any]:
    parts = _contributions(session, r.id)
    view = {"round_id": r.id, "consumer_id": r.consumer_id, "scheme": r.scheme, "spec": r.spec,
            "agreements": r.agreement_ids, "min_providers": r.min_providers, "status": r.status,
            "contributions": len(parts)}
    if principal.role == "provider" and principal.org_id != r.consumer_id:
        mine = _my_agreements(session, r, principal)
        done = {c.agreement_id for c in parts}
        view["to_contribute"] = [{"agreement_id": a.id, "asset_id": a.asset_id, "asset_version": a.asset_version}
                                 for a in mine if a.id not in done]
        view["context"] = b64encode(r.context)
    return view


def get_round(session: Session, principal: Any, round_id: str) -> dict[str, Any]:
    return round_view(session, _round(session, round_id, principal), principal)


def pending_rounds(session: Session, principal: Any) -> list[dict[str, Any]]:
    """Open rounds naming an agreement of this provider that it has not contributed to yet."""
    from broker.contracts.models import Agreement

    mine = set(session.exec(select(Agreement.id).where(Agreement.provider_id == principal.org_id)).all())
    rounds = session.exec(select(AggregationRound).where(AggregationRound.status == "open")
                          .order_by(AggregationRound.created_at)).all()
    views = [round_view(session, r, principal) for r in rounds if mine.intersection(r.agreement_ids)]
    return [v for v in views if v["to_contribute"]]


def contribute(session: Session, principal: Any, round_id: str, body: ContributionRequest) -> dict[str, Any]:
    """A provider's encrypted statistics for one of its agreements in the round (once each)."""
    from broker.contracts.models import Agreement

    r = _round(session, round_id, principal)
    if r.status != "open":
        raise Conflict("The round was already released; no further contributions.", code="round_closed")
    agreement = session.get(Agreement, body.agreement_id)
    if body.agreement_id not in r.agreement_ids or agreement is None or agreement.provider_id != principal.org_id:
        raise Forbidden("Contribute only for your own agreements named in the round.", code="wrong_party")
    if agreement.status != "FINALIZED":
        raise Conflict(f"The agreement is {agreement.status}; it cannot contribute.", code="agreement_not_finalized")
    if session.get(AggregationContribution, (round_id, body.agreement_id)) is not None:
        raise Conflict("This agreement already contributed to the round.", code="already_contributed")
    he = homomorphic()
    ctx = he.load_public_context(r.context)
    data = b64decode(body.ciphertext, "ciphertext")
    he.check_ciphertext(ctx, data, "contribution")  # right parameters, right size: refused now, not at release
    session.add(AggregationContribution(round_id=round_id, agreement_id=body.agreement_id,
                                        provider_id=principal.org_id, ciphertext=data, sha256=_sha(data)))
    session.flush()
    record_event(session, "privacy.aggregation_contributed", actor=principal.org_id, asset_id=agreement.asset_id,
                 agreement_id=agreement.id, details={"round_id": round_id, "sha256": _sha(data)})
    return round_view(session, r, principal)


def release(session: Session, principal: Any, round_id: str) -> dict[str, Any]:
    """The consumer's result: the sum of at least ``min_providers`` distinct contributions, computed and
    frozen once (a later, larger sum would let the consumer subtract and isolate one provider)."""
    r = _round(session, round_id, principal)
    if r.consumer_id != principal.org_id:
        raise Forbidden("Only the round's consumer obtains its result.", code="wrong_party")
    if r.status == "open":
        parts = _contributions(session, round_id)
        if len({p.provider_id for p in parts}) < r.min_providers:
            raise Conflict(f"{len(parts)} of at least {r.min_providers} providers have contributed; try later.",
                           code="round_incomplete", extra={"contributions": len(parts)})
        from broker.contracts.models import Agreement

        he = homomorphic()
        ctx = he.load_public_context(r.context)
        result = he.secure_aggregate([p.ciphertext for p in parts], r.min_providers, ctx=ctx)
        costs = {}
        for p in parts:  # only the agreements that contributed released anything: only they are charged
            a = session.get(Agreement, p.agreement_id)
            key = ledger.account_key(a.consumer_id, a.asset_id)
            costs[key] = costs.get(key, 0.0) + r.epsilon
        ledger.charge_many_in(session, costs, actor=principal.org_id, details={"round_id": round_id})
        r.result = result
        r.status = "released"
        r.released_at = datetime.now(timezone.utc)
        session.add(r)
        session.flush()
        record_event(session, "privacy.aggregation_released", actor=principal.org_id,
                     details={"round_id": round_id, "providers": len(parts), "result_sha256": _sha(r.result)})
    return {**round_view(session, r, principal), "result": b64encode(r.result)}

