"""Routes: the policy library (everyone reads; operators upload), dry-run decisions, scenario approvals."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, Body, Depends
from starlette.concurrency import run_in_threadpool
from pydantic import Field
from sqlmodel import Session

from broker.api.deps import ALL_ROLES, Principal, db_session, get_runtime, require_roles
from broker.policy import service
from broker.runtime import Runtime
from broker.schemas import StrictModel

log = logging.getLogger(__name__)


@asynccontextmanager
async def load_library_at_startup(app):
    """Load and compile the built-in library when the broker starts (once per process and
    configuration), so a broken library is reported at once and no request pays for compiling."""
    runtime = getattr(app.state, "runtime", None)
    if runtime is not None:
        problems = await run_in_threadpool(service.warm, runtime.settings)
        for problem in problems:
            log.error("policy library: %s", problem)
    yield


router = APIRouter(prefix="/policies", tags=["policies"], lifespan=load_library_at_startup)


class PolicyUpload(StrictModel):
    rego: str = Field(min_length=20, max_length=200_000)
    description: str = Field("", max_length=500)


class EvaluateRequest(StrictModel):
    input: dict[str, Any]
    version: str | None = Field(None, max_length=40)


class ScenarioApprovalIn(StrictModel):
    asset_id: str = Field(min_length=3, max_length=64)
    consumer_id: str = Field(min_length=3, max_length=64)
    scenario: str = Field(min_length=1, max_length=100)


@router.get("")
def list_policies(_: Principal = require_roles(*ALL_ROLES), session: Session = db_session,
                  runtime: Runtime = Depends(get_runtime)) -> list[dict]:
    return service.list_policies(session, runtime.settings)


@router.get("/{policy_id}")
def get_policy(policy_id: str, version: str | None = None, _: Principal = require_roles(*ALL_ROLES),
               session: Session = db_session, runtime: Runtime = Depends(get_runtime)) -> dict:
    """The Rego source of a policy version, so every party can read the rules that bind it."""
    source = service.resolve_source(session, runtime.settings, policy_id, version)
    return {"policy_id": source.policy_id, "version": source.version, "package": source.package,
            "sha256": source.sha256, "rego": source.rego}


@router.put("/{policy_id}", status_code=201)
def upload_policy(policy_id: str, body: PolicyUpload, principal: Principal = require_roles("operator"),
                  session: Session = db_session, runtime: Runtime = Depends(get_runtime)) -> dict:
    """Upload a new version (compiled against the library first; refused if it does not compile)."""
    row = service.upload_policy(session, runtime.settings, policy_id, body.rego, actor=principal.org_id,
                                description=body.description)
    from broker.policy.access import policy_changed

    policy_changed(session, policy_id)
    return {"policy_id": row.policy_id, "version": f"v{row.version}", "sha256": row.sha256}


@router.post("/{policy_id}/evaluate")
def evaluate(policy_id: str, body: EvaluateRequest, explain: bool = False,
             principal: Principal = require_roles("operator", "auditor"),
             session: Session = db_session, runtime: Runtime = Depends(get_runtime)) -> dict:
    """Dry-run a decision on a given input (for policy authors and auditors); audited like any decision.
    With ``?explain=true`` the answer names the rule (check) behind each reason."""
    decision = service.decide(session, runtime.settings, policy_id, body.input, version=body.version,
                              actor=principal.org_id)
    out = decision.as_dict()
    if explain:
        out["explanation"] = service.explain_decision(session, runtime.settings, policy_id, body.input,
                                                      version=body.version)
    return out


@router.post("/approvals", status_code=201)
def approve_scenario(body: ScenarioApprovalIn = Body(...), principal: Principal = require_roles("provider"),
                     session: Session = db_session) -> dict:
    """A provider approves a consumer's declared use scenario for one of its assets."""
    service.approve_scenario(session, asset_id=body.asset_id, consumer_id=body.consumer_id, scenario=body.scenario,
                             provider_id=principal.org_id)
    return {"asset_id": body.asset_id, "consumer_id": body.consumer_id, "scenario": body.scenario}
