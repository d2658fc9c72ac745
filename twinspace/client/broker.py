"""Broker client for participants. Authenticates with the org's own private key (RFC 7523
client assertion); the key never leaves this process."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from twinspace.crypto import key_id, load_private_key
from twinspace.tokens import ASSERTION_TYPE, make_assertion


class BrokerError(Exception):
    """A problem response (RFC 9457) from the broker."""

    def __init__(self, status: int, problem: dict[str, Any]):
        self.status = status
        self.problem = problem
        self.code = problem.get("code", f"http_{status}")
        detail = problem.get("detail")
        if detail is None and isinstance(problem.get("reason"), list):  # a DSP error object
            detail = "; ".join(str(r) for r in problem["reason"])
        super().__init__(f"{status} {self.code}: {detail or ''}")


@dataclass
class BrokerClient:
    """``http`` is any httpx.Client pointed at the broker (a FastAPI TestClient works in-process)."""

    http: httpx.Client
    org_id: str
    private_key: Ed25519PrivateKey
    audience: str = "twinspace-broker"
    # The client for connectors' data planes (absolute URLs; no broker token is sent there). None: a
    # fresh httpx.Client per pull. Tests inject one.
    connector_http: httpx.Client | None = field(default=None, repr=False)
    last_receipt: str | None = None  # X-TwinSpace-Receipt of the last pull
    _token: str | None = field(default=None, repr=False)
    _token_expires: float = 0.0
    _transfer_tokens: dict[str, tuple[dict[str, Any], float]] = field(default_factory=dict, repr=False)

    @classmethod
    def connect(cls, base_url: str, org_id: str, key_file: Path, audience: str = "twinspace-broker",
                timeout: float = 60.0) -> "BrokerClient":
        return cls(httpx.Client(base_url=base_url, timeout=timeout), org_id, load_private_key(key_file), audience)

    @property
    def kid(self) -> str:
        return key_id(self.private_key.public_key())

    def assertion(self, lifetime: int = 60) -> str:
        return make_assertion(self.private_key, org_id=self.org_id, audience=self.audience, lifetime=lifetime)

    def authenticate(self) -> str:
        response = self.http.post("/auth/token", data={
            "grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": self.assertion()})
        body = self._check(response)
        self._token = body["access_token"]
        self._token_expires = time.time() + body["expires_in"]
        return self._token

    def token(self) -> str:
        if self._token is None or time.time() > self._token_expires - 30:
            self.authenticate()
        return self._token  # type: ignore[return-value]

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token()}"}

    @staticmethod
    def _check(response: httpx.Response) -> Any:
        if response.status_code >= 400:
            try:
                problem = response.json()
            except ValueError:
                problem = {"detail": response.text[:500]}
            raise BrokerError(response.status_code, problem)
        if not response.content:
            return None
        if response.headers.get("content-type", "").startswith(("application/json", "application/problem+json",
                                                                "application/ld+json")):
            return response.json()
        return response.content

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = {**kwargs.pop("headers", {}), **self.headers()}
        return self._check(self.http.request(method, path, headers=headers, **kwargs))

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.request("POST", path, **kwargs)

    # --- identity -----------------------------------------------------------------------
    def whoami(self) -> dict[str, Any]:
        return self.get("/orgs/me")

    # --- feature methods are added below, one block per feature ----------------------------

    # --- catalog (owner: catalog/connectors) ----------------------------------------------
    def connector_register(self, endpoint: str) -> dict[str, Any]:
        """Provider: register our connector; the broker challenges it for an ownership proof signed by our key."""
        return self.post("/connectors", json={"endpoint": endpoint})

    def connectors(self) -> list[dict[str, Any]]:
        return self.get("/connectors")["items"]

    def catalog_publish(self, metadata: dict[str, Any], data: bytes | None = None,
                        asset_id: str | None = None) -> dict[str, Any]:
        """Publish a new asset (or, with ``asset_id``, a new version of one of ours). The rows stay in our
        connector: ``metadata["data_endpoint"]`` names it (registered with ``connector_register``) and the
        broker checks the connector's signed manifest. ``data`` is not sent (kept for old callers)."""
        if not metadata.get("data_endpoint"):
            raise ValueError("metadata needs data_endpoint: the registered connector that serves the rows")
        path = f"/catalog/assets/{asset_id}/versions" if asset_id else "/catalog/assets"
        return self.post(path, json=dict(metadata))

    def catalog_withdraw(self, asset_id: str, reason: str | None = None) -> dict[str, Any]:
        return self.post(f"/catalog/assets/{asset_id}/withdraw", json={"reason": reason})

    def catalog_search(self, **filters: Any) -> dict[str, Any]:
        params = {k: (",".join(map(str, v)) if isinstance(v, (list, tuple)) else v)
                  for k, v in filters.items() if v is not None}
        return self.get("/catalog/assets", params=params)

    def catalog_get(self, asset_id: str, version: int | None = None) -> dict[str, Any]:
        return self.get(f"/catalog/assets/{asset_id}", params={"version": version} if version else None)

    def catalog_dcat(self) -> dict[str, Any]:
        return self.get("/catalog/dcat")

    # --- contracts and transfers (owner: contracts; docs/contracts.md) ----------------------
    # The org's private key signs agreements and proofs of possession here; it never leaves this process.
    def _dsp(self, type_: str, **fields: Any) -> dict[str, Any]:
        from twinspace.dsp.messages import CONTEXT

        return {"@context": CONTEXT, "@type": type_, **{k: v for k, v in fields.items() if v is not None}}

    def _pids(self, negotiation_id: str) -> dict[str, str]:
        neg = self.get(f"/dsp/negotiations/{negotiation_id}")
        return {"providerPid": neg["providerPid"], "consumerPid": neg["consumerPid"]}

    def contract_catalog(self) -> dict[str, Any]:
        """DSP CatalogRequestMessage: the DCAT catalog with offers (``odrl:hasPolicy``)."""
        return self.post("/dsp/catalog/request", json=self._dsp("CatalogRequestMessage"))

    def _catalog_offer(self, offer: str) -> dict[str, Any]:
        """The ODRL offer ``offer`` (IRI) as the DSP dataset lists it, with its target set."""
        parts = offer.split(":")
        if len(parts) != 6 or parts[:3] != ["urn", "twinspace", "offer"]:
            raise ValueError("not a TwinSpace catalog offer IRI")
        dataset_iri = f"urn:twinspace:asset:{parts[3]}:{parts[4]}"
        dataset = self.get(f"/dsp/catalog/datasets/{dataset_iri}")
        found = next((o for o in dataset.get("hasPolicy") or [] if o.get("@id") == offer), None)
        if found is None:
            raise ValueError("the dataset does not list this offer")
        return {**found, "target": dataset_iri}

    def contract_request(self, offer: str, purpose: str, scenario: str | None = None, not_after: str | None = None,
                         consumer_pid: str | None = None) -> dict[str, Any]:
        """Consumer: ContractRequestMessage for a catalog offer IRI (the offer's ODRL terms as the catalog
        lists them); returns the ContractNegotiation. The broker hosts our side (no callback)."""
        import uuid

        return self.post("/dsp/negotiations/request", json=self._dsp(
            "ContractRequestMessage", consumerPid=consumer_pid or f"urn:uuid:{uuid.uuid4()}",
            offer=self._catalog_offer(offer), callbackAddress="urn:twinspace:broker-hosted",
            **{"twin:purpose": purpose, "twin:scenario": scenario, "twin:notAfter": not_after}))

    def contract_offer(self, negotiation_id: str, *, max_rows: int | None = None, columns: list[str] | None = None,
                       not_after: str | None = None, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Provider: ContractOfferMessage, optionally narrowing the terms."""
        neg = self.get(f"/contracts/negotiations/{negotiation_id}")
        terms = {k: v for k, v in {"max_rows": max_rows, "columns": columns, "not_after": not_after,
                                   "params": params}.items() if v is not None}
        offer = {**self._catalog_offer(neg["twin:negotiation"]["offer"]), **({"twin:terms": terms} if terms else {})}
        return self.post(f"/dsp/negotiations/{negotiation_id}/offers", json=self._dsp(
            "ContractOfferMessage", offer=offer, **self._pids(negotiation_id)))

    def contract_event(self, negotiation_id: str, event: str) -> dict[str, Any]:
        return self.post(f"/dsp/negotiations/{negotiation_id}/events", json=self._dsp(
            "ContractNegotiationEventMessage", eventType=event, **self._pids(negotiation_id)))

    def contract_accept(self, negotiation_id: str) -> dict[str, Any]:
        return self.contract_event(negotiation_id, "ACCEPTED")

    def contract_agree(self, negotiation_id: str) -> dict[str, Any]:
        """Provider: fetch the drafted agreement, sign its RFC 8785 form locally, send it."""
        from twinspace.agreements import sign_document

        draft = self.post(f"/contracts/negotiations/{negotiation_id}/agreement-draft")
        doc = draft["document"]
        if doc.get("provider_id") != self.org_id:
            raise ValueError("the drafted agreement does not name us as provider")
        signature = sign_document(self.private_key, doc, role="provider", org_id=self.org_id)
        return self.post(f"/dsp/negotiations/{negotiation_id}/agreement", json=self._dsp(
            "ContractAgreementMessage", agreement=doc, **self._pids(negotiation_id), **{"twin:signature": signature}))

    def contract_verify(self, negotiation_id: str) -> dict[str, Any]:
        """Consumer: check the agreement names us and the terms we negotiated (asset, purpose, scenario),
        then sign it with our key (ContractAgreementVerificationMessage). The broker checks the provider's
        signature; ``twinspace contract verify`` re-checks everything offline after finalisation."""
        from twinspace.agreements import sign_document

        neg = self.get(f"/contracts/negotiations/{negotiation_id}")
        doc = neg["agreement"]["document"]
        terms = neg["twin:negotiation"]
        if doc.get("consumer_id") != self.org_id:
            raise ValueError("the agreement does not name us as consumer")
        if (doc["asset"]["id"], doc["asset"]["version"], doc["purpose"], doc.get("scenario")) != (
                terms["asset_id"], terms["asset_version"], terms["purpose"], terms["scenario"]):
            raise ValueError("the agreement's asset or purpose differs from what we negotiated")
        signature = sign_document(self.private_key, doc, role="consumer", org_id=self.org_id)
        return self.post(f"/dsp/negotiations/{negotiation_id}/agreement/verification", json=self._dsp(
            "ContractAgreementVerificationMessage", **self._pids(negotiation_id), **{"twin:signature": signature}))

    def contract_finalize(self, negotiation_id: str) -> dict[str, Any]:
        return self.contract_event(negotiation_id, "FINALIZED")

    def contract_terminate(self, negotiation_id: str, code: str | None = None,
                           reason: str | None = None) -> dict[str, Any]:
        return self.post(f"/dsp/negotiations/{negotiation_id}/termination", json=self._dsp(
            "ContractNegotiationTerminationMessage", code=code, reason=[reason] if reason else None,
            **self._pids(negotiation_id)))

    def contract_get(self, negotiation_id: str) -> dict[str, Any]:
        return self.get(f"/contracts/negotiations/{negotiation_id}")

    def contract_agreements(self, **filters: Any) -> dict[str, Any]:
        return self.get("/contracts/agreements", params={k: v for k, v in filters.items() if v is not None})

    def contract_agreement(self, agreement_id: str) -> dict[str, Any]:
        return self.get(f"/contracts/agreements/{agreement_id}")

    def contract_export(self, agreement_id: str) -> dict[str, Any]:
        return self.get(f"/contracts/agreements/{agreement_id}/export")

    def contract_revoke(self, agreement_id: str, reason: str | None = None) -> dict[str, Any]:
        return self.post(f"/contracts/agreements/{agreement_id}/revoke", json={"reason": reason})

    def transfer_request(self, agreement_id: str, consumer_pid: str | None = None,
                         wait_seconds: float = 10.0) -> dict[str, Any]:
        """Consumer: TransferRequestMessage (the process is REQUESTED), wait until the provider started it,
        then fetch our DataAddress. Returns the TransferProcess with ``twin:startMessage``."""
        import uuid

        tp = self.post("/dsp/transfers/request", json=self._dsp(
            "TransferRequestMessage", consumerPid=consumer_pid or f"urn:uuid:{uuid.uuid4()}",
            agreementId=agreement_id, format="HttpData-PULL", callbackAddress="urn:twinspace:broker-hosted"))
        deadline = time.time() + wait_seconds
        while tp["state"] == "REQUESTED" and time.time() < deadline:
            time.sleep(0.05)
            tp = self.transfer_get(tp["providerPid"])
        if tp["state"] != "STARTED":
            raise BrokerError(409, {"code": "transfer_not_started",
                                    "detail": f"the provider did not start the transfer (state {tp['state']})"})
        return {**tp, "twin:startMessage": self.transfer_token(tp["providerPid"])}

    @staticmethod
    def data_address(start: dict[str, Any]) -> tuple[str, str]:
        """(endpoint, token) from a TransferStartMessage or a TransferProcess carrying one."""
        start = start.get("twin:startMessage", start)
        address = start["dataAddress"]
        props = {p["name"]: p["value"] for p in address["endpointProperties"]}
        return address["endpoint"], props["authorization"]

    def transfer_pull(self, start: dict[str, Any], fmt: str = "csv", columns: list[str] | None = None, *,
                      fresh_token: bool = True, acknowledge: bool = False, limit: int | None = None) -> bytes:
        """Pull the data from the provider's connector into memory (``transfer_pull_to`` streams it to a
        file); see there."""
        import io

        sink = io.BytesIO()
        self.transfer_pull_to(start, sink, fmt, columns, fresh_token=fresh_token, acknowledge=acknowledge,
                              limit=limit)
        return sink.getvalue()

    def transfer_pull_to(self, start: dict[str, Any], sink: Any, fmt: str = "csv", columns: list[str] | None = None,
                         *, fresh_token: bool = True, acknowledge: bool = False, limit: int | None = None,
                         on_chunk: Any = None) -> dict[str, Any]:
        """Stream the data from the provider's connector (the DataAddress endpoint) into ``sink`` (a
        binary file) with a current transfer token — kept per transfer and reused until shortly before it
        expires, fetched anew otherwise (``fresh_token=False`` presents the one in ``start`` as it is) — and
        a fresh proof of possession signed here; no broker token is sent to the connector.
        ``on_chunk(nbytes, headers)`` follows the progress. Returns ``{bytes, sha256, rows, receipt}``; the
        receipt id is also kept in ``last_receipt``; ``acknowledge`` countersigns it with what arrived."""
        start = start.get("twin:startMessage", start)
        pid = start.get("providerPid")
        reused = False
        if pid and fresh_token:
            reused = pid in self._transfer_tokens
            start = self._current_token(pid)
            reused = reused and self._transfer_tokens.get(pid, (None,))[0] is start
        try:
            answer = self._pull_once(start, sink, fmt, columns, limit, on_chunk)
        except BrokerError as exc:
            if pid and fresh_token:
                self.forget_transfer_token(pid)  # refused: the next pull asks the broker for a new token
                if reused and exc.status in (401, 403):  # e.g. the transfer was suspended and resumed since
                    return self.transfer_pull_to(start, sink, fmt, columns, acknowledge=acknowledge, limit=limit,
                                                 on_chunk=on_chunk)
            raise
        self.last_receipt = answer["receipt"]
        if acknowledge and pid and self.last_receipt:
            self.transfer_acknowledge(pid, self.last_receipt, answer["sha256"], answer["bytes"])
        return answer

    def _pull_once(self, start: dict[str, Any], sink: Any, fmt: str, columns: list[str] | None,
                   limit: int | None, on_chunk: Any) -> dict[str, Any]:
        import hashlib

        from twinspace.transfer_tokens import make_pop

        endpoint, token = self.data_address(start)
        path = httpx.URL(endpoint).path
        params = {"format": fmt, **({"columns": ",".join(columns)} if columns else {}),
                  **({"limit": limit} if limit is not None else {})}
        headers = {"TwinSpace-Transfer-Token": token,
                   "TwinSpace-PoP": make_pop(self.private_key, method="GET", path=path, token=token)}
        http = self.connector_http or httpx.Client(timeout=self.http.timeout, follow_redirects=False)
        digest, size = hashlib.sha256(), 0
        try:
            with http.stream("GET", endpoint, params=params, headers=headers) as response:
                if response.status_code >= 400:
                    response.read()
                    self._check(response)
                for chunk in response.iter_bytes():
                    sink.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                    if on_chunk is not None:
                        on_chunk(len(chunk), response.headers)
                answer = {"bytes": size, "sha256": digest.hexdigest(), "rows": response.headers.get("X-TwinSpace-Rows"),
                          "receipt": response.headers.get("X-TwinSpace-Receipt")}
        finally:
            if http is not self.connector_http:
                http.close()
        return answer

    def transfer_acknowledge(self, transfer_id: str, receipt_id: str, sha256: str, nbytes: int) -> dict[str, Any]:
        """Countersign a connector's receipt: "I received ``nbytes`` bytes with SHA-256 ``sha256``"."""
        from twinspace.dataplane import ACK, sign_message

        ack = sign_message(self.private_key, ACK, issuer=self.org_id, audience=self.audience, claims={
            "receipt_id": receipt_id, "tpid": transfer_id, "sha256": sha256, "bytes": nbytes})
        # The connector delivers receipts to the broker just after the body ends (from its outbox, in
        # batches): a receipt not there yet is waited for, briefly.
        deadline = time.time() + self.receipt_wait_seconds
        while True:
            try:
                return self.post(f"/transfers/{transfer_id}/acknowledgements", json={"ack": ack})
            except BrokerError as exc:
                if exc.code != "receipt_not_found" or time.time() >= deadline:
                    raise
                time.sleep(0.05)

    def _raw(self, response: httpx.Response) -> bytes:
        if response.status_code >= 400:
            self._check(response)
        return response.content

    def transfer_token(self, transfer_id: str) -> dict[str, Any]:
        """A new DataAddress (TransferStartMessage shape) with a new transfer token."""
        return self.post(f"/transfers/{transfer_id}/token")

    token_margin = 30  # seconds before its expiry a kept transfer token is replaced
    receipt_wait_seconds = 10.0  # how long an acknowledgement waits for its receipt to reach the broker

    def _current_token(self, transfer_id: str) -> dict[str, Any]:
        import jwt

        kept = self._transfer_tokens.get(transfer_id)
        if kept is not None and kept[1] - self.token_margin > time.time():
            return kept[0]
        start = self.transfer_token(transfer_id)
        try:
            exp = float(jwt.decode(self.data_address(start)[1], options={"verify_signature": False})["exp"])
        except (jwt.PyJWTError, KeyError, TypeError, ValueError):
            exp = 0.0  # not ours to read: use it once
        self._transfer_tokens[transfer_id] = (start, exp)
        return start

    def forget_transfer_token(self, transfer_id: str) -> None:
        self._transfer_tokens.pop(transfer_id, None)

    def transfer_get(self, transfer_id: str) -> dict[str, Any]:
        return self.get(f"/dsp/transfers/{transfer_id}")

    def transfer_message(self, transfer_id: str, kind: str, code: str | None = None) -> dict[str, Any]:
        """kind: start (resume), suspension, completion or termination."""
        types = {"start": "TransferStartMessage", "suspension": "TransferSuspensionMessage",
                 "completion": "TransferCompletionMessage", "termination": "TransferTerminationMessage"}
        tp = self.transfer_get(transfer_id)
        extra = {"code": code} if code and kind in ("suspension", "termination") else {}
        return self.post(f"/dsp/transfers/{transfer_id}/{kind}", json=self._dsp(
            types[kind], providerPid=tp["providerPid"], consumerPid=tp["consumerPid"], **extra))


def negotiate(consumer: BrokerClient, provider: BrokerClient, offer: str, purpose: str, *,
              scenario: str | None = None, max_rows: int | None = None, columns: list[str] | None = None,
              not_after: str | None = None) -> dict[str, Any]:
    """The whole DSP negotiation between two participants' clients; returns the finalised agreement."""
    neg = consumer.contract_request(offer, purpose, scenario=scenario, not_after=not_after)
    pid = neg["providerPid"]
    provider.contract_offer(pid, max_rows=max_rows, columns=columns)
    consumer.contract_accept(pid)
    provider.contract_agree(pid)
    consumer.contract_verify(pid)
    provider.contract_finalize(pid)
    return consumer.contract_get(pid)["agreement"]
