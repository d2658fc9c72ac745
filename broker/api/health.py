"""Liveness and readiness probes, and the broker's public key set."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool

from broker import __version__
from broker.api.deps import get_runtime, public_route
from twinspace.errors import ServiceUnavailable
from broker.runtime import Runtime
from broker.storage.db import ping

router = APIRouter(tags=["health"])


@router.get("/healthz", dependencies=[public_route])
async def healthz() -> dict:
    """The process is up (async: it answers even when every worker thread and database slot is busy)."""
    return {"status": "ok", "version": __version__}


@router.get("/readyz", dependencies=[public_route])
async def readyz(runtime: Runtime = Depends(get_runtime)) -> dict:
    """The process can serve: database reachable (and Redis when configured)."""
    checks = {"database_slots_in_use": runtime.gate.in_use()}
    try:
        await run_in_threadpool(ping, runtime.engine)
        checks["database"] = "ok"
    except Exception:
        raise ServiceUnavailable("The database is not reachable.", code="database_unavailable") from None
    if hasattr(runtime.replay, "ping"):
        try:
            await run_in_threadpool(runtime.replay.ping)
            checks["redis"] = "ok"
        except Exception:
            raise ServiceUnavailable("Redis is not reachable.", code="redis_unavailable") from None
    return {"status": "ready", "checks": checks}


@router.get("/.well-known/jwks.json", dependencies=[public_route])
def jwks(runtime: Runtime = Depends(get_runtime)) -> dict:
    """The broker's Ed25519 public key: verifies access tokens, countersignatures and checkpoints."""
    return {"keys": [runtime.broker_public_jwk], "issuer": runtime.settings.issuer}
