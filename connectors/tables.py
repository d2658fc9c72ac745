"""Arrow tables on disk: the connector's working format between ingest, de-identify and publish.

Files are Arrow IPC *files* (``.arrow``), zstd-compressed. Asset-level facts gathered at ingest
(entity type, twin category, bounding box, time coverage, source) travel in the schema metadata
under the key ``twinspace``, so each step reads what the previous one learned.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

META_KEY = b"twinspace"
IPC_OPTIONS = pa.ipc.IpcWriteOptions(compression="zstd")


def get_meta(schema: pa.Schema) -> dict[str, Any]:
    raw = (schema.metadata or {}).get(META_KEY)
    return json.loads(raw) if raw else {}


def with_meta(schema: pa.Schema, meta: dict[str, Any]) -> pa.Schema:
    md = dict(schema.metadata or {})
    md[META_KEY] = json.dumps(meta, ensure_ascii=False, sort_keys=True, default=str).encode()
    return schema.with_metadata(md)


def table_to_ipc_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema, options=IPC_OPTIONS) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def ipc_bytes_to_table(data: bytes) -> pa.Table:
    return pa.ipc.open_file(pa.BufferReader(data)).read_all()


def write_table(path: Path, table: pa.Table) -> str:
    """Write ``table`` and return the SHA-256 (hex) of the file bytes: the asset content hash."""
    return write_batches(path, table.schema, table.to_batches())


def write_batches(path: Path, schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> str:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, schema, options=IPC_OPTIONS) as writer:
        for batch in batches:
            writer.write_batch(batch)
    tmp.replace(path)
    return file_sha256(path)


def read_table(path: Path) -> pa.Table:
    with pa.memory_map(str(path), "r") as source:
        return pa.ipc.open_file(source).read_all()


def iter_batches(path: Path) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """Stream the record batches of an IPC file (memory-mapped: larger-than-memory files work)."""
    source = pa.memory_map(str(path), "r")
    reader = pa.ipc.open_file(source)

    def gen() -> Iterator[pa.RecordBatch]:
        try:
            for i in range(reader.num_record_batches):
                yield reader.get_batch(i)
        finally:
            source.close()

    return reader.schema, gen()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def schema_description(schema: pa.Schema, units: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Column names, Arrow types and units, as published in the catalog."""
    units = units or {}
    out = []
    for field in schema:
        col: dict[str, Any] = {"name": field.name, "type": str(field.type)}
        if field.name in units:
            col["unit"] = units[field.name]
        out.append(col)
    return out
