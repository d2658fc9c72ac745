"""Dataspace Protocol (2025-1) JSON-LD message models, validated strictly (unknown fields refused).

TwinSpace extensions carry the ``twin:`` prefix (declared in the message ``@context``): the declared
purpose and scenario, requested validity, narrowed terms and the party signatures.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

DSP_CONTEXT = "https://w3id.org/dspace/2025/1/context.jsonld"
TWIN_NS = "https://twinspace.dev/ns/twin#"
CONTEXT: list[Any] = [DSP_CONTEXT, {"twin": TWIN_NS}]
PID = r"^[A-Za-z0-9:._-]{1,128}$"


class DspModel(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, str_strip_whitespace=True)

    def dump(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)


class DspMessage(DspModel):
    context: Any = Field(alias="@context")

    @field_validator("context")
    @classmethod
    def _dsp_context(cls, value: Any) -> Any:
        items = value if isinstance(value, list) else [value]
        if DSP_CONTEXT not in items:
            raise ValueError(f"@context must include {DSP_CONTEXT}")
        return value


class SignatureEntry(DspModel):
    role: Literal["provider", "consumer"]
    org_id: str = Field(max_length=64)
    kid: str = Field(min_length=1, max_length=64)
    alg: Literal["EdDSA"]
    signature: str = Field(min_length=16, max_length=200, pattern=r"^[A-Za-z0-9_-]+$")


class OfferRef(DspModel):
    """The ODRL offer a consumer requests, as listed in the DCAT catalog (``odrl:hasPolicy``)."""

    id: str = Field(alias="@id", max_length=300)
    type: Literal["Offer", "odrl:Offer"] = Field("Offer", alias="@type")
    target: str | None = Field(None, max_length=300)
    assigner: str | None = Field(None, max_length=300)


class Terms(DspModel):
    """Terms the provider offers (narrowing the catalog offer): obligations and validity."""

    max_rows: int | None = Field(None, ge=1, le=10_000_000)
    columns: list[str] | None = Field(None, min_length=1, max_length=2000)
    not_after: str | None = Field(None, max_length=40, description="ISO 8601 end of validity")
    params: dict[str, Any] | None = Field(None, description="Extra policy parameters, merged over the offer's")


class OfferWithTerms(OfferRef):
    terms: Terms | None = Field(None, alias="twin:terms")


class ContractRequestMessage(DspMessage):
    type: Literal["ContractRequestMessage"] = Field(alias="@type")
    consumerPid: str = Field(pattern=PID)
    providerPid: str | None = Field(None, pattern=PID)
    offer: OfferRef
    callbackAddress: str | None = Field(None, max_length=500)
    purpose: str = Field(alias="twin:purpose", min_length=1, max_length=100)
    scenario: str | None = Field(None, alias="twin:scenario", max_length=100)
    not_after: str | None = Field(None, alias="twin:notAfter", max_length=40)


class ContractOfferMessage(DspMessage):
    type: Literal["ContractOfferMessage"] = Field(alias="@type")
    providerPid: str = Field(pattern=PID)
    consumerPid: str = Field(pattern=PID)
    offer: OfferWithTerms
    callbackAddress: str | None = Field(None, max_length=500)


class ContractNegotiationEventMessage(DspMessage):
    type: Literal["ContractNegotiationEventMessage"] = Field(alias="@type")
    providerPid: str = Field(pattern=PID)
    consumerPid: str = Field(pattern=PID)
    eventType: Literal["ACCEPTED", "FINALIZED"]


class ContractAgreementMessage(DspMessage):
    type: Literal["ContractAgreementMessage"] = Field(alias="@type")
    providerPid: str = Field(pattern=PID)
    consumerPid: str = Field(pattern=PID)
    agreement: dict[str, Any]
    callbackAddress: str | None = Field(None, max_length=500)
    signature: SignatureEntry = Field(alias="twin:signature")


class ContractAgreementVerificationMessage(DspMessage):
    type: Literal["ContractAgreementVerificationMessage"] = Field(alias="@type")
    providerPid: str = Field(pattern=PID)
    consumerPid: str = Field(pattern=PID)
    signature: SignatureEntry = Field(alias="twin:signature")


class ContractNegotiationTerminationMessage(DspMessage):
    type: Literal["ContractNegotiationTerminationMessage"] = Field(alias="@type")
    providerPid: str = Field(pattern=PID)
    consumerPid: str = Field(pattern=PID)
    code: str | None = Field(None, max_length=100)
    reason: list[Any] | None = Field(None, max_length=20)


class CatalogRequestMessage(DspMessage):
    type: Literal["CatalogRequestMessage"] = Field(alias="@type")
    filter: list[Any] | None = Field(None, max_length=20)


def negotiation_message(*, consumer_pid: str, provider_pid: str, state: str) -> dict[str, Any]:
    """The DSP ``ContractNegotiation`` response/ack document."""
    return {"@context": CONTEXT, "@type": "ContractNegotiation", "consumerPid": consumer_pid,
            "providerPid": provider_pid, "state": state}


def offer_iri(asset_id: str, version: int, offer_id: str) -> str:
    """Same IRI scheme as the catalog's DCAT export (``broker.catalog.dcat``)."""
    return f"urn:twinspace:offer:{asset_id}:v{version}:{offer_id}"


def parse_offer_iri(iri: str) -> tuple[str, int, str] | None:
    parts = iri.split(":")
    if len(parts) != 6 or parts[:3] != ["urn", "twinspace", "offer"] or not parts[4].startswith("v"):
        return None
    if not parts[4][1:].isdigit():
        return None
    return parts[3], int(parts[4][1:]), parts[5]
