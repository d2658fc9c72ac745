"""Publish a de-identified table: build the asset metadata from the table and its de-identification
report, re-check the privacy model locally (nothing is sent when it fails), place the table in the
provider's own connector, and publish the metadata only (``BrokerClient.catalog_publish`` with
``data_endpoint``): the broker never receives a row."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa

from twinspace.canonical import canonical_json
from connectors.deid.engine import unmet_message
from twinspace.privacy.kanonymity import check_privacy
from connectors.errors import PrivacyError, PublishError
from connectors.tables import get_meta, schema_description

CLASSIFICATIONS = ("public", "internal", "sensitive", "core")


def load_report(path: Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PublishError(f"cannot read the de-identification report {path}: {exc}", code="report_unreadable") from exc


def _reader(data: "bytes | str | Path", fields: list[int] | None = None) -> pa.ipc.RecordBatchFileReader:
    """A reader of the Arrow IPC file: bytes, or a path memory-mapped (nothing is read into memory but
    the footer until batches are asked for); ``fields``: only these columns are read and decompressed."""
    source = pa.memory_map(str(data), "r") if isinstance(data, (str, Path)) else pa.BufferReader(data)
    options = pa.ipc.IpcReadOptions(included_fields=fields) if fields is not None else None
    return pa.ipc.open_file(source, options=options)


def _sha256(data: "bytes | str | Path") -> str:
    if isinstance(data, (str, Path)):
        with open(data, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()  # in chunks
    return hashlib.sha256(data).hexdigest()


def _column_batches(data: "bytes | str | Path", schema: pa.Schema, names: list[str]):
    """The record batches of ``names`` only, one at a time (the privacy recheck streams)."""
    reader = _reader(data, sorted({schema.get_field_index(n) for n in names}))
    for i in range(reader.num_record_batches):
        yield reader.get_batch(i)


def prepare(data: "bytes | str | Path", *, title: str, classification: str, domain: str, offers: list[dict[str, Any]],
            description: str = "", keywords: list[str] | None = None, report: dict[str, Any] | None = None,
            units: dict[str, str] | None = None, twin_category: str | None = None, entity_type: str | None = None,
            time_start: str | None = None, time_end: str | None = None,
            bbox: list[float] | None = None) -> dict[str, Any]:
    """Asset metadata for ``data`` (Arrow IPC file bytes, or its path: memory-mapped, hashed in chunks, and
    only the report's columns read, batch by batch, for the privacy recheck). Raises PrivacyError /
    PublishError before anything leaves the machine when the table and report disagree or the privacy
    model is unmet."""
    if classification not in CLASSIFICATIONS:
        raise PublishError(f"classification must be one of {', '.join(CLASSIFICATIONS)}", code="bad_classification")
    if not offers:
        raise PublishError("an asset needs at least one offer (policy reference)", code="no_offers")
    try:
        reader = _reader(data)
        schema, row_count = reader.schema, reader.count_rows()
    except (pa.ArrowInvalid, OSError) as exc:
        raise PublishError("the table is not an Arrow IPC file (run `twinspace connector ingest`)",
                           code="bad_table") from exc
    meta = get_meta(schema)
    content_hash = _sha256(data)
    category = twin_category or meta.get("twin_category")
    etype = entity_type or meta.get("entity_type")
    if not category or not etype:
        raise PublishError("twin category and entity type are unknown (set them at ingest or pass them)",
                           code="missing_metadata")
    report_hash = None
    if report is not None:
        out = report.get("output") or {}
        if out.get("content_sha256") != content_hash:
            raise PublishError("the de-identification report was made for a different table (hash mismatch)",
                               code="report_mismatch")
        missing = [c for c in report.get("quasi_identifiers", []) + report.get("sensitive_attributes", [])
                   if c not in schema.names]
        if missing:
            raise PublishError(f"report columns missing from the table: {', '.join(missing)}", code="report_mismatch")
        req = report["privacy_model"]
        check = check_privacy(_column_batches(data, schema, report["quasi_identifiers"] + report["sensitive_attributes"]),
                              report["quasi_identifiers"], report["sensitive_attributes"])
        if not report.get("meets_policy") or not check.meets(int(req["k"]), int(req["l"])):
            raise PrivacyError(unmet_message({**report, "achieved": check.as_dict()}) +
                               " — nothing was sent to the broker")
        report_hash = hashlib.sha256(canonical_json(report)).hexdigest()
    elif category == "natural_person":
        raise PrivacyError("person-level assets must be de-identified first (no report given) — nothing was sent")
    merged_units = {**(meta.get("units") or {}), **(units or {})}
    return {
        "title": title, "description": description, "keywords": list(keywords or []),
        "twin_category": category, "entity_type": etype, "region": meta.get("region"),
        "classification": classification, "domain": domain,
        "bbox": bbox if bbox is not None else meta.get("bbox"),
        "time_start": time_start or meta.get("time_start"), "time_end": time_end or meta.get("time_end"),
        "columns": schema_description(schema, merged_units), "row_count": row_count,
        "content_hash": content_hash, "deid_report": report, "deid_report_hash": report_hash,
        "offers": offers,
    }


class Connector(Protocol):
    """Where a provider's rows live: its connector's endpoint and a way to place a table there."""

    endpoint: str

    def put(self, data: bytes) -> str: ...


@dataclass
class LocalConnector:
    """A connector whose data directory is on this machine (``twinspace connector serve --data-dir``)."""

    endpoint: str
    data_dir: Path

    def put(self, data: bytes) -> str:
        from connectors.node.store import DataStore

        return DataStore(Path(self.data_dir)).put(data)

    def put_file(self, path: Path) -> str:
        """Place the file at ``path`` by a streaming copy (hashed as copied); returns its SHA-256."""
        from connectors.node.store import DataStore

        return DataStore(Path(self.data_dir)).put_file(path)


def publish_file(client, path: Path, *, connector: Connector, report: dict[str, Any] | None = None,
                 asset_id: str | None = None, **kwargs: Any) -> dict[str, Any]:
    """Check locally, place ``path`` in the provider's ``connector``, then publish its metadata (or a new
    version of ``asset_id``) with the connector as ``data_endpoint``."""
    metadata = prepare(Path(path), report=report, **kwargs)  # memory-mapped, hashed in chunks
    put_file = getattr(connector, "put_file", None)
    if put_file is not None:
        placed = put_file(Path(path))  # a streaming copy
    else:
        placed = connector.put(Path(path).read_bytes())
    if placed is not None and placed != metadata["content_hash"]:
        raise PublishError("the table changed while it was being published (hash mismatch); nothing was published",
                           code="table_changed")
    metadata["data_endpoint"] = connector.endpoint
    return client.catalog_publish(metadata, asset_id=asset_id)


def parse_offer(spec: str) -> dict[str, Any]:
    """``id=policy_id`` or ``id=policy_id:{json params}`` → an offer dict."""
    ident, sep, rest = spec.partition("=")
    if not sep or not ident or not rest:
        raise PublishError(f"--offer expects id=policy_id[:json-params], got {spec!r}", code="bad_offer")
    policy, _, params = rest.partition(":{")
    try:
        parsed = json.loads("{" + params) if params else {}
    except ValueError as exc:
        raise PublishError(f"offer {ident!r}: params are not JSON", code="bad_offer") from exc
    return {"id": ident, "policy_id": policy, "params": parsed}
