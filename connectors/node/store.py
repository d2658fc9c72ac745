"""The node's state in its data directory: the Arrow files it serves (by SHA-256), the single-use
claims of token and proof ids, and the outbox of receipts not yet delivered to the broker."""

from __future__ import annotations

import hashlib
import logging
import mmap
import os
import re
import sqlite3
import stat
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from collections.abc import Iterator
from typing import Any, Callable

import pyarrow as pa

log = logging.getLogger("twinspace.connector")
HEX64 = re.compile(r"^[0-9a-f]{64}$")
STREAM_POOL = pa.system_memory_pool()  # what a pull allocates (batch by batch): returned to the OS when freed


def _private_file(path: Path) -> None:
    """Create ``path`` readable by the owner only (before anything is written to it)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)


class _Mapping:
    """One verified version of a stored file, memory-mapped read-only (``mmap``, so that pages already
    streamed can be handed back: ``release``)."""

    def __init__(self, ident: tuple[int, int, int], mm: mmap.mmap, num_rows: int, schema: pa.Schema):
        self.ident, self.mm, self.num_rows, self.schema = ident, mm, num_rows, schema
        self.buffer = pa.py_buffer(mm)
        self.fresh_until = float("-inf")  # monotonic time until which its file need not be stat'ed again

    @classmethod
    def open(cls, path: Path, sha256: str) -> "_Mapping | None":
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
                return None
            with os.fdopen(os.dup(fd), "rb") as fh:  # the same inode that is mapped below
                digest = hashlib.file_digest(fh, "sha256").hexdigest()
            if digest != sha256:
                log.warning("data file %s does not match its name; not served", path.name)
                return None
            mm = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):
            return None
        finally:
            os.close(fd)
        try:
            reader = pa.ipc.open_file(pa.BufferReader(pa.py_buffer(mm)))
            schema, rows = reader.schema, reader.count_rows()  # the footer and message headers only
        except (pa.ArrowInvalid, pa.ArrowException, OSError):
            return None
        return cls((st.st_ino, st.st_size, st.st_mtime_ns), mm, rows, schema)

    def reader(self, columns: list[str] | None = None) -> pa.ipc.RecordBatchFileReader:
        """A reader of its own (per pull); ``columns`` (names, in file order): only these are read and
        decompressed."""
        options = None
        if columns is not None:
            options = pa.ipc.IpcReadOptions(included_fields=[self.schema.get_field_index(c) for c in columns])
        # Decompressed batches come from the system allocator: freed batches go back to the OS at once
        # (Arrow's default mimalloc pool keeps tens of MiB of a long stream resident; stream_bench).
        return pa.ipc.open_file(pa.BufferReader(self.buffer), options=options, memory_pool=STREAM_POOL)

    def release(self) -> None:
        """Drop the mapping's resident pages from this process (they are read again from the page cache
        if touched again): a stream of a large file keeps only what it touched since the last release."""
        try:
            self.mm.madvise(mmap.MADV_DONTNEED)
        except (OSError, ValueError, AttributeError):
            pass


class StoredTable:
    """A lazy view of a stored table for a pull: ``schema``, ``num_rows``, ``column_names``, ``select``
    and ``slice`` as on a ``pa.Table`` but nothing is read until ``to_batches`` is iterated, then one
    record batch of the file at a time (projected columns only; stopping at the row limit). Every
    ``release_bytes`` read, the mapping's pages are handed back, so memory does not grow with the file."""

    release_bytes = 16 << 20

    def __init__(self, mapping: _Mapping, columns: list[str] | None = None, offset: int = 0,
                 length: int | None = None):
        self._m = mapping
        self._columns = columns
        self._offset = offset
        total = max(0, mapping.num_rows - offset)
        self._length = total if length is None else max(0, min(length, total))

    @property
    def schema(self) -> pa.Schema:
        if self._columns is None:
            return self._m.schema
        fields = [self._m.schema.field(c) for c in self._columns]
        return pa.schema(fields, metadata=self._m.schema.metadata)

    @property
    def column_names(self) -> list[str]:
        return list(self._columns) if self._columns is not None else list(self._m.schema.names)

    @property
    def identity(self) -> tuple[int, int, int]:
        """The verified file version this view reads (inode, size, mtime): a cache key for its answers."""
        return self._m.ident

    @property
    def file_bytes(self) -> int:
        return self._m.ident[1]

    @property
    def offset(self) -> int:
        return self._offset

    @property
    def num_rows(self) -> int:
        return self._length

    def select(self, names: list[str]) -> "StoredTable":
        present = self.column_names
        missing = [n for n in names if n not in present]
        if missing:
            raise KeyError(f"columns not in the table: {', '.join(missing)}")
        order = [c for c in self._m.schema.names if c in set(names)]  # the reader returns file order
        return StoredTable(self._m, order, self._offset, self._length)

    def slice(self, offset: int = 0, length: int | None = None) -> "StoredTable":
        length = self._length - offset if length is None else min(length, self._length - offset)
        return StoredTable(self._m, self._columns, self._offset + offset, max(0, length))

    def to_batches(self, max_chunksize: int | None = None) -> Iterator[pa.RecordBatch]:
        """The rows in order, lazily, in batches of at most ``max_chunksize`` rows (zero-copy slices)."""
        if self._length == 0:
            return
        none = self._columns is not None and not self._columns  # no column at all: rows without values
        reader = self._m.reader(self._m.schema.names[:1] if none else self._columns)
        skip, left, touched = self._offset, self._length, 0
        try:
            for i in range(reader.num_record_batches):
                if left <= 0:
                    break
                batch = reader.get_batch(i)
                touched += batch.nbytes
                if none:
                    batch = batch.select([])
                if skip >= batch.num_rows:
                    skip -= batch.num_rows
                    continue
                batch = batch.slice(skip, min(left, batch.num_rows - skip))
                skip = 0
                left -= batch.num_rows
                step = max_chunksize or batch.num_rows or 1
                for start in range(0, batch.num_rows, step):
                    yield batch.slice(start, step)
                del batch
                if touched >= self.release_bytes:
                    self._m.release()
                    touched = 0
        finally:
            if touched:
                self._m.release()

    def to_table(self) -> pa.Table:
        """All of it in memory (tests, small tables)."""
        return pa.Table.from_batches(list(self.to_batches()), schema=self.schema)


