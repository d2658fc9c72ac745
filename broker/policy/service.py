"""Policy administration and audited decisions, independent of HTTP."""

from __future__ import annotations

import dataclasses
import uuid

from contextlib import contextmanager
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any, Iterator

from sqlalchemy import func, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from broker.audit import record_event
from twinspace.errors import BadRequest, Conflict, Forbidden, NotFound
from broker.policy.engine import Decision, EmbeddedEngine, PolicyError, engine_for, get_pdp, policies_dir
from broker.policy.library import POLICY_ID, PolicySource, declared_package, load_library, package_for, versioned
from broker.policy.models import PolicyVersion, ScenarioApproval, UsageCounter
from broker.settings import Settings


def builtin_policies(settings: Settings) -> dict[str, PolicySource]:
    return load_library(policies_dir(settings)).builtins


@lru_cache(maxsize=8)
def _db_engine(url: str):
    from broker.storage.db import make_engine

    return make_engine(url)


@contextmanager
def _session_or_own(session: Session | None, settings: Settings) -> Iterator[Session]:
    if session is not None:
        yield session
        return
    with Session(_db_engine(settings.effective_database_url)) as own:
        yield own


def latest_upload(session: Session, policy_id: str) -> PolicyVersion | None:
    return session.exec(select(PolicyVersion).where(PolicyVersion.policy_id == policy_id)
                        .order_by(PolicyVersion.version.desc())).first()


def resolve_source(session: Session | None, settings: Settings, policy_id: str, version: str | None) -> PolicySource:
    """A built-in policy (current version) or an uploaded version (latest, or the pinned one)."""
    builtin = builtin_policies(settings).get(policy_id)
    if builtin is not None and version in (None, builtin.version):
        return builtin
    if builtin is not None:
        raise NotFound(f"built-in policy {policy_id!r} version {version} is no longer installed "
                       f"(current: {builtin.version})", code="policy_not_found")
    row = None
    if POLICY_ID.match(policy_id):
        with _session_or_own(session, settings) as s:
            if version is None:
                row = latest_upload(s, policy_id)
            else:
                number = version.removeprefix("v")
                row = s.get(PolicyVersion, (policy_id, int(number))) if number.isdigit() else None
            if row is not None:
                return versioned(policy_id, row.version, row.rego)
    if row is None:
        raise NotFound(f"no policy {policy_id!r}" + (f" version {version}" if version else ""), code="policy_not_found")
    return versioned(policy_id, row.version, row.rego)


def warm(settings: Settings) -> list[str]:
    """Compile (embedded) or push (OPA) every built-in policy now; the problems found, if any."""
    engine = engine_for(settings)
    problems = []
    for source in builtin_policies(settings).values():
        decision = engine.decide_source(source, PROBE_INPUT)
        problems += [f"{source.policy_id} {source.version}: {r}" for r in decision.reasons if "engine error" in r]
    return problems


def policy_exists(session: Session, policy_id: str, settings: Settings) -> bool:
    return policy_id in builtin_policies(settings) or latest_upload(session, policy_id) is not None


def decide(session: Session, settings: Settings, policy_id: str, input_doc: dict[str, Any], *,
           version: str | None = None, actor: str | None, asset_id: str | None = None,
           agreement_id: str | None = None) -> Decision:
    """Decide and append the decision (allow or deny, reasons, version, input hash) to the audit log."""
    decision = get_pdp(settings, session).decide(policy_id, input_doc, version)
    decision_id = "dec_" + uuid.uuid4().hex
    decision = dataclasses.replace(decision, decision_id=decision_id, audit={
        "kind": "policy.decision", "actor": actor, "outcome": "allow" if decision.allow else "deny",
        "asset_id": asset_id, "agreement_id": agreement_id,
        "details": {"decision_id": decision_id, "policy_id": policy_id, "policy_version": decision.policy_version,
                    "action": input_doc.get("action"), "reasons": decision.reasons,
                    "obligations": decision.obligations, "input_hash": decision.input_hash,
                    "engine": engine_for(settings).name}})
    record_event(session, **decision.audit)
    return decision


def explain_decision(session: Session, settings: Settings, policy_id: str, input_doc: dict[str, Any], *,
                     version: str | None = None) -> dict[str, Any]:
    """Which named check of the policy produced each reason (see ``broker.policy.explain``)."""
    from broker.policy.explain import explain

    pdp = get_pdp(settings, session)
    try:
        source = pdp.resolve(policy_id, version)
    except Exception as exc:  # noqa: BLE001 - the decision already says why; explain says the same
        return {"policy_id": policy_id, "rules": [], "decided_by": [f"unresolved policy: {exc}"]}
    return explain(pdp.library, source, input_doc)


def require_allow(decision: Decision) -> Decision:
    """Raise ``policy_denied`` on a deny. The refusal carries the decision's audit entry: the request's
    transaction rolls back, and the problem handler appends the entry again on its own, so every
    deny (reasons, version, input hash) stays in the log."""
    if not decision.allow:
        exc = Forbidden("Denied by policy: " + "; ".join(decision.reasons), code="policy_denied",
                        extra={"decision_id": decision.decision_id, "reasons": decision.reasons,
                               "policy_id": decision.policy_id,
                               "policy_version": decision.policy_version})
        exc.audit_events = [decision.audit] if decision.audit else []
        raise exc
    return decision


# A well-formed input the upload check evaluates every new version on (it must yield a decision).
PROBE_INPUT = {"action": "read", "now": 0, "consumer": {"org_id": "probe", "role": "consumer", "org_type": "other",
                                                        "attributes": {}},
               "asset": {"id": "probe", "provider_id": "probe", "classification": "public", "status": "active"},
               "agreement": None, "params": {}, "usage": {"accesses": 0, "rows": 0}, "request": {}, "approvals": []}


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
    try:
        document = EmbeddedEngine(load_library(policies_dir(settings))).evaluate(source, PROBE_INPUT)
    except PolicyError as exc:
        code = "policy_compile_error" if "does not compile" in str(exc) else "policy_evaluation_error"
        raise BadRequest(str(exc), code=code) from None
    except Exception as exc:  # noqa: BLE001 - e.g. output rego-cpp cannot serialise
        raise BadRequest(f"the policy cannot be evaluated: {type(exc).__name__}", code="policy_evaluation_error") from None
    if not isinstance(document, dict) or not isinstance(document.get("allow"), bool):
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
    from broker.policy.engine import bundle_info

    bundle = bundle_info(settings)  # built-ins come from the signed bundle when one is loaded
    items = [{"policy_id": s.policy_id, "version": s.version, "builtin": True, "sha256": s.sha256,
              **({"bundle_revision": bundle["revision"], "bundle_sha256": bundle["sha256"]} if bundle else {})}
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


def record_usage(session: Session, agreement_id: str, rows: int, accesses: int = 1) -> None:
    """Atomic increment in SQL (never read-modify-write), so concurrent replicas never lose counts."""
    now = datetime.now(timezone.utc)
    result = session.execute(update(UsageCounter).where(UsageCounter.agreement_id == agreement_id)
                             .values(accesses=UsageCounter.accesses + accesses, rows=UsageCounter.rows + rows,
                                     updated_at=now))
    if result.rowcount == 0:
        try:
            with session.begin_nested():
                session.add(UsageCounter(agreement_id=agreement_id, accesses=accesses, rows=rows, updated_at=now))
        except IntegrityError:  # another replica created it first
            session.execute(update(UsageCounter).where(UsageCounter.agreement_id == agreement_id)
                            .values(accesses=UsageCounter.accesses + accesses, rows=UsageCounter.rows + rows))


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
