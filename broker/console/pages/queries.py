"""Encrypted queries: they run in the CLI, this page says how and shows the budgets."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlmodel import Session

from broker.api.deps import Principal, db_session, get_runtime
from broker.console.auth import console_roles
from broker.console.views import CONSUMER, _root, render
from twinspace.errors import TwinSpaceError

router = APIRouter()


# --------------------------------------------------------------------------- consumer: encrypted queries
@router.get("/queries")
def queries(request: Request, principal: Principal = console_roles(*CONSUMER),
            session: Session = db_session) -> Response:
    """Encrypted queries run through the CLI (keys stay on the consumer's machine); this page explains how."""
    from broker.contracts import service
    from broker.privacy.service import get_budget

    runtime = get_runtime(request)

    def budget(agreement_id: str) -> dict[str, Any] | None:
        try:
            return get_budget(session, runtime.settings, principal, agreement_id)
        except TwinSpaceError:  # e.g. malformed privacy terms: queries refuse it, the page still lists it
            return None

    active = [service.agreement_view(a) | {"budget": budget(a.id)}
              for a in service.list_agreements(session, principal, status="FINALIZED")]
    return render(request, "queries.html", principal, session, agreements=active, broker_url=str(request.base_url)
                  .removesuffix("/").removesuffix(_root(request)))
