"""Per-column de-identification techniques. Each works batch by batch (streaming) and accumulates
what it needs to report its information loss at the end.

Information loss is a normalised certainty penalty in [0, 1] per column, averaged over output
rows: 0 = value unchanged, 1 = nothing left. Range/date/grid: generalised width divided by the
column's observed range; hierarchy: (leaves under the generalised value - 1) / (all leaves - 1);
noise: mean |noise| divided by the observed range; drop: 1; pseudonym: 0 (one-to-one, linkage kept).
"""

from __future__ import annotations

import bisect
import csv
import hashlib
import hmac
import math
import os
import secrets
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from connectors.deid.config import ColumnRule
from connectors.errors import ConfigError


class Technique:
    name = "keep"

    def __init__(self, column: str, rule: ColumnRule):
        self.column, self.rule = column, rule
        self.rows = 0
        self.lo: float | None = None
        self.hi: float | None = None

    def _observe(self, arr: pa.Array) -> None:
        if len(arr) and arr.null_count < len(arr):
            mm = pc.min_max(arr)
            lo, hi = mm["min"].as_py(), mm["max"].as_py()
            self.lo = lo if self.lo is None else min(self.lo, lo)
            self.hi = hi if self.hi is None else max(self.hi, hi)

    def apply(self, arr: pa.Array) -> pa.Array:
        self.rows += len(arr)
        return arr

    def information_loss(self) -> float:
        return 0.0

    def describe(self) -> dict[str, Any]:
        return {"technique": self.name}


class Drop(Technique):
    name = "drop"

    def information_loss(self) -> float:
        return 1.0


def _require_numeric(column: str, arr: pa.Array, technique: str) -> None:
    if not (pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type) or pa.types.is_decimal(arr.type)):
        raise ConfigError(f"column {column!r} is {arr.type}; {technique} needs a numeric column "
                          f"(declare its type at ingest)", code="deid_wrong_type")


def load_secret(rule: ColumnRule, column: str, base_dir: Path | None, secrets_map: dict[str, bytes] | None) -> bytes:
    if secrets_map and column in secrets_map:
        secret = secrets_map[column]
    elif rule.secret_file:
        path = Path(rule.secret_file)
        if not path.is_absolute() and base_dir:
            path = base_dir / path
        try:
            secret = path.read_bytes().strip()
        except OSError as exc:
            raise ConfigError(f"pseudonym secret file for {column!r} cannot be read", code="deid_secret_missing") from exc
    else:
        env = rule.secret_env or "TWINSPACE_PSEUDONYM_SECRET"
        value = os.environ.get(env)
        if not value:
            raise ConfigError(f"pseudonym for {column!r} needs the secret in environment variable {env}",
                              code="deid_secret_missing")
        secret = value.encode()
    if len(secret) < 16:
        raise ConfigError(f"pseudonym secret for {column!r} is shorter than 16 bytes", code="deid_secret_weak")
    return secret


def pseudonym(secret: bytes, value: Any, context: str = "", length: int = 32) -> str:
    """HMAC-SHA256(secret, context 0x1f str(value)) as hex: the same value and secret always give the
    same pseudonym (across publishes), and without the secret it cannot be reversed or recomputed."""
    msg = context.encode() + b"\x1f" + str(value).encode()
    return hmac.new(secret, msg, hashlib.sha256).hexdigest()[:length]


class Pseudonym(Technique):
    name = "pseudonym"

    def __init__(self, column: str, rule: ColumnRule, secret: bytes):
        super().__init__(column, rule)
        self._secret = secret

    def apply(self, arr: pa.Array) -> pa.Array:
        self.rows += len(arr)
        return pa.array([None if v is None else pseudonym(self._secret, v, self.rule.context, self.rule.length)
                         for v in arr.to_pylist()], type=pa.string())

    def describe(self) -> dict[str, Any]:
        return {"technique": self.name, "algorithm": "HMAC-SHA256", "length": self.rule.length,
                "context": self.rule.context}


def _fmt(x: float) -> str:
    return f"{x:g}"


