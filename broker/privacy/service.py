"""Encrypted queries under agreements (secure aggregation: ``aggregation.py``). No FastAPI imports.

Every query: the consumer's finalised agreement → a fresh policy decision for ``query`` (audited) →
every data-independent check (schema, ciphertexts, parameters, overflow from public facts), refused
with its own code and free of charge → the cost reserved on the (consumer, asset) account → the
computation, which reads data → the cost charged and the query audited, **whether it was answered
or refused** (a refusal after reading data is ``query_refused`` whatever the reason, so refusals are
no oracle). If the charge cannot be recorded the reservation is released and nothing is returned.

Mechanisms, sensitivities and the neighbouring relation: ``twinspace/privacy/mechanisms.py``; the
ledger: ``broker/privacy/ledger.py``; the privacy model: ``docs/privacy-queries.md``.

Parameters come from the policy decision first (obligations ``add_dp_noise.epsilon`` and
``min_cohort``), then the agreement's policy parameters (``epsilon_per_query``, ``min_cohort``,
``privacy_budget``, ``query_columns``), then the settings' defaults.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc_
from sqlmodel import Session

from broker.contracts import service as contracts
from broker.privacy import ledger
from broker.privacy.schemas import (EncryptedQueryRequest, LinearScoreQuery, PredicateQuery, b64decode, b64encode,
                                    jsonable_query)
from broker.storage.db import session_scope
from twinspace.errors import BadRequest, Forbidden, TwinSpaceError, Unprocessable
from twinspace.privacy import he, mechanisms
from twinspace.privacy.mechanisms import QueryRefused

MASK_QUERIES = ("aggregate", "histogram")  # refused: an encrypted mask cannot be proven 0/1 (see the docs)


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
    measure: str = "pure"


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
    if query_type in MASK_QUERIES:
        # A weighted or crafted mask ciphertext defeats the DP noise and TenSEAL offers no noise flooding,
        # so no offer can turn these on (docs/privacy-queries.md, "Encrypted masks").
        raise Forbidden("Encrypted-mask queries are not offered; use a predicate or a linear score.",
                        code="encrypted_mask_not_allowed")
    declared = params.get("query_columns")
    measure = params.get("privacy_measure", "pure")
    if measure not in mechanisms.MEASURES:
        raise Forbidden(f"The agreement's privacy_measure is not one of {', '.join(mechanisms.MEASURES)}; "
                        "no query is run.", code="invalid_privacy_terms")
    return Terms(agreement=agreement, epsilon=mechanisms.check_epsilon(epsilon), k=max(1, k), measure=measure,
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


def _numeric(table: pa.Table, terms: Terms, name: str) -> pa.ChunkedArray:
    column = _column(table, terms, name)
    if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
        raise Unprocessable(f"Column {name!r} is not numeric.", code="column_not_numeric")
    return column


def _fixed(column: pa.ChunkedArray, scale: int) -> np.ndarray:
    """Reads data: the column in fixed point 10^scale (nulls and non-finite values → 0)."""
    return mechanisms.to_fixed_point(column.to_numpy(zero_copy_only=False).astype(float), scale)


_OPS = {"eq": pc_.equal, "ne": pc_.not_equal, "lt": pc_.less, "le": pc_.less_equal, "gt": pc_.greater,
        "ge": pc_.greater_equal}


def _conditions(table: pa.Table, terms: Terms, conditions) -> list[tuple[pa.ChunkedArray, str, Any]]:
    """Data-independent: every predicate column is permitted and every value casts to its type."""
    out = []
    for c in conditions:
        column = _column(table, terms, c.column, predicate=True)
        try:
            value = (pa.array(c.value).cast(column.type) if c.op == "in" else pa.scalar(c.value).cast(column.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            raise Unprocessable(f"The value for {c.column!r} does not match the column's type.",
                                code="invalid_predicate") from None
        out.append((column, c.op, value))
    return out


def _where(n: int, conditions: list[tuple[pa.ChunkedArray, str, Any]]) -> np.ndarray:
    """Reads data: the rows the predicate selects."""
    selected = np.ones(n, dtype=bool)
    for column, op, value in conditions:
        hit = pc_.is_in(column, value_set=value) if op == "in" else _OPS[op](column, value)
        selected &= pc_.fill_null(hit, False).to_numpy(zero_copy_only=False)
    return selected


def _codes(column: pa.ChunkedArray, labels: list[str]) -> np.ndarray:
    """Row → index of its label in ``labels``; rows matching none (and nulls) → len(labels)."""
    text = pc_.cast(column, pa.string()).to_pylist()
    index = {label: i for i, label in enumerate(labels)}
    return np.array([index.get(v, len(labels)) if v is not None else len(labels) for v in text], dtype=np.int64)


def _scaled(scale: int, names: list[str]) -> dict[str, Any]:
    """Which results are in fixed point (the consumer divides them by 10^scale), for both schemes."""
    return {"scale": scale, "scaled": names} if scale else {"scale": 0, "scaled": []}


# --------------------------------------------------------------------------- plan (no data) + compute
def _plan(ctx: he.PublicContext, query, table: pa.Table, terms: Terms) -> Callable[[], tuple[dict, dict]]:
    """Every check that depends only on public facts (schema, row count, the request), with its own code
    and no charge; returns the computation, which reads data and may then only fail as ``query_refused``."""
    n, measure = table.num_rows, terms.measure
    if isinstance(query, PredicateQuery):
        conditions = _conditions(table, terms, query.where)
        value_column = _numeric(table, terms, query.column) if query.kind == "sum" else None
        bound = mechanisms.fixed_bound(query.bound, query.scale) if query.kind == "sum" else 1
        he.check_encodable(ctx, n, bound, terms.epsilon)

        def run() -> tuple[dict, dict]:
            selected = _where(n, conditions)
            values = _fixed(value_column, query.scale) if value_column is not None else np.zeros(n, np.int64)
            released = mechanisms.release_predicate(values, selected, kind=query.kind, bound=bound, k=terms.k,
                                                    cost=terms.epsilon, measure=measure)
            return ({query.kind: he.encrypt_result(ctx, released)},
                    _scaled(query.scale if query.kind == "sum" else 0, ["sum"] if query.kind == "sum" else []))
        return run
    if isinstance(query, LinearScoreQuery):
        weights = b64decode(query.weights, "weights ciphertext")
        he.check_weights(ctx, weights)
        columns = [_numeric(table, terms, f) for f in query.features]
        bound = mechanisms.fixed_bound(query.bound, query.scale)
        he.check_encodable(ctx, n, bound * len(columns), terms.epsilon)
        group_column = _column(table, terms, query.group_by, predicate=True) if query.group_by else None
        labels = list(dict.fromkeys(query.groups or []))
        if group_column is None and n < terms.k:  # n is public: a data-independent refusal
            raise Forbidden("The asset has fewer rows than the agreement's minimum cohort.", code="cohort_too_small")

        def run() -> tuple[dict, dict]:
            x = np.stack([_fixed(c, query.scale) for c in columns], axis=1)
            codes = _codes(group_column, labels) if group_column is not None else None
            released = mechanisms.release_group_sums(x, codes, len(labels), bound=bound, k=terms.k,
                                                     cost=terms.epsilon, measure=measure)
            names = labels if group_column is not None else ["total"]
            out = {names[g]: he.linear_score(ctx, weights, sums) for g, sums in sorted(released.items())}
            return out, _scaled(query.scale, list(out))
        return run
    raise BadRequest("Unknown query type.", code="invalid_query")  # pragma: no cover - pydantic refuses first


# --------------------------------------------------------------------------- encrypted queries
def run_query(runtime, principal: Any, body: EncryptedQueryRequest) -> dict[str, Any]:
    """Decide, check, reserve, compute, charge and audit one encrypted query (see the module docstring)."""
    from broker.catalog import vault
    from broker.policy.service import record_usage

    ctx = he.load_public_context(b64decode(body.context, "encryption context"))
    query_id = "q_" + secrets.token_hex(10)
    with session_scope(runtime.engine) as session:
        terms = _authorize(session, runtime.settings, principal, body.agreement_id, body.epsilon, body.query.type)
        agreement = terms.agreement
        table = vault.load_table(session, agreement.asset_id, agreement.asset_version, settings=runtime.settings)
    compute = _plan(ctx, body.query, table, terms)
    key = ledger.open_account(runtime.engine, agreement.consumer_id, agreement.asset_id, terms.budget_total,
                              terms.measure)
    reservation = ledger.reserve(runtime.engine, key, terms.epsilon)
    results, facts, reason = None, {}, None
    try:
        results, facts = compute()  # reads data: from here on every outcome is charged
    except TwinSpaceError as exc:
        reason = getattr(exc, "reason", None) or exc.code
    except Exception as exc:  # noqa: BLE001 - e.g. an encoder error on a data-dependent value
        reason = type(exc).__name__
    hashes = {name: _sha(ct) for name, ct in (results or {}).items()}
    details = {"query_id": query_id, "scheme": ctx.params.name, "query": jsonable_query(body.query),
               "rows": table.num_rows, "epsilon": terms.epsilon, "k": terms.k, "account": key,
               "context_sha256": _sha(ctx.raw), "policy_version": terms.policy_version,
               "input_hash": terms.input_hash}
    if results is None:  # the reason stays in the audit log (for the provider and auditors), not the answer
        details.update(outcome="refused", reason=reason)
    else:
        details.update(result_sha256=hashes)
    ledger.commit(runtime.engine, reservation, actor=principal.org_id, events=[
        {"kind": "privacy.query", "outcome": "deny" if results is None else "allow", "asset_id": agreement.asset_id,
         "agreement_id": agreement.id, "details": details}])
    if results is None:
        raise QueryRefused()
    with session_scope(runtime.engine) as session:
        record_usage(session, agreement.id, 0)
        budget = budget_view(session, agreement)
    return {"query_id": query_id, "agreement_id": agreement.id, "type": body.query.type, "scheme": ctx.params.name,
            "results": {name: b64encode(ct) for name, ct in results.items()}, **facts,
            "epsilon": terms.epsilon, "min_cohort": terms.k, "budget": budget,
            "noise": {"mechanism": "discrete_laplace" if terms.measure == "pure" else "discrete_gaussian",
                      "neighbouring": mechanisms.NEIGHBOURING, "source": "opendp"}}


def budget_view(session: Session, agreement: Any) -> dict[str, Any]:
    """The (consumer, asset) account an agreement draws from (shared with the consumer's other agreements
    on that asset)."""
    key = ledger.account_key(agreement.consumer_id, agreement.asset_id)
    view = ledger.view(session, key) or {"account": key, "measure": "pure", "epsilon_total": None,
                                         "epsilon_spent": 0.0, "epsilon_remaining": None, "queries": 0}
    return {"agreement_id": agreement.id, "asset_id": agreement.asset_id, **view}


def get_budget(session: Session, settings, principal: Any, agreement_id: str) -> dict[str, Any]:
    """The account behind an agreement, for its parties and for auditors/operators."""
    agreement = contracts.get_agreement(session, agreement_id, principal)
    view = budget_view(session, agreement)
    if view["epsilon_total"] is None:
        total = _term((agreement.policy_params or {}).get("privacy_budget") or settings.privacy_budget_default,
                      "privacy_budget", 1e-6, 1e6)
        view.update(epsilon_total=total, epsilon_remaining=total)
    return view
