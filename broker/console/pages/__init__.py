"""Console routes, one module per page group. Pages are rendered server-side from the same services
the API uses, with the session principal; every route names the same roles as the matching API
route. State-changing routes need the session's CSRF token (checked by ``ConsoleGuard``).
Signatures (agreements, proofs of possession) are made in the browser with WebCrypto; the broker
only ever sees public keys and signatures."""

from __future__ import annotations

from fastapi import APIRouter

from broker.console.pages import agreements, audit, catalog, negotiations, queries, session

router = APIRouter()
for module in (session, catalog, negotiations, agreements, audit, queries):
    router.include_router(module.router)
