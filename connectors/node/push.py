"""PUSH transfers: the broker hands the connector a transfer token naming the consumer's data address
(``push: {endpoint, authorization?}``); the connector checks it like a pull (minus the proof of
possession: the consumer is not the caller), gets a fresh decision, and POSTs the permitted rows to
the consumer. Private, loopback and link-local addresses are refused unless allowed by configuration."""

from __future__ import annotations

import hashlib
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from connectors.node.config import NodeConfig
from connectors.node.encode import apply_obligations, encode
from connectors.node.pep import FORMATS, Enforcer, Pull
from twinspace import netguard
from twinspace.dataplane import merge_obligations
from twinspace.errors import BadGateway, BadRequest, Forbidden, NotFound, Unauthorized


class PushRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    token: str = Field(min_length=1, max_length=16384)
    format: str = "json"


def check_destination(url: str, allow: list[str]) -> None:
    """The consumer's push address: an http(s) URL whose every address is public (or in ``allow``)."""
    from twinspace import netguard

    try:
        netguard.check(url, allow)
    except BadGateway:
        raise Forbidden("The push endpoint is not an http(s) URL at a public address.",
                        code="push_destination_refused") from None


def router_for(config: NodeConfig, pep: Enforcer) -> APIRouter:
    router = APIRouter(tags=["push"])

    @router.post("/dataplane/push")
    def push(body: PushRequest) -> dict[str, Any]:
        if body.format not in FORMATS:
            raise BadRequest(f"Unknown format {body.format!r}.", code="invalid_format")
        from twinspace.transfer_tokens import decode_transfer_token

        claims = decode_transfer_token(body.token, config.broker_key(), issuer=config.broker_issuer,
                                       audience=config.endpoint, leeway=config.leeway)
        target = claims.get("push")
        if not isinstance(target, dict) or not isinstance(target.get("endpoint"), str):
            raise Unauthorized("The transfer token names no push destination.", code="invalid_transfer_token")
        claims = pep.check_token(body.token, str(claims.get("tpid")))
        check_destination(target["endpoint"], config.push_allow_networks)
        pep.claim_token(claims)
        decision, document = pep.decide(claims, claims["tpid"], body.format, lease=False)
        table = config.store.table(claims["asset"]["content_hash"])
        if table is None:
            raise NotFound("The agreed content is not served by this connector.", code="data_not_found")
        ob = merge_obligations(document.get("obligations") if isinstance(document.get("obligations"), dict) else None,
                               decision.get("obligations") if isinstance(decision.get("obligations"), dict) else None)
        table = apply_obligations(table, max_rows=ob["max_rows"], columns=ob["columns"])
        plan = Pull(token=claims, decision=decision, table=table, fmt=body.format,
                    content_hash=claims["asset"]["content_hash"])
        data = b"".join(encode(plan.table, plan.fmt))
        headers = {"Content-Type": plan.media_type, **plan.headers()}
        if isinstance(target.get("authorization"), str):
            headers["Authorization"] = target["authorization"]
        complete = False
        status = None
        try:  # pinned to the address just checked: a second DNS answer cannot move it (rebinding)
            status = netguard.request(config.push_allow_networks, "POST", target["endpoint"], "", content=data,
                                      headers=headers, timeout=60.0, max_bytes=1 << 16).status_code
            complete = 200 <= status < 300
        except BadGateway:
            complete = False
        receipt = pep.receipt(plan, rows=plan.rows, nbytes=len(data), sha256=hashlib.sha256(data).hexdigest(),
                              complete=complete)
        config.receipts.send(plan.receipt_id, receipt)
        if not complete:
            raise BadGateway("The consumer's endpoint did not accept the data.", code="push_failed",
                             extra={"receipt_id": plan.receipt_id, "consumer_status": status})
        return {"receipt_id": plan.receipt_id, "rows": plan.rows, "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(), "consumer_status": status}

    return router
