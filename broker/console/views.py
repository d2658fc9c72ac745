"""What every console page shares: the templates, rendering with the session's CSRF token and org
names, redirects with a message, and the role groups. Page modules import this, never ``app``
(which imports the pages): no import circle."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlmodel import Session

from broker.api.deps import Principal, get_runtime
from broker.console.auth import csrf_token

HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=HERE / "templates")


def human(value: Any) -> str:
    """A value for people, never a Python repr: dicts read `k = v, ...`, lists `a, b`, nothing reads `—`."""
    from jinja2 import Undefined

    if value is None or isinstance(value, Undefined) or value == "" or value == [] or value == {}:
        return "—"
    if isinstance(value, dict):
        return ", ".join(f"{k} = {human(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(human(v) for v in value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.6g}"
    return str(value)


def span(start: Any, end: Any) -> str:
    """A time window: `start to end`, an open end reads `…`; no window at all reads `—`."""
    if not start and not end:
        return "—"
    return f"{start or '…'} to {end or '…'}"


def deid_summary(report: dict | None) -> str:
    if not report:
        return "—"
    a = report.get("achieved") or {}
    parts = [f"k = {a['k']}"] if a.get("k") is not None else []
    if a.get("l_min"):
        parts.append(f"distinct l = {a['l_min']}")
    if a.get("equivalence_classes") is not None:
        parts.append(f"{a['equivalence_classes']} equivalence classes")
    if report.get("rows_suppressed") is not None:
        parts.append(f"{report['rows_suppressed']} rows suppressed")
    return ", ".join(parts) or "—"


templates.env.filters["human"] = human
templates.env.globals["span"] = span
templates.env.filters["deid"] = deid_summary
PROVIDER, CONSUMER, AUDITOR = ("provider",), ("consumer",), ("auditor",)


# --------------------------------------------------------------------------- helpers
def _root(request: Request) -> str:
    return request.scope.get("root_path", "") or ""


def _org_names(session: Session) -> dict[str, str]:
    from broker.identity.service import list_orgs

    return {o.id: o.name for o in list_orgs(session)}


def render(request: Request, template: str, principal: Principal | None, session: Session | None = None,
           status_code: int = 200, **context: Any) -> Response:
    runtime = get_runtime(request)
    csrf = csrf_token(runtime, principal.token_id) if principal else ""
    request.state.csrf = csrf
    names = _org_names(session) if session is not None else {}
    return templates.TemplateResponse(request, template, {
        "principal": principal, "csrf": csrf, "root": _root(request), "names": names, **context},
        status_code=status_code)


def _redirect(request: Request, path: str, message: str | None = None) -> RedirectResponse:
    url = _root(request) + path
    if message:
        url += ("&" if "?" in url else "?") + "msg=" + quote(message)
    return RedirectResponse(url, status_code=303)


def _dsp(type_: str, **fields: Any) -> dict[str, Any]:
    from twinspace.dsp.messages import CONTEXT

    return {"@context": CONTEXT, "@type": type_, **{k: v for k, v in fields.items() if v is not None}}


def _secure_cookie(request: Request) -> bool:
    # Secure always; browsers accept Secure cookies from http://127.0.0.1 and localhost (secure contexts).
    return True
