"""Signed policy bundles in OPA's layout: a gzipped tar of the library's ``.rego`` and ``data.json``
files with a ``.manifest`` (``revision``, ``roots``) and ``.signatures.json``, a JWS whose payload
lists every file's SHA-256 (OPA's bundle-signing format). Signed with an Ed25519 key (EdDSA), so a
bundle is checked with the public key alone, and any added, missing or altered file is refused.

OPA itself verifies RS/PS/ES/HS-signed bundles; this format is the same, the algorithm is EdDSA.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import jwt

SIGNATURES = ".signatures.json"
MANIFEST = ".manifest"


class BundleError(ValueError):
    pass


def _files(policies: Path) -> dict[str, bytes]:
    out = {}
    for path in sorted(Path(policies).rglob("*")):
        if path.is_file() and (path.suffix == ".rego" or path.name == "data.json"):
            out[path.relative_to(policies).as_posix()] = path.read_bytes()
    if not out:
        raise BundleError(f"{policies} holds no .rego or data.json files")
    return out


def build_bundle(policies: Path, key, *, revision: str, kid: str) -> bytes:
    files = _files(Path(policies))
    files[MANIFEST] = json.dumps({"revision": revision, "roots": ["twinspace"]}, sort_keys=True).encode()
    payload = {"files": [{"name": n, "hash": hashlib.sha256(b).hexdigest(), "algorithm": "SHA-256"}
                         for n, b in sorted(files.items())], "keyid": kid, "scope": "write"}
    token = jwt.encode(payload, key, algorithm="EdDSA", headers={"kid": kid})
    files[SIGNATURES] = json.dumps({"signatures": [token]}).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo("/" + name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def verify_bundle(data: bytes, public_key) -> dict[str, Any]:
    """{"revision", "roots", "files": {name: bytes}} when every file is signed and unchanged."""
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            files = {m.name.lstrip("/"): tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BundleError(f"not a bundle (gzipped tar): {exc}") from None
    if SIGNATURES not in files:
        raise BundleError("the bundle is not signed (no .signatures.json)")
    try:
        tokens = json.loads(files.pop(SIGNATURES))["signatures"]
        claims = jwt.decode(tokens[0], public_key, algorithms=["EdDSA"])
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise BundleError(f"the bundle signature is malformed: {exc}") from None
    except jwt.InvalidTokenError as exc:
        raise BundleError(f"the bundle signature does not verify with this key: {exc}") from None
    signed = {f["name"]: f["hash"] for f in claims.get("files", [])}
    if set(signed) != set(files):
        extra, missing = sorted(set(files) - set(signed)), sorted(set(signed) - set(files))
        raise BundleError(f"files not covered by the signature: {extra or 'none'}; signed but missing: "
                          f"{missing or 'none'}")
    for name, body in files.items():
        if hashlib.sha256(body).hexdigest() != signed[name]:
            raise BundleError(f"{name} was changed after signing")
    manifest = json.loads(files.pop(MANIFEST, b"{}"))
    return {"revision": manifest.get("revision"), "roots": manifest.get("roots"), "files": files,
            "keyid": claims.get("keyid")}


def extract_verified(bundle: Path, public_key_b64: str, into: Path) -> tuple[Path, dict[str, Any]]:
    """Verify ``bundle`` with the operator's key and unpack its files into a directory of their own
    (named by the bundle's SHA-256, so a changed bundle never mixes with an earlier one); returns the
    directory and ``{revision, keyid, sha256}``. Raises ``BundleError`` on any doubt — the broker then
    refuses to start rather than decide with unsigned rules."""
    from twinspace.crypto import public_key_from_b64

    data = Path(bundle).read_bytes()
    try:
        key = public_key_from_b64(public_key_b64)
    except ValueError as exc:
        raise BundleError(f"the policy bundle key is not a base64url Ed25519 public key: {exc}") from None
    result = verify_bundle(data, key)
    digest = hashlib.sha256(data).hexdigest()
    target = Path(into) / digest[:32]
    for name, body in result["files"].items():
        path = (target / name).resolve()
        if target.resolve() not in path.parents:
            raise BundleError(f"the bundle names a file outside its root: {name}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
    return target, {"revision": result["revision"], "keyid": result["keyid"], "sha256": digest}
