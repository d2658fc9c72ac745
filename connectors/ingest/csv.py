"""CSV streamed block by block into Arrow (or straight into an IPC file, so files larger than memory
pass through), after guessing its encoding and dialect (``connectors.ingest.sniff``).

Plain UTF-8 files go through pyarrow's native reader; any other encoding, or spaces after the
separators, goes through Python's ``csv`` module first and is re-emitted as plain UTF-8 CSV for
pyarrow, so one reader infers the types either way. Every parse failure names the line (and the
column where known); row values are never echoed, since they may identify people.
Progress is the number of source bytes read so far.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.csv as pacsv

from twinspace.entity_codes import entity_code
from connectors.errors import IngestError
from connectors.ingest.common import Extent, IngestResult, Progress, category_for, parse_time
from connectors.ingest.sniff import ENCODING_HINT, SAMPLE_BYTES, Dialect, sniff
from connectors.tables import file_sha256, iter_batches, with_meta, write_batches

LON_NAMES = ("lon", "lng", "long", "longitude")
LAT_NAMES = ("lat", "latitude")
_CONVERSION_RE = re.compile(r"column #(\d+): Row #(\d+): CSV conversion error to ([\w\[\], ]+?):")
_ROW_RE = re.compile(r"Row #(\d+)")


class _Counting(io.RawIOBase):
    """The source file, counting the bytes pyarrow has read (pyarrow's streaming reader has no stats)."""

    def __init__(self, fh: BinaryIO):
        self.fh, self.done = fh, 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        data = self.fh.read(n)
        self.done += len(data)
        return data

    def readinto(self, b) -> int:  # pragma: no cover - pyarrow calls read()
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)


class _Normalised(io.RawIOBase):
    """Re-emits the source as plain UTF-8 CSV: decoded in its own encoding, split by Python's csv
    module with its dialect, each record checked against the header width. A failure is kept in
    ``error`` (with the source line) and the stream ends, so pyarrow stops; the caller raises it."""

    def __init__(self, fh: BinaryIO, dialect: Dialect, name: str):
        self.fh, self.dialect, self.name = fh, dialect, name
        self.done = 0
        self.error: IngestError | None = None
        self._decoder = codecs.getincrementaldecoder(dialect.encoding)(errors="strict")
        self._line = 1  # source line of the next raw byte
        self._out = bytearray()
        self._records = csv.reader(self._lines(), delimiter=dialect.delimiter,
                                   skipinitialspace=dialect.skipinitialspace, strict=True)
        self._buf = io.StringIO()
        self._writer = csv.writer(self._buf, lineterminator="\n")
        self._width: int | None = None
        self._eof = False

    def readable(self) -> bool:
        return True

    def _lines(self):
        pending = ""
        while True:
            raw = self.fh.read(1 << 16)
            self.done += len(raw)
            try:
                text = self._decoder.decode(raw, final=not raw)
            except UnicodeDecodeError as exc:
                line = self._line + raw.count(b"\n", 0, exc.start)
                col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
                if raw.rfind(b"\n", 0, exc.start) < 0:
                    col += len(pending.encode(self.dialect.encoding, errors="replace"))
                raise IngestError(f"{self.name}: line {line} column {col}: byte 0x{raw[exc.start]:02x} is not valid "
                                  f"{self.dialect.encoding}; {ENCODING_HINT}", code="ingest_bad_encoding") from None
            self._line += raw.count(b"\n")
            if not raw:
                if pending:
                    yield pending
                return
            parts = (pending + text).split("\n")
            pending = parts.pop()
            for p in parts:
                yield p + "\n"

    def _fill(self, n: int) -> None:
        while len(self._out) < n and not self._eof:
            try:
                rec = next(self._records)
            except StopIteration:
                self._eof = True
                break
            except csv.Error as exc:
                self._fail(IngestError(f"{self.name}: malformed CSV at line {self._records.line_num}: {exc}",
                                       code="ingest_malformed_csv"))
                break
            except IngestError as exc:
                self._fail(exc)
                break
            if not rec:
                continue  # blank line
            if self._width is None:
                self._width = len(rec)
                rec = [h.strip() for h in rec]
            elif len(rec) != self._width:
                self._fail(IngestError(f"{self.name}: malformed CSV at line {self._records.line_num}: expected "
                                       f"{self._width} columns, got {len(rec)}", code="ingest_malformed_csv"))
                break
            self._writer.writerow(rec)
            if self._buf.tell() > 1 << 16:
                self._flush()
        self._flush()

    def _flush(self) -> None:
        self._out += self._buf.getvalue().encode("utf-8")
        self._buf.seek(0)
        self._buf.truncate()

    def _fail(self, exc: IngestError) -> None:
        self.error, self._eof = exc, True

    def read(self, n: int = -1) -> bytes:
        self._fill(n if n >= 0 else 1 << 62)
        size = len(self._out) if n < 0 else min(n, len(self._out))
        data = bytes(self._out[:size])
        del self._out[:size]
        return data


