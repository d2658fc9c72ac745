"""Policy decision benchmark: embedded regopy engine vs the OPA REST API path, same inputs.

Run from the repository root:  .venv/bin/python benchmarks/policy_bench.py [--rounds N]
The OPA path is measured against the OPA-API stand-in (embedded engine behind HTTP on loopback),
so its figures are HTTP + JSON + client overhead on top of the same evaluation.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from broker.policy.engine import EmbeddedEngine, OpaServerEngine  # noqa: E402
from broker.policy.library import load_library  # noqa: E402
from twinspace.testing.opa_standin import create_opa_standin  # noqa: E402
from tests.policy.cases import CASES  # noqa: E402
from tests.serving import serve_app  # noqa: E402


def measure(engine, rounds: int) -> list[float]:
    for policy, _, doc, _ in CASES:  # warm-up: compile / push every policy once
        engine.decide(policy, doc)
    latencies = []
    for _ in range(rounds):
        for policy, _, doc, _ in CASES:
            start = time.perf_counter()
            engine.decide(policy, doc)
            latencies.append(time.perf_counter() - start)
    return latencies


def measure_uncompiled(rounds: int) -> list[float]:
    """The alternative we rejected: one interpreter, the query interpreted (not bundled) each time."""
    from regopy import Interpreter

    library = load_library()
    interpreter = Interpreter()
    for name, rego in library.shared.items():
        interpreter.add_module(name, rego)
    for source in library.builtins.values():
        interpreter.add_module(source.module_name, source.rego)
    interpreter.add_data(library.data)
    latencies = []
    for _ in range(rounds):
        for policy, _, doc, _ in CASES:
            start = time.perf_counter()
            interpreter.set_input(doc)
            interpreter.query(f"data.{library.builtins[policy].package}.decision")
            latencies.append(time.perf_counter() - start)
    return latencies


def row(name: str, latencies: list[float], baseline: float | None) -> list[str]:
    ordered = sorted(latencies)
    p50 = statistics.median(ordered)
    p99 = ordered[int(len(ordered) * 0.99) - 1]
    rate = len(ordered) / sum(ordered)
    ratio = f"{p50 / baseline:.1f}×" if baseline else "1.0×"
    return [name, f"{len(ordered)}", f"{rate:,.0f}", f"{p50 * 1000:.3f}", f"{p99 * 1000:.3f}", ratio]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20, help="passes over the case table")
    args = parser.parse_args()
    library = load_library()
    embedded = measure(EmbeddedEngine(library), args.rounds)
    uncompiled = measure_uncompiled(max(1, args.rounds // 4))
    with serve_app(create_opa_standin()) as url:
        opa = measure(OpaServerEngine(url, library), max(1, args.rounds // 4))
    base = statistics.median(embedded)
    table = Table("engine", "decisions", "decisions/s", "p50 ms", "p99 ms", "p50 vs embedded",
                  title=f"Policy decisions over {len(CASES)} cases (target: embedded p50 ≤ 1 ms)")
    table.add_row(*row("embedded, bundle", embedded, None))
    table.add_row(*row("embedded, no bundle", uncompiled, base))
    table.add_row(*row("OPA REST API*", opa, base))
    console = Console(width=100)
    console.print(table)
    console.print("embedded, bundle: the broker's engine (each policy version compiled once, interpreters pooled).\n"
                  "embedded, no bundle: the same Rego interpreted per query (the rejected alternative).\n"
                  "* opa-python-client over HTTP to the OPA-API stand-in on loopback (no OPA binary here).")


if __name__ == "__main__":
    main()
