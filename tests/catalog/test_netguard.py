"""netguard: every spelling of a non-public address refused, the allow-list, one uniform error, pinning."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from broker.catalog import netguard
from broker.settings import Settings
from twinspace.errors import BadGateway

LOOPBACK_SPELLINGS = ["http://127.0.0.1", "http://2130706433", "http://0177.0.0.1", "http://0x7f.1",
                      "http://0x7f000001", "http://127.1", "http://[::ffff:127.0.0.1]", "http://[::1]",
                      "http://[::ffff:7f00:1]", "http://LOCALHOST", "http://127.0.0.1.:80/x/"]
SPECIAL = ["http://10.0.0.1", "http://192.168.1.1", "http://172.16.0.1", "http://169.254.169.254",
           "http://[fe80::1]", "http://224.0.0.1", "http://0.0.0.0", "http://100.64.0.1", "http://240.0.0.1",
           "http://[fc00::1]", "http://[2002:a00:1::]", "http://[64:ff9b::a00:1]", "http://0"]


def _settings(tmp_path, **kw) -> Settings:
    return Settings(data_dir=tmp_path, **kw)


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # quiet
        pass

    def _answer(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        out = json.dumps({"host": self.headers.get("host"), "path": self.path, "method": self.command,
                          "body": body.decode() or None}).encode()
        status = 302 if self.path.endswith("/redirect") else 404 if self.path.endswith("/missing") else 200
        self.send_response(status)
        if status == 302:
            self.send_header("Location", "http://127.0.0.1:1/elsewhere")
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = _answer


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _refused(call) -> BadGateway:
    with pytest.raises(BadGateway) as info:
        call()
    assert info.value.code == "connector_unreachable" and info.value.status == 502
    return info.value


@pytest.mark.parametrize("endpoint", LOOPBACK_SPELLINGS)
def test_every_spelling_of_loopback_is_refused_by_default(tmp_path, endpoint):
    _refused(lambda: netguard.check(endpoint, _settings(tmp_path)))


@pytest.mark.parametrize("endpoint", LOOPBACK_SPELLINGS)
def test_loopback_is_allowed_with_the_allow_list(tmp_path, endpoint):
    pinned = netguard.check(endpoint, _settings(tmp_path, connector_allow_networks=["127.0.0.0/8", "::1/128"]))
    assert pinned.ip in ("127.0.0.1", "::1")


@pytest.mark.parametrize("endpoint", SPECIAL)
def test_special_ranges_are_refused_even_with_a_loopback_allow_list(tmp_path, endpoint):
    _refused(lambda: netguard.check(endpoint, _settings(tmp_path, connector_allow_networks=["127.0.0.0/8"])))


def test_public_address_passes(tmp_path):
    assert netguard.check("https://8.8.8.8/c", _settings(tmp_path)).ip == "8.8.8.8"


def test_a_name_with_one_private_answer_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: [
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("8.8.8.8", 443)),
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.1.2.3", 443))])
    _refused(lambda: netguard.check("https://mixed.example", _settings(tmp_path)))


def test_uniform_error_for_closed_port_refused_range_dns_failure_and_bad_url(tmp_path, monkeypatch):
    allow = _settings(tmp_path, connector_allow_networks=["127.0.0.0/8"])
    closed = _refused(lambda: netguard.request(allow, "GET", f"http://127.0.0.1:{_free_port()}", "/healthz"))
    refused_range = _refused(lambda: netguard.request(_settings(tmp_path), "GET", "http://127.0.0.1:8080", "/healthz"))
    private = _refused(lambda: netguard.request(allow, "GET", "http://10.0.0.7", "/healthz"))
    bad_url = _refused(lambda: netguard.request(allow, "GET", "ftp://x y", "/healthz"))

    def no_dns(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    dns = _refused(lambda: netguard.request(allow, "GET", "http://no-such-host.invalid", "/healthz"))
    errors = [closed, refused_range, private, bad_url, dns]
    assert len({(e.detail, e.code, e.status, str(e.to_problem())) for e in errors}) == 1


def test_request_reaches_an_allowed_connector_and_returns_any_status(tmp_path, server):
    allow = _settings(tmp_path, connector_allow_networks=["127.0.0.0/8"])
    response = netguard.request(allow, "POST", f"http://127.0.0.1:{server}/base/", "/ownership", json={"n": 1})
    assert response.status_code == 200
    assert response.json() == {"host": f"127.0.0.1:{server}", "path": "/base/ownership", "method": "POST",
                               "body": '{"n":1}'}
    assert netguard.request(allow, "GET", f"http://127.0.0.1:{server}", "/missing").status_code == 404
    redirect = netguard.request(allow, "GET", f"http://127.0.0.1:{server}", "/redirect")
    assert redirect.status_code == 302  # not followed


def test_oversized_answer_is_the_same_error(tmp_path, server):
    allow = _settings(tmp_path, connector_allow_networks=["127.0.0.0/8"])
    _refused(lambda: netguard.request(allow, "GET", f"http://127.0.0.1:{server}", "/x", max_bytes=10))


def test_pinning_one_lookup_and_the_original_host_header(tmp_path, server, monkeypatch):
    """DNS rebinding: the first answer is the allowed one; any later answer would be private. Only one
    lookup happens and the connection goes to the address that was checked, with the original Host."""
    answers = iter(["127.0.0.1", "10.9.9.9", "10.9.9.9"])
    calls = []
    real = socket.getaddrinfo

    def rebinding(host, port, *args, **kwargs):
        if netguard.parse_ip_literal(str(host)) is not None:  # the socket layer on a literal: no DNS
            return real(host, port, *args, **kwargs)
        calls.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers), port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    allow = _settings(tmp_path, connector_allow_networks=["127.0.0.0/8"])
    response = netguard.request(allow, "GET", f"http://connector.example:{server}", "/healthz")
    assert response.status_code == 200
    assert response.json()["host"] == f"connector.example:{server}"
    assert calls == ["connector.example"]
    # the next call sees the rebound answer and is refused before connecting
    _refused(lambda: netguard.request(allow, "GET", f"http://connector.example:{server}", "/healthz"))


def test_pinned_https_sets_sni_to_the_host_name(tmp_path, monkeypatch):
    seen = {}

    def fake_send(self, request, **kwargs):
        seen["url"] = str(request.url)
        seen["host"] = request.headers["host"]
        seen["sni"] = request.extensions.get("sni_hostname")
        import httpx

        return httpx.Response(200, content=b"{}", request=request)

    import httpx

    monkeypatch.setattr(httpx.Client, "send", fake_send)
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, port, *a, **k: [
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port))])
    netguard.request(_settings(tmp_path), "GET", "https://Connector.Example.org/api", "/healthz")
    assert seen == {"url": "https://93.184.216.34/api/healthz", "host": "connector.example.org",
                    "sni": "connector.example.org"}
