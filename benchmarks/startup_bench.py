"""Broker start-up vs a bare FastAPI app: process spawn to the first 200 of the readiness route.

Run from the repository root:
    .venv/bin/python benchmarks/startup_bench.py [--rounds N] [--bytecode cache|env] [--cli] [--no-importtime]

Both servers are real uvicorn processes with one worker, started alternately (bare, broker, bare, …)
for N rounds (default 7); each is timed from ``subprocess.Popen`` to the first ``200`` of ``GET
/readyz`` (polled every 10 ms over a fresh connection), then stopped with SIGTERM.

  * broker — ``broker.app.serve(workers=1)``, which is what ``twinspace serve`` runs after parsing its
    options (``--cli`` also times the ``twinspace serve`` console script itself, typer included): the
    embedded SQLite database in a temporary data directory, with one provider organisation. The data
    directory is **migrated before the clock starts** (``Runtime.start`` in this process), so migrations
    are not measured: every timed start finds the schema at its heads, as a restarted broker does.
    Its ``/readyz`` pings the database (and Redis when configured).
  * bare — a FastAPI app with one route, ``GET /readyz`` returning a small JSON object, under
    ``python -m uvicorn``.

Bytecode: by default both servers get a private bytecode cache (``PYTHONPYCACHEPREFIX`` in the temporary
directory), warmed by one untimed start of each, so every timed start loads compiled modules, as a
deployed broker does from its second start on. ``--bytecode env`` keeps this environment's setting
instead: with ``PYTHONDONTWRITEBYTECODE=1`` and no ``__pycache__`` in the checkout (this development
machine) the broker compiles its own modules from source on every start (~0.3–0.4 s here), and the
figure depends on whatever ``__pycache__`` others have left in the checkout.

Besides the wall time, the CPU time (user + system, all threads) each process had used when it first
answered is shown: on a machine shared with other work it moves far less than the wall time.

After each broker start the first authenticated request is timed too (token + ``GET /catalog/assets``,
what a client does first): whatever the broker defers past readiness is paid there, so the table shows
it. Then ``python -X importtime`` of the broker's app factory (import + ``create_app()``) lists the top
15 imports by cumulative time, the self time summed per package, and whether the heavy libraries (numpy,
TenSEAL, pyarrow, …) were loaded. About 50 s with the defaults.
The last line printed is the ratio of the medians (broker ÷ bare).
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

HEAVY = ("numpy", "tenseal", "pyarrow", "opendp", "web3", "rdflib", "pyld", "pyshacl", "regopy", "jsonschema",
         "jinja2", "alembic", "httpx")

BARE_APP = textwrap.dedent('''
    from fastapi import FastAPI

    app = FastAPI()


    @app.get("/readyz")
    def readyz():
        return {"status": "ready"}
''')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status(port: int, path: str = "/readyz") -> int | None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    except OSError:
        return None
    finally:
        conn.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process (all its threads) has used so far (Linux /proc; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def time_to_ready(cmd: list[str], env: dict[str, str], cwd: Path, log: Path, timeout: float = 60):
    """(seconds from spawn to the first 200 of /readyz, CPU seconds the process used until then, the running
    process, its port)."""
    port = free_port()
    cmd = [part.replace("{port}", str(port)) for part in cmd]
    with open(log, "ab") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=err)
    while time.perf_counter() - started < timeout:
        if status(port) == 200:
            return time.perf_counter() - started, cpu_seconds(proc.pid), proc, port
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd[:3]} exited with {proc.returncode}: {log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.01)
    stop(proc)
    raise RuntimeError(f"{cmd[:3]} did not become ready in {timeout} s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def prepare_broker(data_dir: Path):
    """Migrate the data directory, create the broker key and one provider (before any clock runs)."""
    from broker.identity.onboarding import create_org_with_key
    from broker.runtime import Runtime
    from broker.settings import Settings

    runtime = Runtime.start(Settings(data_dir=data_dir))
    try:
        return create_org_with_key(runtime.engine, name="Startup Bench Provider", role="provider",
                                   org_type="government_agency", key_dir=data_dir / "keys")
    finally:
        runtime.engine.dispose()


def first_request(port: int, org) -> float:
    """Seconds for a client's first authenticated call: a token, then one catalog page (the client's own
    imports are done before the clock starts)."""
    from twinspace.client.broker import BrokerClient

    started = time.perf_counter()
    client = BrokerClient.connect(f"http://127.0.0.1:{port}", org.org_id, org.key_file)
    try:
        response = client.http.get("/catalog/assets", headers={"Authorization": f"Bearer {client.token()}"})
        if response.status_code != 200:
            raise RuntimeError(f"GET /catalog/assets: {response.status_code} {response.text[:300]}")
    finally:
        client.http.close()
    return time.perf_counter() - started


def importtime(env: dict[str, str], top: int = 15):
    """``-X importtime`` of ``import broker.app; create_app()``: the top imports by cumulative time, the self
    time summed per package (``broker.catalog``, ``sqlalchemy``, …), the heavy libraries present afterwards,
    and the factory's wall time (the import included)."""
    code = ("import sys, time; t = time.perf_counter(); from broker.app import create_app; create_app(); "
            "print(time.perf_counter() - t); print(','.join(sorted({m.split('.')[0] for m in sys.modules})))")
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", code], env=env, cwd=REPO_ROOT,
                         capture_output=True, text=True, check=True)
    rows = []
    for line in out.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if m:
            rows.append((int(m[2]) / 1e6, int(m[1]) / 1e6, len(m[3]) // 2, m[4]))
    wall, loaded = out.stdout.strip().splitlines()[-2:]
    present = [h for h in HEAVY if h in loaded.split(",")]
    packages: dict[str, float] = {}
    for _, own, _, name in rows:
        parts = name.split(".")
        key = ".".join(parts[:2]) if parts[0] in ("broker", "twinspace") else parts[0]
        packages[key] = packages.get(key, 0.0) + own
    by_package = sorted(packages.items(), key=lambda kv: -kv[1])[:top]
    return sorted(rows, key=lambda r: -r[0])[:top], by_package, present, float(wall)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--bytecode", choices=("cache", "env"), default="cache",
                        help="cache: a private pre-warmed bytecode cache (default); env: as this environment has it")
    parser.add_argument("--cli", action="store_true", help="also time the `twinspace serve` console script")
    parser.add_argument("--no-importtime", action="store_true")
    args = parser.parse_args()

    from twinspace.client.broker import BrokerClient  # noqa: F401  (imported before any clock: first_request)

    tmp = Path(tempfile.mkdtemp(prefix="startup_bench_"))
    try:
        data_dir = tmp / "broker"
        org = prepare_broker(data_dir)
        (tmp / "bare").mkdir()
        (tmp / "bare" / "bare_app.py").write_text(BARE_APP)
        env = {**os.environ, "TWINSPACE_DATA_DIR": str(data_dir), "TWINSPACE_LOG_LEVEL": "WARNING",
               "TWINSPACE_AUDIT_CHECKPOINT_INTERVAL_SECONDS": "0"}
        if args.bytecode == "cache":
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
        commands = {
            "bare": ([sys.executable, "-m", "uvicorn", "bare_app:app", "--port", "{port}", "--log-level", "warning",
                      "--workers", "1"], tmp / "bare"),
            "broker": ([sys.executable, "-c", "from broker.app import serve; serve(port={port}, workers=1)"], REPO_ROOT),
        }
        if args.cli:
            twinspace = Path(sys.executable).with_name("twinspace")
            commands["twinspace serve"] = ([str(twinspace), "serve", "--port", "{port}", "--workers", "1"], REPO_ROOT)
        print(f"{os.cpu_count()} CPUs; {args.rounds} rounds, alternating; bytecode: {args.bytecode} "
              f"(PYTHONDONTWRITEBYTECODE={env.get('PYTHONDONTWRITEBYTECODE', '')!r}); database migrated beforehand "
              "(migrations not measured)", flush=True)
        if args.bytecode == "cache":  # warm the private cache: one untimed start of each
            for name, (cmd, cwd) in commands.items():
                stop(time_to_ready(cmd, env, cwd, tmp / f"{name.replace(' ', '_')}.log")[2])
        times: dict[str, list[float]] = {name: [] for name in commands}
        cpu: dict[str, list[float]] = {name: [] for name in commands}
        first: list[float] = []
        for i in range(args.rounds):
            line = []
            for name, (cmd, cwd) in commands.items():
                seconds, used, proc, port = time_to_ready(cmd, env, cwd, tmp / f"{name.replace(' ', '_')}.log")
                try:
                    if name == "broker":
                        first.append(first_request(port, org))
                finally:
                    stop(proc)
                times[name].append(seconds)
                cpu[name].append(used)
                line.append(f"{name} {seconds:.2f} s (CPU {used:.2f} s)")
            print(f"round {i + 1}: " + ", ".join(line) + f", broker's first API call {first[-1]:.2f} s", flush=True)

        if not args.no_importtime:
            top, by_package, present, wall = importtime(env)
            print(f"\npython -X importtime: import broker.app + create_app() = {wall:.2f} s (importtime's own "
                  f"overhead included); top {len(top)} by cumulative time (ms, self ms, depth, module):")
            for cum, own, depth, name in top:
                print(f"  {cum * 1000:8.1f} {own * 1000:8.1f}  {'  ' * depth}{name}")
            print("self time by package (ms): " + ", ".join(f"{name} {own * 1000:.0f}" for name, own in by_package))
            print("heavy libraries loaded by the broker app: " + (", ".join(present) or "none"))

        bare, bare_cpu = statistics.median(times["bare"]), statistics.median(cpu["bare"])
        print("\n| server | median s | min s | max s | ÷ bare | CPU s to ready (median) | CPU ÷ bare |")
        print("|---|---|---|---|---|---|---|")
        for name, values in times.items():
            med, med_cpu = statistics.median(values), statistics.median(cpu[name])
            print(f"| {name} | {med:.2f} | {min(values):.2f} | {max(values):.2f} | {med / bare:.2f} | {med_cpu:.2f} "
                  f"| {med_cpu / bare_cpu:.2f} |")
        print(f"| broker's first API call after ready (token + GET /catalog/assets) | {statistics.median(first):.2f} "
              f"| {min(first):.2f} | {max(first):.2f} | — | — | — |")
        broker = statistics.median(times["broker"])
        print(f"start-up to first /readyz 200: broker {broker:.2f} s, bare {bare:.2f} s, ratio {broker / bare:.2f}")
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