class DataStore:
    """Arrow IPC files named ``<sha256>.arrow``; a file is served only if its bytes hash to its name."""

    cache_entries = 64  # verified tables kept (memory-mapped: the page cache holds the bytes)

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._tables: dict[str, tuple[tuple[int, int, int], pa.Table]] = {}
        self._mapped: dict[str, _Mapping] = {}
        self._cache_lock = threading.Lock()

    def path_for(self, sha256: str) -> Path | None:
        if not isinstance(sha256, str) or not HEX64.match(sha256):
            return None
        return self.root / f"{sha256}.arrow"

    def put(self, data: bytes) -> str:
        """Store Arrow IPC bytes atomically (0600); returns their SHA-256. Refuses anything not Arrow."""
        try:
            pa.ipc.open_file(pa.BufferReader(data)).schema
        except (pa.ArrowInvalid, pa.ArrowException, OSError):
            raise ValueError("not an Arrow IPC file") from None
        digest = hashlib.sha256(data).hexdigest()
        target = self.root / f"{digest}.arrow"
        tmp = self.root / f".{digest}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return digest

    copy_chunk = 1 << 20  # bytes read per step when a file is placed (put_file)

    def put_file(self, path: Path) -> str:
        """Store the Arrow IPC file at ``path`` by a streaming copy (hashed as it is copied: memory stays
        at one chunk whatever the size); returns its SHA-256. Refuses anything not Arrow."""
        digest = hashlib.sha256()
        tmp = self.root / f".put.{os.getpid()}.{os.urandom(6).hex()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with open(path, "rb") as src, os.fdopen(fd, "wb") as dst:
                buf = bytearray(self.copy_chunk)
                view = memoryview(buf)
                while n := src.readinto(buf):
                    digest.update(view[:n])
                    dst.write(view[:n])
                dst.flush()
                os.fsync(dst.fileno())
            try:
                with pa.OSFile(str(tmp), "rb") as check:  # reads the footer only
                    pa.ipc.open_file(check).schema
            except (pa.ArrowInvalid, pa.ArrowException, OSError):
                raise ValueError("not an Arrow IPC file") from None
            sha = digest.hexdigest()
            os.replace(tmp, self.root / f"{sha}.arrow")
            return sha
        finally:
            tmp.unlink(missing_ok=True)

    def read(self, sha256: str) -> bytes | None:
        """The bytes of the file with this SHA-256, verified; None when not served here."""
        path = self.path_for(sha256)
        if path is None or not path.is_file():
            return None
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != sha256:
            log.warning("data file %s does not match its name; not served", path.name)
            return None
        return data

    def table(self, sha256: str) -> pa.Table | None:
        """The table in the file with this SHA-256, verified, in memory; None when not served here.

        The file is memory-mapped and hashed once per version of it (``open``); the table is kept while the
        file's identity (inode, size, mtime) is unchanged. Files are written by atomic rename, so a new
        content is a new inode and is hashed again before it is served. Uncompressed files are zero-copy
        views of the mapping; compressed ones are decompressed here (a pull uses ``open``: batch by batch)."""
        mapping = self._mapping(sha256)
        if mapping is None:
            return None
        with self._cache_lock:
            cached = self._tables.get(sha256)
        if cached is not None and cached[0] == mapping.ident:
            return cached[1]
        try:
            table = mapping.reader().read_all()
        except (OSError, pa.ArrowException):
            return None
        with self._cache_lock:
            if len(self._tables) >= self.cache_entries:
                self._tables.pop(next(iter(self._tables)))
            self._tables[sha256] = (mapping.ident, table)
        return table

    def open(self, sha256: str) -> "StoredTable | None":
        """The table in the file with this SHA-256 as a lazy view read batch by batch (for a pull); None
        when not served here. The file is hashed once per version of it (inode, size, mtime), by reading
        it in chunks: verification adds no more than a chunk to the process's memory, whatever the size."""
        mapping = self._mapping(sha256)
        return None if mapping is None else StoredTable(mapping)

    def is_verified(self, sha256: str) -> bool:
        """A version of this file was hashed and mapped already (``open`` only stats it again)."""
        return sha256 in self._mapped

    recheck_seconds = 0.25  # how long a verified file is trusted before it is stat'ed again

    def _mapping(self, sha256: str) -> "_Mapping | None":
        """The verified mapping of the file's current version. Files are placed by atomic rename (a new
        version is a new inode); the file is stat'ed again at most every ``recheck_seconds``, and a changed
        identity (replaced, or rewritten in place) is hashed again before anything of it is served."""
        cached = self._mapped.get(sha256)
        now = time.monotonic()
        if cached is not None and now < cached.fresh_until:
            return cached
        path = self.path_for(sha256)
        if path is None:
            return None
        try:
            st = path.stat()
        except OSError:
            st = None
        if st is None or not stat.S_ISREG(st.st_mode):
            with self._cache_lock:
                self._mapped.pop(sha256, None)
            return None
        ident = (st.st_ino, st.st_size, st.st_mtime_ns)
        with self._cache_lock:
            cached = self._mapped.get(sha256)
        if cached is None or cached.ident != ident:
            cached = _Mapping.open(path, sha256)
            if cached is None:
                with self._cache_lock:
                    self._mapped.pop(sha256, None)
                return None
            with self._cache_lock:
                if len(self._mapped) >= self.cache_entries:
                    self._mapped.pop(next(iter(self._mapped)))
                self._mapped[sha256] = cached
        cached.fresh_until = now + self.recheck_seconds
        return cached

    def list(self) -> list[str]:
        return sorted(p.stem for p in self.root.glob("*.arrow") if HEX64.match(p.stem))


