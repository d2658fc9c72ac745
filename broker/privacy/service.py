"""Encrypted queries under agreements, decided and charged here, computed at the provider's connector
(compute-to-data; secure aggregation: ``aggregation.py``). No FastAPI imports.

The broker never sees a row or an unnoised aggregate: it holds no copy of the data. Every query:
the consumer's finalised agreement → a fresh policy decision for ``query`` (audited) → the cost
reserved on the (consumer, asset) account → ``POST {data_endpoint}/compute/queries`` with a
``twinspace-compute+jwt`` signed by the broker for that connector, bound to the request body by its
SHA-256 → the connector plans (every data-independent check: schema, ciphertexts, parameters,
overflow from public facts), then computes on its own rows, adds the DP noise and encrypts under the
consumer's public context → the broker verifies the provider's signed receipt, charges and audits
the query **whether it was answered or refused** (a refusal after reading data is ``query_refused``
whatever the reason, so refusals are no oracle) and relays the ciphertexts. A plan failure (a 4xx
problem from the connector, with its own code) and an unreachable connector release the reservation:
nothing is charged. If the charge cannot be recorded the reservation is released and nothing is
returned. The broker keeps only hashes of the ciphertexts it relays.

Mechanisms, sensitivities and the neighbouring relation: ``twinspace/privacy/mechanisms.py``; the
computation: ``connectors/node/compute.py``; the ledger: ``broker/privacy/ledger.py``; the privacy
model: ``docs/privacy-queries.md``.

Parameters come from the policy decision first (obligations ``add_dp_noise.epsilon`` and
``min_cohort``), then the agreement's policy parameters (``epsilon_per_query``, ``min_cohort``,
``privacy_budget``, ``query_columns``), then the settings' defaults.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from typing import Any

from sqlmodel import Session

from broker.contracts import service as contracts
from broker.privacy import ledger
from broker.privacy.schemas import EncryptedQueryRequest, b64decode, b64encode, jsonable_query, wire_query
from broker.storage.db import session_scope
from twinspace.crypto import public_key_from_b64
from twinspace.dataplane import (COMPUTE, RECEIPT, body_sha256, merge_obligations, message_header, normalise_endpoint,
                                 sign_message, verify_message)
from twinspace.errors import (BadGateway, BadRequest, Conflict, Forbidden, NotFound, PayloadTooLarge,
                              TooManyRequests, TwinSpaceError, Unprocessable)
from twinspace.privacy import dp_terms
from twinspace.privacy.dp_terms import QueryRefused

log = logging.getLogger("twinspace.privacy")
MASK_QUERIES = ("aggregate", "histogram")  # refused: an encrypted mask cannot be proven 0/1 (see the docs)
COMPUTE_PATH = "/compute/queries"
COMPUTE_TIMEOUT_SECONDS = 120.0  # HE on a large table takes longer than an ordinary connector call


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

    def wire(self) -> dict[str, Any]:
        """What the connector is told (signed, via the body hash): no budget, no agreement internals."""
        return {"epsilon": self.epsilon, "k": self.k, "columns": self.columns,
                "predicate_columns": self.predicate_columns, "measure": self.measure}


def homomorphic():
    """``twinspace.privacy.he`` (numpy, TenSEAL), imported by the first encrypted query or aggregation
    round rather than at start-up."""
    from twinspace.privacy import he

    return he


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
    if measure not in dp_terms.MEASURES:
        raise Forbidden(f"The agreement's privacy_measure is not one of {', '.join(dp_terms.MEASURES)}; "
                        "no query is run.", code="invalid_privacy_terms")
    return Terms(agreement=agreement, epsilon=dp_terms.check_epsilon(epsilon), k=max(1, k), measure=measure,
                 budget_total=_term(params.get("privacy_budget") or settings.privacy_budget_default,
                                    "privacy_budget", 1e-6, 1e6),
                 columns=merge_obligations(obligations, agreement.obligations)["columns"],
                 predicate_columns=[str(c) for c in declared] if isinstance(declared, list) else None,
                 policy_version=decision.policy_version, input_hash=decision.input_hash)


# --------------------------------------------------------------------------- the connector call
_RELAYED = {400: BadRequest, 403: Forbidden, 404: NotFound, 409: Conflict, 413: PayloadTooLarge,
            422: Unprocessable, 429: TooManyRequests}
_PROBLEM_KEYS = {"type", "title", "status", "detail", "code", "instance"}


def _connector_failed(detail: str = "The provider's connector could not compute the query; nothing was charged.",
                      code: str = "connector_failed") -> BadGateway:
    return BadGateway(detail, code=code)


def _relay_problem(status: int, response) -> TwinSpaceError:
    """A plan failure at the connector (data-independent, not charged) as the same problem for the consumer.
    A 401 is the broker's message being refused, not the consumer's fault: a 502."""
    try:
        problem = response.json()
    except ValueError:
        problem = {}
    problem = problem if isinstance(problem, dict) else {}
    code = problem.get("code") if isinstance(problem.get("code"), str) and len(problem["code"]) <= 64 else None
    kind = _RELAYED.get(status)
    if kind is None or code is None:
        log.warning("connector refused a compute request: %s %s", status, code)
        return _connector_failed("The provider's connector refused the query request; nothing was charged.",
                                 code="connector_refused")
    detail = problem.get("detail") if isinstance(problem.get("detail"), str) else "The query was refused."
    extra = {k: v for k, v in problem.items() if k not in _PROBLEM_KEYS and isinstance(k, str)
             and (v is None or isinstance(v, (bool, int, float, str)))}
    return kind(detail[:500], code=code, extra=extra)


def _post_compute(settings, endpoint: str, payload: dict[str, Any]):
    """``POST {endpoint}/compute/queries`` through the broker's one guarded way out."""
    from broker.catalog import netguard

    timeout = float(getattr(settings, "privacy_compute_timeout_seconds", None) or COMPUTE_TIMEOUT_SECONDS)
    return netguard.request(settings, "POST", endpoint, COMPUTE_PATH, json=payload, timeout=timeout)


