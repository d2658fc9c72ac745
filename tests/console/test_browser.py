"""Browser journeys in Chromium (Playwright): the broker runs under uvicorn on a free loopback port with the
demo's data; each role logs in by picking its PEM key (WebCrypto signs the assertion in the page).
Screenshots go to test-artifacts/screenshots/ (git-ignored)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

from tests.serving import serve_app

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Chromium not found at /usr/bin/chromium "
                                "(install Debian's chromium package to run the browser journeys)")


@pytest.fixture
def browser():
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


CONNECTOR_PORTS: set[int] = set()  # the providers' connectors, which the browser pulls data from


@pytest.fixture
def console_port(monkeypatch) -> int:
    """The console's port, chosen before the demo starts its connectors, so they allow its origin (CORS)."""
    from tests.serving import free_port

    port = free_port()
    monkeypatch.setenv("TWINSPACE_CONNECTOR_CORS_ORIGINS", f"http://127.0.0.1:{port}")
    return port


@pytest.fixture
def served(console_port, demo, app):
    CONNECTOR_PORTS.clear()
    with serve_app(app, port=console_port) as url:
        for label in ("provider", "provider2"):
            CONNECTOR_PORTS.add(urlsplit(demo.connector(label).endpoint).port)
        yield url


REQUESTS: list[str] = []  # every URL the journeys' pages asked for


@pytest.fixture(autouse=True)
def only_local_requests():
    """Nothing is fetched from a CDN or any other origin: every request goes to the loopback broker, or
    (the data itself) to a provider's loopback connector."""
    REQUESTS.clear()
    yield
    foreign = [u for u in REQUESTS if not u.startswith(("blob:", "data:")) and urlsplit(u).hostname != "127.0.0.1"]
    assert not foreign, f"requests to other origins: {foreign}"
    ports = {urlsplit(u).port for u in REQUESTS if u.startswith("http")}
    assert len(ports - CONNECTOR_PORTS) <= 1
    pulls = [u for u in REQUESTS if u.startswith("http") and urlsplit(u).port in CONNECTOR_PORTS]
    assert all("/dataplane/transfers/" in urlsplit(u).path for u in pulls), pulls  # only data pulls go there


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def key_file(demo, label: str) -> str:
    return str(demo.participants[label].org.key_file)


def login(browser, url: str, demo, label: str, screenshot: str | None = None):
    context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 860})
    context.on("request", lambda request: REQUESTS.append(request.url))
    page = context.new_page()
    page.on("dialog", lambda d: d.accept())
    page.goto(f"{url}/console/login")
    page.set_input_files("#keyfile", key_file(demo, label))
    if screenshot:
        shot(page, screenshot)
    page.click("#login-button")
    page.wait_for_url(f"{url}/console/")
    expect(page.locator("#whoami")).to_have_text(demo.participants[label].org.name)
    return page


