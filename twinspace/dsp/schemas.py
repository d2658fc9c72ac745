"""The DSP 2025-1 JSON schemas (vendored package data) in a local ``referencing.Registry``: they
``$ref`` each other by their published w3id.org URIs, which resolve here and never on the network.

Upstream defect fixed in memory: three transfer schemas ``$ref`` ``...json#definitions/X`` (no slash
after ``#``); the reference is rewritten to ``#/definitions/X`` when loaded."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

BASE = "https://w3id.org/dspace/2025/1/"

# What each DSP document type validates against (path under schemas/).
SCHEMA_FOR_TYPE = {
    "CatalogRequestMessage": "catalog/catalog-request-message-schema.json",
    "DatasetRequestMessage": "catalog/dataset-request-message-schema.json",
    "Catalog": "catalog/catalog-schema.json",
    "Dataset": "catalog/dataset-schema.json",
    "CatalogError": "catalog/catalog-error-schema.json",
    "ContractRequestMessage": "negotiation/contract-request-message-schema.json",
    "ContractOfferMessage": "negotiation/contract-offer-message-schema.json",
    "ContractAgreementMessage": "negotiation/contract-agreement-message-schema.json",
    "ContractAgreementVerificationMessage": "negotiation/contract-agreement-verification-message-schema.json",
    "ContractNegotiationEventMessage": "negotiation/contract-negotiation-event-message-schema.json",
    "ContractNegotiationTerminationMessage": "negotiation/contract-negotiation-termination-message-schema.json",
    "ContractNegotiation": "negotiation/contract-negotiation-schema.json",
    "ContractNegotiationError": "negotiation/contract-negotiation-error-schema.json",
    "Agreement": "negotiation/contract-schema.json",
    "Offer": "negotiation/contract-schema.json",
    "TransferRequestMessage": "transfer/transfer-request-message-schema.json",
    "TransferStartMessage": "transfer/transfer-start-message-schema.json",
    "TransferSuspensionMessage": "transfer/transfer-suspension-message-schema.json",
    "TransferCompletionMessage": "transfer/transfer-completion-message-schema.json",
    "TransferTerminationMessage": "transfer/transfer-termination-message-schema.json",
    "TransferProcess": "transfer/transfer-process-schema.json",
    "TransferError": "transfer/transfer-error-schema.json",
    "DataAddress": "transfer/data-address-schema.json",
    "VersionResponse": "common/protocol-version-schema.json",
}


def _fix_refs(value: Any) -> Any:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key == "$ref" and isinstance(item, str) and "#definitions/" in item:
                item = item.replace("#definitions/", "#/definitions/")
            out[key] = _fix_refs(item)
        return out
    if isinstance(value, list):
        return [_fix_refs(v) for v in value]
    return value


@lru_cache(maxsize=1)
def schema_documents() -> dict[str, dict[str, Any]]:
    """Every vendored schema by its ``$id``, references fixed."""
    root = resources.files("twinspace.dsp").joinpath("data", "schemas")
    docs: dict[str, dict[str, Any]] = {}
    for folder in root.iterdir():
        if not folder.is_dir():
            continue
        for item in folder.iterdir():
            if item.name.endswith("-schema.json"):
                doc = _fix_refs(json.loads(item.read_text(encoding="utf-8")))
                docs[doc.get("$id") or BASE + f"{folder.name}/{item.name}"] = doc
    return docs


@lru_cache(maxsize=1)
def registry():
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT201909

    resources_ = [(uri, Resource.from_contents(doc, default_specification=DRAFT201909))
                  for uri, doc in schema_documents().items()]

    def _refuse(uri: str):
        from referencing.exceptions import NoSuchResource

        raise NoSuchResource(ref=uri)

    return Registry(retrieve=_refuse).with_resources(resources_)


@lru_cache(maxsize=None)
def _validator(uri: str):
    from jsonschema import Draft201909Validator

    return Draft201909Validator(schema_documents()[uri], registry=registry(),
                                format_checker=Draft201909Validator.FORMAT_CHECKER)


def schema_uri(kind: str) -> str:
    try:
        return BASE + SCHEMA_FOR_TYPE[kind]
    except KeyError:
        raise KeyError(f"no DSP schema for {kind!r}") from None


def errors(document: Any, kind: str | None = None) -> list[str]:
    """Schema violations of ``document`` as ``kind`` (default: its ``@type``); empty when valid."""
    if kind is None:
        kind = document.get("@type") if isinstance(document, dict) else None
        if not isinstance(kind, str) or kind not in SCHEMA_FOR_TYPE:
            return [f"no DSP schema for @type {kind!r}"]
    validator = _validator(schema_uri(kind))
    found = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    return [f"{'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message[:300]}" for e in found]


def is_valid(document: Any, kind: str | None = None) -> bool:
    return not errors(document, kind)
