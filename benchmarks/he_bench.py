"""Encrypted masked SUM benchmark: plaintext numpy vs TenSEAL CKKS / BFV vs python-paillier.

Run from the repository root:

    .venv/bin/python benchmarks/he_bench.py                                  # 10k, 100k, 1M rows
    .venv/bin/python benchmarks/he_bench.py --rows 10000 --paillier-rows 200  # smoke run (seconds)
    .venv/bin/python benchmarks/he_bench.py --markdown                        # table for docs/benchmarks.md

One synthetic table (integer values 0..1000, random 0/1 mask; smaller sizes are prefixes of the
largest). For every size and method the consumer encrypts the mask, the server computes the masked
sum, the consumer decrypts it. Timed stages (medians over ``--repeat``):

* encrypt  — consumer: serialise the public context + encrypt the mask (plaintext: pack the mask bits)
* compute  — server: load/vet the public context + ``he.masked_sum`` (``epsilon=None``: no DP noise,
             so the error column is the HE error alone; zero-sum blinding is included)
* decrypt  — consumer: decrypt the result and sum its slots
* e2e      — encrypt + compute + decrypt (key generation is shown apart: keys are reused across
             queries; network transfer time is not included, bytes on the wire are)

Paillier (python-paillier, 2048-bit n) is run on the first ``--paillier-rows`` rows and its encrypt
and compute times are extrapolated linearly (marked ``~``); its byte counts are exact (one
ciphertext mod n² per row). The absolute error column is the worst over the repeats.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from twinspace.privacy import he  # noqa: E402
from twinspace.client.query import ConsumerKeys  # noqa: E402

VALUE_MAX = 1000            # values are integers in [0, VALUE_MAX]; also the declared clipping bound
PAILLIER_BITS = 2048
TARGET_1M_SECONDS = 30.0
TARGET_SPEEDUP_VS_PAILLIER = 100.0
TARGET_REL_ERROR = 1e-6
HE_SCHEMES = ("ckks", "bfv")
LABELS = {"plain": "plaintext numpy", "ckks": "TenSEAL CKKS-8192", "bfv": "TenSEAL BFV-8192",
          "paillier": f"python-paillier {PAILLIER_BITS}"}


@dataclass
class Result:
    """One measured (or extrapolated) masked SUM."""
    method: str              # "plain" | "ckks" | "bfv" | "paillier"
    rows: int                # table size this result stands for
    measured_rows: int       # rows actually run (< rows only for extrapolated Paillier results)
    keygen_s: float
    encrypt_s: float
    compute_s: float
    decrypt_s: float
    upload_bytes: int        # public context / key + ciphertexts (plaintext: packed mask bits)
    download_bytes: int      # the result
    got: float | int         # decrypted masked sum
    want: int                # numpy masked sum on the same rows
    abs_error: float = math.nan  # worst over repeats (set by ``median_of``), else |got - want|
    compute_fixed_s: float = 0.0  # part of compute_s that does not grow with the rows (not extrapolated)

    def __post_init__(self) -> None:
        if math.isnan(self.abs_error):
            self.abs_error = float(abs(self.got - self.want))

    @property
    def extrapolated(self) -> bool:
        return self.measured_rows < self.rows

    @property
    def total_s(self) -> float:
        return self.encrypt_s + self.compute_s + self.decrypt_s

    @property
    def rel_error(self) -> float:
        return self.abs_error / max(abs(self.want), 1)


# ---------------------------------------------------------------- data

def make_table(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(values, mask): integer values 0..VALUE_MAX and a random 0/1 mask, both int64."""
    rng = np.random.default_rng(seed)
    values = rng.integers(0, VALUE_MAX + 1, rows, dtype=np.int64)
    mask = rng.integers(0, 2, rows, dtype=np.int64)
    return values, mask


def expected_sum(values: np.ndarray, mask: np.ndarray) -> int:
    return int(np.dot(mask, values))


# ---------------------------------------------------------------- measurements

