"""Dataspace Protocol 2025-1 messages as TwinSpace reads them, after JSON-LD normalisation
(``twinspace.dsp.jsonld.normalize``: any prefix, compacted or expanded form, one spelling out).

``parse(raw, expected_type)`` is the one entry point for a DSP route: JSON-LD processing with the local
contexts, the DSP JSON schema of the type, then these models (unknown fields refused). TwinSpace
extensions (declared purpose and scenario, requested validity, narrowed terms, party signatures) are
TwinSpace-context terms (``https://twinspace.dev/ns/twin#``); a plain DSP peer never needs them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator

from twinspace.dsp import jsonld, schemas
from twinspace.dsp.contexts import DSP_CONTEXT, TWIN_CONTEXT, TWIN_NS

CONTEXT: list[Any] = [DSP_CONTEXT, TWIN_CONTEXT]  # messages carrying TwinSpace extensions
PLAIN_CONTEXT: list[Any] = [DSP_CONTEXT]  # everything else
PID = r"^[A-Za-z0-9:._/#?=&%-]{1,128}$"
_LEGACY_TWIN = {"twin": TWIN_NS}


class MessageProblem(ValueError):
    """An inbound message TwinSpace cannot accept: malformed JSON-LD, schema or model violation."""

    def __init__(self, message: str, *, code: str = "invalid_message", pids: dict[str, str] | None = None):
        super().__init__(message)
        self.code = code
        self.pids = pids or {}


def _alias(name: str) -> AliasChoices:
    return AliasChoices(name, f"twin:{name}")


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


class Terms(DspModel):
    """Terms the provider offers (narrowing the catalog offer): obligations and validity."""

    max_rows: int | None = Field(None, ge=1, le=10_000_000)
    columns: list[str] | None = Field(None, min_length=1, max_length=2000)
    not_after: str | None = Field(None, max_length=40, description="ISO 8601 end of validity")
    params: dict[str, Any] | None = Field(None, description="Extra policy parameters, merged over the offer's")


class OfferRef(BaseModel):
    """The ODRL offer of a negotiation message. Its rules are kept as sent (``rules``) so the service
    can compare them with the catalog offer; TwinSpace reads them with ``twinspace.odrl``."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    id: str = Field(alias="@id", max_length=300)
    type: Literal["Offer", "odrl:Offer"] = Field("Offer", alias="@type")
    target: str | None = Field(None, max_length=300)
    assigner: str | None = Field(None, max_length=300)
    terms: Terms | None = Field(None, validation_alias=_alias("terms"))

    def dump(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)

    @property
    def policy(self) -> dict[str, Any]:
        """The offer as an ODRL policy document (rules included)."""
        return {k: v for k, v in self.dump().items() if k != "terms"}

    @property
    def has_rules(self) -> bool:
        extra = self.model_extra or {}
        return any(extra.get(k) for k in ("permission", "prohibition", "obligation"))


OfferWithTerms = OfferRef


def _offer(value: Any) -> Any:
    return {"@id": value} if isinstance(value, str) else value


class ContractRequestMessage(DspMessage):
    type: Literal["ContractRequestMessage"] = Field(alias="@type")
    consumerPid: str = Field(pattern=PID)
    providerPid: str | None = Field(None, pattern=PID)
    offer: OfferRef
    callbackAddress: str | None = Field(None, max_length=500)
    purpose: str | None = Field(None, validation_alias=_alias("purpose"), min_length=1, max_length=100)
    scenario: str | None = Field(None, validation_alias=_alias("scenario"), max_length=100)
    not_after: str | None = Field(None, validation_alias=AliasChoices("notAfter", "twin:notAfter"), max_length=40)

    _offer = field_validator("offer", mode="before")(lambda cls, v: _offer(v))


class ContractOfferMessage(DspMessage):
    type: Literal["ContractOfferMessage"] = Field(alias="@type")
    providerPid: str = Field(pattern=PID)
    consumerPid: str | None = Field(None, pattern=PID)
    offer: OfferRef
    callbackAddress: str | None = Field(None, max_length=500)

    _offer = field_validator("offer", mode="before")(lambda cls, v: _offer(v))


class ContractNegotiationEventMessage(DspMessage):
    type: Literal["ContractNegotiationEventMessage"] = Field(alias="@type")
    providerPid: str = Field(pattern=PID)
    consumerPid: str = Field(pattern=PID)
    eventType: Literal["ACCEPTED", "FINALIZED"]
    countersignature: dict[str, Any] | None = Field(None, validation_alias=_alias("countersignature"))


class ContractAgreementMessage(DspMessage):
    type: Literal["ContractAgreementMessage"] = Field(alias="@type")
    providerPid: str = Field(pattern=PID)
    consumerPid: str = Field(pattern=PID)
    agreement: dict[str, Any]
    callbackAddress: str | None = Field(None, max_length=500)
    timestamp: str | None = Field(None, max_length=40)
    signature: SignatureEntry | None = Field(None, validation_alias=_alias("signature"))
    signed_agreement: dict[str, Any] | None = Field(
        None, validation_alias=AliasChoices("signedAgreement", "twin:signedAgreement"))


