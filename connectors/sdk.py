"""Broker client for participants. Authenticates with the org's own private key (RFC 7523
client assertion); the key never leaves this process."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.crypto import key_id, load_private_key
from broker.identity.tokens import ASSERTION_TYPE, make_assertion


class BrokerError(Exception):
    """A problem response (RFC 9457) from the broker."""

    def __init__(self, status: int, problem: dict[str, Any]):
        self.status = status
        self.problem = problem
        self.code = problem.get("code", f"http_{status}")
        super().__init__(f"{status} {self.code}: {problem.get('detail', '')}")


@dataclass
class BrokerClient:
    """``http`` is any httpx.Client pointed at the broker (a FastAPI TestClient works in-process)."""

    http: httpx.Client
    org_id: str
    private_key: Ed25519PrivateKey
    audience: str = "twinspace-broker"
    _token: str | None = field(default=None, repr=False)
    _token_expires: float = 0.0

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
    def catalog_upload(self, data: bytes, part_size: int = 512 * 1024) -> str:
        """Stage a table in parts (each below the broker's body limit); returns the upload id."""
        upload = self.post("/catalog/uploads")
        part_size = min(part_size, int(upload.get("max_part_bytes", part_size)))
        for n, start in enumerate(range(0, len(data), part_size)):
            self.request("PUT", f"/catalog/uploads/{upload['upload_id']}/parts/{n}",
                         content=data[start:start + part_size], headers={"Content-Type": "application/octet-stream"})
        return upload["upload_id"]

    def catalog_publish(self, metadata: dict[str, Any], data: bytes, asset_id: str | None = None) -> dict[str, Any]:
        """Publish a new asset (or, with ``asset_id``, a new version of one of ours) with its table."""
        body = {**metadata, "upload_id": self.catalog_upload(data)}
        path = f"/catalog/assets/{asset_id}/versions" if asset_id else "/catalog/assets"
        return self.post(path, json=body)

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