def test_login_refuses_an_unregistered_key(browser, served, demo, tmp_path):
    from twinspace.crypto import generate_key, save_private_key

    stranger = tmp_path / "stranger.pem"
    save_private_key(stranger, generate_key())
    page = browser.new_page()
    page.goto(f"{served}/console/login")
    page.set_input_files("#keyfile", str(stranger))
    page.click("#login-button")
    page.wait_for_selector("#login-status.bad")
    expect(page.locator("#login-status")).to_contain_text("not registered")
    assert page.context.cookies() == [] or all(c["name"] != "ts_console" for c in page.context.cookies())
    page.goto(f"{served}/console/catalog")
    expect(page.locator("#problem-code")).to_have_text("missing_session")
    # an RSA PKCS#8 key: a reason, not an empty "Login failed:"
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    rsa_pem = tmp_path / "rsa.pem"
    rsa_pem.write_bytes(rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    page.goto(f"{served}/console/login")
    page.set_input_files("#keyfile", str(rsa_pem))
    page.click("#login-button")
    page.wait_for_selector("#login-status.bad")
    expect(page.locator("#login-status")).to_contain_text("holds an RSA key")


def test_consumer_and_provider_negotiate_sign_download_and_revoke(browser, served, demo):
    consumer = login(browser, served, demo, "consumer", screenshot="01-login")
    cookie = next(c for c in consumer.context.cookies() if c["name"] == "ts_console")
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
    assert consumer.evaluate("document.cookie") == ""  # the session is invisible to scripts

    # consumer: browse and search the catalog, with the map of extents
    consumer.click("text=Catalog")
    assert consumer.locator("#extent-map a.extent").count() >= 1
    shot(consumer, "02-consumer-catalog")
    consumer.fill("input[name=q]", "parking")
    consumer.click("#catalog-search button[type=submit]")
    expect(consumer.locator(".assets")).to_contain_text("Taipei public parking lots")
    expect(consumer.locator(".assets")).not_to_contain_text("Building stock")
    consumer.click(".assets a:has-text('Taipei public parking lots')")
    shot(consumer, "03-consumer-asset")
    expect(consumer.locator("#licence")).not_to_be_empty()  # no empty placeholders, no reprs
    expect(consumer.locator("main")).not_to_contain_text("None")
    expect(consumer.locator("main")).not_to_contain_text("{'")
    consumer.fill("#purpose", "traffic_planning")
    consumer.click("#request-contract")
    expect(consumer.locator("#neg-state")).to_have_text("REQUESTED")
    expect(consumer.locator("#stepper li.current")).to_have_text("Requested")
    negotiation_url = consumer.url

    # provider: offer
    provider = login(browser, served, demo, "provider")
    provider.goto(negotiation_url)
    provider.fill("#max_rows", "50")
    provider.click("#send-offer")
    expect(provider.locator("#neg-state")).to_have_text("OFFERED")

    # consumer: accept
    consumer.reload()
    consumer.click("#accept-offer")
    expect(consumer.locator("#neg-state")).to_have_text("ACCEPTED")

    # provider: sign in the browser (WebCrypto, key kept non-extractable since login)
    provider.reload()
    shot(provider, "04-provider-sign")
    provider.click("#sign-agreement")
    expect(provider.locator("#neg-state")).to_have_text("AGREED")

    # consumer: check the document and sign it
    consumer.reload()
    expect(consumer.locator(".signed-doc")).to_contain_text("traffic_planning")
    shot(consumer, "05-consumer-verify-sign")
    consumer.click("#sign-agreement")
    expect(consumer.locator("#neg-state")).to_have_text("VERIFIED")
    expect(consumer.locator("#stepper li.done")).to_have_count(4)

    # provider: finalise (broker countersigns)
    provider.reload()
    provider.click("#finalize")
    expect(provider.locator("#neg-state")).to_have_text("FINALIZED")

    # consumer: a preview of the first permitted rows, then the download, each pulled from the provider's
    # connector with a browser-signed proof of possession
    consumer.reload()
    consumer.click("#agreement-link")
    consumer.click("#preview")
    consumer.wait_for_selector("#download-status.ok")
    expect(consumer.locator("#preview-rows table.preview tbody tr")).to_have_count(10)
    header = consumer.locator("#preview-rows th").all_inner_texts()
    assert header and "owner_national_id" not in header  # de-identified columns only
    with consumer.expect_download() as info:
        consumer.click("#download")
    download = info.value
    rows = list(csv.DictReader(io.StringIO(Path(download.path()).read_text())))
    assert 0 < len(rows) <= 50
    consumer.wait_for_selector("#download-status.ok")
    # fresh state without a reload: the transfer, the usage and the stepper show the download
    expect(consumer.locator("#transfers")).not_to_contain_text("No transfers yet")
    expect(consumer.locator("#stepper li.done").last).to_contain_text("Data transferred")
    expect(consumer.locator("main")).not_to_contain_text("{'")
    shot(consumer, "06-consumer-agreement-download")
    agreement_url = consumer.url

    # provider: who accessed what, then revoke
    provider.click("text=Access log")
    expect(provider.locator("#access-events")).to_contain_text("transfer.receipt")
    expect(provider.locator("#access-events")).to_contain_text("Smart Mobility Ltd")  # its acknowledgement
    assert provider.locator("svg.chart").count() >= 1
    shot(provider, "07-provider-access-log")
    provider.goto(agreement_url)
    provider.fill("#revoke-reason", "end of pilot")
    provider.click("#revoke")
    expect(provider.locator("#agreement-status")).to_have_text("REVOKED")

    # consumer: the next download is refused
    consumer.reload()
    expect(consumer.locator("#download")).to_have_count(0)
    status = consumer.evaluate("""async (url) => {
        const r = await fetch(url + '/transfer', {method: 'POST', headers: {'X-CSRF-Token': document.body.dataset.csrf,
            'Accept': 'application/json'}});
        return [r.status, (await r.json()).code];
    }""", agreement_url)
    assert status[0] in (403, 409, 410), status

    # the consumer cannot open the auditor's pages
    consumer.goto(f"{served}/console/audit")
    expect(consumer.locator("#problem-code")).to_have_text("wrong_role")

    # logout ends the session on the server and clears the stored key
    consumer.click("#logout")
    consumer.wait_for_url(f"{served}/console/login?msg=Logged%20out.")
    assert consumer.evaluate("""() => new Promise(r => { const q = indexedDB.open('twinspace-console', 1);
        q.onsuccess = () => { const g = q.result.transaction('keys').objectStore('keys').count(); g.onsuccess = () => r(g.result); }; })""") == 0
    consumer.goto(f"{served}/console/catalog")
    expect(consumer.locator("#problem-code")).to_have_text("missing_session")


def _stored_keys(page) -> int:
    return page.evaluate("""() => new Promise(r => { const q = indexedDB.open('twinspace-console', 1);
        q.onupgradeneeded = () => q.result.createObjectStore('keys');
        q.onsuccess = () => { const g = q.result.transaction('keys').objectStore('keys').count(); g.onsuccess = () => r(g.result); }; })""")


def test_an_expired_session_does_not_leave_the_signing_key_in_the_browser(browser, served, demo):
    consumer = login(browser, served, demo, "consumer")
    assert _stored_keys(consumer) == 1  # kept (non-extractable) for signing during the session
    consumer.context.clear_cookies()  # what the browser does when the session cookie's Max-Age runs out
    consumer.goto(f"{served}/console/agreements")
    expect(consumer.locator("#problem-code")).to_have_text("missing_session")
    consumer.wait_for_function("""() => new Promise(r => { const q = indexedDB.open('twinspace-console', 1);
        q.onsuccess = () => { const g = q.result.transaction('keys').objectStore('keys').count();
        g.onsuccess = () => r(g.result === 0); }; })""")
    assert _stored_keys(consumer) == 0


def test_auditor_explores_proves_and_verifies(browser, served, demo):
    auditor = login(browser, served, demo, "auditor")
    auditor.click("text=Audit log")
    assert auditor.locator("#audit-entries tbody tr").count() > 5
    auditor.fill("input[name=kind]", "contract.*")
    auditor.click("#audit-filters button[type=submit]")
    auditor.wait_for_url("**/audit?*kind=contract*")  # the filtered page, not the one before it
    kinds = auditor.locator("#audit-entries tbody tr td:nth-child(3)").all_text_contents()
    assert kinds and all(k.startswith("contract.") for k in kinds)
    auditor.click("#verify-log")
    auditor.wait_for_selector("#verify-result.ok")
    expect(auditor.locator("#verify-result")).to_contain_text("VERIFIED")
    shot(auditor, "08-auditor-log")
    auditor.locator("#audit-entries tbody tr a").first.click()
    auditor.click("#check-proof")
    auditor.wait_for_selector("#proof-result.ok")
    expect(auditor.locator("#proof-result")).to_contain_text("Included")
    shot(auditor, "09-auditor-entry-proof")


def test_auditor_monitor_trusts_checks_growth_and_alarms_on_a_fork(browser, served, demo):
    from broker.audit import log_event

    auditor = login(browser, served, demo, "auditor")
    auditor.click("text=Audit monitor")
    auditor.click("#monitor-check")
    expect(auditor.locator("#monitor-result")).to_contain_text("Trusting tree size")
    for i in range(3):
        log_event(demo.runtime.engine, "test.event", actor="x", details={"i": i})
    auditor.reload()
    auditor.click("#monitor-check")
    expect(auditor.locator("#monitor-result")).to_contain_text("append-only")
    shot(auditor, "11-auditor-monitor")
    # another history than the one trusted: the alarm, and the trusted checkpoint stays
    auditor.evaluate("""() => { for (const k of Object.keys(localStorage)) if (k.startsWith('twinspace-audit-monitor:')) {
        const t = JSON.parse(localStorage.getItem(k)); t.root = btoa('x'.repeat(32)); t.tree_size -= 1;
        localStorage.setItem(k, JSON.stringify(t)); } }""")
    log_event(demo.runtime.engine, "test.event", actor="x", details={"i": 9})
    auditor.reload()
    auditor.click("#monitor-check")
    expect(auditor.locator("#monitor-result")).to_contain_text("ALERT FORK")
    expect(auditor.locator("#monitor-trusted")).to_contain_text(
        __import__("base64").b64encode(b"x" * 32).decode())
    assert any(u.endswith("/console/static/console.js") for u in REQUESTS)


def test_provider_changes_offers_and_withdraws_an_asset(browser, served, demo):
    """Providers manage their assets: new offers (published as a new version), then withdrawal."""
    provider = login(browser, served, demo, "provider")
    provider.click("text=My assets")
    row = provider.locator("#my-assets tr", has_text="Taipei public parking lots").first
    expect(row).to_contain_text("v1")
    provider.click("summary:has-text('Add or change an offer of Taipei public parking lots')")
    form = provider.locator("form.offer-form").first
    form.locator("input.offer-id").fill("research")
    form.locator("input.offer-purposes").fill("research, traffic_planning")
    form.locator("input.offer-until").fill("2030-12-31")
    form.locator("input.offer-count").fill("20")
    shot(provider, "10-provider-edit-offers")
    form.locator("button.save-offer-form").click()
    expect(provider.locator(".flash")).to_contain_text("version 2")
    row = provider.locator("#my-assets tr", has_text="Taipei public parking lots").first
    expect(row).to_contain_text("purposes = research, traffic_planning")
    provider.click("summary:has-text('Advanced: edit all offers of Taipei public parking lots as JSON')")
    editor = provider.locator("form[action$='/offers']").first
    current = json.loads(editor.locator("textarea").input_value())
    assert [o["id"] for o in current] == ["open", "research"]
    editor.locator("textarea").fill(json.dumps(current[:1] + [{**current[1], "params": {
        **current[1]["params"], "max_rows": 50}}], indent=2))
    editor.locator("button.save-offers").click()
    expect(provider.locator(".flash")).to_contain_text("version 3")
    row = provider.locator("#my-assets tr", has_text="Taipei public parking lots").first
    expect(row).to_contain_text("v3")
    expect(row).to_contain_text("purpose-restricted")

    consumer = login(browser, served, demo, "consumer")
    consumer.click("text=Catalog")
    consumer.click(".assets a:has-text('Taipei public parking lots')")
    expect(consumer.locator("main")).to_contain_text("v3")
    assert "research" in consumer.locator("select#offer").inner_text()
    expect(consumer.locator("main")).not_to_contain_text("{'")  # no Python reprs

    provider.locator("#my-assets tr", has_text="Taipei public parking lots").first.locator("input[name=reason]").fill(
        "replaced by the live feed")
    provider.locator("#my-assets tr", has_text="Taipei public parking lots").first.locator("button.danger").click()
    expect(provider.locator(".flash")).to_contain_text("withdrawn")
    expect(provider.locator("#my-assets tr", has_text="Taipei public parking lots").first).to_contain_text("withdrawn")
    consumer.click("text=Catalog")
    expect(consumer.locator(".assets")).not_to_contain_text("Taipei public parking lots")
    assert any(u.endswith("/console/static/console.css") for u in REQUESTS)


@pytest.fixture
def served_bare(app):
    with serve_app(app) as url:
        yield url


def test_checkpoint_check_accepts_a_log_key_whose_base64_contains_plus(browser, served_bare):
    """Regression: the C2SP vkey is name+hex+standard base64, and that base64 may contain "+"; the browser
    check used to split at every "+" (so it failed for some broker keys, i.e. at random)."""
    import base64

    from twinspace.audit.note import sign_note, vkey_string
    from twinspace.crypto import generate_key

    name = "twinspace.test/log"
    for _ in range(1000):
        key = generate_key()
        vkey = vkey_string(name, key.public_key())
        if "+" in vkey.split("+", 2)[2]:
            break
    root = bytes(range(32))
    note = sign_note(f"{name}\n7\n{base64.b64encode(root).decode()}\n", name, key)
    page = browser.new_page()
    page.goto(f"{served_bare}/console/login")
    got = page.evaluate("""async ([note, vkey]) => { const [origin, size, root] = await openCheckpoint(note, vkey);
        return [origin, size, Array.from(root)]; }""", [note, vkey])
    assert got == [name, 7, list(root)]
    other = vkey_string(name, generate_key().public_key())
    refused = page.evaluate("""async ([note, vkey]) => { try { await openCheckpoint(note, vkey); return "accepted"; }
        catch (e) { return e.message; } }""", [note, other])
    assert refused.startswith("no valid signature") or "key" in refused


def test_open_data_in_one_click_while_the_provider_serves_automatically(browser, served, demo):
    """The consumer clicks once; the provider runs `twinspace negotiate auto` (here its loop in a thread);
    the page takes the consumer's steps (accept, verify and sign) and lands on the agreement in force."""
    import threading

    import httpx

    from twinspace.cli.negotiate import serve_once
    from twinspace.client.broker import BrokerClient
    from twinspace.crypto import load_private_key

    org = demo.participants["provider"].org
    provider = BrokerClient(httpx.Client(base_url=served), org.org_id, load_private_key(org.key_file),
                            demo.settings.issuer)
    stop = threading.Event()

    errors = []

    def serve():
        while not stop.is_set():
            try:
                serve_once(provider, org.org_id, ("open-data",))
            except Exception as exc:  # noqa: BLE001
                errors.append(repr(exc))
            stop.wait(0.5)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        consumer = login(browser, served, demo, "consumer")
        consumer.click("text=Catalog")
        consumer.click(".assets a:has-text('Taipei public parking lots')")
        consumer.click("#get-data")
        consumer.wait_for_url("**/agreements/agr_*", timeout=60_000)
        expect(consumer.locator("#agreement-status")).to_have_text("FINALIZED")
        expect(consumer.locator("#stepper li.current")).to_have_text("Agreement in force")
        assert not errors
    finally:
        stop.set()
        t.join(timeout=10)
