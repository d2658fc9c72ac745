"""``twinspace demo --serve`` leaves a broker running on the demo's own data: the served application must
open .twinspace-demo (not the default ./.twinspace, which a cached get_settings() used to point at) and
its console must accept the key files the demo wrote."""

from __future__ import annotations

import io

from fastapi.testclient import TestClient
from rich.console import Console
from sqlmodel import Session

from twinspace.crypto import load_private_key
from broker.identity.service import list_orgs
from tests.console.conftest import console_login


def test_demo_serve_serves_the_demo_data_and_its_keys_log_in(tmp_path, monkeypatch):
    import uvicorn

    from twinspace.demo.run import run_demo
    from broker.settings import get_settings

    monkeypatch.chdir(tmp_path)
    for name in ("TWINSPACE_DATA_DIR", "TWINSPACE_DATABASE_URL", "TWINSPACE_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TWINSPACE_DATABASE_URL", "postgresql+psycopg://nobody@127.0.0.1:1/not-the-demo")
    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.update(app=app, **kw))
    out = io.StringIO()
    try:
        assert run_demo(serve=True, port=8765, console=Console(file=out, width=200)) == 0, out.getvalue()
        assert served["host"] == "127.0.0.1" and served["port"] == 8765
        data_dir = tmp_path / ".twinspace-demo"
        assert str(data_dir / "keys") in out.getvalue().replace("\n", "")
        assert not (tmp_path / ".twinspace").exists()
        app = served["app"]
        assert app.state.runtime.settings.data_dir == data_dir.resolve()
        assert get_settings().data_dir == data_dir.resolve() and get_settings().database_url is None
        with TestClient(app, base_url="https://testserver") as http:
            assert http.get("/healthz").json()["status"] == "ok"
            key = load_private_key(data_dir / "keys" / "smart-mobility-ltd.pem")
            with Session(app.state.runtime.engine) as session:
                orgs = {o.name: o.id for o in list_orgs(session)}
            # the org ids the CLI needs are printed beside the key files
            assert orgs["Smart Mobility Ltd"] in out.getvalue() and "smart-mobility-ltd.pem" in out.getvalue()
            console_login(http, orgs["Smart Mobility Ltd"], key)
            catalog = http.get("/console/catalog", headers={"Accept": "text/html"})
            assert catalog.status_code == 200 and "Taipei public parking lots" in catalog.text
    finally:
        get_settings.cache_clear()
