"""Obligations and streaming encoders of the data plane (pure: tables in, bytes out)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from twinspace.dataplane import merge_obligations

MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "json": "application/json",
               "parquet": "application/vnd.apache.parquet"}
BATCH_ROWS = 8192
# The writers' buffers come from the system allocator: freed at once, so a long stream does not leave
# the process bigger (Arrow's default mimalloc pool retains freed pages; benchmarks/stream_bench.py).
POOL = pa.system_memory_pool()


def apply_obligations(table: pa.Table, *, max_rows: int | None, columns: list[str] | None,
                      requested_columns: list[str] | None = None) -> pa.Table:
    """Project to the permitted columns (in table order; a requested subset narrows further) and cut
    to the row limit. Columns neither permitted nor present are never served; asking for one is an
    error that names it (the consumer knows the schema from the catalog), not a silently empty answer."""
    from twinspace.errors import Unprocessable

    names = table.column_names
    keep = names if columns is None else [c for c in names if c in set(columns)]
    if requested_columns is not None:
        unknown = [c for c in requested_columns if c not in set(keep)]
        if unknown:
            raise Unprocessable("Not available under this agreement: " + ", ".join(unknown[:20]) + ".",
                                code="column_not_permitted", extra={"available": keep})
        keep = [c for c in keep if c in set(requested_columns)]
    table = table.select(keep)
    if max_rows is not None and table.num_rows > max_rows:
        table = table.slice(0, max_rows)
    return table


class _Sink:
    """A write-only file collecting bytes between drains (for streaming writers)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.closed = False

    def write(self, data) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def drain(self) -> bytes:
        out = b"".join(self.parts)
        self.parts.clear()
        return out


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def _batches(table, batch_rows: int) -> Iterator[pa.RecordBatch]:
    """Batches of at most ``batch_rows`` rows, taken lazily from a ``pa.Table`` (zero-copy slices), a
    lazy store view (``StoredTable``), a ``pa.RecordBatchReader`` or any iterable of record batches."""
    if hasattr(table, "to_batches"):
        source = table.to_batches(max_chunksize=batch_rows)
    else:
        source = table
    for batch in source:
        if batch.num_rows <= batch_rows:
            yield batch
        else:
            for start in range(0, batch.num_rows, batch_rows):
                yield batch.slice(start, batch_rows)


def _json_rows(batch: pa.RecordBatch) -> str:
    return ",".join(json.dumps(r, ensure_ascii=False, default=_json_default, allow_nan=False)
                    for r in batch.to_pylist())


def encode(table, fmt: str, batch_rows: int = BATCH_ROWS) -> Iterator[bytes]:
    """Yield the table in ``fmt`` (csv, json, parquet) batch by batch: one chunk per batch read, nothing
    accumulated (the JSON array is written element by element; CSV and Parquet writers are drained
    after every batch). ``table``: a ``pa.Table``, a lazy store view, or a ``pa.RecordBatchReader``."""
    if fmt not in MEDIA_TYPES:
        raise ValueError(f"unknown format {fmt!r}")
    schema = table.schema
    batches = _batches(table, batch_rows)
    if fmt == "json":
        yield b"["
        first = True
        for batch in batches:
            if not batch.num_rows:
                continue
            text = _json_rows(batch)
            yield ((b"" if first else b",") + text.encode("utf-8"))
            first = False
        yield b"]"
        return
    sink = _Sink()
    stream = pa.PythonFile(sink, mode="w")
    if fmt == "csv":
        writer = pacsv.CSVWriter(stream, schema, memory_pool=POOL)
    else:
        writer = pq.ParquetWriter(stream, schema, memory_pool=POOL)
    wrote = False
    for batch in batches:
        if fmt == "csv":
            writer.write_batch(batch)
        else:
            writer.write_table(pa.Table.from_batches([batch], schema=schema))  # one row group per batch
        wrote = True
        chunk = sink.drain()
        if chunk:
            yield chunk
    if fmt == "csv" and not wrote:
        writer.write_table(schema.empty_table())  # header only
    writer.close()
    chunk = sink.drain()
    if chunk:
        yield chunk


__all__ = ["MEDIA_TYPES", "BATCH_ROWS", "apply_obligations", "encode", "merge_obligations"]