class Range(Technique):
    name = "range"

    def __init__(self, column: str, rule: ColumnRule):
        super().__init__(column, rule)
        self.width_sum = 0.0
        self.open_rows = 0

    def apply(self, arr: pa.Array) -> pa.Array:
        _require_numeric(self.column, arr, "range")
        self._observe(arr)
        out: list[str | None] = []
        w, bins = self.rule.width, self.rule.bins
        for v in arr.to_pylist():
            if v is None:
                out.append(None)
                continue
            self.rows += 1
            if bins:
                i = bisect.bisect_right(bins, v)
                if i == 0:
                    out.append(f"<{_fmt(bins[0])}")
                    self.open_rows += 1
                elif i == len(bins):
                    out.append(f">={_fmt(bins[-1])}")
                    self.open_rows += 1
                else:
                    out.append(f"[{_fmt(bins[i - 1])}, {_fmt(bins[i])})")
                    self.width_sum += bins[i] - bins[i - 1]
            else:
                lo = math.floor(v / w) * w
                out.append(f"[{_fmt(lo)}, {_fmt(lo + w)})")
                self.width_sum += w
        return pa.array(out, type=pa.string())

    def information_loss(self) -> float:
        if not self.rows or self.lo is None:
            return 0.0
        span = float(self.hi - self.lo)
        if span <= 0:
            return 1.0 if self.rows else 0.0
        return min(1.0, (min(self.width_sum / span, self.rows - self.open_rows) + self.open_rows) / self.rows)

    def describe(self) -> dict[str, Any]:
        return {"technique": self.name, **({"bins": self.rule.bins} if self.rule.bins else {"width": self.rule.width})}


_SPAN = {"year": 365.25 * 86400, "month": 30.44 * 86400, "day": 86400, "hour": 3600}
_PREFIX = {"year": 4, "month": 7, "day": 10, "hour": 13}


class DateTrunc(Technique):
    name = "date"

    def apply(self, arr: pa.Array) -> pa.Array:
        g = self.rule.granularity
        self.rows += len(arr) - arr.null_count
        if pa.types.is_timestamp(arr.type) or pa.types.is_date(arr.type):
            self._observe_time(arr.to_pylist())
            return pc.floor_temporal(arr, unit=g)
        if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
            vals = arr.to_pylist()
            parsed = []
            for v in vals:
                if v is None:
                    parsed.append(None)
                    continue
                try:
                    parsed.append(datetime.fromisoformat(v.replace("Z", "+00:00")))
                except ValueError as exc:
                    raise ConfigError(f"column {self.column!r}: a value is not an ISO 8601 date/time",
                                      code="deid_wrong_type") from exc
            self._observe_time(parsed)
            return pa.array([None if v is None else v[:_PREFIX[g]] for v in vals], type=pa.string())
        raise ConfigError(f"column {self.column!r} is {arr.type}; date truncation needs dates, timestamps or "
                          "ISO 8601 text", code="deid_wrong_type")

    def _observe_time(self, vals: list) -> None:
        for v in vals:
            if v is None:
                continue
            if isinstance(v, datetime):
                ts = (v if v.tzinfo else v.replace(tzinfo=timezone.utc)).timestamp()
            elif isinstance(v, date):
                ts = datetime(v.year, v.month, v.day, tzinfo=timezone.utc).timestamp()
            else:
                continue
            self.lo = ts if self.lo is None else min(self.lo, ts)
            self.hi = ts if self.hi is None else max(self.hi, ts)

    def information_loss(self) -> float:
        if not self.rows or self.lo is None:
            return 0.0
        span = self.hi - self.lo
        return 1.0 if span <= 0 else min(1.0, _SPAN[self.rule.granularity] / span)

    def describe(self) -> dict[str, Any]:
        return {"technique": self.name, "granularity": self.rule.granularity}


class GeoGrid(Technique):
    name = "geo_grid"

    def apply(self, arr: pa.Array) -> pa.Array:
        _require_numeric(self.column, arr, "geo_grid")
        self._observe(arr)
        self.rows += len(arr) - arr.null_count
        c = self.rule.cell
        values = arr.to_numpy(zero_copy_only=False).astype("float64")
        snapped = np.floor(values / c) * c + c / 2
        decimals = max(0, -math.floor(math.log10(c)) + 2)
        return pa.array(np.round(snapped, decimals), type=pa.float64(), mask=np.asarray(arr.is_null()))

    def information_loss(self) -> float:
        if not self.rows or self.lo is None:
            return 0.0
        span = float(self.hi - self.lo)
        return 1.0 if span <= 0 else min(1.0, self.rule.cell / span)

    def describe(self) -> dict[str, Any]:
        return {"technique": self.name, "cell": self.rule.cell}


def load_hierarchy(rule: ColumnRule, base_dir: Path | None, column: str) -> dict[str, list[str]]:
    if isinstance(rule.hierarchy, dict):
        return {str(k): [str(k)] + [str(x) for x in v] for k, v in rule.hierarchy.items()}
    path = Path(rule.hierarchy)
    if not path.is_absolute() and base_dir:
        path = base_dir / path
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            rows = [r for r in csv.reader(fh, delimiter=rule.delimiter) if r]
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"hierarchy file for {column!r} cannot be read: {path.name}", code="deid_hierarchy") from exc
    if not rows:
        raise ConfigError(f"hierarchy file for {column!r} is empty", code="deid_hierarchy")
    return {r[0]: r for r in rows}


