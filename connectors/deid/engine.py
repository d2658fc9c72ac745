"""Run a de-identification config over a table, streaming, in two passes:

1. transform every batch (drop, pseudonymise, generalise, add noise) into a staging file while
   counting equivalence classes and the sensitive values in each;
2. suppress the rows of classes that break k-anonymity or distinct l-diversity, if that stays
   within ``privacy.max_suppression``, and write the output file.

Memory is bounded by the number of equivalence classes, not rows, so CSV-sized inputs larger
than memory pass through. The report records what was done and what was achieved.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from twinspace.canonical import canonical_json
from connectors.deid.config import DeidConfig
from twinspace.privacy.kanonymity import ClassStats, PrivacyCheck
from connectors.deid.techniques import Technique, build
from connectors.errors import PrivacyError
from connectors.tables import file_sha256, get_meta, iter_batches, with_meta

REPORT_FORMAT = "twinspace-deid-report/1"


@dataclass
class DeidResult:
    path: Path
    content_hash: str
    report: dict[str, Any]
    report_hash: str
    check: PrivacyCheck

    @property
    def meets_policy(self) -> bool:
        return bool(self.report["meets_policy"])

    def require_policy(self) -> None:
        if not self.meets_policy:
            raise PrivacyError(unmet_message(self.report))

    def table(self) -> pa.Table:
        from connectors.tables import read_table

        return read_table(self.path)


def report_hash(report: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(report)).hexdigest()


def unmet_message(report: dict[str, Any]) -> str:
    req, got = report["privacy_model"], report["achieved"]
    parts = []
    if got["k"] < req["k"]:
        parts.append(f"k-anonymity {got['k']} < required {req['k']}")
    if req["l"] > 1 and (got["l_min"] or 0) < req["l"]:
        parts.append(f"distinct l-diversity {got['l_min']} < required {req['l']}")
    if got["rows"] == 0:
        parts.append("no rows left")
    need = report.get("suppression_needed_rate")
    if need is not None and need > req["max_suppression"]:
        parts.append(f"reaching it would suppress {need:.1%} of rows (> max_suppression "
                     f"{req['max_suppression']:.1%}); generalise quasi-identifiers further")
    return "privacy model not met: " + "; ".join(parts or ["unknown reason"])


def _source(source: pa.Table | Path) -> tuple[pa.Schema, Iterator[pa.RecordBatch], int]:
    if isinstance(source, pa.Table):
        return source.schema, iter(source.to_batches(max_chunksize=65536)), source.num_rows
    schema, it = iter_batches(Path(source))
    return schema, it, int(get_meta(schema).get("rows") or 0)


def deidentify(source: pa.Table | Path, config: DeidConfig, out_path: Path, *,
               secrets: dict[str, bytes] | None = None,
               on_progress: Callable[[int, int], None] | None = None) -> DeidResult:
    """De-identify ``source`` (a table or an Arrow IPC file) into ``out_path`` (Arrow IPC file).

    Raises ``ConfigError`` for config/data mismatches. It does NOT raise when the privacy model is
    unmet: the result says so (``meets_policy``) and publishing refuses it."""
    schema, batches, total_rows = _source(source)
    config.validate_columns(schema)
    base = Path(config.base_dir) if config.base_dir else None
    techniques: dict[str, Technique] = {name: build(name, config.rule(name), base_dir=base, secrets_map=secrets)
                                        for name in schema.names}
    qis, sens = list(config.quasi_identifiers), list(config.sensitive_attributes)
    stats = ClassStats(qis, sens)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    stage = out_path.with_name(out_path.name + ".stage")
    in_meta = get_meta(schema)
    writer = sink = None
    out_schema: pa.Schema | None = None
    done = 0
    try:
        for batch in batches:
            arrays, names = [], []
            for name in schema.names:
                t = techniques[name]
                col = batch.column(name)
                if t.name == "drop":
                    t.rows += len(col)
                    continue
                arrays.append(t.apply(col))
                names.append(name)
            out_batch = pa.RecordBatch.from_arrays(arrays, names=names)
            if writer is None:
                out_schema = out_batch.schema
                sink = pa.OSFile(str(stage), "wb")
                writer = pa.ipc.new_file(sink, out_schema, options=pa.ipc.IpcWriteOptions(compression="zstd"))
            else:
                out_batch = out_batch.cast(out_schema) if out_batch.schema != out_schema else out_batch
            writer.write_batch(out_batch)
            stats.add(out_batch)
            done += batch.num_rows
            if on_progress:
                on_progress(done, total_rows)
    finally:
        if writer is not None:
            writer.close()
            sink.close()
    if writer is None:  # empty input
        out_schema = pa.schema([pa.field(n, pa.string()) for n in schema.names if techniques[n].name != "drop"])
        with pa.OSFile(str(stage), "wb") as sink, pa.ipc.new_file(sink, out_schema):
            pass

    req = config.privacy
    failing = stats.failing(req.k, req.l)
    need_rows = sum(stats.sizes[key] for key in failing)
    need_rate = need_rows / done if done else 0.0
    suppress = failing if failing and need_rate <= req.max_suppression else set()
    check = stats.result(exclude=suppress)

    # pass 2: suppression and output metadata (bbox recomputed from the published coordinates)
    bbox: list[float] | None = None
    stage_schema, stage_batches = iter_batches(stage)

    def second_pass() -> Iterator[pa.RecordBatch]:
        nonlocal bbox
        for b in stage_batches:
            if suppress:
                keys = zip(*(b.column(q).to_pylist() for q in qis)) if qis else (() for _ in range(b.num_rows))
                b = b.filter(pa.array([key not in suppress for key in keys], type=pa.bool_()))
            if "lon" in b.schema.names and "lat" in b.schema.names and b.num_rows:
                lo, la = b.column("lon"), b.column("lat")
                if (pa.types.is_floating(lo.type) and pa.types.is_floating(la.type)
                        and lo.null_count < len(lo) and la.null_count < len(la)):
                    mlo, mla = pc.min_max(lo), pc.min_max(la)
                    cand = [mlo["min"].as_py(), mla["min"].as_py(), mlo["max"].as_py(), mla["max"].as_py()]
                    bbox = cand if bbox is None else [min(bbox[0], cand[0]), min(bbox[1], cand[1]),
                                                      max(bbox[2], cand[2]), max(bbox[3], cand[3])]
            yield b

    tmp_out = out_path.with_name(out_path.name + ".tmp")
    with pa.OSFile(str(tmp_out), "wb") as sink2:
        meta_schema = stage_schema
        with pa.ipc.new_file(sink2, meta_schema, options=pa.ipc.IpcWriteOptions(compression="zstd")) as w:
            for b in second_pass():
                w.write_batch(b)
    stage.unlink(missing_ok=True)
    # the schema metadata (asset facts) is written once more with the final bbox and row count
    # extent: the ingest bbox (whole geometries) when coordinates pass unchanged and no row was dropped;
    # otherwise the extent of the published coordinates; the ingest bbox when coordinates are gone
    coords_kept = all(n in techniques and techniques[n].name == "keep" for n in ("lon", "lat"))
    if coords_kept and not suppress and in_meta.get("bbox"):
        out_bbox = in_meta["bbox"]
    elif bbox:
        out_bbox = [round(v, 7) for v in bbox]
    else:
        out_bbox = None if {"lon", "lat"} & set(stage_schema.names) else in_meta.get("bbox")
    out_meta = {**in_meta, "rows": check.rows, "deidentified": True, "bbox": out_bbox}
    final_schema, final_batches = iter_batches(tmp_out)
    with pa.OSFile(str(out_path), "wb") as sink3, pa.ipc.new_file(
            sink3, with_meta(final_schema, out_meta), options=pa.ipc.IpcWriteOptions(compression="zstd")) as w:
        for b in final_batches:
            w.write_batch(b)
    tmp_out.unlink(missing_ok=True)
    content_hash = file_sha256(out_path)

    columns = []
    suppressed = done - check.rows
    for name in schema.names:
        t = techniques[name]
        loss = round(t.information_loss(), 6)
        kept = check.rows
        columns.append({"column": name, **t.describe(),
                        "role": ("quasi_identifier" if name in qis else "sensitive" if name in sens else "other"),
                        "information_loss": loss,
                        "information_loss_with_suppression": round((loss * kept + suppressed) / done, 6) if done else 0.0})
    report = {
        "format": REPORT_FORMAT,
        "created_at": datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
        "entity_type": in_meta.get("entity_type"),
        "input": {"rows": done, "columns": len(schema.names)},
        "output": {"rows": check.rows, "columns": len(stage_schema.names), "content_sha256": content_hash},
        "quasi_identifiers": qis,
        "sensitive_attributes": sens,
        "privacy_model": req.model_dump(),
        "achieved": check.as_dict(),
        "rows_suppressed": suppressed,
        "suppression_rate": round(suppressed / done, 6) if done else 0.0,
        "suppression_needed_rate": round(need_rate, 6),
        "meets_policy": check.meets(req.k, req.l) and (req.k <= 1 or bool(qis)),
        "columns": columns,
        "config": config.public_dict(),
    }
    return DeidResult(out_path, content_hash, report, report_hash(report), check)


def _plain(value: Any) -> str:
    """A report value for people: `{'salary-class': 2}` reads `salary-class 2`; empty reads `-`."""
    if value in (None, "", {}, []):
        return "-"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_plain(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return "/".join(_plain(v) for v in value)
    return str(value)


def render_report(report: dict[str, Any]) -> str:
    """The readable text version of a report."""
    a, req = report["achieved"], report["privacy_model"]
    lines = [
        f"De-identification report ({report['format']}) — {report.get('entity_type') or 'table'}",
        f"Created: {report['created_at']}",
        f"Rows: {report['input']['rows']} in, {report['output']['rows']} out "
        f"({report['rows_suppressed']} suppressed, {report['suppression_rate']:.2%}; "
        f"limit {req['max_suppression']:.2%})",
        f"Quasi-identifiers: {', '.join(report['quasi_identifiers']) or '(none)'}",
        f"Sensitive attributes: {', '.join(report['sensitive_attributes']) or '(none)'}",
        f"Required: k >= {req['k']}, distinct l >= {req['l']}",
        f"Achieved: k = {a['k']}, l = {_plain(a['l'])} over {a['equivalence_classes']} equivalence classes",
        f"Result: {'MEETS the privacy model' if report['meets_policy'] else unmet_message(report).upper()}",
        f"Output SHA-256: {report['output']['content_sha256']}",
        "",
        f"{'column':<24} {'role':<17} {'technique':<11} {'info loss':>9}  details",
    ]
    for c in report["columns"]:
        details = ", ".join(f"{k}={_plain(v)}" for k, v in c.items()
                            if k not in ("column", "technique", "role", "information_loss",
                                         "information_loss_with_suppression"))
        lines.append(f"{c['column']:<24} {c['role']:<17} {c['technique']:<11} {c['information_loss']:>9.3f}  {details}")
    return "\n".join(lines) + "\n"
