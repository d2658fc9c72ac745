"""Several broker replicas (OS processes) on one PostgreSQL: one gap-free sequence, one tree."""

from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from twinspace.audit.entries import ZERO_HASH, chain_fields, leaf_hex
from broker.audit.service import create_checkpoint, log_vkey
from broker.audit.tools import db_checkpoint_notes, db_head, db_lines
from twinspace.audit.verify import verify_log
from broker.runtime import Runtime
from broker.settings import Settings
from broker.storage.db import make_engine, migrate

REPO = Path(__file__).resolve().parents[2]


def _spawn(url, name, count, mode, start_at):
    return subprocess.Popen([sys.executable, "-m", "tests.audit.replica_writer", url, name, str(count), mode,
                             str(start_at)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.postgres
def test_replicas_append_one_gap_free_chained_log(pg_url, tmp_path):
    engine = make_engine(pg_url)
    migrate(engine)
    per, replicas = 60, [("r1", "tx"), ("r2", "tx"), ("r3", "group"), ("r4", "group")]
    start_at = time.time() + 4  # all processes import first, then append at the same moment
    procs = [_spawn(pg_url, name, per, mode, start_at) for name, mode in replicas]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()[-2000:]
    bodies = list(db_lines(engine))
    assert len(bodies) == per * len(replicas)
    prev = ZERO_HASH
    actors = {}
    order = []
    for i, body in enumerate(bodies, start=1):
        assert chain_fields(body) == (i, prev), f"entry {i} out of sequence or chain"
        prev = leaf_hex(body)
        actor = body.split(b'"actor":"')[1][:2].decode()
        actors[actor] = actors.get(actor, 0) + 1
        order.append(actor)
    assert actors == {name: per for name, _ in replicas}
    switches = sum(1 for a, b in zip(order, order[1:]) if a != b)
    assert switches > 2 * len(replicas), "replicas did not actually append concurrently"
    assert db_head(engine) == (len(bodies), prev)

    # two replicas sign checkpoints of the same log at the same time: one tree, no conflict
    rts = [Runtime(settings=Settings(data_dir=tmp_path / f"rep{i}", database_url=pg_url), engine=make_engine(pg_url),
                   broker_key=__import__("twinspace.crypto", fromlist=["x"]).load_or_create_private_key(tmp_path / "k.pem"),
                   replay=None) for i in range(2)]
    with ThreadPoolExecutor(2) as pool:
        cps = list(pool.map(create_checkpoint, rts))
    assert cps[0].tree_size == cps[1].tree_size == len(bodies) and cps[0].root_hash == cps[1].root_hash
    report = verify_log(db_lines(engine), db_checkpoint_notes(engine), log_vkey(rts[0]), head=db_head(engine))
    assert report.ok, report.problems
    for rt in rts:
        rt.engine.dispose()
    engine.dispose()
