"""The provider's data endpoint for connector-hosted assets (``twinspace connector serve DIR``).

The de-identified Arrow files stay on the provider's machine; the broker fetches one per access
with ``GET /data/<sha256>`` and a short-lived EdDSA JWT signed by the broker key
(``aud = twinspace-connector``, claim ``sha256`` = the requested file hash). Only files in the
served directory whose SHA-256 is the requested one are ever sent; everything else is a 401/404.
"""

from __future__ import annotations

import hashlib
import re
import threading
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse

AUDIENCE = "twinspace-connector"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _problem(status: int, code: str, detail: str) -> JSONResponse:
    return JSONResponse({"type": f"https://twinspace.dev/problems/{code}", "status": status, "code": code,
                         "detail": detail}, status_code=status, media_type="application/problem+json")


class DataDirectory:
    """Arrow files of one directory, indexed by the SHA-256 of their bytes (re-scanned on a miss)."""

    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        self._index: dict[str, Path] = {}
        self._lock = threading.Lock()

    def _scan(self) -> None:
        index = {}
        for path in sorted(self.root.glob("*.arrow")):
            digest = hashlib.sha256()
            with path.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
            index[digest.hexdigest()] = path
        self._index = index

    def find(self, sha256: str) -> Path | None:
        with self._lock:
            if sha256 not in self._index:
                self._scan()
            return self._index.get(sha256)


def create_connector_app(root: Path, broker_public_key: Ed25519PublicKey, *, broker_issuer: str = "twinspace-broker",
                         leeway: int = 10) -> FastAPI:
    app = FastAPI(title="TwinSpace connector data endpoint", docs_url=None, redoc_url=None, openapi_url=None)
    files = DataDirectory(root)

    @app.get("/data/{sha256}")
    def data(sha256: str, request: Request):
        auth = request.headers.get("authorization", "")
        if not auth.lower().startswith("bearer "):
            return _problem(401, "missing_token", "A broker-signed bearer token is required.")
        try:
            claims = jwt.decode(auth[7:], broker_public_key, algorithms=["EdDSA"], audience=AUDIENCE,
                                issuer=broker_issuer, leeway=leeway,
                                options={"require": ["iss", "aud", "exp", "iat", "sha256"]})
        except jwt.PyJWTError as exc:
            return _problem(401, "invalid_token", f"The broker token is invalid: {type(exc).__name__}.")
        if claims["sha256"] != sha256 or not _HEX64.match(sha256):
            return _problem(403, "token_wrong_data", "The token is for other data.")
        path = files.find(sha256)
        if path is None:
            return _problem(404, "data_not_found", "No file with this SHA-256 is served here.")
        return FileResponse(path, media_type="application/vnd.apache.arrow.file")

    return app