def _arrow_error(exc: Exception, name: str, names: list[str], bad_row: dict[str, Any], encoding: str) -> IngestError:
    msg = str(exc)
    if bad_row:
        line = bad_row.get("number")
        where = f"at line {line}" if line else "in a row"
        return IngestError(f"{name}: malformed CSV {where}: expected {bad_row['expected']} columns, got "
                           f"{bad_row['actual']}", code="ingest_malformed_csv")
    m = _CONVERSION_RE.search(msg)
    if m:
        idx, row, typ = int(m.group(1)), int(m.group(2)), m.group(3)
        col = names[idx] if idx < len(names) else f"#{idx + 1}"
        if "UTF8" in msg:
            return IngestError(f"{name}: line {row}, column {col!r}: text is not valid {encoding}; {ENCODING_HINT}",
                               code="ingest_bad_encoding")
        return IngestError(f"{name}: line {row}, column {col!r} (column {idx + 1}): a value is not a valid {typ}; "
                           "fix the value or change --column-type", code="ingest_malformed_csv")
    if "UTF8" in msg or "decode" in msg.lower():
        return IngestError(f"{name}: text is not valid {encoding}; {ENCODING_HINT}", code="ingest_bad_encoding")
    m = re.search(r"Expected (\d+) columns?, got (\d+)", msg)
    if m:
        r = _ROW_RE.search(msg)
        return IngestError(f"{name}: malformed CSV{f' at line {r.group(1)}' if r else ''}: expected {m.group(1)} "
                           f"columns, got {m.group(2)}", code="ingest_malformed_csv")
    return IngestError(f"{name}: CSV could not be read ({msg.splitlines()[0][:200]})", code="ingest_malformed_csv")


def header_names(head: bytes, dialect: Dialect) -> list[str]:
    text = head.decode(dialect.encoding, errors="replace").lstrip("\ufeff")
    try:
        return [h.strip() for h in next(csv.reader([text.split("\n", 1)[0]], delimiter=dialect.delimiter,
                                                   skipinitialspace=dialect.skipinitialspace), [])]
    except csv.Error:
        return []


def _unclosed_quote(batch: pa.RecordBatch, before: int, name: str) -> None:
    """pyarrow accepts a quoted field left open up to the end of the file (it swallows every later
    line); values cannot hold line breaks otherwise (newlines_in_values is off), so one that does
    is that field."""
    import pyarrow.compute as pc

    for i, col in enumerate(batch.columns):
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            hit = pc.match_substring(col, "\n")
            if pc.any(hit).as_py():
                row = pc.index(hit, True).as_py()
                raise IngestError(f"{name}: malformed CSV at line {before + row + 2}, column "
                                  f"{batch.schema.names[i]!r}: a quoted field is never closed (a \" is missing)",
                                  code="ingest_malformed_csv")


def _pick(names: list[str], wanted: str | None, choices: tuple[str, ...]) -> str | None:
    if wanted and wanted in names:
        return wanted
    lower = {n.lower(): n for n in names}
    return next((lower[c] for c in choices if c in lower), None)


