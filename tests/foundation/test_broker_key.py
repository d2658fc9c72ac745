"""Processes that start together on a fresh data dir agree on one broker key (0600)."""

from __future__ import annotations

import multiprocessing as mp
import stat

from twinspace.crypto import load_or_create_private_key, public_key_b64


def _make(path: str, start, out) -> None:
    start.wait()
    out.put(public_key_b64(load_or_create_private_key(path).public_key()))


def test_concurrent_first_use_yields_one_key(tmp_path):
    path = tmp_path / "data" / "broker_ed25519.pem"
    ctx = mp.get_context("fork")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_make, args=(str(path), start, out)) for _ in range(6)]
    for p in procs:
        p.start()
    start.set()
    keys = {out.get(timeout=30) for _ in procs}
    for p in procs:
        p.join(timeout=30)
    assert len(keys) == 1
    assert keys == {public_key_b64(load_or_create_private_key(path).public_key())}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary files left
