"""Policy administration and audited decisions, independent of HTTP."""

from __future__ import annotations

from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import func, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from broker.audit import record_event
from broker.errors import BadRequest, Conflict, Forbidden, NotFound
from broker.policy.engine import (EmbeddedEngine, OpaServerEngine, PolicyDecisionPoint, PolicyError, Decision)
from broker.policy.library import (DEFAULT_DIR, POLICY_ID, PolicySource, declared_package, load_library,
                                   package_for, versioned)
from broker.policy.models import PolicyVersion, ScenarioApproval, UsageCounter
from broker.settings import Settings


def policies_dir(settings: Settings) -> Path:
    return Path(settings.policies_dir) if settings.policies_dir else DEFAULT_DIR


def builtin_policies(settings: Settings) -> dict[str, PolicySource]:
    return load_library(policies_dir(settings))[1]


def latest_upload(session: Session, policy_id: str) -> PolicyVersion | None:
    return session.exec(select(PolicyVersion).where(PolicyVersion.policy_id == policy_id)
                        .order_by(PolicyVersion.version.desc())).first()


def resolve_source(session: Session, settings: Settings, policy_id: str, version: str | None) -> PolicySource:
    builtin = builtin_policies(settings).get(policy_id)
    if builtin is not None and version in (None, builtin.version):
        return builtin
    if version is None:
        row = latest_upload(session, policy_id)
    else:
        number = version.removeprefix("v")
        row = session.get(PolicyVersion, (policy_id, int(number))) if number.isdigit() else None
    if row is None:
        raise NotFound(f"no policy {policy_id!r}" + (f" version {version}" if version else ""), code="policy_not_found")
    return versioned(policy_id, row.version, row.rego)


def policy_exists(session: Session, policy_id: str, settings: Settings | None = None) -> bool:
    from broker.settings import get_settings

    settings = settings or get_settings()
    return policy_id in builtin_policies(settings) or latest_upload(session, policy_id) is not None


@lru_cache(maxsize=16)
def _engine(policies: Path, opa_url: str | None, timeout: float):
    shared, _ = load_library(policies)
    return OpaServerEngine(opa_url, shared, timeout=timeout) if opa_url else EmbeddedEngine(shared)


def engine_for(settings: Settings):
    """One engine per configuration, so compiled policies are reused across requests."""
    return _engine(policies_dir(settings), settings.opa_url, settings.opa_timeout_seconds)


def pdp(session: Session, settings: Settings) -> PolicyDecisionPoint:
    return PolicyDecisionPoint(engine_for(settings), lambda pid, ver: resolve_source(session, settings, pid, ver))


def decide(session: Session, settings: Settings, policy_id: str, input_doc: dict[str, Any], *,
           version: str | None = None, actor: str | None, asset_id: str | None = None,
           agreement_id: str | None = None) -> Decision:
    """Decide and append the decision (allow or deny, reasons, version, input hash) to the audit log."""
    decision = pdp(session, settings).decide(policy_id, input_doc, version)
    record_event(session, "policy.decision", actor=actor, outcome="allow" if decision.allow else "deny",
                 asset_id=asset_id, agreement_id=agreement_id,
                 details={"policy_id": policy_id, "policy_version": decision.policy_version,
                          "action": input_doc.get("action"), "reasons": decision.reasons,
                          "obligations": decision.obligations, "input_hash": decision.input_hash,
                          "engine": engine_for(settings).name})
    return decision


def require_allow(decision: Decision) -> Decision:
    if not decision.allow:
        raise Forbidden("Denied by policy: " + "; ".join(decision.reasons), code="policy_denied",
                        extra={"reasons": decision.reasons, "policy_id": decision.policy_id,
                               "policy_version": decision.policy_version})
    return decision