class ContractAgreementVerificationMessage(DspMessage):
    type: Literal["ContractAgreementVerificationMessage"] = Field(alias="@type")
    providerPid: str = Field(pattern=PID)
    consumerPid: str = Field(pattern=PID)
    signature: SignatureEntry | None = Field(None, validation_alias=_alias("signature"))


class ContractNegotiationTerminationMessage(DspMessage):
    type: Literal["ContractNegotiationTerminationMessage"] = Field(alias="@type")
    providerPid: str = Field(pattern=PID)
    consumerPid: str = Field(pattern=PID)
    code: str | None = Field(None, max_length=100)
    reason: list[Any] | None = Field(None, max_length=20)


class CatalogRequestMessage(DspMessage):
    type: Literal["CatalogRequestMessage"] = Field(alias="@type")
    filter: list[Any] | None = Field(None, max_length=20)


class DatasetRequestMessage(DspMessage):
    type: Literal["DatasetRequestMessage"] = Field(alias="@type")
    dataset: str = Field(max_length=300)


# Which model reads which DSP type (the transfer messages: twinspace.dsp.transfer_messages).
MODELS: dict[str, type[DspMessage]] = {m.model_fields["type"].annotation.__args__[0]: m for m in (  # type: ignore
    ContractRequestMessage, ContractOfferMessage, ContractNegotiationEventMessage, ContractAgreementMessage,
    ContractAgreementVerificationMessage, ContractNegotiationTerminationMessage, CatalogRequestMessage,
    DatasetRequestMessage)}


def _pids(doc: Any) -> dict[str, str]:
    if not isinstance(doc, dict):
        return {}
    return {k: doc[k] for k in ("providerPid", "consumerPid") if isinstance(doc.get(k), str)}


def _legacy_context(raw: dict[str, Any]) -> dict[str, Any]:
    """Older TwinSpace clients declared ``{"twin": ns}`` inline; read them as the TwinSpace context."""
    ctx = raw.get("@context")
    if isinstance(ctx, list) and _LEGACY_TWIN in ctx:
        return {**raw, "@context": [TWIN_CONTEXT if c == _LEGACY_TWIN else c for c in ctx]}
    return raw


def uses_twin_context(raw: Any) -> bool:
    """Whether the sender speaks the TwinSpace extensions (then the answer carries them too)."""
    ctx = raw.get("@context") if isinstance(raw, dict) else None
    items = ctx if isinstance(ctx, list) else [ctx]
    return TWIN_CONTEXT in items or _LEGACY_TWIN in items


def parse(raw: Any, expected: str | tuple[str, ...]) -> DspMessage:
    """JSON-LD → schema → model. Raises MessageProblem (a DSP error object on the route)."""
    expected = (expected,) if isinstance(expected, str) else expected
    pids = _pids(raw)
    if not isinstance(raw, dict):
        raise MessageProblem("A DSP message is a JSON-LD object.", code="invalid_json_ld")
    try:
        doc = jsonld.normalize(_legacy_context(raw))
    except jsonld.JsonLdProblem as exc:
        raise MessageProblem(str(exc), code="invalid_json_ld", pids=pids) from None
    pids = _pids(doc) or pids
    kind = doc.get("@type")
    if kind not in expected:
        raise MessageProblem(f"Expected a {' or '.join(expected)}, got {str(kind)[:80]}.", code="wrong_message_type",
                             pids=pids)
    problems = schemas.errors(_schema_view(doc), kind)
    if problems:
        raise MessageProblem("The message does not match the DSP 2025-1 schema: " + "; ".join(problems[:3]),
                             code="schema_violation", pids=pids)
    model = MODELS.get(kind)
    if model is None:
        from twinspace.dsp.transfer_messages import TRANSFER_MODELS

        model = TRANSFER_MODELS[kind]
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise MessageProblem(f"Invalid {kind}: {where}: {first.get('msg')}"[:400], code="invalid_message",
                             pids=pids) from None


def _schema_view(doc: dict[str, Any]) -> dict[str, Any]:
    """The normalised message as the schemas expect it: an ``offer`` that compacted to its bare IRI is
    an object again, and single-valued ``rightOperand`` lists are not our concern (schema allows both)."""
    out = dict(doc)
    if isinstance(out.get("offer"), str):
        out["offer"] = {"@id": out["offer"], "@type": "Offer"}
    return out


def negotiation_message(*, consumer_pid: str, provider_pid: str, state: str) -> dict[str, Any]:
    """The DSP ``ContractNegotiation`` response/ack document."""
    return {"@context": list(PLAIN_CONTEXT), "@type": "ContractNegotiation", "consumerPid": consumer_pid,
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


def extension(name: str, value: Any) -> tuple[str, dict[str, Any]]:
    """A TwinSpace extension property as a plain DSP peer can carry it: an absolute IRI key and a JSON
    literal, so it needs no context and survives JSON-LD expansion (a peer that does not know it
    ignores it)."""
    return TWIN_NS + name, {"@type": "@json", "@value": value}
