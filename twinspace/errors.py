"""One error hierarchy. Services raise these; the HTTP layer renders RFC 9457 problems.

Every error carries a stable snake_case ``code`` clients can switch on; ``detail`` is
human-readable and must never contain secrets or row data.
"""

from __future__ import annotations

from typing import Any


class TwinSpaceError(Exception):
    status: int = 400
    title: str = "Bad Request"
    default_code: str = "bad_request"

    def __init__(self, detail: str, *, code: str | None = None, extra: dict[str, Any] | None = None):
        super().__init__(detail)
        self.detail = detail
        self.code = code or self.default_code
        self.extra = extra or {}

    def to_problem(self, instance: str | None = None) -> dict[str, Any]:
        problem = {
            "type": f"https://twinspace.dev/problems/{self.code}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
        }
        if instance:
            problem["instance"] = instance
        problem.update(self.extra)
        return problem


class BadRequest(TwinSpaceError):
    status, title, default_code = 400, "Bad Request", "bad_request"


class Unauthorized(TwinSpaceError):
    status, title, default_code = 401, "Unauthorized", "unauthorized"


class Forbidden(TwinSpaceError):
    status, title, default_code = 403, "Forbidden", "forbidden"


class NotFound(TwinSpaceError):
    status, title, default_code = 404, "Not Found", "not_found"


class Conflict(TwinSpaceError):
    status, title, default_code = 409, "Conflict", "conflict"


class Gone(TwinSpaceError):
    status, title, default_code = 410, "Gone", "gone"


class PayloadTooLarge(TwinSpaceError):
    status, title, default_code = 413, "Payload Too Large", "payload_too_large"


class Unprocessable(TwinSpaceError):
    status, title, default_code = 422, "Unprocessable Content", "unprocessable"


class TooManyRequests(TwinSpaceError):
    status, title, default_code = 429, "Too Many Requests", "too_many_requests"


class ServiceUnavailable(TwinSpaceError):
    status, title, default_code = 503, "Service Unavailable", "service_unavailable"


class BadGateway(TwinSpaceError):
    """A connector could not be reached or answered badly; one uniform answer, so it is no port scanner."""
    status, title, default_code = 502, "Bad Gateway", "connector_unreachable"