class Hierarchy(Technique):
    name = "hierarchy"

    def __init__(self, column: str, rule: ColumnRule, mapping: dict[str, list[str]]):
        super().__init__(column, rule)
        self.mapping = mapping
        depth = min(len(v) for v in mapping.values())
        if rule.level >= depth:
            raise ConfigError(f"hierarchy for {column!r} has levels 0..{depth - 1}; level {rule.level} requested",
                              code="deid_hierarchy")
        self.leaves: dict[str, int] = {}
        for levels in mapping.values():
            self.leaves[levels[rule.level]] = self.leaves.get(levels[rule.level], 0) + 1
        self.total_leaves = len(mapping)
        self.penalty = 0.0

    def apply(self, arr: pa.Array) -> pa.Array:
        out: list[str | None] = []
        missing: set[str] = set()
        for v in arr.to_pylist():
            if v is None:
                out.append(None)
                continue
            levels = self.mapping.get(str(v))
            if levels is None:
                missing.add(str(v))
                continue
            g = levels[self.rule.level]
            out.append(g)
            self.rows += 1
            if self.total_leaves > 1:
                self.penalty += (self.leaves[g] - 1) / (self.total_leaves - 1)
        if missing:
            sample = ", ".join(sorted(missing)[:3])
            raise ConfigError(f"column {self.column!r}: {len(missing)} value(s) not in its hierarchy "
                              f"(e.g. {sample})", code="deid_hierarchy_incomplete")
        return pa.array(out, type=pa.string())

    def information_loss(self) -> float:
        return self.penalty / self.rows if self.rows else 0.0

    def describe(self) -> dict[str, Any]:
        return {"technique": self.name, "level": self.rule.level,
                "hierarchy": Path(self.rule.hierarchy).name if isinstance(self.rule.hierarchy, str) else "inline"}


class LaplaceNoise(Technique):
    name = "noise"

    def __init__(self, column: str, rule: ColumnRule):
        super().__init__(column, rule)
        seed = rule.seed if rule.seed is not None else secrets.randbits(64)
        self.rng = np.random.default_rng(seed)
        self.abs_noise = 0.0

    def apply(self, arr: pa.Array) -> pa.Array:
        _require_numeric(self.column, arr, "noise")
        self._observe(arr)
        values = arr.to_numpy(zero_copy_only=False).astype("float64")
        noise = self.rng.laplace(0.0, self.rule.sensitivity / self.rule.epsilon, size=len(values))
        mask = np.asarray(arr.is_null())
        self.abs_noise += float(np.abs(noise[~mask]).sum())
        self.rows += int((~mask).sum())
        noisy = values + noise
        if self.rule.round:
            return pa.array(np.rint(np.nan_to_num(noisy)).astype("int64"), type=pa.int64(), mask=mask)
        return pa.array(noisy, type=pa.float64(), mask=mask)

    def information_loss(self) -> float:
        if not self.rows or self.lo is None:
            return 0.0
        span = float(self.hi - self.lo)
        mean = self.abs_noise / self.rows
        return 1.0 if span <= 0 else min(1.0, mean / span)

    def describe(self) -> dict[str, Any]:
        return {"technique": self.name, "mechanism": "Laplace", "epsilon": self.rule.epsilon,
                "sensitivity": self.rule.sensitivity, "scale": self.rule.sensitivity / self.rule.epsilon}


def build(column: str, rule: ColumnRule, *, base_dir: Path | None,
          secrets_map: dict[str, bytes] | None) -> Technique:
    t = rule.technique
    if t == "keep":
        return Technique(column, rule)
    if t == "drop":
        return Drop(column, rule)
    if t == "pseudonym":
        return Pseudonym(column, rule, load_secret(rule, column, base_dir, secrets_map))
    if t == "range":
        return Range(column, rule)
    if t == "date":
        return DateTrunc(column, rule)
    if t == "geo_grid":
        return GeoGrid(column, rule)
    if t == "hierarchy":
        return Hierarchy(column, rule, load_hierarchy(rule, base_dir, column))
    if t == "noise":
        return LaplaceNoise(column, rule)
    raise ConfigError(f"unknown technique {t!r}", code="deid_config_invalid")  # pragma: no cover