class _Db:
    """One SQLite file, one connection shared under a lock (the node is a small process)."""

    _locks: dict[str, threading.RLock] = {}
    _guard = threading.Lock()

    def __init__(self, path: Path):
        self.path = Path(path)
        if not self.path.exists():
            _private_file(self.path)
        with _Db._guard:
            self.lock = _Db._locks.setdefault(str(self.path.resolve()), threading.RLock())
        self.conn = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
        self.conn.execute("PRAGMA journal_mode=WAL")
        os.chmod(self.path, 0o600)

    def close(self) -> None:
        with self.lock:
            self.conn.close()


class GroupWriter:
    """The one writer of a node's ``node.db``: statements from many callers are committed together, one
    transaction per batch, by one thread. ``submit`` returns a future that is done when the caller's
    statements are durable (WAL with ``synchronous=NORMAL``: they survive a crash of the process). Batches
    run in submission order, so a future that is done means everything submitted before it is committed.

    ``submit(..., loop=...)`` gives an asyncio future instead, resolved in that loop: a batch wakes each
    loop once, however many of its callers wait there. Sources (``add_source``) add statements to the
    front of every batch — the proof claims, queued without a wake-up of their own."""

    _writers: dict[str, "GroupWriter"] = {}
    _guard = threading.Lock()

    @classmethod
    def for_path(cls, path: Path) -> "GroupWriter":
        key = str(Path(path).resolve())
        with cls._guard:
            writer = cls._writers.get(key)
            if writer is None:
                writer = cls._writers[key] = cls(Path(path))
            return writer

    def __init__(self, path: Path):
        self.path = path
        self._cond = threading.Condition()
        self._queue: list[tuple[list[tuple[str, tuple]], Any]] = []
        self._sources: list[Callable[[], list[tuple[str, tuple]]]] = []
        self._nudged = False
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None

    def add_source(self, source: Callable[[], list[tuple[str, tuple]]]) -> None:
        with self._cond:
            self._sources.append(source)

    def submit(self, statements: list[tuple[str, tuple]], loop: Any = None) -> Any:
        future: Any = loop.create_future() if loop is not None else Future()
        with self._cond:
            self._queue.append((statements, future))
            self._wake()
        return future

    def nudge(self) -> None:
        """A source has statements: write them soon even if nothing else is submitted."""
        with self._cond:
            self._nudged = True
            self._wake()

    def _wake(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="twinspace-node-writer", daemon=True)
            self._thread.start()
        self._cond.notify()

    def barrier(self) -> Future:
        """Done once everything submitted so far is committed."""
        return self.submit([])

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
        return self._conn

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._nudged:
                    if not self._cond.wait(timeout=30.0):
                        self._thread = None
                        return
                batch, self._queue, self._nudged = self._queue, [], False
                sources = list(self._sources)
            first = [s for source in sources for s in source()]
            outcome: list[tuple[Any, BaseException | None]] = []
            try:
                self._commit(first + [s for statements, _ in batch for s in statements])
                outcome = [(future, None) for _, future in batch]
            except Exception:  # noqa: BLE001 - one bad item must not fail the others: commit them one by one
                log.exception("node.db batch failed; writing its parts one by one")
                try:
                    self._commit(first)
                except Exception:  # noqa: BLE001
                    log.exception("node.db claims not written")
                for statements, future in batch:
                    try:
                        self._commit(statements)
                        outcome.append((future, None))
                    except Exception as exc:  # noqa: BLE001 - e.g. a full disk: that caller fails
                        outcome.append((future, exc))
            self._settle(outcome)

    @staticmethod
    def _settle(outcome: list[tuple[Any, BaseException | None]]) -> None:
        by_loop: dict[Any, list] = {}
        for future, exc in outcome:
            loop = getattr(future, "get_loop", None)
            if loop is None:
                future.set_exception(exc) if exc is not None else future.set_result(True)
            else:
                by_loop.setdefault(loop(), []).append((future, exc))
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle_in_loop, items)
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass

    def _commit(self, statements: list[tuple[str, tuple]]) -> None:
        if not statements:
            return
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            for sql, params in statements:
                conn.execute(sql, params)
            conn.execute("COMMIT")
        except BaseException:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise


