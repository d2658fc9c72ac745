"""Smart Data Models' flattened CSV exports (``"id_", "type_", "location__coordinates__0_", ...``,
quoted, with a space after each comma): each record is rebuilt into its entity (``__`` nests,
a number is an array index, the trailing ``_`` ends the name) and read like an NGSI entity, so the
location becomes lon/lat and the columns match the JSON examples.

CSV carries no types: numbers written as text become numbers, the rest stays text.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

from connectors.errors import IngestError
from connectors.ingest.common import Extent, IngestResult, Progress, add_codes, category_for, rows_to_table
from connectors.ingest.ngsi import ngsi_entity_to_row
from connectors.ingest.sniff import ENCODING_HINT, Dialect, decode_sample

_INT = re.compile(r"^-?(0|[1-9][0-9]{0,17})$")
_FLOAT = re.compile(r"^-?[0-9]+\.[0-9]+([eE][-+]?[0-9]+)?$")


def _header(head: bytes, dialect: Dialect) -> list[str]:
    text = head.decode(dialect.encoding, errors="replace")
    first = text.split("\n", 1)[0]
    try:
        return next(csv.reader([first], delimiter=dialect.delimiter, skipinitialspace=True), [])
    except csv.Error:
        return []


def is_sdm_header(head: bytes, dialect: Dialect) -> bool:
    names = [n.strip() for n in _header(head, dialect)]
    return len(names) >= 2 and "id_" in names and all(n.endswith("_") for n in names)


def _value(text: str) -> Any:
    if text == "":
        return None
    if _INT.match(text):
        return int(text)
    if _FLOAT.match(text):
        return float(text)
    if text in ("true", "false"):
        return text == "true"
    return text


def _set(doc: dict[str, Any], path: list[str], value: Any, line: int, column: str) -> None:
    node: Any = doc
    for i, part in enumerate(path):
        last = i == len(path) - 1
        nxt: Any = None if last else ([] if path[i + 1].isdigit() else {})
        if isinstance(node, list):
            if not part.isdigit():
                raise IngestError(f"line {line}, column {column!r}: mixes an array index and a name",
                                  code="ingest_malformed_csv")
            idx = int(part)
            while len(node) <= idx:
                node.append(None)
            if last:
                node[idx] = value
            else:
                node[idx] = node[idx] if node[idx] is not None else nxt
                node = node[idx]
        else:
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, nxt)
                if not isinstance(node, (dict, list)):
                    raise IngestError(f"line {line}, column {column!r}: {part!r} is both a value and a group",
                                      code="ingest_malformed_csv")


def ingest_sdm_csv(path: Path, dialect: Dialect, *, category: str | None = None, region: str | None = None,
                   on_progress: Progress | None = None) -> IngestResult:
    raw = Path(path).read_bytes()
    text = decode_sample(raw + b"\n", dialect.encoding, path.name)  # whole file, errors name the line
    if text.startswith("\ufeff"):
        text = text[1:]
    reader = csv.reader(text.splitlines(), delimiter=dialect.delimiter, skipinitialspace=True, strict=True)
    try:
        header = [h.strip() for h in next(reader)]
        paths = [h[:-1].split("__") for h in header]
        entities = []
        for rec in reader:
            if not rec:
                continue
            if len(rec) != len(header):
                raise IngestError(f"{path.name}: malformed CSV at line {reader.line_num}: expected {len(header)} "
                                  f"columns, got {len(rec)}", code="ingest_malformed_csv")
            doc: dict[str, Any] = {}
            for name, p, cell in zip(header, paths, rec):
                value = cell if p == ["id"] else _value(cell)
                if value is not None:
                    _set(doc, p, value, reader.line_num, name)
            entities.append(doc)
    except csv.Error as exc:
        raise IngestError(f"{path.name}: malformed CSV at line {reader.line_num}: {exc}",
                          code="ingest_malformed_csv") from exc
    if not entities:
        raise IngestError(f"{path.name}: no records after the header", code="ingest_empty")
    extent, warnings, rows, types = Extent(), [], [], set()
    for i, ent in enumerate(entities):
        etype, row = ngsi_entity_to_row(ent, i, extent, warnings)
        types.add(etype)
        rows.append(row)
    if len(types) > 1:
        raise IngestError(f"{path.name}: an asset holds one entity type; the file mixes {', '.join(sorted(types))}",
                          code="ingest_mixed_types")
    etype = types.pop()
    cat = category_for(etype, category)
    add_codes(rows, region, cat, etype)
    if on_progress:
        on_progress(len(raw), len(raw))
    meta = {"entity_type": etype, "twin_category": cat, "source_format": "csv-smart-data-models", "rows": len(rows),
            "region": region, "csv_dialect": dialect.describe(), **extent.meta()}
    return IngestResult(rows_to_table(rows, meta), meta, warnings)


__all__ = ["ENCODING_HINT", "ingest_sdm_csv", "is_sdm_header"]
