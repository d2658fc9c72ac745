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


def apply_obligations(table: pa.Table, *, max_rows: int | None, columns: list[str] | None,
                      requested_columns: list[str] | None = None) -> pa.Table:
    """Project to the permitted columns (in table order; a requested subset narrows further) and cut
    to the row limit. Columns neither permitted nor present are never served."""
    names = table.column_names
    keep = names if columns is None else [c for c in names if c in set(columns)]
    if requested_columns is not None:
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


def encode(table: pa.Table, fmt: str, batch_rows: int = BATCH_ROWS) -> Iterator[bytes]:
    """Yield the table in ``fmt`` (csv, json, parquet) batch by batch."""
    batches = table.to_batches(max_chunksize=batch_rows)
    if fmt == "json":
        yield b"["
        first = True
        for batch in batches:
            rows = batch.to_pylist()
            if not rows:
                continue
            text = ",".join(json.dumps(r, ensure_ascii=False, default=_json_default, allow_nan=False) for r in rows)
            yield ((b"" if first else b",") + text.encode("utf-8"))
            first = False
        yield b"]"
        return
    sink = _Sink()
    stream = pa.PythonFile(sink, mode="w")
    if fmt == "csv":
        writer = pacsv.CSVWriter(stream, table.schema)
    elif fmt == "parquet":
        writer = pq.ParquetWriter(stream, table.schema)
    else:
        raise ValueError(f"unknown format {fmt!r}")
    if fmt == "csv" and not batches:
        writer.write_table(table)  # header only
    for batch in batches:
        writer.write_batch(batch) if fmt == "csv" else writer.write_table(pa.Table.from_batches([batch]))
        chunk = sink.drain()
        if chunk:
            yield chunk
    writer.close()
    chunk = sink.drain()
    if chunk:
        yield chunk


__all__ = ["MEDIA_TYPES", "BATCH_ROWS", "apply_obligations", "encode", "merge_obligations"]