def measure_plain(values: np.ndarray, mask: np.ndarray) -> Result:
    """The floor: the consumer sends the mask bits in clear, the server returns the sum."""
    t0 = time.perf_counter()
    upload = np.packbits(mask.astype(np.uint8)).tobytes()
    t1 = time.perf_counter()
    m = np.unpackbits(np.frombuffer(upload, dtype=np.uint8), count=len(values)).astype(np.int64)
    download = int(np.dot(m, values)).to_bytes(8, "little", signed=True)
    t2 = time.perf_counter()
    got = int.from_bytes(download, "little", signed=True)
    t3 = time.perf_counter()
    return Result("plain", len(values), len(values), 0.0, t1 - t0, t2 - t1, t3 - t2,
                  len(upload), len(download), got, expected_sum(values, mask))


def measure_he(scheme: str, values: np.ndarray, mask: np.ndarray, keys: ConsumerKeys | None = None, *,
               parallel: bool | None = None) -> Result:
    """One encrypted masked SUM through the real consumer client and compute-side code.

    ``parallel=None`` lets ``he.masked_sum`` choose (worker processes from 262,144 rows)."""
    keygen = 0.0
    if keys is None:
        t = time.perf_counter()
        keys = ConsumerKeys.create(scheme)
        keygen = time.perf_counter() - t
    t0 = time.perf_counter()
    ctx_bytes = keys.public_context_bytes()
    chunks = keys.encrypt_mask(mask)
    t1 = time.perf_counter()
    pc = he.load_public_context(ctx_bytes)
    result = he.masked_sum(pc, chunks, values, bound=VALUE_MAX, epsilon=None, parallel=parallel)
    t2 = time.perf_counter()
    got = keys.decrypt_sum(result)
    t3 = time.perf_counter()
    upload = len(ctx_bytes) + sum(len(c) for c in chunks)
    return Result(scheme, len(values), len(values), keygen, t1 - t0, t2 - t1, t3 - t2,
                  upload, len(result), got, expected_sum(values, mask))


def paillier_keypair(bits: int = PAILLIER_BITS):
    from phe import paillier
    return paillier.generate_paillier_keypair(n_length=bits)


def measure_paillier(values: np.ndarray, mask: np.ndarray, keypair=None, *, bits: int = PAILLIER_BITS) -> Result:
    """python-paillier: the consumer encrypts each mask entry, the server computes Σ enc(m_i)·v_i
    (one modular exponentiation and multiplication per row) and re-randomises the result once."""
    keygen = 0.0
    if keypair is None:
        t = time.perf_counter()
        keypair = paillier_keypair(bits)
        keygen = time.perf_counter() - t
    pub, priv = keypair
    ct_bytes = (pub.nsquare.bit_length() + 7) // 8
    t0 = time.perf_counter()
    enc = [pub.encrypt(int(m)) for m in mask]
    wire = [c.ciphertext(be_secure=False).to_bytes(ct_bytes, "big") for c in enc]  # what is uploaded
    t1 = time.perf_counter()
    acc = None
    for c, v in zip(enc, values.tolist()):
        term = c * v
        acc = term if acc is None else acc + term
    tf = time.perf_counter()
    acc.obfuscate()  # a fresh r^n, so the result does not reveal how it was computed
    download = acc.ciphertext(be_secure=False).to_bytes(ct_bytes, "big")
    t2 = time.perf_counter()
    got = priv.decrypt(acc)
    t3 = time.perf_counter()
    upload = (pub.n.bit_length() + 7) // 8 + sum(len(w) for w in wire)
    return Result("paillier", len(values), len(values), keygen, t1 - t0, t2 - t1, t3 - t2,
                  upload, len(download), got, expected_sum(values, mask), compute_fixed_s=t2 - tf)


def extrapolate(r: Result, rows: int, want: int) -> Result:
    """Scale the per-row work (encrypt, compute without the final re-randomisation) linearly to
    ``rows``; key generation, re-randomisation and decryption do not depend on the row count;
    bytes are exact (one ciphertext per row)."""
    if rows == r.measured_rows:
        return r
    f = rows / r.measured_rows
    key_bytes = r.upload_bytes - r.download_bytes * r.measured_rows  # the modulus n
    compute = (r.compute_s - r.compute_fixed_s) * f + r.compute_fixed_s
    return replace(r, rows=rows, encrypt_s=r.encrypt_s * f, compute_s=compute,
                   upload_bytes=key_bytes + r.download_bytes * rows, got=math.nan, want=want)