def _verify_receipt(session: Session, settings, receipt: Any, *, provider_id: str,
                    expect: dict[str, Any]) -> dict[str, Any]:
    """The provider's signed receipt: an active key of the asset's provider, kind receipt, for this
    broker, naming this query, agreement, consumer and asset. ``BadGateway`` otherwise."""
    from broker.identity.service import active_key

    try:
        if not isinstance(receipt, str):
            raise ValueError
        org, key = active_key(session, message_header(receipt)["kid"])
        if org.id != provider_id:
            raise ValueError
        claims = verify_message(receipt, public_key_from_b64(key.public_key), RECEIPT, audience=settings.issuer,
                                issuer=provider_id)
    except (TwinSpaceError, ValueError, TypeError, KeyError):
        raise _connector_failed("The provider's connector returned no valid receipt; nothing was charged.",
                                code="invalid_receipt") from None
    if claims.get("kind") != "query" or any(claims.get(k) != v for k, v in expect.items()):
        raise _connector_failed("The provider's receipt is for another query; nothing was charged.",
                                code="invalid_receipt")
    rows = claims.get("rows")
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 0:
        raise _connector_failed("The provider's receipt names no row count; nothing was charged.",
                                code="invalid_receipt")
    return claims


def _answer(data: Any) -> tuple[str, dict[str, bytes], dict[str, Any]]:
    """The connector's 200: its outcome, the ciphertexts (decoded, only to hash them) and the public facts."""
    if not isinstance(data, dict) or data.get("outcome") not in ("answered", "refused"):
        raise _connector_failed()
    if data["outcome"] == "refused":
        return "refused", {}, {}
    results, facts = data.get("results"), data.get("facts") or {}
    if not isinstance(results, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in results.items()):
        raise _connector_failed()
    scale, scaled = facts.get("scale", 0), facts.get("scaled", [])
    if (not isinstance(facts, dict) or set(facts) - {"scale", "scaled"} or isinstance(scale, bool)
            or not isinstance(scale, int) or not isinstance(scaled, list)
            or not all(isinstance(n, str) and n in results for n in scaled)):
        raise _connector_failed()
    try:
        decoded = {name: b64decode(ct, "result ciphertext") for name, ct in results.items()}
    except TwinSpaceError:
        raise _connector_failed() from None
    return "answered", decoded, {"scale": scale, "scaled": scaled}


