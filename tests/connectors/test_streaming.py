"""The connector streams: encoders yield as batches are read (nothing accumulated), the store's lazy view
reads one record batch at a time with projection and row limit, publishing places files by streaming
copy. No timing here (targets are in benchmarks/stream_bench.py)."""

from __future__ import annotations

import hashlib
import io
import json

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from connectors.node.encode import apply_obligations, encode
from connectors.node.store import DataStore, StoredTable
from connectors.tables import IPC_OPTIONS

SCHEMA = pa.schema([("id", pa.int64()), ("name", pa.string()), ("value", pa.float64())])


def make_batch(start: int, n: int) -> pa.RecordBatch:
    return pa.record_batch([pa.array(range(start, start + n)), pa.array([f"n{i}é\"," for i in range(start, start + n)]),
                            pa.array([i / 7 for i in range(start, start + n)])], schema=SCHEMA)


class CountingReader:
    """A generator-backed table: counts how many batches were read when each chunk comes out."""

    def __init__(self, batches: int, rows: int):
        self.read = 0
        self.batches, self.rows = batches, rows
        self.schema = SCHEMA

    def __iter__(self):
        for i in range(self.batches):
            self.read += 1
            yield make_batch(i * self.rows, self.rows)

    def reader(self) -> pa.RecordBatchReader:
        return pa.RecordBatchReader.from_batches(SCHEMA, iter(self))


def whole(batches: int, rows: int) -> pa.Table:
    return pa.Table.from_batches([make_batch(i * rows, rows) for i in range(batches)], schema=SCHEMA)


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_encoders_yield_before_the_last_batch_is_read(fmt):
    source = CountingReader(batches=10, rows=500)
    reads_at_chunk = []
    chunks = []
    for chunk in encode(source.reader(), fmt, batch_rows=500):
        reads_at_chunk.append(source.read)
        chunks.append(chunk)
    assert source.read == 10
    # the body starts while most of the table is still unread, and comes out in many chunks
    first_data = 1 if fmt == "json" else 0  # json's first chunk is the "[" before anything is read
    assert reads_at_chunk[first_data] <= 1
    assert len(chunks) >= 10
    assert max(len(c) for c in chunks) < sum(map(len, chunks)) / 5


def test_json_of_many_batches_is_valid_and_equals_one_shot():
    table = whole(7, 333)
    body = b"".join(encode(table, "json", batch_rows=100))
    assert json.loads(body) == table.to_pylist()
    one_shot = ("[" + ",".join(json.dumps(r, ensure_ascii=False, allow_nan=False) for r in table.to_pylist())
                + "]").encode()
    assert body == one_shot
    assert b"".join(encode(pa.Table.from_batches([], schema=SCHEMA), "json")) == b"[]"


def test_csv_and_parquet_of_many_batches_equal_one_shot():
    table = whole(5, 1000)
    body = b"".join(encode(table, "csv", batch_rows=128))
    sink = io.BytesIO()
    pacsv.write_csv(table, sink)
    assert body == sink.getvalue()
    back = pq.read_table(pa.BufferReader(b"".join(encode(table, "parquet", batch_rows=128))))
    assert back.equals(table)
    assert b"".join(encode(table.slice(0, 0), "csv")).decode().strip() == '"id","name","value"'


def store_file(tmp_path, batches: int, rows: int, compression=True) -> tuple[DataStore, str, pa.Table]:
    table = whole(batches, rows)
    path = tmp_path / "in.arrow"
    options = IPC_OPTIONS if compression else None
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, SCHEMA, options=options) as w:
        for b in table.to_batches():
            w.write_batch(b)
    store = DataStore(tmp_path / "store")
    return store, store.put_file(path), table


