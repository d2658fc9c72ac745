"""One writer at a time per process on SQLite, queued on a mutex instead of SQLite's busy handler.

SQLite admits one write transaction per database. A waiter inside ``busy_timeout`` sleeps and
polls (up to 100 ms per nap), so under load writers starve each other and the group-commit writer
and throughput collapse. Here the first write statement of a transaction takes a process-wide
mutex (woken the moment the holder commits or rolls back); other processes (``--workers N``) still
meet SQLite's own lock and busy timeout. Reads never take the mutex (WAL readers do not block).
"""

from __future__ import annotations

import sqlite3
import threading

from sqlalchemy import event
from sqlalchemy.engine import Engine

_HELD = "twinspace_write_mutex"
_READ_ONLY = ("SELECT", "PRAGMA", "WITH", "EXPLAIN")


class WriteMutex:
    def __init__(self, timeout: float):
        self.lock = threading.Lock()
        self.timeout = timeout

    def acquire(self, info: dict) -> None:
        if info.get(_HELD):
            return
        if not self.lock.acquire(timeout=self.timeout):
            raise sqlite3.OperationalError("database is locked (write mutex timeout)")
        info[_HELD] = self

    @staticmethod
    def release(info: dict) -> None:
        mutex = info.pop(_HELD, None)
        if mutex is not None:
            mutex.lock.release()


def install(engine: Engine, timeout: float = 30.0) -> WriteMutex:
    mutex = WriteMutex(timeout)
    engine.info_write_mutex = mutex  # type: ignore[attr-defined]

    @event.listens_for(engine, "before_cursor_execute")
    def _before(conn, _cursor, statement, _params, _context, _executemany):
        if not statement.lstrip()[:7].upper().startswith(_READ_ONLY):
            mutex.acquire(conn.connection.info)

    # Released when the connection goes back to the pool, i.e. after its COMMIT or ROLLBACK has run
    # (SQLAlchemy's "commit" event fires before the COMMIT: too early). Sessions and engine.begin()
    # return their connection at the end of every transaction.
    def _release(_dbapi_conn, record, *_args):
        WriteMutex.release(record.info)

    event.listen(engine.pool, "checkin", _release)
    event.listen(engine.pool, "invalidate", _release)

    return mutex


def begin_write(connection) -> None:
    """Take the mutex for a transaction that writes through the raw DBAPI cursor (the audit hot path)."""
    mutex = getattr(connection.engine, "info_write_mutex", None)
    if mutex is not None:
        mutex.acquire(connection.connection.info)


def end_write(connection) -> None:
    """Release after the DBAPI transaction ended outside SQLAlchemy's commit (see the replay store)."""
    WriteMutex.release(connection.connection.info)
