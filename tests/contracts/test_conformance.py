"""Our DSP messages against the official JSON schemas, where the shared conformance material has them
(``../shared/conformance/dsp/``). Skipped, with the reason, when it is absent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from twinspace.dsp.messages import CONTEXT
from tests.conftest import SHARED_DIR

DSP_DIR = SHARED_DIR / "conformance" / "dsp"

SAMPLES = {
    "contract-request-message": {"@context": CONTEXT, "@type": "ContractRequestMessage", "consumerPid": "urn:uuid:c1",
                                 "offer": {"@id": "urn:twinspace:offer:a:v1:o"}, "callbackAddress": "https://c.example"},
    "contract-negotiation-event-message": {"@context": CONTEXT, "@type": "ContractNegotiationEventMessage",
                                           "providerPid": "neg_1", "consumerPid": "urn:uuid:c1",
                                           "eventType": "ACCEPTED"},
    "contract-agreement-verification-message": {"@context": CONTEXT, "@type": "ContractAgreementVerificationMessage",
                                                "providerPid": "neg_1", "consumerPid": "urn:uuid:c1"},
    "contract-negotiation-termination-message": {"@context": CONTEXT,
                                                 "@type": "ContractNegotiationTerminationMessage",
                                                 "providerPid": "neg_1", "consumerPid": "urn:uuid:c1"},
    "contract-negotiation": {"@context": CONTEXT, "@type": "ContractNegotiation", "providerPid": "neg_1",
                             "consumerPid": "urn:uuid:c1", "state": "REQUESTED"},
    "transfer-process": {"@context": CONTEXT, "@type": "TransferProcess", "providerPid": "tp_1",
                         "consumerPid": "urn:uuid:c1", "state": "STARTED"},
}


def _schemas() -> dict[str, Path]:
    if not DSP_DIR.is_dir():
        pytest.skip(f"no DSP conformance material at {DSP_DIR}; our pydantic models enforce the shapes")
    found = {}
    for path in DSP_DIR.rglob("*.json"):
        for name in SAMPLES:
            if path.stem in (name, f"{name}-schema"):
                found[name] = path
    if not found:
        pytest.skip(f"{DSP_DIR} has no schema files named like our messages")
    return found


def test_messages_match_dsp_schemas():
    import jsonschema

    for name, path in _schemas().items():
        schema = json.loads(path.read_text())
        jsonschema.validate(SAMPLES[name], schema)  # raises on mismatch
