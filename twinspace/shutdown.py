"""Leaving a server process after uvicorn has drained (shared by the broker and the connector)."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time


def exit_after_shutdown(grace: float = 1.0) -> None:
    """uvicorn has drained and run the shutdown hooks; worker threads may still be blocked in a database
    or network call for a request whose client is gone (they are not daemon threads, so the interpreter
    would wait for them). Nothing they do is acknowledged any more — an uncommitted transaction rolls
    back, an unsent receipt is in the connector's outbox — so give them a moment, then leave."""
    deadline = time.monotonic() + grace
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join(max(0.0, deadline - time.monotonic()))
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