def _settle_in_loop(items: list) -> None:
    for future, exc in items:
        if future.done():
            continue
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(True)


class ClaimStore(_Db):
    """``claim(jti, exp)`` is True exactly once per jti (until it expires).

    The check is a dictionary lookup under a lock (no database round trip per request); the claim is
    written to ``node.db`` with the next batch of the node's group writer, ahead of the pull's receipt —
    a pull is answered only after its receipt, and so its proof's claim, is durable, so a proof accepted
    once is refused again after a crash and restart (unexpired claims are loaded at start). One process
    owns a data directory's claims."""

    purge_interval = 30.0  # seconds between deletions of expired claims

    def __init__(self, path: Path):
        super().__init__(path)
        now = time.time()
        with self.lock:
            self.conn.execute("CREATE TABLE IF NOT EXISTS claims (jti TEXT PRIMARY KEY, exp REAL NOT NULL)")
            self.conn.execute("DELETE FROM claims WHERE exp < ?", (now,))
            self._mem: dict[str, float] = dict(self.conn.execute("SELECT jti, exp FROM claims").fetchall())
        self._mu = threading.Lock()
        self._pending: list[tuple[str, tuple]] = []
        self._next_purge = now + self.purge_interval
        self.writer = GroupWriter.for_path(self.path)
        self.writer.add_source(self._drain)

    _UPSERT = "INSERT INTO claims (jti, exp) VALUES (?, ?) ON CONFLICT (jti) DO UPDATE SET exp = excluded.exp"

    def claim(self, jti: str, exp: float) -> bool:
        """Claimed in memory at once; written with the next batch of the node's writer (a pull's receipt is
        submitted after its claim, so the receipt's durability implies the claim's)."""
        now = time.time()
        jti = str(jti)
        with self._mu:
            held = self._mem.get(jti)
            if held is not None and held >= now:
                return False
            self._mem[jti] = float(exp)
            first = not self._pending
            self._pending.append((self._UPSERT, (jti, float(exp))))
            if now >= self._next_purge:
                self._mem = {k: v for k, v in self._mem.items() if v >= now}
                self._next_purge = now + self.purge_interval
                self._pending.append(("DELETE FROM claims WHERE exp < ?", (now,)))
        if first:
            self.writer.nudge()
        return True

    def _drain(self) -> list[tuple[str, tuple]]:
        with self._mu:
            pending, self._pending = self._pending, []
        return pending



