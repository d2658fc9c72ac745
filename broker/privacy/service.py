"""Encrypted queries and secure aggregation under agreements. No FastAPI imports.

Every query: the consumer's finalised agreement → a fresh policy decision for the action ``query``
(audited) → the privacy budget reserved (one conditional UPDATE, shared by replicas) → the HE
computation on the asset's de-identified table, outside any transaction → the budget debited and the
query audited (shape, epsilon, result hashes; never ciphertexts or values). Any failure after the
reservation releases it, so a refused or failed query costs nothing.

Parameters come from the policy decision first (obligations ``add_dp_noise.epsilon`` and
``min_cohort``), then the agreement's policy parameters (``epsilon_per_query``, ``min_cohort``,
``privacy_budget``, ``query_columns``, ``encrypted_masks``), then the settings' defaults. Encrypted-mask
queries need ``encrypted_masks: true`` in the agreement's policy parameters (the provider's opt-in).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc_
from sqlmodel import Session, select

from broker.audit import record_event
from broker.contracts import service as contracts
from twinspace.errors import BadRequest, Conflict, Forbidden, NotFound, TwinSpaceError, Unprocessable
from broker.privacy import ledger
from twinspace.privacy import dp, he
from broker.privacy.models import AggregationContribution, AggregationRound
from broker.privacy.schemas import (AggregateQuery, AggregationRoundRequest, ContributionRequest,
                                    EncryptedQueryRequest, HistogramQuery, LinearScoreQuery, PredicateQuery,
                                    b64decode, b64encode, jsonable_query)
from broker.storage.db import session_scope

MAX_GROUPS = 256
MASK_QUERIES = ("aggregate", "histogram")  # and secure aggregation is not one: providers compute locally
OTHER = "(other)"


@dataclass
class Terms:
    """What the policy and the agreement allow this query."""
    agreement: Any
    epsilon: float
    k: int
    budget_total: float
    columns: list[str] | None          # permitted value columns (None: every column)
    predicate_columns: list[str] | None  # columns a plaintext predicate / group-by may use
    policy_version: str
    input_hash: str


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _term(value: Any, name: str, low: float, high: float) -> float:
    """A numeric privacy term of the agreement; a malformed one refuses the query (fail closed)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise Forbidden(f"The agreement's {name} is not a number in [{low:g}, {high:g}]; no query is run.",
                        code="invalid_privacy_terms")
    return float(value)


def _authorize(session: Session, settings, principal: Any, agreement_id: str, requested_epsilon: float | None,
               query_type: str) -> Terms:
    from broker.policy.access import decide_access
    from broker.policy.service import require_allow
    from broker.transfer.dataplane import merge_obligations

    agreement = contracts.require_active_agreement(session, agreement_id, principal.org_id)
    decision = require_allow(decide_access(
        session, settings, contracts.policy_agreement_view(agreement), principal, "query",
        request={"purpose": agreement.purpose, "scenario": agreement.scenario, "query_type": query_type,
                 **({"epsilon": requested_epsilon} if requested_epsilon is not None else {})}))
    params = dict(agreement.policy_params or {})
    obligations = decision.obligations or {}
    noise = obligations.get("add_dp_noise") if isinstance(obligations.get("add_dp_noise"), dict) else {}
    ceiling = _term(noise.get("epsilon") or params.get("epsilon_per_query") or settings.privacy_epsilon_per_query,
                    "epsilon_per_query", 1e-6, 10)
    epsilon = ceiling if requested_epsilon is None else float(requested_epsilon)
    if epsilon > ceiling + 1e-12:
        raise Forbidden(f"This agreement allows at most epsilon {ceiling:g} per query.",
                        code="epsilon_above_policy", extra={"max_epsilon": ceiling})
    k = int(_term(obligations.get("min_cohort") or params.get("min_cohort") or settings.privacy_min_cohort,
                  "min_cohort", 1, 1e9))
    if query_type in MASK_QUERIES and params.get("encrypted_masks") is not True:
        # The compute side cannot check that an encrypted mask is 0/1, and a weighted mask would defeat
        # the noise (docs/privacy-queries.md), so the provider must opt in for honest-but-curious consumers.
        raise Forbidden("This agreement does not allow encrypted-mask queries; use a predicate or linear score.",
                        code="encrypted_mask_not_allowed")
    declared = params.get("query_columns")
    return Terms(agreement=agreement, epsilon=dp.check_epsilon(epsilon), k=max(1, k),
                 budget_total=_term(params.get("privacy_budget") or settings.privacy_budget_default,
                                    "privacy_budget", 1e-6, 1e6),
                 columns=merge_obligations(obligations, agreement.obligations)["columns"],
                 predicate_columns=[str(c) for c in declared] if isinstance(declared, list) else None,
                 policy_version=decision.policy_version, input_hash=decision.input_hash)