def median_of(results: list[Result]) -> Result:
    """Median of each timed stage over the repeats; worst absolute error."""
    med = lambda attr: statistics.median(getattr(r, attr) for r in results)  # noqa: E731
    return replace(results[0], keygen_s=max(r.keygen_s for r in results), encrypt_s=med("encrypt_s"),
                   compute_s=med("compute_s"), decrypt_s=med("decrypt_s"),
                   compute_fixed_s=med("compute_fixed_s"),
                   abs_error=max(r.abs_error for r in results))


def warm_pool() -> float:
    """Start he.masked_sum's worker processes once (a server does this at start-up, not per query),
    with a throw-away context so the measured contexts are still loaded fresh by the workers."""
    t = time.perf_counter()
    keys = ConsumerKeys.create("bfv")
    v, m = make_table(2 * keys.slots, seed=99)
    pc = he.load_public_context(keys.public_context_bytes())
    assert keys.decrypt_sum(he.masked_sum(pc, keys.encrypt_mask(m), v, bound=VALUE_MAX, epsilon=None,
                                          parallel=True)) == expected_sum(v, m)
    return time.perf_counter() - t


# ---------------------------------------------------------------- formatting

def fmt_s(s: float, approx: bool = False) -> str:
    p = "~" if approx else ""
    if s >= 100:
        return f"{p}{s:,.0f} s"
    if s >= 1:
        return f"{p}{s:.2f} s"
    if s >= 1e-3:
        return f"{p}{s * 1e3:.1f} ms"
    return f"{p}{s * 1e6:.0f} µs"


def fmt_bytes(n: int) -> str:
    if n >= 1024 ** 2:
        return f"{n / 1024 ** 2:.1f} MiB"
    if n >= 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n} B"


def fmt_ratio(x: float, approx: bool = False) -> str:
    p = "~" if approx else ""
    return f"{p}{x:,.0f}×" if x >= 10 else f"{p}{x:.1f}×"


def fmt_err(x: float, approx: bool = False) -> str:
    p = "~" if approx else ""
    return f"{p}0" if x == 0 else f"{p}{x:.1e}"


COLUMNS = ["rows", "method", "keygen", "encrypt", "compute", "decrypt", "e2e", "e2e ÷ plain",
           "Paillier ÷ this", "upload", "download", "abs err", "rel err"]


def table_rows(results: dict[int, dict[str, Result]]) -> list[list[str]]:
    out = []
    for rows, by in results.items():
        plain, pai = by["plain"], by.get("paillier")
        for method in ("plain", "ckks", "bfv", "paillier"):
            r = by.get(method)
            if r is None:
                continue
            x = r.extrapolated
            vs_pai = ""
            if pai is not None and method in HE_SCHEMES:
                vs_pai = fmt_ratio(pai.total_s / r.total_s, pai.extrapolated)
            err_approx = x  # Paillier beyond the measured rows: error is that of the measured subset
            out.append([f"{rows:,}", LABELS[method], fmt_s(r.keygen_s) if r.keygen_s else "—",
                        fmt_s(r.encrypt_s, x), fmt_s(r.compute_s, x), fmt_s(r.decrypt_s),
                        fmt_s(r.total_s, x), fmt_ratio(r.total_s / plain.total_s, x), vs_pai,
                        fmt_bytes(r.upload_bytes), fmt_bytes(r.download_bytes),
                        fmt_err(r.abs_error, err_approx), fmt_err(r.rel_error, err_approx)])
    return out


