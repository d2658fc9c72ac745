"""DSP error objects (``CatalogError``, ``ContractNegotiationError``, ``TransferError``) and the HTTP
status a failure gets. The DSP TCK's rule: an expected failure is a 4xx other than 404, with an error
object; 404 only when the process or dataset id is unknown (or not the caller's)."""

from __future__ import annotations

from typing import Any

from twinspace.dsp.contexts import DSP_CONTEXT

ERROR_TYPE = {"catalog": "CatalogError", "negotiation": "ContractNegotiationError", "transfer": "TransferError"}


def error_object(protocol: str, *, code: str, reason: str | list[str], provider_pid: str | None = None,
                 consumer_pid: str | None = None) -> dict[str, Any]:
    """The DSP error object of ``protocol`` (catalog | negotiation | transfer).

    The negotiation and transfer errors require both pids (schema); an unknown one is written as the
    empty string rather than left out, so the object stays valid."""
    body: dict[str, Any] = {"@context": [DSP_CONTEXT], "@type": ERROR_TYPE[protocol], "code": str(code)[:100],
                            "reason": [str(r)[:500] for r in (reason if isinstance(reason, list) else [reason])][:10]}
    if protocol != "catalog":
        body["providerPid"] = provider_pid or ""
        body["consumerPid"] = consumer_pid or ""
    return body


def protocol_of(path: str) -> str:
    """Which DSP protocol a route path belongs to (its error object type)."""
    if path.startswith("/dsp/negotiations") or (path.startswith("/dsp/callback/") and "/negotiations/" in path):
        return "negotiation"
    if path.startswith("/dsp/transfers") or (path.startswith("/dsp/callback/") and "/transfers/" in path):
        return "transfer"
    return "catalog"