def _column(table: pa.Table, terms: Terms, name: str, *, predicate: bool = False) -> pa.ChunkedArray:
    allowed = terms.predicate_columns if predicate and terms.predicate_columns is not None else terms.columns
    if name not in table.column_names or (allowed is not None and name not in allowed):
        raise Unprocessable(f"Column {name!r} is not available under this agreement.", code="column_not_permitted")
    return table.column(name)


def _numeric(table: pa.Table, terms: Terms, name: str, scheme: str, scale: int) -> np.ndarray:
    """A numeric column as numpy (nulls → 0, which contribute nothing); BFV in fixed point 10^scale."""
    column = _column(table, terms, name)
    if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
        raise Unprocessable(f"Column {name!r} is not numeric.", code="column_not_numeric")
    values = column.to_numpy(zero_copy_only=False).astype(float)
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    if scheme == "bfv":
        return np.rint(values * 10 ** scale).astype(np.int64)
    return values


def _where(table: pa.Table, terms: Terms, conditions) -> np.ndarray:
    ops = {"eq": pc_.equal, "ne": pc_.not_equal, "lt": pc_.less, "le": pc_.less_equal, "gt": pc_.greater,
           "ge": pc_.greater_equal}
    selected = np.ones(table.num_rows, dtype=bool)
    for c in conditions:
        column = _column(table, terms, c.column, predicate=True)
        try:
            if c.op == "in":
                hit = pc_.is_in(column, value_set=pa.array(c.value).cast(column.type))
            else:
                hit = ops[c.op](column, pa.scalar(c.value).cast(column.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            raise Unprocessable(f"The value for {c.column!r} does not match the column's type.",
                                code="invalid_predicate") from None
        selected &= pc_.fill_null(hit, False).to_numpy(zero_copy_only=False)
    return selected


def _codes(column: pa.ChunkedArray, labels: list[str]) -> np.ndarray:
    """Row → index of its label in ``labels``; rows matching none (and nulls) → len(labels)."""
    text = pc_.cast(column, pa.string()).to_pylist()
    index = {label: i for i, label in enumerate(labels)}
    return np.array([index.get(v, len(labels)) if v is not None else len(labels) for v in text], dtype=np.int64)


# --------------------------------------------------------------------------- compute (pure, no session)
def _scaled(scheme: str, scale: int, names: list[str]) -> dict[str, Any]:
    """Which results are in BFV fixed point (the consumer divides them by 10^scale)."""
    return {"scale": scale, "scaled": names} if scheme == "bfv" and scale else {"scale": 0, "scaled": []}


def _compute(ctx: he.PublicContext, query, table: pa.Table, terms: Terms) -> tuple[dict[str, bytes], dict[str, Any]]:
    """Run one query: (named result ciphertexts, public facts about them)."""
    scheme = ctx.scheme
    n = table.num_rows
    if isinstance(query, AggregateQuery):
        mask = [b64decode(c, "mask chunk") for c in query.mask]
        values = _numeric(table, terms, query.column, scheme, query.scale)
        eps = terms.epsilon / len(query.outputs)  # sequential composition over the outputs
        columns = {"sum": (values, he.scaled_bound(query.bound, scheme, query.scale)), "count": (np.ones(n, dtype=np.int64), 1)}
        names = list(dict.fromkeys(query.outputs))
        cts = he.masked_sums(ctx, mask, [columns[k][0] for k in names], [columns[k][1] for k in names], epsilon=eps)
        out = dict(zip(names, cts))
        return out, {**_scaled(scheme, query.scale, ["sum"] if "sum" in out else []), "epsilon_per_output": eps}
    if isinstance(query, HistogramQuery):
        mask = [b64decode(c, "mask chunk") for c in query.mask]
        labels = list(dict.fromkeys(query.categories)) + [OTHER]
        codes = _codes(_column(table, terms, query.column, predicate=True), labels[:-1])
        bins = he.histogram(ctx, mask, codes, len(labels), epsilon=terms.epsilon)  # parallel composition
        return dict(zip(labels, bins)), {"labels": labels}
    if isinstance(query, LinearScoreQuery):
        return _linear_scores(ctx, query, table, terms)
    if isinstance(query, PredicateQuery):
        selected = _where(table, terms, query.where)
        values = (_numeric(table, terms, query.column, scheme, query.scale) if query.kind == "sum"
                  else np.zeros(n, dtype=np.int64))
        ct = he.predicate_aggregate(ctx, values, selected, k=terms.k, epsilon=terms.epsilon,
                                    bound=he.scaled_bound(query.bound, scheme, query.scale), kind=query.kind)
        return {query.kind: ct}, _scaled(scheme, query.scale, ["sum"] if query.kind == "sum" else [])
    raise BadRequest("Unknown query type.", code="invalid_query")  # pragma: no cover - pydantic refuses first


def _linear_scores(ctx: he.PublicContext, query: LinearScoreQuery, table: pa.Table,
                   terms: Terms) -> tuple[dict[str, bytes], dict[str, Any]]:
    """w · Σ_rows clip(x): the per-group feature sums get DP noise *in plaintext* before the encrypted
    weights touch them, so whatever weights the consumer chose, it learns a post-processing of an
    epsilon-DP release (L1 sensitivity = bound × features; groups are disjoint: parallel composition)."""
    scheme = ctx.scheme
    weights = b64decode(query.weights, "weights ciphertext")
    bound = he.scaled_bound(query.bound, scheme, query.scale)
    x = np.stack([np.clip(_numeric(table, terms, f, scheme, query.scale), -bound, bound) for f in query.features],
                 axis=1)
    if query.group_by:
        column = _column(table, terms, query.group_by, predicate=True)
        keys = pc_.cast(column, pa.string()).to_pylist()
        groups: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            groups.setdefault("(null)" if key is None else key, []).append(i)
        if len(groups) > MAX_GROUPS:
            raise Unprocessable(f"group_by yields more than {MAX_GROUPS} groups.", code="too_many_groups")
    else:
        groups = {"total": list(range(table.num_rows))}
    sensitivity = bound * len(query.features)
    out, suppressed = {}, 0
    for label in sorted(groups):
        rows = groups[label]
        if len(rows) < terms.k:
            suppressed += 1  # too small a cohort: not released (its label is not named either)
            continue
        sums = x[rows].sum(axis=0)
        if scheme == "bfv":
            noisy = sums.astype(np.int64) + dp.discrete_laplace_noise(sensitivity, terms.epsilon, size=len(sums))
        else:
            noisy = sums + dp.laplace_noise(sensitivity, terms.epsilon, size=len(sums))
        out[label] = he.linear_score(ctx, weights, noisy)
    if not out:
        raise Forbidden("Every group selects too few rows to be released.", code="cohort_too_small")
    return out, {**_scaled(scheme, query.scale, list(out)), "groups_suppressed": suppressed}


# --------------------------------------------------------------------------- encrypted queries
def run_query(runtime, principal: Any, body: EncryptedQueryRequest) -> dict[str, Any]:
    """Decide, reserve budget, compute, debit and audit one encrypted query (see the module docstring)."""
    from broker.catalog import vault
    from broker.policy.service import record_usage

    ctx = he.load_public_context(b64decode(body.context, "encryption context"))
    query_id = "q_" + secrets.token_hex(10)
    with session_scope(runtime.engine) as session:
        terms = _authorize(session, runtime.settings, principal, body.agreement_id, body.epsilon, body.query.type)
        agreement = terms.agreement
        table = vault.load_table(session, agreement.asset_id, agreement.asset_version, settings=runtime.settings)
        ledger.ensure_budget(session, agreement.id, terms.budget_total)
        reservation = ledger.reserve(session, agreement.id, terms.epsilon, actor=principal.org_id)
    try:
        results, facts = _compute(ctx, body.query, table, terms)
    except BaseException as exc:
        with session_scope(runtime.engine) as session:
            ledger.release(session, reservation)
            code = exc.code if isinstance(exc, TwinSpaceError) else "query_failed"
            record_event(session, "privacy.query", actor=principal.org_id, outcome="deny",
                         asset_id=agreement.asset_id, agreement_id=agreement.id,
                         details={"query_id": query_id, "query": jsonable_query(body.query), "code": code,
                                  "epsilon_debited": 0})
        raise
    hashes = {name: _sha(ct) for name, ct in results.items()}
    with session_scope(runtime.engine) as session:
        ledger.commit(session, reservation, actor=principal.org_id, details={"query_id": query_id})
        record_usage(session, agreement.id, 0)
        record_event(session, "privacy.query", actor=principal.org_id, asset_id=agreement.asset_id,
                     agreement_id=agreement.id,
                     details={"query_id": query_id, "scheme": ctx.params.name, "query": jsonable_query(body.query),
                              "rows": table.num_rows, "epsilon": terms.epsilon, "k": terms.k,
                              "context_sha256": _sha(ctx.raw), "result_sha256": hashes,
                              "policy_version": terms.policy_version, "input_hash": terms.input_hash})
        budget = budget_view(session, agreement.id)
    return {"query_id": query_id, "agreement_id": agreement.id, "type": body.query.type, "scheme": ctx.params.name,
            "results": {name: b64encode(ct) for name, ct in results.items()}, **facts,
            "epsilon": terms.epsilon, "min_cohort": terms.k, "budget": budget,
            "noise": {"mechanism": "discrete_laplace" if ctx.scheme == "bfv" else "laplace"}}


def budget_view(session: Session, agreement_id: str) -> dict[str, Any]:
    from broker.privacy.models import PrivacyBudget

    row = session.get(PrivacyBudget, agreement_id)
    if row is None:
        return {"agreement_id": agreement_id, "epsilon_total": None, "epsilon_spent": 0.0, "epsilon_remaining": None,
                "queries": 0}
    session.refresh(row)
    return {"agreement_id": agreement_id, "epsilon_total": row.epsilon_total, "epsilon_spent": row.epsilon_spent,
            "epsilon_remaining": max(0.0, row.epsilon_total - row.epsilon_spent - row.epsilon_reserved),
            "queries": row.queries}


def get_budget(session: Session, settings, principal: Any, agreement_id: str) -> dict[str, Any]:
    """The agreement's ledger, for its parties and for auditors/operators."""
    agreement = contracts.get_agreement(session, agreement_id, principal)
    view = budget_view(session, agreement.id)
    if view["epsilon_total"] is None:
        total = _term((agreement.policy_params or {}).get("privacy_budget") or settings.privacy_budget_default,
                      "privacy_budget", 1e-6, 1e6)
        view.update(epsilon_total=total, epsilon_remaining=total)
    return view


# --------------------------------------------------------------------------- secure aggregation
def open_round(runtime, principal: Any, body: AggregationRoundRequest) -> dict[str, Any]:
    """Check and debit every named agreement at once (all or nothing), then open the round."""
    raw = b64decode(body.context, "encryption context")
    ctx = he.load_public_context(raw)
    ids = list(dict.fromkeys(body.agreement_ids))
    if len(ids) != len(body.agreement_ids):
        raise BadRequest("An agreement is named twice.", code="duplicate_agreement")
    min_providers = body.min_providers or len(ids)
    if min_providers > len(ids):
        raise BadRequest("min_providers exceeds the number of agreements.", code="invalid_min_providers")
    round_id = "agg_" + secrets.token_hex(10)
    with session_scope(runtime.engine) as session:
        providers, epsilons = set(), []
        for agreement_id in ids:
            terms = _authorize(session, runtime.settings, principal, agreement_id, body.epsilon, "secure_aggregation")
            if terms.columns is not None and body.column not in terms.columns:
                raise Unprocessable(f"Column {body.column!r} is not available under {agreement_id}.",
                                    code="column_not_permitted")
            providers.add(terms.agreement.provider_id)
            epsilons.append(terms.epsilon)
            ledger.ensure_budget(session, agreement_id, terms.budget_total)
            reservation = ledger.reserve(session, agreement_id, terms.epsilon, actor=principal.org_id)
            ledger.commit(session, reservation, actor=principal.org_id, details={"round_id": round_id})
        if len(providers) < min_providers:
            raise Forbidden("Secure aggregation needs agreements with at least min_providers distinct providers.",
                            code="too_few_providers")
        epsilon = min(epsilons)  # every provider noises with the strictest epsilon
        spec = {"column": body.column, "bound": body.bound, "scale": body.scale,
                "statistics": ["sum", "count"], "epsilon": epsilon}
        session.add(AggregationRound(id=round_id, consumer_id=principal.org_id, scheme=ctx.scheme, context=raw,
                                     context_sha256=_sha(raw), agreement_ids=ids, spec=spec,
                                     min_providers=min_providers, epsilon=epsilon))
        record_event(session, "privacy.aggregation_opened", actor=principal.org_id,
                     details={"round_id": round_id, "agreements": ids, "min_providers": min_providers, **spec})
        session.flush()
        return round_view(session, session.get(AggregationRound, round_id), principal)


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
        ctx = he.load_public_context(r.context)
        r.result = he.secure_aggregate([p.ciphertext for p in parts], r.min_providers, ctx=ctx)
        r.status = "released"
        r.released_at = datetime.now(timezone.utc)
        session.add(r)
        session.flush()
        record_event(session, "privacy.aggregation_released", actor=principal.org_id,
                     details={"round_id": round_id, "providers": len(parts), "result_sha256": _sha(r.result)})
    return {**round_view(session, r, principal), "result": b64encode(r.result)}