# --------------------------------------------------------------------------- encrypted queries
def run_query(runtime, principal: Any, body: EncryptedQueryRequest) -> dict[str, Any]:
    """Decide, reserve, have the provider's connector compute, verify, charge and audit one encrypted
    query (see the module docstring)."""
    from broker.catalog.models import Asset
    from broker.policy.service import record_usage

    settings = runtime.settings
    ctx = homomorphic().load_public_context(b64decode(body.context, "encryption context"))  # public; free 400s
    query_id = "q_" + secrets.token_hex(10)
    with session_scope(runtime.engine) as session:
        terms = _authorize(session, settings, principal, body.agreement_id, body.epsilon, body.query.type)
        agreement = terms.agreement
        asset = session.get(Asset, (agreement.asset_id, agreement.asset_version))
        if asset is None or not asset.data_endpoint:
            raise Conflict("The asset is not served by a connector; no query can be computed.",
                           code="no_connector")
        endpoint = normalise_endpoint(asset.data_endpoint)
    asset_ref = {"id": agreement.asset_id, "version": agreement.asset_version,
                 "content_hash": agreement.content_hash}
    request = {"query_id": query_id, "agreement_id": agreement.id, "consumer_id": agreement.consumer_id,
               "asset": asset_ref, "context": body.context, "query": wire_query(body.query), "terms": terms.wire()}
    token = sign_message(runtime.broker_key, COMPUTE, issuer=settings.issuer, audience=endpoint, claims={
        "query_id": query_id, "agr": agreement.id, "sub": agreement.consumer_id, "asset": asset_ref,
        "body_sha256": body_sha256(request)})

    key = ledger.open_account(runtime.engine, agreement.consumer_id, agreement.asset_id, terms.budget_total,
                              terms.measure)
    reservation = ledger.reserve(runtime.engine, key, terms.epsilon)
    try:
        response = _post_compute(settings, endpoint, {"token": token, "request": request})
        if 400 <= response.status_code < 500:
            raise _relay_problem(response.status_code, response)  # the plan refused: nothing read, nothing charged
        if response.status_code != 200:
            raise _connector_failed()
        try:
            data = response.json()
        except ValueError:
            raise _connector_failed() from None
        outcome, results, facts = _answer(data)
        hashes = {name: _sha(ct) for name, ct in results.items()}
        with session_scope(runtime.engine) as session:
            receipt = _verify_receipt(session, settings, data.get("receipt"), provider_id=agreement.provider_id,
                                      expect={"query_id": query_id, "agr": agreement.id, "sub": agreement.consumer_id,
                                              "asset": asset_ref, "outcome": outcome,
                                              "result_sha256": hashes if outcome == "answered" else None})
    except BaseException:
        ledger.release(runtime.engine, reservation)
        raise

    details = {"query_id": query_id, "scheme": ctx.params.name, "query": jsonable_query(body.query),
               "rows": receipt["rows"], "epsilon": terms.epsilon, "k": terms.k, "account": key,
               "context_sha256": _sha(ctx.raw), "policy_version": terms.policy_version,
               "input_hash": terms.input_hash, "connector": endpoint, "receipt": data["receipt"],
               "receipt_id": receipt["jti"]}
    if outcome == "refused":  # the reason stays in the audit log (for the provider and auditors), not the answer
        reason = receipt.get("reason")
        details.update(outcome="refused", reason=reason if isinstance(reason, str) else "refused")
    else:
        details.update(result_sha256=hashes)
    ledger.commit(runtime.engine, reservation, actor=principal.org_id, events=[
        {"kind": "privacy.query", "outcome": "deny" if outcome == "refused" else "allow",
         "asset_id": agreement.asset_id, "agreement_id": agreement.id, "details": details}])
    if outcome == "refused":
        raise QueryRefused()
    with session_scope(runtime.engine) as session:
        record_usage(session, agreement.id, 0)
        budget = budget_view(session, agreement)
    return {"query_id": query_id, "agreement_id": agreement.id, "type": body.query.type, "scheme": ctx.params.name,
            "results": {name: b64encode(ct) for name, ct in results.items()}, **facts,
            "epsilon": terms.epsilon, "min_cohort": terms.k, "budget": budget,
            "noise": {"mechanism": "discrete_laplace" if terms.measure == "pure" else "discrete_gaussian",
                      "neighbouring": dp_terms.NEIGHBOURING, "source": "opendp"}}


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
