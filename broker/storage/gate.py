"""Admission to the database: at most ``slots`` requests hold a unit of work at once per process.

Why: a request's session keeps its pooled connection between thread-pool hops (dependency, route,
commit). If more requests than connections start, threads block waiting for connections that
belong to sessions which themselves wait for a free thread — the broker wedges until the pool
timeout. Requests therefore wait for a *slot* in the event loop (no thread, no connection held),
the pool has ``slots + reserve`` connections, and the thread pool is larger than ``slots``: a slot
holder always finds a connection at once and, eventually, a thread. See docs/operations.md.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.to_thread

from twinspace.errors import ServiceUnavailable


class DatabaseBusy(ServiceUnavailable):
    """The database had no free slot within the wait limit (overload): retry later."""

    default_code = "database_busy"


class DbGate:
    def __init__(self, slots: int, timeout: float, retry_after: int = 2, threads: int | None = None):
        self.slots, self.timeout, self.retry_after = slots, timeout, retry_after
        self.threads = max(threads or 0, 2 * slots + 16)
        # anyio semaphores belong to one event loop; tests run several loops over one app.
        self._sems: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, anyio.Semaphore]" = \
            weakref.WeakKeyDictionary()

    def _sem(self) -> anyio.Semaphore:
        loop = asyncio.get_running_loop()
        sem = self._sems.get(loop)
        if sem is None:
            sem = self._sems[loop] = anyio.Semaphore(self.slots)
            limiter = anyio.to_thread.current_default_thread_limiter()
            if limiter.total_tokens < self.threads:  # more threads than slots: holders always get one
                limiter.total_tokens = self.threads
        return sem

    def in_use(self) -> int:
        try:
            sem = self._sem()
        except RuntimeError:
            return 0
        return self.slots - sem.value

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        sem = self._sem()
        acquired = False
        with anyio.move_on_after(self.timeout):
            await sem.acquire()
            acquired = True
        if not acquired:
            raise DatabaseBusy("The broker is at capacity; retry shortly.",
                               extra={"retry_after": self.retry_after})
        try:
            yield
        finally:
            sem.release()
