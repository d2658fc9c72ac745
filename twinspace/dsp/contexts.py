"""The JSON-LD contexts TwinSpace knows, served from package data, and a pyld document loader that
serves only them: a message naming any other context is refused, never fetched (no SSRF, no
dependence on w3id.org being up)."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

DSP_CONTEXT = "https://w3id.org/dspace/2025/1/context.jsonld"
ODRL_PROFILE_CONTEXT = "https://w3id.org/dspace/2025/1/odrl-profile.jsonld"
TWIN_CONTEXT = "https://twinspace.dev/ns/twin/context.jsonld"
DSPACE_NS = "https://w3id.org/dspace/2025/1/"
ODRL_NS = "http://www.w3.org/ns/odrl/2/"
TWIN_NS = "https://twinspace.dev/ns/twin#"
TWIN_PROFILE = "https://twinspace.dev/ns/twin"  # the ODRL profile IRI (ODRL 2.2 section 2.1)

_FILES = {DSP_CONTEXT: "dspace.jsonld", ODRL_PROFILE_CONTEXT: "odrl-profile.jsonld",
          TWIN_CONTEXT: "twinspace.jsonld"}


class UnknownContext(ValueError):
    """A document names a remote context TwinSpace does not hold locally."""


@lru_cache(maxsize=None)
def _load(name: str) -> str:
    return resources.files("twinspace.dsp").joinpath("data", "context", name).read_text(encoding="utf-8")


def context_document(url: str) -> dict[str, Any]:
    """The parsed context document for ``url``; UnknownContext for any other URL."""
    name = _FILES.get(url.split("#", 1)[0])
    if name is None:
        raise UnknownContext(f"unknown JSON-LD context {url[:200]!r} (only local contexts are served)")
    return json.loads(_load(name))


def local_loader(url: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """pyld ``documentLoader`` that serves the local contexts and refuses every other URL."""
    from pyld.jsonld import JsonLdError

    try:
        document = context_document(url)
    except UnknownContext as exc:
        raise JsonLdError(str(exc), "jsonld.LoadDocumentError", code="loading remote context failed") from None
    return {"contentType": "application/ld+json", "contextUrl": None, "documentUrl": url, "document": document}


def known_contexts() -> list[str]:
    return list(_FILES)
