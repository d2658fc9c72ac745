"""A route's transaction commits before its response is sent: a failing commit is an error response
(never a success with nothing written), so the client's next request also reads its own writes."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import event, text
from sqlmodel import Session

from broker.api.deps import db_session


def _app(runtime) -> FastAPI:
    app = FastAPI()
    app.state.runtime = runtime

    @app.post("/commit-fails")
    def commit_fails(session: Session = db_session) -> dict:
        def refuse(_session):
            raise RuntimeError("disk full")

        event.listen(session, "before_commit", refuse)
        session.execute(text("SELECT 1"))  # a unit of work that has begun (untouched sessions skip the commit)
        return {"ok": True}

    return app


def test_a_failing_commit_is_not_reported_as_success(runtime):
    with TestClient(_app(runtime), raise_server_exceptions=False) as client:
        assert client.post("/commit-fails").status_code == 500
