"""Every DSP 2025-1 specification example is accepted in the role TwinSpace plays for it, in its
compacted form, its JSON-LD expanded form and with other prefixes (JSON-LD processing, not key
matching); every example object validates against its schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from twinspace.dsp import jsonld, schemas
from twinspace.dsp.messages import parse

EXAMPLES = Path(__file__).parent / "data" / "examples"

# The messages TwinSpace receives: as provider (from consumers) and as consumer (from providers).
AS_PROVIDER = ["catalog/catalog-request-message.json", "catalog/dataset-request-message.json",
               "negotiation/contract-request-message.json", "negotiation/contract-request-message_initial.json",
               "negotiation/contract-agreement-verification-message.json",
               "negotiation/contract-negotiation-event-message.json",
               "negotiation/contract-negotiation-termination-message.json",
               "transfer/transfer-request-message.json", "transfer/transfer-start-message.json",
               "transfer/transfer-suspension-message.json", "transfer/transfer-completion-message.json",
               "transfer/transfer-termination-message.json"]
AS_CONSUMER = ["negotiation/contract-offer-message.json", "negotiation/contract-offer-message_initial.json",
               "negotiation/contract-agreement-message.json", "negotiation/contract-agreement-message-full.json",
               "negotiation/contract-negotiation-termination-message.json", "transfer/transfer-start-message.json",
               "transfer/transfer-suspension-message.json", "transfer/transfer-completion-message.json",
               "transfer/transfer-termination-message.json"]
MESSAGES = sorted(set(AS_PROVIDER) | set(AS_CONSUMER))
OBJECTS = ["catalog/catalog.json", "catalog/nested-catalog.json", "catalog/dataset.json", "catalog/catalog-error.json",
           "negotiation/contract-negotiation.json", "negotiation/contract-negotiation-error.json",
           "transfer/transfer-process.json", "transfer/transfer-error.json", "common/protocol-version.json"]

FOREIGN_PREFIXES = {"@context": {"x": "https://w3id.org/dspace/2025/1/", "pol": "http://www.w3.org/ns/odrl/2/",
                                 "terms": "http://purl.org/dc/terms/"}}


def load(name: str) -> dict:
    return json.loads((EXAMPLES / name).read_text())


def test_every_example_message_is_covered():
    on_disk = sorted(str(p.relative_to(EXAMPLES)) for p in EXAMPLES.glob("*/*-message*.json"))
    assert MESSAGES == on_disk and len(MESSAGES) == 16


@pytest.mark.parametrize("name", MESSAGES)
def test_example_message_is_accepted(name):
    raw = load(name)
    msg = parse(raw, raw["@type"])
    assert msg.type == raw["@type"]
    for field in ("providerPid", "consumerPid", "agreementId", "eventType"):
        if field in raw:
            assert getattr(msg, field) == raw[field]


@pytest.mark.parametrize("name", MESSAGES)
def test_expanded_and_other_prefixes_read_the_same(name):
    from pyld import jsonld as pyld

    raw = load(name)
    expected = parse(raw, raw["@type"]).model_dump(exclude={"context"})
    expanded = jsonld.expand(raw)[0]
    assert parse(expanded, raw["@type"]).model_dump(exclude={"context"}) == expected
    foreign = pyld.compact(expanded, FOREIGN_PREFIXES, jsonld._options())
    assert not any(k in foreign for k in ("providerPid", "consumerPid"))  # really spelled differently
    assert parse(foreign, raw["@type"]).model_dump(exclude={"context"}) == expected


@pytest.mark.parametrize("name", OBJECTS)
def test_example_object_validates(name):
    doc = load(name)
    kind = doc.get("@type") or "VersionResponse"
    assert schemas.errors(doc, kind) == []
    if "@context" in doc:
        assert jsonld.normalize(doc)["@type"] == kind


def test_transfer_schemas_ref_defect_is_fixed_in_memory():
    doc = schemas.schema_documents()["https://w3id.org/dspace/2025/1/transfer/transfer-termination-message-schema.json"]
    assert "#definitions/" not in json.dumps(doc)
    bad = {**load("transfer/transfer-termination-message.json")}
    del bad["providerPid"]
    assert schemas.errors(bad)  # the referenced definition is really applied


def test_remote_contexts_are_refused_never_fetched():
    raw = {**load("negotiation/contract-negotiation-event-message.json"),
           "@context": ["https://w3id.org/dspace/2025/1/context.jsonld", "https://attacker.example/ctx.jsonld"]}
    with pytest.raises(jsonld.JsonLdProblem, match="unknown JSON-LD context"):
        jsonld.expand(raw)
