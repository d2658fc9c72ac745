"""An auditor verifies an audit bundle with the light install: no broker, database, chain or HE stack."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from broker.audit import record_event
from broker.audit.service import log_vkey
from broker.storage.db import session_scope
from twinspace.audit.bundle import ENTRIES, fetch_bundle, read_bundle, write_bundle

HEAVY = ["fastapi", "starlette", "sqlalchemy", "sqlmodel", "alembic", "web3", "eth_tester", "tenseal", "pyarrow",
         "numpy", "uvicorn", "pydantic_settings", "broker"]

# Runs the real console script's entry point with the heavy packages made unimportable, as on a fresh
# `pip install twinspace` (no extras); prints the modules it loaded so the test can check none is heavy.
RUNNER = textwrap.dedent("""
    import importlib.abc, json, sys
    HEAVY = set(json.loads(sys.argv[1]))
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in HEAVY:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    sys.meta_path.insert(0, Block())
    sys.argv = ["twinspace"] + sys.argv[2:]
    from twinspace.cli.main import main
    try:
        main()
    except SystemExit as exit:
        sys.stderr.write("LOADED " + json.dumps(sorted({m.split(".")[0] for m in sys.modules})) + "\\n")
        raise
""")


def _light(*args: str, blocked: list[str] = HEAVY) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", RUNNER, json.dumps(blocked), *args], capture_output=True, text=True,
                          timeout=120, env={"PATH": "/usr/bin:/bin", "COLUMNS": "200"})


def _bundle(client, make_org, runtime, tmp_path: Path) -> Path:
    auditor = make_org("auditor")
    with session_scope(runtime.engine) as s:
        record_event(s, "negotiation.offer", actor="org-1", agreement_id="agr-2", details={"step": "offer"})
    fetch_bundle(auditor.client, tmp_path / "bundle")
    return tmp_path / "bundle"


def test_verify_a_bundle_with_the_heavy_packages_missing(client, make_org, runtime, tmp_path):
    bundle = _bundle(client, make_org, runtime, tmp_path)
    out = _light("audit", "verify", "--bundle", str(bundle), "--key", log_vkey(runtime), "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout)
    assert report["ok"] is True and report["entries"] >= 3
    loaded = json.loads(out.stderr.rsplit("LOADED ", 1)[1])
    assert not set(loaded) & set(HEAVY), set(loaded) & set(HEAVY)


def test_a_tampered_bundle_fails_offline_too(client, make_org, runtime, tmp_path):
    bundle = _bundle(client, make_org, runtime, tmp_path)
    lines = (bundle / ENTRIES).read_bytes().splitlines(keepends=True)
    lines[1] = lines[1].replace(b'"kind":"', b'"kind":"x', 1)
    (bundle / ENTRIES).write_bytes(b"".join(lines))
    out = _light("audit", "verify", "--bundle", str(bundle), "--key", log_vkey(runtime), "--json")
    assert out.returncode == 1, out.stdout + out.stderr
    assert json.loads(out.stdout)["first_bad"]["seq"] == 2


def test_a_command_that_needs_an_extra_says_which(tmp_path):
    # the broker package itself is installed by the base install; its third-party dependencies are not
    out = _light("org", "list", "--data-dir", str(tmp_path), blocked=[m for m in HEAVY if m != "broker"])
    assert out.returncode == 2
    assert "[broker]" in out.stdout and "pip install twinspace[broker]" in out.stdout and "Traceback" not in out.stderr


def test_bundle_files_round_trip(tmp_path):
    from twinspace.audit.verify import AnchorRecord

    anchors = [AnchorRecord(5, bytes(range(32)), 7, "0xab")]
    write_bundle(tmp_path, b'{"a":1}\n', ["note one\n"], "name+00000000+AQ", anchors, chain={"chain_id": 1})
    b = read_bundle(tmp_path)
    assert (b.notes, b.vkey, b.anchors, b.chain) == (["note one\n"], "name+00000000+AQ", anchors, {"chain_id": 1})
