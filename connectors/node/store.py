"""The node's state in its data directory: the Arrow files it serves (by SHA-256), the single-use
claims of token and proof ids, and the outbox of receipts not yet delivered to the broker."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sqlite3
import stat
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa

log = logging.getLogger("twinspace.connector")
HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _private_file(path: Path) -> None:
    """Create ``path`` readable by the owner only (before anything is written to it)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)


class DataStore:
    """Arrow IPC files named ``<sha256>.arrow``; a file is served only if its bytes hash to its name."""

    cache_entries = 64  # verified tables kept (memory-mapped: the page cache holds the bytes)

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._tables: dict[str, tuple[tuple[int, int, int], pa.Table]] = {}
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

    def put_file(self, path: Path) -> str:
        return self.put(Path(path).read_bytes())

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
        """The table in the file with this SHA-256, verified; None when not served here.

        The file is memory-mapped and hashed once per version of it: the verified table is kept while the
        file's identity (inode, size, mtime) is unchanged. Files are written by atomic rename, so a new
        content is a new inode and is hashed again before it is served."""
        path = self.path_for(sha256)
        if path is None:
            return None
        try:
            st = path.stat()
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        ident = (st.st_ino, st.st_size, st.st_mtime_ns)
        with self._cache_lock:
            cached = self._tables.get(sha256)
        if cached is not None and cached[0] == ident:
            return cached[1]
        try:
            source = pa.memory_map(str(path), "r")
            buffer = source.read_buffer()
        except (OSError, pa.ArrowException):
            return None
        if hashlib.sha256(memoryview(buffer)).hexdigest() != sha256:
            log.warning("data file %s does not match its name; not served", path.name)
            return None
        table = pa.ipc.open_file(pa.BufferReader(buffer)).read_all()  # zero-copy views of the mapping
        with self._cache_lock:
            if len(self._tables) >= self.cache_entries:
                self._tables.pop(next(iter(self._tables)))
            self._tables[sha256] = (ident, table)
        return table

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


class ClaimStore(_Db):
    """``claim(jti, exp)`` is True exactly once per jti (until it expires and is purged)."""

    def __init__(self, path: Path):
        super().__init__(path)
        with self.lock:
            self.conn.execute("CREATE TABLE IF NOT EXISTS claims (jti TEXT PRIMARY KEY, exp REAL NOT NULL)")

    purge_interval = 30.0  # seconds between deletions of expired claims

    def claim(self, jti: str, exp: float) -> bool:
        """One statement: insert the jti, or take over its row only when that claim has expired (so an
        expired claim not yet purged does not refuse a reuse it would allow after the purge)."""
        now = time.time()
        with self.lock:
            if now >= getattr(self, "_next_purge", 0.0):
                self.conn.execute("DELETE FROM claims WHERE exp < ?", (now,))
                self._next_purge = now + self.purge_interval
            cur = self.conn.execute("INSERT INTO claims (jti, exp) VALUES (?, ?) ON CONFLICT (jti) DO UPDATE "
                                    "SET exp = excluded.exp WHERE claims.exp < ?", (str(jti), float(exp), now))
            return cur.rowcount == 1


class Outbox(_Db):
    """Receipts not yet delivered to the broker. Each is kept until the broker accepts it, retried with
    backoff (by ``flush`` on later requests and by a background thread); survives restarts."""

    def __init__(self, path: Path, config: Any):
        super().__init__(path)
        self.config = config
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

    def add(self, receipt_id: str, receipt: str, error: str | None = None) -> None:
        now = time.time()
        with self.lock:
            self.conn.execute("INSERT OR IGNORE INTO outbox (receipt_id, receipt, created, attempts, next_at, "
                              "last_error) VALUES (?, ?, ?, 1, ?, ?)", (receipt_id, receipt, now, now + 1, error))
            self._due = None if self._due is None else min(self._due, now + 1)

    def pending(self) -> list[dict[str, Any]]:
        with self.lock:
            rows = self.conn.execute("SELECT receipt_id, receipt, attempts, next_at, last_error FROM outbox "
                                     "ORDER BY created").fetchall()
        return [{"receipt_id": r[0], "receipt": r[1], "attempts": r[2], "next_at": r[3], "last_error": r[4]}
                for r in rows]

    def __len__(self) -> int:
        with self.lock:
            return self.conn.execute("SELECT count(*) FROM outbox").fetchone()[0]

    def deliver(self, receipt: str) -> None:
        """POST one receipt to the broker; raises on failure."""
        self.config.broker_post("/dataplane/receipts", {"receipt": receipt})

    def send(self, receipt_id: str, receipt: str) -> bool:
        """Deliver now; on any failure keep it in the outbox. True when delivered."""
        try:
            self.deliver(receipt)
            return True
        except Exception as exc:  # noqa: BLE001 - the broker is down, slow or refused: retry later
            log.warning("receipt %s not delivered (%s); kept in the outbox", receipt_id, type(exc).__name__)
            self.add(receipt_id, receipt, f"{type(exc).__name__}: {str(exc)[:200]}")
            return False

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
                    with self.lock:
                        self.conn.execute("UPDATE outbox SET attempts = attempts + 1, next_at = ?, last_error = ? "
                                          "WHERE receipt_id = ?", (time.time() + delay,
                                                                   f"{status or type(exc).__name__}: {str(exc)[:200]}",
                                                                   item["receipt_id"]))
                    later = min(later, time.time() + delay)
                    continue
                with self.lock:
                    self.conn.execute("DELETE FROM outbox WHERE receipt_id = ?", (item["receipt_id"],))
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
