"""DSP fixtures: the contract world, and a recorder of every DSP message that crosses the wire."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.contracts.helpers import world  # noqa: F401


class Recorder:
    """Every DSP body the TwinSpace client sends and the broker answers, plus the callbacks it sends."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []  # (where, document)

    def request(self, request) -> None:
        path = request.url.path
        if (path.startswith("/dsp/") or path.startswith("/.well-known/dspace")) and request.content:
            try:
                self.sent.append((f"client {request.method} {path}", json.loads(request.content)))
            except ValueError:
                pass

    def response(self, response) -> None:
        path = response.request.url.path
        if path.startswith("/dsp/") or path.startswith("/.well-known/dspace"):
            response.read()
            try:
                self.sent.append((f"broker {response.status_code} {path}", response.json()))
            except ValueError:
                pass


@pytest.fixture
def recorder(client, monkeypatch) -> Recorder:
    rec = Recorder()
    client.event_hooks["request"].append(rec.request)
    client.event_hooks["response"].append(rec.response)
    return rec
