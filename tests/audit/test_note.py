"""C2SP signed notes and tlog checkpoints."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from twinspace.audit.note import (Checkpoint, NoteError, open_checkpoint, open_note, parse_checkpoint, parse_vkey,
                               sign_checkpoint, sign_note, vkey_string)

C2SP_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
C2SP_NOTE = ("This is an example message.\n\n"
             "\u2014 example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n")


def test_c2sp_example_note_verifies():
    v = parse_vkey(C2SP_VKEY)
    assert v.key_id.hex() == "530d903a"
    assert str(v) == C2SP_VKEY
    assert open_note(C2SP_NOTE, v) == "This is an example message.\n"


def test_c2sp_example_rejects_changed_text_or_other_key():
    v = parse_vkey(C2SP_VKEY)
    with pytest.raises(NoteError):
        open_note(C2SP_NOTE.replace("example message", "exemplary message"), v)
    other = Ed25519PrivateKey.generate().public_key()
    with pytest.raises(NoteError, match="no signature by a known key"):
        open_note(C2SP_NOTE, parse_vkey(vkey_string("example.com/foo", other)))


def test_vkey_with_plus_in_base64_and_bad_ids():
    for _ in range(50):  # find a key whose base64 contains '+', which must not confuse the split
        pub = Ed25519PrivateKey.generate().public_key()
        s = vkey_string("log.example/audit", pub)
        if "+" in s.split("+", 2)[2]:
            break
    assert parse_vkey(s).public_key.public_bytes_raw() == pub.public_bytes_raw()
    name, kid, b64 = s.split("+", 2)
    with pytest.raises(NoteError):
        parse_vkey(f"{name}+00000000+{b64}")
    with pytest.raises(NoteError):
        parse_vkey("no-plus-signs")


def test_checkpoint_round_trip_and_tamper():
    key = Ed25519PrivateKey.generate()
    v = parse_vkey(vkey_string("twinspace.test/audit", key.public_key()))
    cp = Checkpoint("twinspace.test/audit", 42, bytes(range(32)), datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc))
    note = sign_checkpoint(cp, key)
    assert note.startswith("twinspace.test/audit\n42\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n"
                           "timestamp 2026-01-02T03:04:05.000Z\n\n\u2014 twinspace.test/audit ")
    got = open_checkpoint(note, v)
    assert got == cp
    with pytest.raises(NoteError):
        open_checkpoint(note.replace("\n42\n", "\n43\n"), v)
    with pytest.raises(NoteError, match="origin"):
        open_checkpoint(sign_checkpoint(Checkpoint("other", 1, bytes(32)), key, name="twinspace.test/audit"), v)


@pytest.mark.parametrize("text", ["o\n01\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n", "o\n1\nAAAA\n", "o\n1\n", "\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"])
def test_malformed_checkpoints(text):
    with pytest.raises(NoteError):
        parse_checkpoint(text)


def test_sign_note_requires_trailing_newline():
    with pytest.raises(NoteError):
        sign_note("no newline", "n", Ed25519PrivateKey.generate())