def ingest_csv(path: Path, out_path: Path | None = None, *, delimiter: str | None = None,
               encoding: str | None = None, require_columns: list[str] | None = None,
               column_types: dict[str, str] | None = None, entity_type: str = "Record", category: str | None = None,
               region: str | None = None, id_column: str | None = None, time_column: str | None = None,
               lon_column: str | None = None, lat_column: str | None = None, block_size: int = 4 << 20,
               on_progress: Progress | None = None) -> IngestResult:
    """Stream a CSV into an Arrow table (or, with ``out_path``, into an IPC file). The encoding and
    separator are guessed unless given; ``column_types`` maps names to Arrow types (``int64``,
    ``float64``, ``string``, ``timestamp[s]``...). Smart Data Models flattened exports (``"id_",
    "location__coordinates__0_"``) are rebuilt into entities (see ``connectors.ingest.sdm_csv``)."""
    import pyarrow.compute as pc

    path = Path(path)
    if not path.is_file():
        raise IngestError(f"{path}: no such file", code="ingest_unreadable")
    total = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(SAMPLE_BYTES)
    dialect = sniff(head, path.name, encoding=encoding, delimiter=delimiter)
    from connectors.ingest.sdm_csv import ingest_sdm_csv, is_sdm_header

    if is_sdm_header(head, dialect):
        return ingest_sdm_csv(path, dialect, category=category, region=region, on_progress=on_progress)
    try:
        types = {k: pa.type_for_alias(v) for k, v in (column_types or {}).items()}
    except (ValueError, KeyError) as exc:
        raise IngestError(f"unknown column type in {column_types}: {exc}; use e.g. int64, float64, string, "
                          "timestamp[s]", code="ingest_bad_type") from exc
    cat = category_for(entity_type, category)
    bad_row: dict[str, Any] = {}

    def on_invalid(row) -> str:
        bad_row.update(number=row.number, expected=row.expected_columns, actual=row.actual_columns)
        return "error"

    fh = open(path, "rb")
    source = _Counting(fh) if dialect.plain else _Normalised(fh, dialect, path.name)
    try:
        # use_threads=False: no read-ahead threads left running when we raise (they aborted the
        # interpreter at exit with "terminate called without an active exception").
        reader = pacsv.open_csv(
            source, read_options=pacsv.ReadOptions(block_size=block_size, use_threads=False),
            parse_options=pacsv.ParseOptions(delimiter=dialect.delimiter if dialect.plain else ",",
                                              invalid_row_handler=on_invalid),
            convert_options=pacsv.ConvertOptions(column_types=types, strings_can_be_null=True))
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeDecodeError) as exc:
        fh.close()
        err = getattr(source, "error", None)
        raise (err or _arrow_error(exc, path.name, header_names(head, dialect), bad_row, dialect.encoding)) from None
    schema = reader.schema
    names = schema.names

    def refuse(exc: IngestError) -> IngestError:
        reader.close()
        fh.close()
        return exc

    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise refuse(IngestError(f"{path.name}: column name(s) {', '.join(dup)} appear more than once in the header",
                                 code="ingest_malformed_csv"))
    undecodable = [f.name for f in schema if pa.types.is_binary(f.type) and f.name not in types]
    if undecodable:  # pyarrow infers binary when the text is not valid in the declared encoding
        raise refuse(IngestError(f"{path.name}: column(s) {', '.join(undecodable)} are not valid {dialect.encoding} "
                                 f"text; {ENCODING_HINT}", code="ingest_bad_encoding"))
    missing = [c for c in (require_columns or []) + ([id_column] if id_column else []) if c not in names]
    if missing:
        raise refuse(IngestError(f"{path.name}: declared column(s) missing: {', '.join(missing)} "
                                 f"(the file has: {', '.join(names)})", code="ingest_missing_columns"))
    if region and not id_column:
        raise refuse(IngestError("entity codes need --id-column", code="ingest_missing_id"))
    if time_column and time_column not in names:
        raise refuse(IngestError(f"{path.name}: --time-column {time_column!r} is not a column "
                                 f"(the file has: {', '.join(names)})", code="ingest_missing_columns"))
    lon_c, lat_c = _pick(names, lon_column, LON_NAMES), _pick(names, lat_column, LAT_NAMES)
    extent = Extent()
    rows = 0

    def add_codes(batch: pa.RecordBatch) -> pa.RecordBatch:
        if not region:
            return batch
        ids = batch.column(id_column).to_pylist()
        try:
            codes = [None if v is None else entity_code(region, cat, entity_type, str(v)) for v in ids]
        except ValueError as exc:
            raise IngestError(str(exc), code="ingest_bad_entity_code") from exc
        return pa.RecordBatch.from_arrays(list(batch.columns) + [pa.array(codes, pa.string())],
                                          names=list(batch.schema.names) + ["entity_code"])

    def grow(batch: pa.RecordBatch) -> None:
        if lon_c and lat_c:
            lo, la = batch.column(lon_c), batch.column(lat_c)
            if all(pa.types.is_floating(c.type) or pa.types.is_integer(c.type) for c in (lo, la)):
                mm_lo, mm_la = pc.min_max(lo), pc.min_max(la)
                if mm_lo["min"].is_valid and mm_la["min"].is_valid:
                    lo0, lo1, la0, la1 = (mm_lo["min"].as_py(), mm_lo["max"].as_py(), mm_la["min"].as_py(),
                                          mm_la["max"].as_py())
                    if not (-180 <= lo0 <= lo1 <= 180 and -90 <= la0 <= la1 <= 90):
                        raise IngestError(f"{path.name}: columns {lon_c!r}/{lat_c!r} hold values outside WGS84 "
                                          "lon/lat ranges; pass --lon-column/--lat-column or convert the "
                                          "coordinates", code="ingest_malformed_geometry")
                    extent.add_bounds(lo0, la0, lo1, la1)
        if time_column:
            col = batch.column(time_column)
            if pa.types.is_timestamp(col.type) or pa.types.is_date(col.type):
                mm = pc.min_max(col)
                for v in (mm["min"].as_py(), mm["max"].as_py()):
                    if v is not None:
                        v = v if isinstance(v, datetime) else datetime(v.year, v.month, v.day)
                        extent.add_time(v if v.tzinfo else v.replace(tzinfo=timezone.utc))
            else:
                for v in col.to_pylist():
                    extent.add_time(parse_time(v))

    def batches():
        nonlocal rows
        try:
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    break
                except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeDecodeError) as exc:
                    raise (getattr(source, "error", None) or
                           _arrow_error(exc, path.name, names, bad_row, dialect.encoding)) from None
                if getattr(source, "error", None):
                    raise source.error
                _unclosed_quote(batch, rows, path.name)
                rows += batch.num_rows
                grow(batch)
                if on_progress:
                    on_progress(min(source.done, total), total)
                yield add_codes(batch)
            if getattr(source, "error", None):
                raise source.error
            if on_progress:
                on_progress(total, total)
        finally:
            reader.close()
            fh.close()

    out_schema = schema.append(pa.field("entity_code", pa.string())) if region else schema
    base_meta = {"entity_type": entity_type, "twin_category": cat, "source_format": "csv", "region": region,
                 "csv_dialect": dialect.describe()}
    if lon_c and lat_c:
        base_meta["units"] = {lon_c: "degree", lat_c: "degree"}
    if out_path is not None:
        write_batches(Path(out_path), with_meta(out_schema, base_meta), batches())
        meta = {**base_meta, "rows": rows, **extent.meta()}
        # IPC footers cannot be patched: re-stream the (already converted) file once with the final
        # metadata, cheap next to parsing.
        schema2, it = iter_batches(Path(out_path))
        final = Path(str(out_path) + ".final")
        write_batches(final, with_meta(schema2, meta), it)
        final.replace(out_path)
        return IngestResult(None, meta, path=Path(out_path), content_hash=file_sha256(Path(out_path)))
    table = pa.Table.from_batches(list(batches()), schema=out_schema)
    meta = {**base_meta, "rows": rows, **extent.meta()}
    return IngestResult(table.replace_schema_metadata(with_meta(table.schema, meta).metadata), meta)