def upload_policy(session: Session, settings: Settings, policy_id: str, rego: str, *, actor: str,
                  description: str = "") -> PolicyVersion:
    """Store a new version after compiling it with the library; built-in ids are reserved."""
    if not POLICY_ID.match(policy_id):
        raise BadRequest("policy ids are lowercase letters, digits and dashes (2-63).", code="invalid_policy_id")
    if policy_id in builtin_policies(settings):
        raise Conflict(f"{policy_id!r} is a built-in policy; upload under another id.", code="builtin_policy")
    if declared_package(rego) != package_for(policy_id):
        raise BadRequest(f"the module must declare `package {package_for(policy_id)}`.", code="wrong_package")
    previous = latest_upload(session, policy_id)
    number = (previous.version if previous else 0) + 1
    source = versioned(policy_id, number, rego)
    shared, _ = load_library(policies_dir(settings))
    try:
        interpreter, bundle = EmbeddedEngine(shared).compile(source)
        interpreter.set_input({"action": "read", "now": 0, "consumer": {}, "asset": {}, "usage": {}, "request": {}})
        document = interpreter.query_bundle(bundle)
    except PolicyError as exc:
        raise BadRequest(str(exc), code="policy_compile_error") from None
    expressions = document.results[0].expressions if document.results else []
    if not expressions or not isinstance(expressions[0], dict):
        raise BadRequest("the policy must define `decision := {\"allow\": ..., \"deny\": ..., \"obligations\": ...}`.",
                         code="policy_without_decision")
    row = PolicyVersion(policy_id=policy_id, version=number, rego=rego, sha256=source.sha256,
                        description=description, created_by=actor)
    session.add(row)
    try:
        session.flush()
    except IntegrityError:
        raise Conflict("another upload of this policy happened at the same time; retry.", code="policy_conflict") from None
    record_event(session, "policy.uploaded", actor=actor,
                 details={"policy_id": policy_id, "version": f"v{number}", "sha256": source.sha256})
    return row


def list_policies(session: Session, settings: Settings) -> list[dict[str, Any]]:
    items = [{"policy_id": s.policy_id, "version": s.version, "builtin": True, "sha256": s.sha256}
             for s in builtin_policies(settings).values()]
    latest = session.exec(select(PolicyVersion.policy_id, func.max(PolicyVersion.version))
                          .group_by(PolicyVersion.policy_id)).all()
    for policy_id, version in latest:
        row = session.get(PolicyVersion, (policy_id, version))
        items.append({"policy_id": policy_id, "version": f"v{version}", "builtin": False, "sha256": row.sha256})
    return sorted(items, key=lambda i: i["policy_id"])


# --- usage counters ------------------------------------------------------------------------------

def get_usage(session: Session, agreement_id: str) -> dict[str, int]:
    row = session.get(UsageCounter, agreement_id)
    return {"accesses": row.accesses, "rows": row.rows} if row else {"accesses": 0, "rows": 0}


def record_usage(session: Session, agreement_id: str, rows: int) -> None:
    """Atomic increment in SQL (never read-modify-write), so concurrent replicas never lose counts."""
    now = datetime.now(timezone.utc)
    result = session.execute(update(UsageCounter).where(UsageCounter.agreement_id == agreement_id)
                             .values(accesses=UsageCounter.accesses + 1, rows=UsageCounter.rows + rows, updated_at=now))
    if result.rowcount == 0:
        try:
            with session.begin_nested():
                session.add(UsageCounter(agreement_id=agreement_id, accesses=1, rows=rows, updated_at=now))
        except IntegrityError:  # another replica created it first
            session.execute(update(UsageCounter).where(UsageCounter.agreement_id == agreement_id)
                            .values(accesses=UsageCounter.accesses + 1, rows=UsageCounter.rows + rows))


# --- scenario approvals ----------------------------------------------------------------------------

def approve_scenario(session: Session, *, asset_id: str, consumer_id: str, scenario: str, provider_id: str) -> None:
    from broker.catalog.service import get_asset

    asset = get_asset(session, asset_id)
    if asset.provider_id != provider_id:
        raise Forbidden("Only the asset's provider approves scenarios for it.", code="not_asset_provider")
    if session.get(ScenarioApproval, (asset_id, consumer_id, scenario)) is None:
        session.add(ScenarioApproval(asset_id=asset_id, consumer_id=consumer_id, scenario=scenario,
                                     approved_by=provider_id))
        record_event(session, "policy.scenario_approved", actor=provider_id, asset_id=asset_id,
                     details={"consumer_id": consumer_id, "scenario": scenario})


def approvals_for(session: Session, asset_id: str, consumer_id: str) -> list[str]:
    return list(session.exec(select(ScenarioApproval.scenario).where(ScenarioApproval.asset_id == asset_id,
                                                                     ScenarioApproval.consumer_id == consumer_id)))
