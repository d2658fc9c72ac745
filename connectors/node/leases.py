"""Leased decisions at the connector (docs/data-plane.md#leases). Pure: no I/O.

A broker decision with ``lease: true`` may serve every pull of one transfer, token generation and
format until its ``exp``. The broker pushes a revocation message when the transfer, its agreement, the
consumer or its key changes; ``revoke`` drops the leases of the transfers it names at once.

One race is closed here: a decision asked for *before* a revocation arrived may be answered *after*
it (the broker decided before its change committed). ``put`` refuses to keep such a decision — the
time the request was sent is compared with the time the revocation arrived (both on this
connector's monotonic clock) — and the caller asks again; a request sent after the revocation
arrived reaches a broker whose change has committed (the broker pushes after its commit).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

# How long a revocation is remembered: longer than any decision request can be in flight.
TOMBSTONE_SECONDS = 120.0


@dataclass(frozen=True)
class Lease:
    decision: dict[str, Any]
    document: dict[str, Any]
    expires: float  # wall clock (the decision's exp, less the leeway)


class Leases:
    """Thread-safe; bounded (``max_entries``)."""

    max_entries = 65_536

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self._leases: dict[tuple[str, int, str], Lease] = {}
        self._revoked: dict[str, float] = {}  # transfer id -> when its revocation arrived (monotonic)
        self._all_revoked = float("-inf")

    def now(self) -> float:
        return self._clock()

    def get(self, tpid: str, gen: int, fmt: str) -> Lease | None:
        key = (tpid, gen, fmt)
        lease = self._leases.get(key)
        if lease is None:
            return None
        if lease.expires <= time.time():
            with self._lock:
                if self._leases.get(key) is lease:
                    del self._leases[key]
            return None
        return lease

    def put(self, tpid: str, gen: int, fmt: str, lease: Lease, asked_at: float) -> bool:
        """Keep ``lease`` unless a revocation of ``tpid`` (or of all) arrived after ``asked_at``."""
        with self._lock:
            if self._revoked.get(tpid, float("-inf")) >= asked_at or self._all_revoked >= asked_at:
                return False
            if len(self._leases) >= self.max_entries:
                now = time.time()
                for k in [k for k, v in self._leases.items() if v.expires <= now]:
                    del self._leases[k]
                if len(self._leases) >= self.max_entries:
                    self._leases.clear()
            self._leases[(tpid, gen, fmt)] = lease
            return True

    def stale(self, tpid: str, asked_at: float) -> bool:
        """A revocation of ``tpid`` arrived after ``asked_at``: a decision asked for then may predate it."""
        with self._lock:
            return self._revoked.get(tpid, float("-inf")) >= asked_at or self._all_revoked >= asked_at

    def revoke(self, tpids: list[str] | None) -> int:
        """Drop the leases of these transfers (all when ``tpids`` is None); returns how many were held."""
        now = self._clock()
        with self._lock:
            if tpids is None:
                dropped = len(self._leases)
                self._leases.clear()
                self._all_revoked = now
                return dropped
            names = set(tpids)
            for tpid in names:
                self._revoked[tpid] = now
            dropped = [k for k in self._leases if k[0] in names]
            for k in dropped:
                del self._leases[k]
            cutoff = now - TOMBSTONE_SECONDS
            if len(self._revoked) > 4096:
                self._revoked = {k: v for k, v in self._revoked.items() if v >= cutoff}
            return len(dropped)

    def __len__(self) -> int:
        return len(self._leases)
