"""Encrypted-query routes (thin). Bodies up to ``max_query_body_bytes`` (the /queries prefix); the
HE work runs in a worker thread (and worker processes for large tables), never on the event loop."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from sqlmodel import Session

from broker.api.deps import ALL_ROLES, Principal, db_session, get_runtime, require_roles
from broker.privacy import aggregation, service
from broker.privacy.schemas import AggregationRoundRequest, ContributionRequest, EncryptedQueryRequest

router = APIRouter(prefix="/queries", tags=["privacy-preserving queries"])


@router.post("")
async def encrypted_query(body: EncryptedQueryRequest, request: Request,
                          principal: Principal = require_roles("consumer")) -> dict[str, Any]:
    """Run an encrypted predicate query or linear score under an agreement (encrypted masks are refused).
    Returns fresh ciphertexts of DP-noised values; charges the (consumer, asset) budget, refusals included."""
    runtime = get_runtime(request)
    return await run_in_threadpool(service.run_query, runtime, principal, body)


@router.get("/budgets/{agreement_id}")
def budget(agreement_id: str, request: Request, principal: Principal = require_roles(*ALL_ROLES),
           session: Session = db_session) -> dict[str, Any]:
    """The (consumer, asset) privacy budget the agreement draws from (account, epsilon total, spent, remaining, queries)."""
    return service.get_budget(session, get_runtime(request).settings, principal, agreement_id)


@router.post("/aggregations", status_code=201)
async def open_aggregation(body: AggregationRoundRequest, request: Request,
                           principal: Principal = require_roles("consumer")) -> dict[str, Any]:
    """Open a secure-aggregation round over independent providers' assets (contributors are charged at release)."""
    return await run_in_threadpool(aggregation.open_round, get_runtime(request), principal, body)


@router.get("/aggregations/pending")
def pending_aggregations(principal: Principal = require_roles("provider"),
                         session: Session = db_session) -> dict[str, Any]:
    """Open rounds waiting for this provider's encrypted statistics (with the consumer's public context)."""
    return {"items": aggregation.pending_rounds(session, principal)}


@router.get("/aggregations/{round_id}")
def get_aggregation(round_id: str, principal: Principal = require_roles(*ALL_ROLES),
                    session: Session = db_session) -> dict[str, Any]:
    return aggregation.get_round(session, principal, round_id)


@router.post("/aggregations/{round_id}/contributions", status_code=201)
def contribute(round_id: str, body: ContributionRequest, principal: Principal = require_roles("provider"),
               session: Session = db_session) -> dict[str, Any]:
    """A provider's statistics, encrypted under the consumer's public context on the provider's machine."""
    return aggregation.contribute(session, principal, round_id, body)


@router.post("/aggregations/{round_id}/result")
def aggregation_result(round_id: str, principal: Principal = require_roles("consumer"),
                       session: Session = db_session) -> dict[str, Any]:
    """The encrypted sum of the contributions (released once, when enough providers contributed)."""
    return aggregation.release(session, principal, round_id)
