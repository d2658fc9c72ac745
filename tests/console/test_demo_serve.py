"""``twinspace demo --serve`` leaves a broker running on the demo's own data: the served application must
open .twinspace-demo (not the default ./.twinspace, which a cached get_settings() used to point at), its
console must accept the key files the demo wrote, and the providers' connectors stay up beside it (the
console admits their origins, since the browser pulls data from them)."""

from __future__ import annotations

import io

from fastapi.testclient import TestClient
from rich.console import Console
from sqlmodel import Session

from twinspace.crypto import load_private_key
from broker.identity.service import list_orgs
from tests.console.conftest import console_login


def test_demo_serve_serves_the_demo_data_and_its_keys_log_in(tmp_path, monkeypatch):
    import httpx

    import twinspace.demo.run as demo_run
    from broker.settings import get_settings

    monkeypatch.chdir(tmp_path)
    for name in ("TWINSPACE_DATA_DIR", "TWINSPACE_DATABASE_URL", "TWINSPACE_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TWINSPACE_DATABASE_URL", "postgresql+psycopg://nobody@127.0.0.1:1/not-the-demo")
    served = {}

    def serve_once(ctx, broker):  # instead of waiting for Ctrl-C: look at what --serve leaves running
        served.update(app=broker.app, url=broker.url, connectors={k: c.endpoint for k, c in ctx.connectors.items()})
        demo_run_serve(ctx, broker)  # prints the participants and connectors, returns when the server stops
        for endpoint in served["connectors"].values():
            served.setdefault("healthy", []).append(httpx.get(endpoint + "/healthz", timeout=5).status_code)

    demo_run_serve = demo_run._serve_forever
    monkeypatch.setattr(demo_run, "_serve_forever", lambda ctx, broker: (broker.stop(), serve_once(ctx, broker)))
    out = io.StringIO()
    try:
        assert demo_run.run_demo(serve=True, port=8765, console=Console(file=out, width=200)) == 0, out.getvalue()
        assert served["url"] == "http://127.0.0.1:8765"
        assert served["healthy"] == [200] * len(served["connectors"]) and served["connectors"]
        data_dir = tmp_path / ".twinspace-demo"
        text = out.getvalue().replace("\n", "")
        assert str(data_dir / "keys") in text or ".twinspace-demo/keys" in text
        assert all(endpoint in out.getvalue() for endpoint in served["connectors"].values())
        assert not (tmp_path / ".twinspace").exists()
        app = served["app"]
        assert app.state.runtime.settings.data_dir.resolve() == (data_dir / "broker").resolve()
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
            csp = catalog.headers["content-security-policy"]
            assert all(endpoint in csp for endpoint in served["connectors"].values())  # connect-src
    finally:
        get_settings.cache_clear()
