"""Ed25519 key handling shared by identity, contracts and the audit log. No I/O but key files."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    padded = text + "=" * (-len(text) % 4)
    return base64.urlsafe_b64decode(padded.encode("ascii"))


def generate_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def public_raw(pub: Ed25519PublicKey) -> bytes:
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_b64(pub: Ed25519PublicKey) -> str:
    """Raw 32-byte public key, base64url (the form stored in the registry and JWK ``x``)."""
    return b64url(public_raw(pub))


def public_key_from_b64(text: str) -> Ed25519PublicKey:
    raw = b64url_decode(text)
    if len(raw) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    return Ed25519PublicKey.from_public_bytes(raw)


def key_id(pub: Ed25519PublicKey) -> str:
    """RFC 7638 JWK thumbprint of the OKP key: stable, derivable by anyone from the key."""
    jwk = '{"crv":"Ed25519","kty":"OKP","x":"%s"}' % public_key_b64(pub)
    return b64url(hashlib.sha256(jwk.encode()).digest())


def save_private_key(path: Path, key: Ed25519PrivateKey) -> None:
    """Write a PEM private key readable by the owner only (0600), never world-readable even briefly."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, pem)
    finally:
        os.close(fd)
    os.chmod(path, 0o600)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} does not hold an Ed25519 private key")
    return key


def load_or_create_private_key(path: Path) -> Ed25519PrivateKey:
    """The key at ``path``, made on first use. Several processes starting together (``serve --workers N``)
    agree on one key: each writes a complete temporary file and hard-links it into place, which only the
    first succeeds at; the others read the winner's key."""
    path = Path(path)
    if path.exists():
        return load_private_key(path)
    key = generate_key()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}")
    save_private_key(tmp, key)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return load_private_key(path)
    finally:
        tmp.unlink(missing_ok=True)
    return key


def sign(key: Ed25519PrivateKey, data: bytes) -> bytes:
    return key.sign(data)


def verify(pub: Ed25519PublicKey, signature: bytes, data: bytes) -> bool:
    try:
        pub.verify(signature, data)
    except InvalidSignature:
        return False
    return True
