"""DSP 2025-1 transfer-process messages (read after JSON-LD normalisation) and the documents TwinSpace
sends: ``TransferProcess`` acks and ``TransferStartMessage`` with a ``DataAddress``.

Formats: ``HttpData-PULL`` (the provider's data plane serves, the start message names its endpoint
and a token) and ``HttpData-PUSH`` (the consumer's request names its own ``dataAddress``, the
provider's data plane delivers there). Where the data plane is and how its endpoint looks is
pluggable: ``data_address`` builds the DataAddress from whatever the data plane reports."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from twinspace.dsp.messages import PID, PLAIN_CONTEXT, DspMessage, DspModel

PULL_FORMAT = "HttpData-PULL"
PUSH_FORMAT = "HttpData-PUSH"
FORMATS = (PULL_FORMAT, PUSH_FORMAT)
HTTP_ENDPOINT_TYPE = "https://w3id.org/idsa/v4.1/HTTP"
AUTH_TYPE = "twinspace-transfer+pop"


class EndpointProperty(DspModel):
    type: Literal["EndpointProperty"] = Field("EndpointProperty", alias="@type")
    name: str = Field(min_length=1, max_length=100)
    value: str = Field(max_length=8000)


class DataAddress(DspModel):
    type: Literal["DataAddress"] = Field("DataAddress", alias="@type")
    endpointType: str = Field(max_length=300)
    endpoint: str | None = Field(None, max_length=2000)
    endpointProperties: list[EndpointProperty] | None = Field(None, max_length=50)

    def property(self, name: str) -> str | None:
        return next((p.value for p in self.endpointProperties or [] if p.name == name), None)


def _format(value: Any) -> Any:
    """``format`` is vocab-typed: a sender may write ``dspace:HttpData-PULL`` or a full IRI."""
    if isinstance(value, str):
        for prefix in ("https://w3id.org/dspace/2025/1/", "dspace:"):
            if value.startswith(prefix):
                return value[len(prefix):]
    return value


class TransferRequestMessage(DspMessage):
    type: Literal["TransferRequestMessage"] = Field(alias="@type")
    consumerPid: str = Field(pattern=PID)
    agreementId: str = Field(min_length=1, max_length=200)
    format: str = Field(min_length=1, max_length=100)
    dataAddress: DataAddress | None = None
    callbackAddress: str | None = Field(None, max_length=500)

    _fmt = field_validator("format", mode="before")(lambda cls, v: _format(v))


class TransferStartMessage(DspMessage):
    """From the provider: the transfer started (PULL: with the DataAddress). From either party on a
    SUSPENDED process: resume it."""

    type: Literal["TransferStartMessage"] = Field(alias="@type")
    providerPid: str = Field(pattern=PID)
    consumerPid: str = Field(pattern=PID)
    dataAddress: DataAddress | None = None


class _CodeMessage(DspMessage):
    providerPid: str = Field(pattern=PID)
    consumerPid: str = Field(pattern=PID)
    code: str | None = Field(None, max_length=100)
    reason: list[Any] | None = Field(None, max_length=20)


class TransferSuspensionMessage(_CodeMessage):
    type: Literal["TransferSuspensionMessage"] = Field(alias="@type")


class TransferCompletionMessage(DspMessage):
    type: Literal["TransferCompletionMessage"] = Field(alias="@type")
    providerPid: str = Field(pattern=PID)
    consumerPid: str = Field(pattern=PID)


class TransferTerminationMessage(_CodeMessage):
    type: Literal["TransferTerminationMessage"] = Field(alias="@type")


TRANSFER_MODELS: dict[str, type[DspMessage]] = {
    "TransferRequestMessage": TransferRequestMessage, "TransferStartMessage": TransferStartMessage,
    "TransferSuspensionMessage": TransferSuspensionMessage, "TransferCompletionMessage": TransferCompletionMessage,
    "TransferTerminationMessage": TransferTerminationMessage}


def transfer_process(*, provider_pid: str, consumer_pid: str, state: str) -> dict[str, Any]:
    return {"@context": list(PLAIN_CONTEXT), "@type": "TransferProcess", "providerPid": provider_pid,
            "consumerPid": consumer_pid, "state": state}


def data_address(endpoint: str, properties: dict[str, Any], *,
                 endpoint_type: str = HTTP_ENDPOINT_TYPE) -> dict[str, Any]:
    """A DSP ``DataAddress``; endpoint property values are strings (the schema's rule)."""
    props = [{"@type": "EndpointProperty", "name": str(name), "value": _text(value)}
             for name, value in properties.items() if value is not None]
    address: dict[str, Any] = {"@type": "DataAddress", "endpointType": endpoint_type, "endpoint": endpoint}
    if props:
        address["endpointProperties"] = props
    return address


def _text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def start_message(*, provider_pid: str, consumer_pid: str, address: dict[str, Any] | None = None,
                  endpoint: str | None = None, token: str | None = None,
                  expires_at: int | None = None) -> dict[str, Any]:
    """TransferStartMessage. PULL: ``address`` (from ``data_address``) or the TwinSpace data plane's
    ``endpoint`` + ``token`` (a proof of possession is needed on use); PUSH: no address."""
    msg: dict[str, Any] = {"@context": list(PLAIN_CONTEXT), "@type": "TransferStartMessage",
                           "providerPid": provider_pid, "consumerPid": consumer_pid}
    if address is None and endpoint is not None:
        address = data_address(endpoint, {"authorization": token, "authType": AUTH_TYPE, "expiresAt": expires_at,
                                          "formats": ["csv", "json", "parquet"]})
    if address is not None:
        msg["dataAddress"] = address
    return msg


def code_message(kind: str, *, provider_pid: str, consumer_pid: str, code: str | None = None,
                 reason: list[Any] | None = None) -> dict[str, Any]:
    msg: dict[str, Any] = {"@context": list(PLAIN_CONTEXT), "@type": kind, "providerPid": provider_pid,
                           "consumerPid": consumer_pid}
    if code:
        msg["code"] = str(code)[:100]
    if reason:
        msg["reason"] = [str(r)[:500] for r in reason][:10]
    return msg
