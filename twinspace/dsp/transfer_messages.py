"""DSP transfer-process messages (2025-1 shape), strictly validated."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from twinspace.dsp.messages import CONTEXT, PID, DspMessage

PULL_FORMAT = "HttpData-PULL"
AUTH_TYPE = "twinspace-transfer+pop"


class TransferRequestMessage(DspMessage):
    type: Literal["TransferRequestMessage"] = Field(alias="@type")
    consumerPid: str = Field(pattern=PID)
    agreementId: str = Field(min_length=1, max_length=64)
    format: Literal["HttpData-PULL"]
    callbackAddress: str | None = Field(None, max_length=500)


class TransferStartMessage(DspMessage):
    """Sent by either party to resume a SUSPENDED transfer (the broker answers with a fresh DataAddress)."""

    type: Literal["TransferStartMessage"] = Field(alias="@type")
    providerPid: str = Field(pattern=PID)
    consumerPid: str = Field(pattern=PID)


class TransferSuspensionMessage(DspMessage):
    type: Literal["TransferSuspensionMessage"] = Field(alias="@type")
    providerPid: str = Field(pattern=PID)
    consumerPid: str = Field(pattern=PID)
    code: str | None = Field(None, max_length=100)
    reason: list[Any] | None = Field(None, max_length=20)


class TransferCompletionMessage(DspMessage):
    type: Literal["TransferCompletionMessage"] = Field(alias="@type")
    providerPid: str = Field(pattern=PID)
    consumerPid: str = Field(pattern=PID)


class TransferTerminationMessage(DspMessage):
    type: Literal["TransferTerminationMessage"] = Field(alias="@type")
    providerPid: str = Field(pattern=PID)
    consumerPid: str = Field(pattern=PID)
    code: str | None = Field(None, max_length=100)
    reason: list[Any] | None = Field(None, max_length=20)


def transfer_process(*, provider_pid: str, consumer_pid: str, state: str) -> dict[str, Any]:
    return {"@context": CONTEXT, "@type": "TransferProcess", "providerPid": provider_pid,
            "consumerPid": consumer_pid, "state": state}


def start_message(*, provider_pid: str, consumer_pid: str, endpoint: str, token: str,
                  expires_at: int) -> dict[str, Any]:
    """TransferStartMessage with the pull DataAddress; the token needs a proof of possession on use."""
    def prop(name: str, value: Any) -> dict[str, Any]:
        return {"@type": "EndpointProperty", "name": name, "value": value}

    return {"@context": CONTEXT, "@type": "TransferStartMessage", "providerPid": provider_pid,
            "consumerPid": consumer_pid,
            "dataAddress": {"@type": "DataAddress", "endpointType": "https://w3id.org/idsa/v4.1/HTTP",
                            "endpoint": endpoint,
                            "endpointProperties": [prop("authorization", token), prop("authType", AUTH_TYPE),
                                                   prop("expiresAt", expires_at),
                                                   prop("formats", ["csv", "json", "parquet"])]}}
