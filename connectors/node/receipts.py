"""Receipts to the broker (docs/data-plane.md#receipts).

Every pull ends with a signed receipt, and the body's end is sent only once the receipt is durable:
written to the node's outbox by the group writer (one transaction for the receipts of many concurrent
pulls, together with their proofs' claims). A delivery thread posts what is waiting as one batch
(``POST /dataplane/receipts {receipts: [...]}``, one transaction at the broker) while the next batch
fills, and deletes what the broker accepted; what it could not deliver stays in the outbox, retried
with backoff. So a pull under a leased decision waits for its own disk, not for the broker.

A pull decided for itself (no lease: the policy counts usage, e.g. a row quota) waits for the broker too
(``wait_delivery``): the next decision must see this pull's rows.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from typing import Any

log = logging.getLogger("twinspace.connector")


class ReceiptSender:
    """``submit(receipt_id, jws, wait_delivery=...)`` → a future that is done when the receipt is durable
    (and, with ``wait_delivery``, once the broker recorded it — True — or it was kept for a retry — False).
    Starts its thread on first use."""

    max_batch = 256
    # With nothing waiting for the broker, a delivery waits this long for more receipts to join its batch:
    # fewer, larger batches cost the broker (and this node) far less per receipt.
    linger_seconds = 0.05

    def __init__(self, config: Any):
        self.config = config
        self._cond = threading.Condition()
        self._queue: list[tuple[str, str, Future, Future | None]] = []
        self._thread: threading.Thread | None = None
        self._closed = False
        self._urgent = False

    def submit(self, receipt_id: str, receipt: str, *, wait_delivery: bool = False, loop: Any = None) -> Any:
        """``loop``: the caller awaits in this asyncio loop (the durable future is an asyncio one)."""
        durable = self.config.outbox.record(receipt_id, receipt, None if wait_delivery else loop)
        delivered: Future | None = Future() if wait_delivery else None
        with self._cond:
            if self._closed:  # stopping: the outbox keeps it, the next start delivers it
                if delivered is not None:
                    durable.add_done_callback(lambda f: _settle(delivered, f, False))
                return delivered or durable
            self._queue.append((receipt_id, receipt, durable, delivered))
            self._urgent = self._urgent or delivered is not None  # someone waits for the broker: no lingering
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="twinspace-receipts", daemon=True)
                self._thread.start()
            self._cond.notify()
        return delivered or durable

    def send(self, receipt_id: str, receipt: str, timeout: float | None = None) -> bool:
        """Submit and wait for the broker (PUSH, and pulls decided for themselves)."""
        return self.submit(receipt_id, receipt, wait_delivery=True).result(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued, then stop; later receipts stay in the outbox for the next start."""
        with self._cond:
            self._closed = True
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    # --- the delivery thread --------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue and self._closed:
                    self._thread = None
                    return
                deadline = time.monotonic() + self.linger_seconds
                while not self._closed and not self._urgent and len(self._queue) < self.max_batch:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                batch, self._queue = self._queue[:self.max_batch], self._queue[self.max_batch:]
                self._urgent = any(item[3] is not None for item in self._queue)
            try:
                self._deliver(batch)
            except BaseException:  # noqa: BLE001 - never kill the thread; the outbox has them
                log.exception("receipt delivery failed")
                for _, _, _, delivered in batch:
                    if delivered is not None and not delivered.done():
                        delivered.set_result(False)

    def _deliver(self, batch: list[tuple[str, str, Future, Future | None]]) -> None:
        outbox = self.config.outbox
        try:
            answer = self.config.broker_post("/dataplane/receipts", {"receipts": [r for _, r, _, _ in batch]})
            results = answer.get("results") if isinstance(answer, dict) else None
            if not isinstance(results, list) or len(results) != len(batch):
                raise ValueError("the broker's answer does not list one result per receipt")
        except Exception as exc:  # noqa: BLE001 - broker down, slow or refusing: retried from the outbox
            status = getattr(exc, "status", None)
            error = f"{status or type(exc).__name__}: {str(exc)[:200]}"
            log.warning("%d receipt(s) not delivered (%s); kept in the outbox", len(batch), status or type(exc).__name__)
            done = outbox.failed([rid for rid, _, _, _ in batch], error)
            for _, _, _, delivered in batch:
                if delivered is not None:
                    done.add_done_callback(lambda f, d=delivered: _settle(d, f, False))
            return
        accepted, refused = [], []
        for (receipt_id, _, _, delivered), result in zip(batch, results):
            error = result.get("error") if isinstance(result, dict) else {"code": "malformed_result"}
            if error:
                log.warning("the broker refused receipt %s (%s); kept in the outbox", receipt_id,
                            error.get("code") if isinstance(error, dict) else error)
                refused.append((receipt_id, delivered, str(error)[:200]))
            else:
                accepted.append((receipt_id, delivered))
        if accepted:
            done = outbox.delivered([rid for rid, _ in accepted])
            for _, delivered in accepted:
                if delivered is not None:
                    done.add_done_callback(lambda f, d=delivered: _settle(d, f, True))
        for receipt_id, delivered, error in refused:
            done = outbox.failed([receipt_id], f"refused: {error}")
            if delivered is not None:
                done.add_done_callback(lambda f, d=delivered: _settle(d, f, False))


def _settle(target: Future, source: Future, value: bool) -> None:
    """``target`` gets ``value`` once ``source`` (a write) is done, or ``source``'s error."""
    if target.done():
        return
    exc = source.exception()
    if exc is not None:
        target.set_exception(exc)
    else:
        target.set_result(value)
