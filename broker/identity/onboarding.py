"""Local onboarding on the broker host: generate a participant key pair, keep the private key in a
0600 file on this machine, register only the public key."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.engine import Engine
from sqlmodel import select

from twinspace.crypto import generate_key, public_key_b64, save_private_key
from broker.identity.models import Org
from broker.identity.service import register_org
from broker.storage.db import session_scope


@dataclass(frozen=True)
class NewOrg:
    org_id: str
    name: str
    role: str
    kid: str
    key_file: Path
    private_key: Ed25519PrivateKey


def key_file_name(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") + ".pem"


def create_org_with_key(engine: Engine, *, name: str, role: str, key_dir: Path, org_type: str = "other",
                        attributes: dict[str, Any] | None = None, actor: str | None = None,
                        key_file: Path | None = None) -> NewOrg:
    key = generate_key()
    path = key_file or key_dir / key_file_name(name)
    if path.exists():
        raise FileExistsError(f"{path} exists; refusing to overwrite a private key")
    with session_scope(engine) as session:
        org, org_key = register_org(session, name=name, role=role, public_key=public_key_b64(key.public_key()),
                                    org_type=org_type, attributes=attributes, actor=actor)
    save_private_key(path, key)
    return NewOrg(org.id, org.name, org.role, org_key.kid, path, key)


def find_org(engine: Engine, name: str) -> Org | None:
    with session_scope(engine) as session:
        return session.exec(select(Org).where(Org.name == name)).first()
