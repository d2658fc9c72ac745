"""Independent privacy counters for tests: a deliberately plain implementation, separate from
twinspace.privacy.kanonymity, so the engine's claims are checked by different code."""

from __future__ import annotations

from collections import Counter, defaultdict


def plain_k(rows: list[dict], qis: list[str]) -> int:
    counts = Counter(tuple(r[q] for q in qis) for r in rows)
    return min(counts.values())


def plain_l(rows: list[dict], qis: list[str], sensitive: str) -> int:
    seen: dict[tuple, set] = defaultdict(set)
    for r in rows:
        seen[tuple(r[q] for q in qis)].add(r[sensitive])
    return min(len(v) for v in seen.values())


def read_csv_rows(path, delimiter=",") -> list[dict]:
    import csv

    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh, delimiter=delimiter))