@pytest.mark.parametrize("compression", [True, False])
def test_store_view_reads_batch_by_batch_with_projection_and_limit(tmp_path, monkeypatch, compression):
    store, sha, table = store_file(tmp_path, batches=8, rows=1000, compression=compression)
    view = store.open(sha)
    assert isinstance(view, StoredTable) and view.num_rows == 8000 and view.schema.names == SCHEMA.names
    reads = []
    real_get = pa.ipc.RecordBatchFileReader.get_batch

    class Spy:
        def __init__(self, reader):
            self._r = reader
            self.num_record_batches = reader.num_record_batches

        def get_batch(self, i):
            reads.append(i)
            return real_get(self._r, i)

    mapping = view._m
    real_reader = type(mapping).reader
    monkeypatch.setattr(type(mapping), "reader", lambda self, columns=None: Spy(real_reader(self, columns)))
    released = []
    monkeypatch.setattr(type(mapping), "release", lambda self: released.append(len(reads)))
    monkeypatch.setattr(StoredTable, "release_bytes", 1)

    # projection (in table order) and a row limit: only the batches needed are read, lazily
    served = apply_obligations(view, max_rows=2500, columns=["value", "id"])
    assert served.num_rows == 2500 and served.column_names == ["id", "value"]
    gen = encode(served, "csv", batch_rows=256)
    first = next(gen)
    assert first.startswith(b'"id","value"') and reads == [0]
    rest = b"".join(gen)
    assert reads == [0, 1, 2]  # the 4th..8th batches are never read
    assert released  # mapped pages handed back as the stream goes
    expected = io.BytesIO()
    pacsv.write_csv(table.select(["id", "value"]).slice(0, 2500), expected)
    assert first + rest == expected.getvalue()


def test_store_view_slices_and_empty_projection(tmp_path):
    store, sha, table = store_file(tmp_path, batches=3, rows=100)
    view = store.open(sha)
    assert view.slice(150, 100).to_table().equals(table.slice(150, 100))
    assert view.select([]).num_rows == 300
    assert sum(b.num_rows for b in view.select([]).to_batches(max_chunksize=64)) == 300
    assert view.slice(0, 0).to_table().num_rows == 0
    assert store.table(sha).equals(table)  # the in-memory form (compute, push) is unchanged


def test_store_verifies_before_serving_and_put_file_streams(tmp_path, monkeypatch):
    store, sha, table = store_file(tmp_path, batches=4, rows=500)
    data = (tmp_path / "in.arrow").read_bytes()
    assert sha == hashlib.sha256(data).hexdigest() and store.read(sha) == data
    # put_file copies in chunks (never the whole file at once)
    seen = []
    real = DataStore.copy_chunk
    monkeypatch.setattr(DataStore, "copy_chunk", 4096)
    import builtins

    real_open = builtins.open

    class Reading:
        def __init__(self, fh):
            self.fh = fh

        def readinto(self, buf):
            n = self.fh.readinto(buf)
            seen.append(n)
            return n

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.fh.close()

    def spy_open(path, mode="r", *a, **k):
        fh = real_open(path, mode, *a, **k)
        return Reading(fh) if str(path).endswith("in.arrow") and mode == "rb" else fh

    monkeypatch.setattr(builtins, "open", spy_open)
    other = DataStore(tmp_path / "other")
    assert other.put_file(tmp_path / "in.arrow") == sha
    monkeypatch.setattr(builtins, "open", real_open)
    assert max(seen) <= 4096 < len(data) and sum(seen) == len(data)
    assert real == 1 << 20
    # a file whose bytes do not match its name is not served
    target = other.path_for(sha)
    broken = bytearray(target.read_bytes())
    broken[len(broken) // 2] ^= 0xFF
    target.write_bytes(bytes(broken))
    assert DataStore(tmp_path / "other").open(sha) is None
    # not Arrow: refused, nothing left behind
    (tmp_path / "junk.arrow").write_bytes(b"not arrow at all" * 100)
    with pytest.raises(ValueError):
        other.put_file(tmp_path / "junk.arrow")
    assert not list((tmp_path / "other").glob("*.tmp"))


def test_publish_prepare_from_a_path_matches_bytes(tmp_path):
    from connectors.publish import LocalConnector, prepare

    store, sha, table = store_file(tmp_path, batches=3, rows=200)
    path = tmp_path / "in.arrow"
    kw = dict(title="t", classification="public", domain="planning", offers=[{"id": "o", "policy_id": "open-data"}],
              twin_category="building_structure", entity_type="Building")
    from_path = prepare(path, **kw)
    assert from_path == prepare(path.read_bytes(), **kw)
    assert from_path["content_hash"] == sha and from_path["row_count"] == 600
    assert LocalConnector("http://x", tmp_path / "c").put_file(path) == sha
