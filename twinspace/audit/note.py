"""C2SP signed notes and tlog checkpoints (Ed25519). Pure code, no I/O.

Checkpoint body (C2SP tlog-checkpoint)::

    <origin>\\n
    <tree size, decimal>\\n
    <root hash, standard base64>\\n
    timestamp <RFC 3339 UTC, milliseconds>\\n      (extension line)

Signed note (C2SP signed-note): the body, a blank line, then one line per signature
``— <key name> base64(key id[4] ‖ Ed25519 signature[64])``. The key id is
``SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key)[:4]``; a verifier key string is
``<name>+<hex key id>+base64(0x01 ‖ public key)``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timezone

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from twinspace.crypto import public_raw

ALG_ED25519 = 0x01
SIG_PREFIX = "\u2014 "  # em dash + space
TIMESTAMP_EXT = "timestamp "


class NoteError(ValueError):
    """A note, signature, verifier key or checkpoint is malformed or does not verify."""


def _check_name(name: str) -> None:
    if not name or any(c.isspace() for c in name) or "+" in name:
        raise NoteError(f"invalid key name {name!r}: non-empty, no whitespace, no '+'")


def key_hash(name: str, pub: Ed25519PublicKey) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([ALG_ED25519]) + public_raw(pub)).digest()[:4]


def vkey_string(name: str, pub: Ed25519PublicKey) -> str:
    _check_name(name)
    return f"{name}+{key_hash(name, pub).hex()}+" + base64.b64encode(bytes([ALG_ED25519]) + public_raw(pub)).decode()


@dataclass(frozen=True)
class Verifier:
    name: str
    key_id: bytes
    public_key: Ed25519PublicKey

    def __str__(self) -> str:
        return vkey_string(self.name, self.public_key)


def parse_vkey(text: str) -> Verifier:
    """Parse ``name+hexid+base64key``; split at the first two '+' only (base64 may contain '+')."""
    parts = text.strip().split("+", 2)
    if len(parts) != 3:
        raise NoteError("a verifier key looks like name+hexid+base64key")
    name, hex_id, b64 = parts
    _check_name(name)
    try:
        kid = bytes.fromhex(hex_id)
        raw = base64.b64decode(b64, validate=True)
    except (ValueError, binascii.Error) as exc:
        raise NoteError(f"malformed verifier key: {exc}") from None
    if len(kid) != 4 or len(raw) != 33 or raw[0] != ALG_ED25519:
        raise NoteError("verifier key must be an Ed25519 key (type 0x01, 32 bytes) with a 4-byte id")
    pub = Ed25519PublicKey.from_public_bytes(raw[1:])
    if key_hash(name, pub) != kid:
        raise NoteError("verifier key id does not match its name and public key")
    return Verifier(name, kid, pub)


def sign_note(text: str, name: str, key: Ed25519PrivateKey) -> str:
    """Sign ``text`` (must end with a newline) as a C2SP note."""
    _check_name(name)
    if not text.endswith("\n") or "\n\n" in text:
        raise NoteError("note text must end with a newline and contain no blank line")
    sig = key.sign(text.encode())
    blob = key_hash(name, key.public_key()) + sig
    return f"{text}\n{SIG_PREFIX}{name} {base64.b64encode(blob).decode()}\n"


def open_note(note: str, verifiers: list[Verifier] | Verifier) -> str:
    """Return the note text if at least one signature by a known key verifies; raise NoteError otherwise."""
    if isinstance(verifiers, Verifier):
        verifiers = [verifiers]
    if not note.endswith("\n"):
        raise NoteError("a signed note ends with a newline")
    cut = note.rfind("\n\n")
    if cut < 0:
        raise NoteError("no blank line separates text and signatures")
    text, sig_block = note[:cut + 1], note[cut + 2:]
    known = {(v.name, v.key_id): v for v in verifiers}
    verified = False
    for line in sig_block.splitlines():
        if not line.startswith(SIG_PREFIX):
            raise NoteError(f"malformed signature line {line!r}")
        name, _, b64 = line[len(SIG_PREFIX):].partition(" ")
        try:
            blob = base64.b64decode(b64, validate=True)
        except (ValueError, binascii.Error):
            raise NoteError("signature is not base64") from None
        if len(blob) < 5:
            raise NoteError("signature too short")
        verifier = known.get((name, blob[:4]))
        if verifier is None:
            continue  # signatures by unknown keys are ignored, as the spec says
        try:
            verifier.public_key.verify(blob[4:], text.encode())
        except InvalidSignature:
            raise NoteError(f"invalid signature by {name}") from None
        verified = True
    if not verified:
        raise NoteError("no signature by a known key")
    return text


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    tree_size: int
    root_hash: bytes
    timestamp: datetime | None = None
    extensions: tuple[str, ...] = field(default=())

    def body(self) -> str:
        lines = [self.origin, str(self.tree_size), base64.b64encode(self.root_hash).decode()]
        if self.timestamp is not None:
            lines.append(TIMESTAMP_EXT + format_timestamp(self.timestamp))
        lines.extend(self.extensions)
        return "\n".join(lines) + "\n"


def format_timestamp(ts: datetime) -> str:
    return ts.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_checkpoint(text: str) -> Checkpoint:
    lines = text.split("\n")
    if len(lines) < 4 or lines[-1] != "":
        raise NoteError("a checkpoint has origin, size and root lines, each ending in a newline")
    origin, size_s, root_s, *ext = lines[:-1]
    if not origin:
        raise NoteError("empty checkpoint origin")
    if not size_s.isdigit() or (size_s != "0" and size_s.startswith("0")):
        raise NoteError(f"bad checkpoint tree size {size_s!r}")
    try:
        root = base64.b64decode(root_s, validate=True)
    except (ValueError, binascii.Error):
        raise NoteError("checkpoint root is not base64") from None
    if len(root) != 32:
        raise NoteError("checkpoint root is not 32 bytes")
    timestamp = None
    others = []
    for line in ext:
        if not line:
            raise NoteError("empty extension line in checkpoint")
        if line.startswith(TIMESTAMP_EXT) and timestamp is None:
            try:
                timestamp = datetime.fromisoformat(line[len(TIMESTAMP_EXT):].replace("Z", "+00:00"))
            except ValueError:
                raise NoteError("bad checkpoint timestamp") from None
        else:
            others.append(line)
    return Checkpoint(origin, int(size_s), root, timestamp, tuple(others))


def sign_checkpoint(cp: Checkpoint, key: Ed25519PrivateKey, name: str | None = None) -> str:
    return sign_note(cp.body(), name or cp.origin, key)


def open_checkpoint(note: str, verifier: Verifier, origin: str | None = None) -> Checkpoint:
    """Verify a signed checkpoint note and parse it; the origin must match (default: the key name)."""
    cp = parse_checkpoint(open_note(note, verifier))
    expected = origin or verifier.name
    if cp.origin != expected:
        raise NoteError(f"checkpoint origin {cp.origin!r} is not {expected!r}")
    return cp
