"""Start-up: what the broker loads before it serves, and the lazy loads staying correct (benchmarks/startup_bench.py
measures the time). Each check runs in a fresh interpreter: the test process has long imported everything."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("tenseal", "numpy", "pyarrow", "opendp")


def run_python(code: str, tmp_path: Path, args: list[str] = ()) -> subprocess.CompletedProcess:
    environ = {**os.environ, "TWINSPACE_DATA_DIR": str(tmp_path / "broker"), "TWINSPACE_LOG_LEVEL": "WARNING"}
    for name in ("TWINSPACE_DATABASE_URL", "TWINSPACE_REDIS_URL", "TWINSPACE_POLICIES_DIR", "TWINSPACE_POLICY_BUNDLE"):
        environ.pop(name, None)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], cwd=REPO_ROOT, env=environ,
                          capture_output=True, text=True, timeout=300)


def test_the_broker_app_does_not_import_the_heavy_libraries(tmp_path):
    """numpy, TenSEAL, pyarrow and OpenDP are for encrypted queries (and the connector): neither importing the
    app nor building it loads them."""
    result = run_python(f"""
        import sys
        import broker.app
        assert not [m for m in {HEAVY!r} if m in sys.modules], "import broker.app"
        broker.app.create_app()
        loaded = [m for m in {HEAVY!r} if m in sys.modules]
        assert not loaded, f"create_app() loaded {{loaded}}"
        """, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]


def test_tenseal_loads_after_regopy_has_decided(tmp_path):
    """The worker that broke when TenSEAL became lazy: rego-cpp loaded first (a policy decided) and then the
    first encrypted query imported TenSEAL, which aborted the process (``free(): invalid pointer``: rego-cpp's
    operator new/delete had taken libstdc++'s). broker.policy.rego loads libstdc++ before rego-cpp. Here
    eight request threads make their first encrypted query at once, as a busy worker's first requests do."""
    result = run_python("""
        import sys
        import threading
        from concurrent.futures import ThreadPoolExecutor

        from broker.policy import service
        from broker.privacy.service import homomorphic
        from broker.settings import Settings

        assert service.warm(Settings()) == []
        assert "regopy" in sys.modules and "tenseal" not in sys.modules
        contexts = {"bfv": open(sys.argv[1], "rb").read(), "ckks": open(sys.argv[2], "rb").read()}
        start = threading.Barrier(8)

        def first_query(i):
            start.wait()
            scheme = ("bfv", "ckks")[i % 2]
            return homomorphic().load_public_context(contexts[scheme]).scheme == scheme

        with ThreadPoolExecutor(8) as pool:
            assert all(pool.map(first_query, range(8)))
        print("ok")
        """, tmp_path, args=[str(write_context(tmp_path, s)) for s in ("bfv", "ckks")])
    assert result.returncode == 0 and result.stdout.strip() == "ok", (result.returncode, result.stderr[-3000:])


def write_context(tmp_path: Path, scheme: str) -> Path:
    """A consumer's public context, made in this process (which has long loaded TenSEAL)."""
    from twinspace.client.query import ConsumerKeys

    path = tmp_path / f"{scheme}.ctx"
    path.write_bytes(ConsumerKeys.create(scheme).public_context_bytes())
    return path


def test_privacy_terms_are_the_mechanisms_terms():
    """The light module the request models import is what the mechanisms use (re-exported, not copied)."""
    from twinspace.privacy import dp_terms, mechanisms

    for name in ("NEIGHBOURING", "MEASURES", "MIN_EPSILON_PER_QUERY", "MAX_EPSILON_PER_QUERY", "REFUSED",
                 "QueryRefused", "check_epsilon", "check_measure"):
        assert getattr(mechanisms, name) is getattr(dp_terms, name)
