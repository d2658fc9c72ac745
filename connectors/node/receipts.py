"""Receipts to the broker, delivered together (docs/data-plane.md#receipts).

Every pull ends with a signed receipt, and the body's last byte is sent only once the receipt is
durable: accepted by the broker, or kept in the node's outbox (which retries until the broker takes
it). Concurrent pulls share deliveries: one thread posts whatever receipts are waiting as one batch
(``POST /dataplane/receipts {receipts: [...]}``, one transaction at the broker) while the next batch
fills, so a busy connector costs the broker one request per batch instead of one per pull.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future
from typing import Any

log = logging.getLogger("twinspace.connector")


class ReceiptSender:
    """``submit(receipt_id, jws)`` → a future that is True when the broker recorded the receipt and False
    when it was kept in the outbox instead (both durable). Starts its thread on first use."""

    max_batch = 256

    def __init__(self, config: Any):
        self.config = config
        self._cond = threading.Condition()
        self._queue: list[tuple[str, str, Future]] = []
        self._thread: threading.Thread | None = None
        self._closed = False

    def submit(self, receipt_id: str, receipt: str) -> Future:
        future: Future = Future()
        with self._cond:
            if self._closed:
                future.set_result(self._keep(receipt_id, receipt, "connector stopping"))
                return future
            self._queue.append((receipt_id, receipt, future))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="twinspace-receipts", daemon=True)
                self._thread.start()
            self._cond.notify()
        return future

    def send(self, receipt_id: str, receipt: str, timeout: float | None = None) -> bool:
        """Submit and wait (a sync caller: the streaming body, PUSH)."""
        return self.submit(receipt_id, receipt).result(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued, then stop; later receipts go to the outbox directly."""
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
                batch, self._queue = self._queue[:self.max_batch], self._queue[self.max_batch:]
            try:
                self._deliver(batch)
            except BaseException as exc:  # noqa: BLE001 - never lose a receipt, never kill the thread
                log.exception("receipt delivery failed")
                for receipt_id, receipt, future in batch:
                    if not future.done():
                        future.set_result(self._keep(receipt_id, receipt, f"{type(exc).__name__}"))

    def _deliver(self, batch: list[tuple[str, str, Future]]) -> None:
        try:
            answer = self.config.broker_post("/dataplane/receipts", {"receipts": [r for _, r, _ in batch]})
            results = answer.get("results") if isinstance(answer, dict) else None
            if not isinstance(results, list) or len(results) != len(batch):
                raise ValueError("the broker's answer does not list one result per receipt")
        except Exception as exc:  # noqa: BLE001 - broker down, slow or refusing: keep them all
            status = getattr(exc, "status", None)
            log.warning("%d receipt(s) not delivered (%s); kept in the outbox", len(batch),
                        status or type(exc).__name__)
            for receipt_id, receipt, future in batch:
                future.set_result(self._keep(receipt_id, receipt, f"{status or type(exc).__name__}: {str(exc)[:200]}"))
            return
        for (receipt_id, receipt, future), result in zip(batch, results):
            error = result.get("error") if isinstance(result, dict) else {"code": "malformed_result"}
            if error:
                log.warning("the broker refused receipt %s (%s); kept in the outbox", receipt_id,
                            error.get("code") if isinstance(error, dict) else error)
                future.set_result(self._keep(receipt_id, receipt, f"refused: {str(error)[:200]}"))
            else:
                future.set_result(True)

    def _keep(self, receipt_id: str, receipt: str, error: str) -> bool:
        self.config.outbox.add(receipt_id, receipt, error)
        return False
