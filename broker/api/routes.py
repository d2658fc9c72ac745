"""Route inspection shared by the API and the console: deny by default, every route names its roles."""

from __future__ import annotations

from fastapi.routing import APIRoute

from broker.api.deps import RoleGuard, public_marker


def _dependency_calls(dependant) -> list:
    calls = []
    for dep in dependant.dependencies:
        calls.append(dep.call)
        calls.extend(_dependency_calls(dep))
    return calls


def api_routes(router) -> list[APIRoute]:
    """Every APIRoute under ``router``, through nested includes (FastAPI wraps included routers)."""
    found: list[APIRoute] = []
    for route in router.routes:
        if isinstance(route, APIRoute):
            found.append(route)
        elif hasattr(route, "original_router"):
            found.extend(api_routes(route.original_router))
    return found


def is_public(route: APIRoute) -> bool:
    return any(c is public_marker for c in _dependency_calls(route.dependant))


def assert_routes_guarded(routes: list[APIRoute]) -> None:
    """Deny by default: every API route must name its roles or be explicitly public."""
    unguarded = [f"{sorted(r.methods)} {r.path}" for r in routes
                 if not any(isinstance(c, RoleGuard) or c is public_marker for c in _dependency_calls(r.dependant))]
    if unguarded:
        raise RuntimeError("Routes without a role guard (use require_roles or public_route): " + "; ".join(unguarded))