class Outbox(_Db):
    """Every receipt, kept until the broker accepts it: written when the pull ends (``record``, through
    the group writer), deleted once delivered; one that was not delivered is retried with backoff (by
    ``flush`` on later decisions and by a background thread); survives restarts."""

    fresh_grace = 60.0  # seconds a just-recorded receipt is left to the delivery thread before flush retries it

    def __init__(self, path: Path, config: Any):
        super().__init__(path)
        self.config = config
        self.writer = GroupWriter.for_path(self.path)
        self._flushing = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        # The earliest time a kept receipt is due (None: unknown, look in the table). Lets ``flush`` on
        # every pull skip the table read when nothing can be due yet.
        self._due: float | None = None
        with self.lock:
            self.conn.execute("CREATE TABLE IF NOT EXISTS outbox (receipt_id TEXT PRIMARY KEY, receipt TEXT NOT NULL, "
                              "created REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, "
                              "next_at REAL NOT NULL DEFAULT 0, last_error TEXT)")

    _INSERT = ("INSERT OR IGNORE INTO outbox (receipt_id, receipt, created, attempts, next_at, last_error) "
               "VALUES (?, ?, ?, ?, ?, ?)")

    def record(self, receipt_id: str, receipt: str, loop: Any = None) -> Any:
        """Keep a receipt the delivery thread is about to send; the future (an asyncio one in ``loop``) is
        done when it is durable."""
        now = time.time()
        return self.writer.submit([(self._INSERT, (receipt_id, receipt, now, 0, now + self.fresh_grace, None))], loop)

    def add(self, receipt_id: str, receipt: str, error: str | None = None) -> None:
        """Keep a receipt that could not be delivered (retried from a second on); returns once durable."""
        now = time.time()
        self.writer.submit([(self._INSERT, (receipt_id, receipt, now, 1, now + 1, error))]).result(60)
        self._due = None if self._due is None else min(self._due, now + 1)

    def delivered(self, receipt_ids: list[str]) -> Future:
        return self.writer.submit([("DELETE FROM outbox WHERE receipt_id = ?", (rid,)) for rid in receipt_ids])

    def failed(self, receipt_ids: list[str], error: str) -> Future:
        """Delivery failed: retry from a second on (``flush``)."""
        now = time.time()
        future = self.writer.submit([("UPDATE outbox SET attempts = attempts + 1, next_at = ?, last_error = ? "
                                      "WHERE receipt_id = ?", (now + 1, error[:300], rid)) for rid in receipt_ids])
        self._due = None if self._due is None else min(self._due, now + 1)
        return future

    def pending(self) -> list[dict[str, Any]]:
        self.writer.barrier().result(60)  # what was recorded is visible to this connection
        with self.lock:
            rows = self.conn.execute("SELECT receipt_id, receipt, attempts, next_at, last_error FROM outbox "
                                     "ORDER BY created").fetchall()
        return [{"receipt_id": r[0], "receipt": r[1], "attempts": r[2], "next_at": r[3], "last_error": r[4]}
                for r in rows]

    def __len__(self) -> int:
        self.writer.barrier().result(60)
        with self.lock:
            return self.conn.execute("SELECT count(*) FROM outbox").fetchone()[0]

    def deliver(self, receipt: str) -> None:
        """POST one receipt to the broker; raises on failure."""
        self.config.broker_post("/dataplane/receipts", {"receipt": receipt})

    def flush(self, *, force: bool = False, deliver: Callable[[str], None] | None = None) -> int:
        """Try every receipt that is due (all with ``force``); returns how many were delivered."""
        now = time.time()
        due = self._due
        if not force and due is not None and due > now:
            return 0
        if not self._flushing.acquire(blocking=False):
            return 0
        delivered = 0
        try:
            with self.lock:
                self._due = float("inf")  # from here on, add() lowers it
            later = float("inf")
            for item in self.pending():
                if not force and item["next_at"] > now:
                    later = min(later, item["next_at"])
                    continue
                try:
                    (deliver or self.deliver)(item["receipt"])
                except Exception as exc:  # noqa: BLE001
                    status = getattr(exc, "status", None)
                    delay = min(600.0, 2.0 ** min(item["attempts"], 10))
                    self.writer.submit([("UPDATE outbox SET attempts = attempts + 1, next_at = ?, last_error = ? "
                                         "WHERE receipt_id = ?", (time.time() + delay,
                                                                  f"{status or type(exc).__name__}: {str(exc)[:200]}",
                                                                  item["receipt_id"]))]).result(60)
                    later = min(later, time.time() + delay)
                    continue
                self.delivered([item["receipt_id"]]).result(60)
                delivered += 1
            with self.lock:
                self._due = min(self._due if self._due is not None else later, later)
        except BaseException:
            self._due = None
            raise
        finally:
            self._flushing.release()
        return delivered

    # --- background retry ---------------------------------------------------------------------
    def start(self, interval: float = 3.0) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()

        def run() -> None:
            while not self._stop.wait(interval):
                try:
                    self._due = None  # look in the table (another process may have added to it)
                    self.flush()
                except Exception:  # noqa: BLE001 - never let the retry thread die
                    log.exception("outbox flush failed")

        self._thread = threading.Thread(target=run, name="twinspace-outbox", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