def check_targets(results: dict[int, dict[str, Result]]) -> list[tuple[str, bool | None, str]]:
    """(target, passed (None = not measured), evidence)."""
    checks: list[tuple[str, bool | None, str]] = []
    big = results.get(1_000_000)
    name = f"1M-row masked sum end to end ≤ {TARGET_1M_SECONDS:.0f} s ({os.cpu_count()} cores)"
    if big is None:
        checks.append((name, None, "1,000,000 not in --rows"))
    else:
        worst = max((big[s] for s in HE_SCHEMES), key=lambda r: r.total_s)
        checks.append((name, worst.total_s <= TARGET_1M_SECONDS,
                       ", ".join(f"{s.upper()} {fmt_s(big[s].total_s)}" for s in HE_SCHEMES)))
    ratios = [(rows, s, by["paillier"].total_s / by[s].total_s, by["paillier"].extrapolated)
              for rows, by in results.items() if "paillier" in by for s in HE_SCHEMES]
    name = f"TenSEAL ≥ {TARGET_SPEEDUP_VS_PAILLIER:.0f}× faster than Paillier end to end"
    if not ratios:
        checks.append((name, None, "Paillier not run"))
    else:
        rows, s, ratio, approx = min(ratios, key=lambda t: t[2])
        checks.append((name, ratio >= TARGET_SPEEDUP_VS_PAILLIER,
                       f"lowest: {s.upper()} at {rows:,} rows, {fmt_ratio(ratio, approx)}"))
    errs = [(rows, s, by[s].rel_error) for rows, by in results.items() for s in HE_SCHEMES]
    rows, s, worst_rel = max(errs, key=lambda t: t[2])
    checks.append((f"relative error ≤ {TARGET_REL_ERROR:g} before DP noise (CKKS, BFV)",
                   worst_rel <= TARGET_REL_ERROR,
                   f"worst: {s.upper()} at {rows:,} rows, {worst_rel:.1e}"))
    return checks


def _have_gmpy2() -> bool:
    try:
        import gmpy2  # noqa: F401
    except ImportError:
        return False
    return True


def footnotes(paillier_rows: int, pool_s: float | None) -> list[str]:
    notes = [
        f"~ = extrapolated linearly from {paillier_rows:,} rows actually run with python-paillier "
        "(the per-row work in encrypt and compute; key generation, the final re-randomisation and "
        "decrypt are not scaled); its bytes are exact (one 512-B ciphertext mod n² per row + the 256-B "
        "modulus n); its error is that of the measured rows (exact integer arithmetic). "
        + ("gmpy2 is installed." if _have_gmpy2() else
           "gmpy2 is NOT installed: phe uses Python's pow (several times slower than with gmpy2)."),
        "e2e = encrypt + compute + decrypt; key generation is shown apart (keys are reused across "
        "queries); network transfer time is not included. Upload = public context/key + ciphertexts "
        "(plaintext: packed mask bits); download = the result.",
        "TenSEAL: epsilon=None (no DP noise), zero-sum blinding included; compute includes vetting "
        "the public context; from 262,144 rows he.masked_sum runs in 2 worker processes.",
    ]
    if pool_s is not None:
        notes.append(f"Worker-pool start-up ({pool_s:.2f} s, once per server process) is excluded.")
    return notes


def print_report(results, checks, notes, *, markdown: bool, header: str) -> None:
    rows = table_rows(results)
    if markdown:
        print(header + "\n")
        print("| " + " | ".join(COLUMNS) + " |")
        print("|" + "|".join("---" if i < 2 else "--:" for i in range(len(COLUMNS))) + "|")
        for r in rows:
            print("| " + " | ".join(r) + " |")
        print()
        for n in notes:
            print(f"- {n}")
        print()
        print("| target | result | evidence |\n|---|---|---|")
        for name, ok, ev in checks:
            print(f"| {name} | {'SKIP' if ok is None else 'PASS' if ok else 'FAIL'} | {ev} |")
        return
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(170, Console().width))
    table = Table(*COLUMNS, title=header)
    for i, c in enumerate(table.columns):
        c.justify = "left" if i < 2 else "right"
    last = None
    for r in rows:
        if last is not None and r[0] != last:
            table.add_section()
        last = r[0]
        table.add_row(*r)
    console.print(table)
    for n in notes:
        console.print(n, style="dim")
    for name, ok, ev in checks:
        tag = "[yellow]SKIP[/]" if ok is None else "[green]PASS[/]" if ok else "[red]FAIL[/]"
        console.print(f"{tag}  {name}  ({ev})")


