"""Privacy-model checks: k-anonymity and distinct l-diversity over equivalence classes.

An equivalence class is the set of rows sharing one combination of quasi-identifier values
(null is a value of its own). k = the size of the smallest class; distinct l (per sensitive
attribute) = the smallest number of distinct sensitive values (null included) within a class.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import pyarrow as pa


@dataclass
class ClassStats:
    """Streaming accumulator: class sizes and the sensitive values seen in each class."""

    quasi_identifiers: list[str]
    sensitive: list[str]
    sizes: dict[tuple, int] = field(default_factory=lambda: defaultdict(int))
    values: dict[str, dict[tuple, set]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.values = {s: defaultdict(set) for s in self.sensitive}

    def add(self, batch: pa.RecordBatch | pa.Table) -> None:
        table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
        qis = self.quasi_identifiers
        if not qis:
            if table.num_rows:
                self.sizes[()] += table.num_rows
                for s in self.sensitive:
                    self.values[s][()].update(table.column(s).unique().to_pylist())
            return
        counts = table.group_by(qis, use_threads=False).aggregate([([], "count_all")])
        keys = list(zip(*(counts.column(q).to_pylist() for q in qis)))
        for key, n in zip(keys, counts.column("count_all").to_pylist()):
            self.sizes[key] += n
        for s in self.sensitive:
            pairs = table.group_by(qis + [s], use_threads=False).aggregate([])
            cols = [pairs.column(q).to_pylist() for q in qis]
            for key, v in zip(zip(*cols), pairs.column(s).to_pylist()):
                self.values[s][key].add(v)

    def failing(self, k: int, l: int) -> set[tuple]:  # noqa: E741
        bad = {key for key, n in self.sizes.items() if n < k}
        if l > 1:
            for s in self.sensitive:
                bad |= {key for key, vals in self.values[s].items() if len(vals) < l}
        return bad

    def result(self, exclude: set[tuple] = frozenset()) -> "PrivacyCheck":
        kept = {key: n for key, n in self.sizes.items() if key not in exclude}
        k = min(kept.values()) if kept else 0
        ls = {s: (min(len(v) for key, v in self.values[s].items() if key not in exclude) if kept else 0)
              for s in self.sensitive}
        return PrivacyCheck(k=k, l=ls, classes=len(kept), rows=sum(kept.values()),
                            quasi_identifiers=list(self.quasi_identifiers), sensitive=list(self.sensitive))


@dataclass
class PrivacyCheck:
    k: int
    l: dict[str, int]  # noqa: E741
    classes: int
    rows: int
    quasi_identifiers: list[str]
    sensitive: list[str]

    @property
    def l_min(self) -> int | None:
        return min(self.l.values()) if self.l else None

    def meets(self, k: int, l: int) -> bool:  # noqa: E741
        if self.rows == 0:
            return False
        return self.k >= k and (l <= 1 or (self.l_min or 0) >= l)

    def as_dict(self) -> dict:
        return {"k": self.k, "l": dict(self.l), "l_min": self.l_min, "equivalence_classes": self.classes,
                "rows": self.rows}


def check_privacy(table: pa.Table | Iterable[pa.RecordBatch], quasi_identifiers: list[str],
                  sensitive: list[str]) -> PrivacyCheck:
    stats = ClassStats(list(quasi_identifiers), list(sensitive))
    if isinstance(table, pa.Table):
        missing = [c for c in list(quasi_identifiers) + list(sensitive) if c not in table.column_names]
        if missing:
            raise KeyError(f"columns not in the table: {', '.join(missing)}")
        stats.add(table)
    else:
        for batch in table:
            stats.add(batch)
    return stats.result()
