"""Broker-hosted data vault: each asset version's de-identified table (Arrow IPC bytes), encrypted
at rest with an AES-256-GCM envelope.

* a fresh 256-bit data key and 96-bit nonce per asset version; AAD binds the ciphertext to
  ``asset_id|version|content_hash`` so blobs cannot be swapped between versions or assets;
* the data key is wrapped (AES-256-GCM, AAD ``asset_id|version``) by the broker master key, read
  from ``settings.vault_master_key_file`` (default ``<data_dir>/vault_master.key``, created with
  mode 0600 on first use); every replica must see the same key file;
* on load the plaintext's SHA-256 must equal the asset's published content hash.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pyarrow as pa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlmodel import Session

from broker.catalog.models import AssetBlob
from twinspace.errors import NotFound, ServiceUnavailable
from broker.settings import Settings

_keys: dict[Path, bytes] = {}
_lock = threading.Lock()


def master_key_path(settings: Settings) -> Path:
    configured = getattr(settings, "vault_master_key_file", None)
    return Path(configured) if configured else settings.data_dir / "vault_master.key"


def master_key(settings: Settings) -> bytes:
    path = master_key_path(settings).resolve()
    with _lock:
        if path in _keys:
            return _keys[path]
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                fd = None  # another replica/thread created it first
            if fd is not None:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(AESGCM.generate_key(bit_length=256))
        key = path.read_bytes()
        if len(key) != 32:
            raise ServiceUnavailable("The vault master key file is not a 32-byte key.", code="vault_key_invalid")
        if path.stat().st_mode & 0o077:
            raise ServiceUnavailable("The vault master key file must not be readable by group or others (0600).",
                                     code="vault_key_permissions")
        _keys[path] = key
        return key


def master_key_id(key: bytes) -> str:
    return hashlib.sha256(b"twinspace-vault-master|" + key).hexdigest()[:16]


def _aad(asset_id: str, version: int, content_hash: str | None = None) -> bytes:
    return f"{asset_id}|{version}".encode() + (f"|{content_hash}".encode() if content_hash else b"")


def store_bytes(session: Session, asset_id: str, version: int, data: bytes, content_hash: str, *,
                settings: Settings) -> AssetBlob:
    if hashlib.sha256(data).hexdigest() != content_hash:
        raise ValueError("content hash does not match the data")
    mk = master_key(settings)
    data_key = AESGCM.generate_key(bit_length=256)
    nonce = os.urandom(12)
    wrap_nonce = os.urandom(12)
    blob = AssetBlob(asset_id=asset_id, version=version, master_key_id=master_key_id(mk),
                     wrapped_key=wrap_nonce + AESGCM(mk).encrypt(wrap_nonce, data_key, _aad(asset_id, version)),
                     nonce=nonce, ciphertext=AESGCM(data_key).encrypt(nonce, data, _aad(asset_id, version, content_hash)),
                     content_hash=content_hash)
    session.add(blob)
    return blob


def load_bytes(session: Session, asset_id: str, version: int, *, settings: Settings) -> bytes:
    from broker.catalog.models import Asset

    blob = session.get(AssetBlob, (asset_id, version))
    asset = session.get(Asset, (asset_id, version))
    if asset is not None and blob is None and asset.data_endpoint:
        # Connector-hosted: fetched from the provider's connector for this access only, and
        # checked against the published content hash before anything is used.
        from broker.catalog.connector_source import fetch

        return fetch(asset.data_endpoint, asset.content_hash, settings)
    if blob is None or asset is None:
        raise NotFound(f"No stored data for asset {asset_id} version {version}.", code="asset_data_not_found")
    mk = master_key(settings)
    if blob.master_key_id != master_key_id(mk):
        raise ServiceUnavailable("The vault master key does not match the one this data was stored with.",
                                 code="vault_key_mismatch")
    try:
        wrap_nonce, wrapped = blob.wrapped_key[:12], blob.wrapped_key[12:]
        data_key = AESGCM(mk).decrypt(wrap_nonce, wrapped, _aad(asset_id, version))
        data = AESGCM(data_key).decrypt(blob.nonce, blob.ciphertext, _aad(asset_id, version, asset.content_hash))
    except InvalidTag as exc:
        raise ServiceUnavailable(f"Stored data of asset {asset_id} v{version} failed authentication (tampered?).",
                                 code="vault_integrity") from exc
    if hashlib.sha256(data).hexdigest() != asset.content_hash:
        raise ServiceUnavailable(f"Stored data of asset {asset_id} v{version} does not match its content hash.",
                                 code="vault_integrity")
    return data


def load_table(session: Session, asset_id: str, version: int, *, settings: Settings) -> pa.Table:
    """Decrypt, verify (content hash) and return one asset version's de-identified table."""
    data = load_bytes(session, asset_id, version, settings=settings)
    return pa.ipc.open_file(pa.BufferReader(data)).read_all()
