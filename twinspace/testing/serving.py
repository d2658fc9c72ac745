"""An ASGI app served by a real uvicorn server in a background thread, on a loopback socket bound before
the app starts (so its URL is known first). The demo serves its broker this way; tests serve brokers,
OPA stand-ins and connectors with it."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any


def free_port() -> int:
    """A loopback port free now (a process started later may race for it: bind a socket where you can)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ThreadedServer:
    """``ThreadedServer(app).start()`` → ``.url``; ``.stop()`` (also a context manager)."""

    def __init__(self, app: Any, port: int = 0, *, name: str = "twinspace-server", lifespan: str = "on",
                 start_timeout: float = 30.0):
        self.app, self.name, self.lifespan, self.start_timeout = app, name, lifespan, start_timeout
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.port = self.sock.getsockname()[1]
        self.server: Any = None
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "ThreadedServer":
        import uvicorn

        if self.thread is not None:
            return self
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", lifespan=self.lifespan))
        self.server.install_signal_handlers = lambda: None  # not the main thread
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True,
                                       name=self.name)
        self.thread.start()
        deadline = time.monotonic() + self.start_timeout
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"{self.name} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout=10)
            self.thread = None
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> "ThreadedServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