# ---------------------------------------------------------------- main

def run(sizes: list[int], paillier_rows: int, repeat: int, paillier_repeat: int = 1, log=print) -> tuple[dict, float | None]:
    values_all, mask_all = make_table(max(sizes))
    pool_s = None
    if any(n >= he.PARALLEL_MIN_ROWS for n in sizes) and min(he.MAX_WORKERS, os.cpu_count() or 1) > 1:
        pool_s = warm_pool()
        log(f"worker pool started in {pool_s:.2f} s")
    keys: dict[str, ConsumerKeys] = {}
    keygen: dict[str, float] = {}
    for s in HE_SCHEMES:
        t = time.perf_counter()
        keys[s] = ConsumerKeys.create(s)
        keygen[s] = time.perf_counter() - t
    pai_keys = None
    pai_cache: dict[int, Result] = {}
    if paillier_rows > 0:
        t = time.perf_counter()
        pai_keys = paillier_keypair()
        pai_keygen = time.perf_counter() - t
    results: dict[int, dict[str, Result]] = {}
    for n in sizes:
        v, m = values_all[:n], mask_all[:n]
        by: dict[str, Result] = {}
        by["plain"] = median_of([measure_plain(v, m) for _ in range(max(repeat, 5))])
        for s in HE_SCHEMES:
            reps = []
            for i in range(repeat):
                reps.append(replace(measure_he(s, v, m, keys[s]), keygen_s=keygen[s]))
                gc.collect()
                log(f"{n:>9,} rows {s}: run {i + 1}/{repeat} e2e {fmt_s(reps[-1].total_s)}")
            by[s] = median_of(reps)
        if pai_keys is not None:
            p = min(paillier_rows, n)
            if p not in pai_cache:
                reps = []
                for i in range(paillier_repeat):
                    reps.append(replace(measure_paillier(values_all[:p], mask_all[:p], pai_keys),
                                        keygen_s=pai_keygen))
                    log(f"{p:>9,} rows paillier: run {i + 1}/{paillier_repeat} e2e {fmt_s(reps[-1].total_s)}")
                pai_cache[p] = median_of(reps)
            by["paillier"] = extrapolate(pai_cache[p], n, expected_sum(v, m))
        results[n] = by
    return results, pool_s


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", default="10000,100000,1000000", help="comma-separated table sizes")
    ap.add_argument("--paillier-rows", type=int, default=2000,
                    help="rows actually run with Paillier before extrapolating (0 = skip Paillier)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per size and method (medians)")
    ap.add_argument("--paillier-repeat", type=int, default=1,
                    help="Paillier runs (slow: ~70 ms per row without gmpy2)")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table instead of rich")
    args = ap.parse_args(argv)
    sizes = sorted({int(x.replace("_", "")) for x in args.rows.split(",") if x.strip()})
    if not sizes or min(sizes) < 1 or min(args.repeat, args.paillier_repeat) < 1 \
            or args.paillier_rows < 0:
        ap.error("--rows must be positive integers, --repeat/--paillier-repeat ≥ 1, "
                 "--paillier-rows ≥ 0")
    log = (lambda s: print(s, file=sys.stderr, flush=True))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    t = time.perf_counter()
    results, pool_s = run(sizes, args.paillier_rows, args.repeat, args.paillier_repeat, log)
    checks = check_targets(results)
    header = (f"Masked SUM, values 0..{VALUE_MAX}, random 0/1 mask — "
              f"{datetime.now(timezone.utc):%Y-%m-%d}, {platform.machine()} {os.cpu_count()} cores, "
              f"Python {platform.python_version()}, load avg at start {load:.1f}, "
              f"medians of {args.repeat} (Paillier: {args.paillier_repeat})")
    print_report(results, checks, footnotes(min(args.paillier_rows, max(sizes)), pool_s),
                 markdown=args.markdown, header=header)
    log(f"benchmark wall time {time.perf_counter() - t:.1f} s")
    return 0 if all(ok is not False for _, ok, _ in checks) else 1


if __name__ == "__main__":
    he_exit = main()
    he._shutdown_pool()
    sys.exit(he_exit)
