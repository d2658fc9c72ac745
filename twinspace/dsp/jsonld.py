"""Inbound DSP messages are JSON-LD, so they are read as JSON-LD: expanded with the local contexts
(any prefix, the compacted or the expanded form), then compacted against the DSP context plus the
TwinSpace context. The result has one spelling per term, whatever the sender wrote, and is what the
schema validator and the message parser see."""

from __future__ import annotations

import copy
import threading
from typing import Any

from twinspace.dsp.contexts import DSP_CONTEXT, TWIN_CONTEXT, local_loader

CANONICAL_CONTEXT = [DSP_CONTEXT, TWIN_CONTEXT]
MAX_DEPTH = 32
# pyld keeps module-wide context caches that are neither thread-safe nor, for its inverse contexts
# (keyed by an active context's id), correct across documents with type-scoped, propagated contexts:
# one lock around every operation, and both caches are emptied before each (the contexts themselves
# are read once from package data, so this costs little).
_LOCK = threading.RLock()


def _clear_caches(jsonld) -> None:
    jsonld._resolved_context_cache.clear()
    jsonld._inverse_context_cache.clear()


class JsonLdProblem(ValueError):
    """The document is not JSON-LD TwinSpace can process (malformed, unknown context, several nodes)."""


def _options() -> dict[str, Any]:
    # base None: a relative id such as a plain process id stays as written (never resolved to a URL)
    return {"documentLoader": local_loader, "processingMode": "json-ld-1.1", "base": None}


def _depth(value: Any, level: int = 0) -> int:
    if level > MAX_DEPTH:
        return level
    if isinstance(value, dict):
        return max([_depth(v, level + 1) for v in value.values()] or [level])
    if isinstance(value, list):
        return max([_depth(v, level + 1) for v in value] or [level])
    return level


def expand(document: Any) -> list[dict[str, Any]]:
    """JSON-LD expansion with only local contexts (pyld)."""
    from pyld import jsonld

    if not isinstance(document, dict):
        raise JsonLdProblem("a DSP message is a JSON object")
    if _depth(document) > MAX_DEPTH:
        raise JsonLdProblem("the document is nested too deeply")
    try:
        with _LOCK:
            _clear_caches(jsonld)
            return jsonld.expand(copy.deepcopy(document), _options())
    except jsonld.JsonLdError as exc:
        if "remote context" in str(getattr(exc, "code", "")):
            raise JsonLdProblem("unknown JSON-LD context: only the DSP, its ODRL profile and the TwinSpace context "
                                "are known here, and remote contexts are never fetched") from None
        raise JsonLdProblem(f"invalid JSON-LD: {_describe(exc)}") from None
    except (TypeError, ValueError, KeyError, AttributeError, RecursionError) as exc:
        raise JsonLdProblem(f"invalid JSON-LD: {type(exc).__name__}") from None


def compact(expanded: Any, context: list[Any] | None = None) -> dict[str, Any]:
    from pyld import jsonld

    ctx = list(context or CANONICAL_CONTEXT)
    try:
        with _LOCK:
            _clear_caches(jsonld)
            out = jsonld.compact(expanded, {"@context": ctx}, _options())
    except jsonld.JsonLdError as exc:
        raise JsonLdProblem(f"cannot compact: {_describe(exc)}") from None
    return out


def normalize(document: Any) -> dict[str, Any]:
    """The message in TwinSpace's canonical compacted form (``@context`` = DSP + TwinSpace).

    Raises JsonLdProblem when the document is not one JSON-LD node with a type."""
    expanded = expand(document)
    if len(expanded) != 1:
        raise JsonLdProblem("a DSP message is exactly one JSON-LD node")
    node = expanded[0]
    if not node.get("@type"):
        raise JsonLdProblem("the message has no @type the DSP context defines")
    out = compact(node)
    out["@context"] = list(CANONICAL_CONTEXT)
    return out


def _describe(exc: Exception) -> str:
    code = getattr(exc, "code", None)
    message = str(getattr(exc, "message", None) or exc).split("\n", 1)[0]
    return (f"{code}: {message}" if code else message)[:300]


def expanded_keys(document: dict[str, Any]) -> tuple[set[str], set[str]]:
    """(keys in the document, keys that survive expansion), both as sets of paths, to prove no key is
    dropped. Paths use the compacted key names; ``@context`` is not a data key."""
    ctx = document.get("@context")
    written = _paths(document)
    expanded = expand(document)
    back = compact(expanded, ctx if isinstance(ctx, list) else [ctx]) if ctx is not None else {}
    return written, _paths(back)


def _paths(value: Any, prefix: str = "") -> set[str]:
    out: set[str] = set()
    if isinstance(value, dict):
        if "@value" in value and value.get("@type") == "@json":
            return out
        for key, item in value.items():
            if key == "@context":
                continue
            path = f"{prefix}/{key}"
            out.add(path)
            out |= _paths(item, path)
    elif isinstance(value, list):
        for item in value:
            out |= _paths(item, prefix)
    return out
