"""Run an app under a real uvicorn server on a free loopback port (for tests that need sockets)."""

from __future__ import annotations

from contextlib import contextmanager

from twinspace.testing.serving import ThreadedServer, free_port

__all__ = ["free_port", "serve_app"]


@contextmanager
def serve_app(app, port: int | None = None):
    """Yield the base URL of ``app`` served by uvicorn in a background thread; stop it afterwards."""
    with ThreadedServer(app, port or 0, name="test-server", lifespan="off") as served:
        yield served.url
