"""Registration module (listed in ``broker.app.ROUTERS``): mounts the console sub-application at /console.

The console is a separate FastAPI application because its pages authenticate with a session cookie,
not a bearer header: the API's ``AuthGateMiddleware`` only guards API routes, so console requests reach
the console, whose every route carries a ``ConsoleGuard`` (a ``RoleGuard``) or is explicitly public, and
whose factory refuses to start otherwise (deny by default, the same check as the API).
"""

from __future__ import annotations

import weakref

from fastapi import APIRouter
from starlette.routing import Mount
from starlette.types import Receive, Scope, Send


class ConsoleMount:
    """ASGI app that builds one console per broker application, sharing the broker's runtime."""

    def __init__(self) -> None:
        self._apps: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        parent = scope["app"]
        console = self._apps.get(parent)
        if console is None:
            from broker.console.app import create_console_app

            console = self._apps[parent] = create_console_app(parent.state.runtime)
        await console(scope, receive, send)


router = APIRouter()
router.routes.append(Mount("/console", app=ConsoleMount(), name="console"))
