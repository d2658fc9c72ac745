"""A broker replica that appends audit events (run as a separate OS process by the tests/bench).

    python -m tests.audit.replica_writer <database url> <replica name> <count> <mode: tx|group> [start at]

``start at`` (epoch seconds) lets every process finish importing before any appends, so they overlap.
"""

from __future__ import annotations

import sys
import threading


def main(url: str, name: str, count: int, mode: str, start_at: float = 0.0) -> None:
    import time

    from broker.audit import log_event, record_event
    from broker.storage.db import make_engine, session_scope

    engine = make_engine(url)
    with engine.connect():
        pass
    time.sleep(max(0.0, start_at - time.time()))
    if mode == "tx":
        for i in range(count):
            with session_scope(engine) as s:
                record_event(s, "replica.append", actor=name, details={"i": i})
    else:  # several threads through the group-commit writer
        def worker(t: int) -> None:
            for i in range(t, count, 4):
                log_event(engine, "replica.append", actor=name, details={"i": i})

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    engine.dispose()
    print("done", name)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], float(sys.argv[5]) if len(sys.argv) > 5 else 0.0)
