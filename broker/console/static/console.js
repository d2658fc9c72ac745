// TwinSpace console: a little vanilla JS. Private keys are read from a PEM file, imported into WebCrypto
// as non-extractable Ed25519 keys and kept (for this browser only) in IndexedDB until logout; only
// signatures and public key thumbprints ever leave the browser.
"use strict";

const ROOT = document.body.dataset.root || "";
const CSRF = document.body.dataset.csrf || "";
const ORG = document.body.dataset.org || "";
const enc = new TextEncoder();

// ---------------------------------------------------------------------------- encoding helpers
function b64url(bytes) {
  let s = "";
  const view = new Uint8Array(bytes);
  for (let i = 0; i < view.length; i++) s += String.fromCharCode(view[i]);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}
function b64urlDecode(text) {
  const s = atob(text.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((text.length + 3) % 4));
  return Uint8Array.from(s, (c) => c.charCodeAt(0));
}
function b64Decode(text) { return Uint8Array.from(atob(text.trim()), (c) => c.charCodeAt(0)); }
function hex(bytes) { return Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, "0")).join(""); }
function equalBytes(a, b) {
  a = new Uint8Array(a); b = new Uint8Array(b);
  return a.length === b.length && a.every((v, i) => v === b[i]);
}
async function sha256(bytes) { return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes)); }
function randomId() { return hex(crypto.getRandomValues(new Uint8Array(16))); }

// ---------------------------------------------------------------------------- keys
function pemToDer(pem) {
  const m = /-----BEGIN PRIVATE KEY-----([\s\S]+?)-----END PRIVATE KEY-----/.exec(pem);
  if (!m) throw new Error("not a PKCS#8 PEM private key (-----BEGIN PRIVATE KEY-----)");
  return b64Decode(m[1].replace(/\s+/g, ""));
}

// RFC 7638 thumbprint of the OKP public key: the broker's key id (kid).
async function thumbprint(x) {
  return b64url(await sha256(enc.encode('{"crv":"Ed25519","kty":"OKP","x":"' + x + '"}')));
}

async function importPem(pem) {
  const der = pemToDer(pem);
  try {
    let extractable;
    try {
      extractable = await crypto.subtle.importKey("pkcs8", der, { name: "Ed25519" }, true, ["sign"]);
    } catch (err) {
      // WebCrypto's DataError has an empty message: say what the file is and what is needed.
      const oid = hex(der).includes("2a864886f70d010101") ? "an RSA key" : hex(der).includes("2a8648ce3d0201") ? "an EC (ECDSA) key" : "not an Ed25519 key";
      throw new Error("this file holds " + oid + "; TwinSpace logins use the organisation's Ed25519 key (the .pem `twinspace org create` wrote)");
    }
    const jwk = await crypto.subtle.exportKey("jwk", extractable);
    const kid = await thumbprint(jwk.x);
    const key = await crypto.subtle.importKey("pkcs8", der, { name: "Ed25519" }, false, ["sign"]);
    return { key, kid };
  } finally {
    der.fill(0);
  }
}

async function signBytes(key, bytes) {
  return new Uint8Array(await crypto.subtle.sign({ name: "Ed25519" }, key, bytes));
}

async function signJwt(key, header, claims) {
  const input = b64url(enc.encode(JSON.stringify(header))) + "." + b64url(enc.encode(JSON.stringify(claims)));
  return input + "." + b64url(await signBytes(key, enc.encode(input)));
}

// IndexedDB: the non-extractable CryptoKey for this session (structured clone keeps it unexportable).
function idb() {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open("twinspace-console", 1);
    req.onupgradeneeded = () => req.result.createObjectStore("keys");
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}
async function idbDo(mode, fn) {
  const db = await idb();
  return new Promise((resolve, reject) => {
    const tx = db.transaction("keys", mode);
    const req = fn(tx.objectStore("keys"));
    tx.oncomplete = () => resolve(req && req.result);
    tx.onerror = () => reject(tx.error);
  });
}
const storeKey = (org, entry) => idbDo("readwrite", (s) => s.put(entry, org));
const loadKey = (org) => idbDo("readonly", (s) => s.get(org));
const clearKeys = () => idbDo("readwrite", (s) => s.clear());

// A key for signing: the one kept since login, or one the user picks now.
async function currentKey(container) {
  const picked = container && container.querySelector("input[type=file]");
  if (picked && picked.files.length) {
    const entry = await importPem(await picked.files[0].text());
    await storeKey(ORG, entry);
    return entry;
  }
  const stored = await loadKey(ORG).catch(() => undefined);
  if (stored) return stored;
  throw new Error("pick your organisation's private key file first");
}

async function setupKeyPick(container) {
  if (!container) return;
  const stored = await loadKey(ORG).catch(() => undefined);
  if (stored) {
    container.innerHTML = "";
    const p = document.createElement("p");
    p.className = "small muted";
    p.textContent = "Signing with the key loaded at login (kid " + stored.kid.slice(0, 12) + "…, kept non-extractable in this browser).";
    container.appendChild(p);
  } else {
    const label = document.createElement("label");
    label.textContent = "Your private key (PEM) ";
    const input = document.createElement("input");
    input.type = "file";
    input.accept = ".pem,.key";
    input.className = "keyfile";
    label.appendChild(input);
    container.appendChild(label);
  }
}

// ---------------------------------------------------------------------------- fetch with CSRF
async function postJson(url, body) {
  const res = await fetch(url, {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json", "Accept": "application/json", "X-CSRF-Token": CSRF,
               "X-Requested-With": "fetch" },
    body: JSON.stringify(body || {}),
  });
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error((data.detail || res.statusText) + (data.code ? " (" + data.code + ")" : ""));
  return data;
}

function status(el, text, cls) {
  if (!el) return;
  el.textContent = text;
  el.className = (el.className.replace(/\b(ok|bad)\b/g, "") + " " + (cls || "")).trim();
}

// ---------------------------------------------------------------------------- login
function setupLogin() {
  const form = document.getElementById("login-form");
  if (!form) return;
  const out = document.getElementById("login-status");
  const config = JSON.parse(document.getElementById("login-config").textContent);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const file = document.getElementById("keyfile").files[0];
    if (!file) { status(out, "Pick your private key file first.", "bad"); return; }
    try {
      status(out, "Signing a client assertion in this browser…");
      const { key, kid } = await importPem(await file.text());
      const nonce = document.getElementById("nonce").value;
      const res = await fetch(ROOT + "/login/lookup", {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", "Accept": "application/json", "X-Requested-With": "fetch" },
        body: JSON.stringify({ kid, nonce }),
      });
      const found = await res.json();
      if (!res.ok) throw new Error(found.detail || "this key is not registered");
      const now = Math.floor(Date.now() / 1000);
      const assertion = await signJwt(key, { alg: "EdDSA", typ: "JWT", kid },
        { iss: found.org_id, sub: found.org_id, aud: config.audience, iat: now, exp: now + 60, jti: randomId() });
      await clearKeys().catch(() => undefined);
      await storeKey(found.org_id, { key, kid });
      document.getElementById("client_assertion").value = assertion;
      form.submit();
    } catch (err) {
      status(out, "Login failed: " + (err.message || err.name || "the key could not be used"), "bad");
    }
  });
}

function setupLogout() {
  const button = document.getElementById("logout");
  if (!button) return;
  const form = button.form;
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    await clearKeys().catch(() => undefined);
    form.submit();
  });
}

// ---------------------------------------------------------------------------- agreement signing
function checkDocument(doc, expect) {
  for (const [field, want] of Object.entries(expect)) {
    let got;
    if (field === "asset_id") got = doc.asset && doc.asset.id;
    else if (field === "asset_version") got = doc.asset && doc.asset.version;
    else got = doc[field];
    if ((got ?? null) !== (want ?? null)) throw new Error("the agreement's " + field + " is " + got + ", expected " + want);
  }
}

function setupSigners() {
  document.querySelectorAll(".signer").forEach((box) => {
    setupKeyPick(box.querySelector(".keypick"));
    const out = document.getElementById("sign-status");
    const pre = box.querySelector(".signed-doc");
    const embedded = box.querySelector(".sign-data");
    if (embedded && pre) {
      const data = JSON.parse(embedded.textContent);
      pre.textContent = JSON.stringify(JSON.parse(new TextDecoder().decode(b64urlDecode(data.signing_input))), null, 2);
    }
    box.querySelector(".sign-button").addEventListener("click", async () => {
      try {
        const { key, kid } = await currentKey(box);
        const data = embedded ? JSON.parse(embedded.textContent) : await postJson(box.dataset.draft);
        const bytes = b64urlDecode(data.signing_input);
        // What we sign is exactly what we show and check: the canonical bytes, parsed here.
        const doc = JSON.parse(new TextDecoder().decode(bytes));
        if (pre) pre.textContent = JSON.stringify(doc, null, 2);
        checkDocument(doc, data.expect);
        status(out, "Signing " + bytes.length + " bytes with key " + kid.slice(0, 12) + "…");
        const signature = b64url(await signBytes(key, bytes));
        const result = await postJson(box.dataset.post, { signing_input: data.signing_input, kid, signature });
        status(out, "Signed; negotiation is now " + result.state + ".", "ok");
        setTimeout(() => window.location.reload(), 300);
      } catch (err) {
        status(out, "Not signed: " + err.message, "bad");
      }
    });
  });
}

// ---------------------------------------------------------------------------- fresh state after an action
// Re-read the page and swap in the parts an action changed (usage, transfers, progress), so what is
// shown is the broker's state now, without losing the status message of the action.
async function refreshParts(ids) {
  const res = await fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } });
  if (!res.ok) return;
  const fresh = new DOMParser().parseFromString(await res.text(), "text/html");
  ids.forEach((id) => {
    const now = document.getElementById(id), next = fresh.getElementById(id);
    if (next && now) now.replaceWith(document.importNode(next, true));
    else if (next && !now && id === "usage") {
      const table = document.querySelector("table.kv");
      if (table) table.appendChild(document.importNode(next.closest("tr"), true));
    }
  });
}

// ---------------------------------------------------------------------------- data download (PoP)
// The broker holds no rows: the browser gets a fresh DataAddress (the provider connector's URL and a
// single-use transfer token) from the broker, signs a proof of possession with the key kept since login,
// pulls from the connector itself (CORS: the connector allows this console's origin; no cookies are sent)
// and countersigns the connector's receipt.
async function freshAddress(box) {
  if (box.dataset.transfer) {
    try {
      return await postJson(box.dataset.transfers + encodeURIComponent(box.dataset.transfer) + "/token");
    } catch (err) {
      delete box.dataset.transfer; // ended or suspended: open a new transfer below
    }
  }
  const address = await postJson(box.dataset.start);
  box.dataset.transfer = address.transfer_id;
  return address;
}

async function pullFromConnector(key, kid, address, fmt, limit) {
  const url = new URL(address.endpoint);
  url.searchParams.set("format", fmt);
  if (limit) url.searchParams.set("limit", String(limit));
  const proof = await signJwt(key, { alg: "EdDSA", typ: "twinspace-pop+jwt", kid },
    { htm: "GET", htu: url.pathname, iat: Math.floor(Date.now() / 1000), jti: randomId(),
      ath: b64url(await sha256(enc.encode(address.token))) });
  let res;
  try {
    res = await fetch(url.toString(), {
      method: "GET", mode: "cors", credentials: "omit", cache: "no-store", referrerPolicy: "no-referrer",
      headers: { "TwinSpace-Transfer-Token": address.token, "TwinSpace-PoP": proof },
    });
  } catch (err) {
    throw new Error("the provider's connector at " + url.origin + " cannot be reached from this browser " +
                    "(is it running, and does it allow this console's origin?)");
  }
  if (!res.ok) {
    const problem = await res.json().catch(() => ({}));
    throw new Error((problem.detail || res.statusText || "HTTP " + res.status) + (problem.code ? " (" + problem.code + ")" : ""));
  }
  return res;
}

async function acknowledge(box, key, kid, transferId, receiptId, bytes) {
  const now = Math.floor(Date.now() / 1000);
  const ack = await signJwt(key, { alg: "EdDSA", typ: "twinspace-ack+jwt", kid },
    { jti: randomId(), receipt_id: receiptId, tpid: transferId, sha256: hex(await sha256(bytes)), bytes: bytes.byteLength,
      iss: ORG, aud: box.dataset.audience, iat: now, exp: now + 86400 });
  return postJson(box.dataset.transfers + encodeURIComponent(transferId) + "/acknowledgements", { ack });
}

const PREVIEW_ROWS = 10;

// The first de-identified rows the agreement permits, pulled like a download (an access the connector
// receipts and the usage counts) and shown as text only: nothing from the data is parsed as HTML.
function renderPreview(target, rows) {
  target.replaceChildren();
  if (!rows.length) { target.textContent = "The agreement permits no rows."; return; }
  const table = document.createElement("table");
  table.className = "preview";
  const head = table.createTHead().insertRow();
  const names = Object.keys(rows[0]);
  names.forEach((n) => { const th = document.createElement("th"); th.textContent = n; head.appendChild(th); });
  const body = table.createTBody();
  rows.forEach((row) => {
    const tr = body.insertRow();
    names.forEach((n) => { tr.insertCell().textContent = row[n] === null ? "" : String(row[n]); });
  });
  target.appendChild(table);
}

function setupPreview(box, out) {
  const button = box.querySelector(".preview-button");
  const target = box.querySelector(".preview-rows");
  if (!button || !target) return;
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      const { key, kid } = await currentKey(box);
      status(out, "Getting a transfer token from the broker…");
      const address = await freshAddress(box);
      status(out, "Pulling the first rows from the provider's connector…");
      const res = await pullFromConnector(key, kid, address, "json", PREVIEW_ROWS);
      renderPreview(target, await res.json());
      status(out, "The first " + (res.headers.get("X-TwinSpace-Rows") || "?") + " permitted rows, de-identified.", "ok");
      await refreshParts(["transfers", "usage", "stepper"]);
    } catch (err) {
      status(out, "Preview refused: " + err.message, "bad");
    } finally {
      button.disabled = false;
    }
  });
}

function setupDownloads() {
  document.querySelectorAll(".downloader").forEach((box) => {
    setupKeyPick(box.querySelector(".keypick"));
    const out = box.querySelector(".download-status");
    setupPreview(box, out);
    const button = box.querySelector(".download-button");
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        const { key, kid } = await currentKey(box);
        const fmt = box.querySelector(".format").value;
        status(out, "Getting a transfer token from the broker…");
        const address = await freshAddress(box);
        status(out, "Pulling from the provider's connector (" + new URL(address.endpoint).origin + ")…");
        const res = await pullFromConnector(key, kid, address, fmt);
        const bytes = await res.arrayBuffer();
        const type = res.headers.get("Content-Type") || "application/octet-stream";
        const blob = new Blob([bytes], { type });
        const name = (/filename="([^"]+)"/.exec(res.headers.get("Content-Disposition") || "") || [])[1] || "data." + fmt;
        const a = document.createElement("a");
        a.href = URL.createObjectURL(blob);
        a.download = name;
        document.body.appendChild(a);
        a.click();
        setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
        let note = "";
        const receipt = res.headers.get("X-TwinSpace-Receipt");
        if (receipt) {
          try {
            let r;
            for (let attempt = 0; ; attempt++) {  // the connector's receipt may still be on its way to the broker
              try { r = await acknowledge(box, key, kid, address.transfer_id, receipt, bytes); break; } catch (err) {
                if (attempt >= 10 || !/receipt_not_found/.test(err.message)) throw err;
                await new Promise((done) => setTimeout(done, 300));
              }
            }
            note = r.matches ? " Receipt " + receipt + " countersigned." : " The receipt does not match what arrived.";
          } catch (err) {
            note = " (Receipt not acknowledged: " + err.message + ")";
          }
        }
        status(out, "Downloaded " + (res.headers.get("X-TwinSpace-Rows") || "?") + " rows (" + blob.size + " bytes) as " + name + "." + note, "ok");
        await refreshParts(["transfers", "usage", "stepper", "agreement-status"]);
      } catch (err) {
        status(out, "Download refused: " + err.message, "bad");
      } finally {
        button.disabled = false;
      }
    });
  });
}

// ---------------------------------------------------------------------------- map: drag to search
function setupMap() {
  const svg = document.getElementById("extent-map");
  const input = document.getElementById("bbox");
  if (!svg || !input) return;
  const d = svg.dataset;
  const box = document.getElementById("drag-box");
  const toSvg = (ev) => {
    const pt = svg.createSVGPoint();
    pt.x = ev.clientX; pt.y = ev.clientY;
    return pt.matrixTransform(svg.getScreenCTM().inverse());
  };
  const toLonLat = (p) => [Number(d.w) + (p.x - Number(d.ox)) / (Number(d.k) * Number(d.scale)),
                           Number(d.n) - (p.y - Number(d.oy)) / Number(d.scale)];
  let origin = null;
  svg.addEventListener("mousedown", (ev) => {
    if (ev.target.closest("a")) return;
    origin = toSvg(ev);
    ev.preventDefault();
  });
  svg.addEventListener("mousemove", (ev) => {
    if (!origin) return;
    const p = toSvg(ev);
    box.setAttribute("x", Math.min(p.x, origin.x)); box.setAttribute("y", Math.min(p.y, origin.y));
    box.setAttribute("width", Math.abs(p.x - origin.x)); box.setAttribute("height", Math.abs(p.y - origin.y));
    box.setAttribute("visibility", "visible");
  });
  window.addEventListener("mouseup", (ev) => {
    if (!origin) return;
    const p = toSvg(ev);
    const a = toLonLat(origin), b = toLonLat(p);
    origin = null;
    if (Math.abs(a[0] - b[0]) < 1e-6 || Math.abs(a[1] - b[1]) < 1e-6) { box.setAttribute("visibility", "hidden"); return; }
    const r = (v) => v.toFixed(5);
    input.value = [r(Math.min(a[0], b[0])), r(Math.min(a[1], b[1])), r(Math.max(a[0], b[0])), r(Math.max(a[1], b[1]))].join(",");
    input.form.submit();
  });
}

// ---------------------------------------------------------------------------- audit: verification
function setupVerify() {
  const button = document.getElementById("verify-log");
  if (!button) return;
  const out = document.getElementById("verify-result");
  button.addEventListener("click", async () => {
    button.disabled = true;
    status(out, "Verifying…");
    try {
      const r = await postJson(button.dataset.url);
      if (r.ok) status(out, "VERIFIED: " + r.entries + " entries, " + r.checkpoints_verified + " signed checkpoints, root " + r.root_hash, "ok");
      else status(out, "PROBLEMS: " + (r.first_bad ? "entry " + r.first_bad.seq + ": " + r.first_bad.message : r.problems.length + " problems"), "bad");
    } catch (err) {
      status(out, "Verification failed: " + err.message, "bad");
    } finally {
      button.disabled = false;
    }
  });
}

async function nodeHash(left, right) {
  const buf = new Uint8Array(65);
  buf[0] = 1; buf.set(left, 1); buf.set(right, 33);
  return sha256(buf);
}

// RFC 9162 §2.1.3.2: the root implied by an inclusion proof.
async function rootFromProof(index, size, leaf, proof) {
  if (index < 0 || index >= size) throw new Error("leaf index out of range");
  let fn = index, sn = size - 1, r = leaf;
  for (const p of proof) {
    if (sn === 0) throw new Error("proof too long");
    if ((fn & 1) || fn === sn) {
      r = await nodeHash(p, r);
      while (!(fn & 1) && fn !== 0) { fn >>= 1; sn >>= 1; }
    } else {
      r = await nodeHash(r, p);
    }
    fn >>= 1; sn >>= 1;
  }
  if (sn !== 0) throw new Error("proof too short");
  return r;
}

// C2SP signed note: verify the checkpoint signature with the log's vkey, return [origin, size, root].
async function openCheckpoint(note, vkey) {
  // name+hex(key hash)+base64: the standard base64 may itself contain "+", so split at the first two only.
  const first = vkey.indexOf("+"), second = vkey.indexOf("+", first + 1);
  if (first < 1 || second < 0) throw new Error("malformed log key");
  const name = vkey.slice(0, first), keyHex = vkey.slice(first + 1, second), keyB64 = vkey.slice(second + 1);
  const keyBytes = b64Decode(keyB64);
  if (keyBytes[0] !== 1) throw new Error("unsupported log key type");
  const pub = await crypto.subtle.importKey("raw", keyBytes.slice(1), { name: "Ed25519" }, false, ["verify"]);
  const cut = note.lastIndexOf("\n\n");
  const text = note.slice(0, cut + 1);
  for (const line of note.slice(cut + 2).split("\n")) {
    if (!line.startsWith("\u2014 ")) continue;
    const [signer, b64] = line.slice(2).split(" ");
    const blob = b64Decode(b64);
    if (signer !== name || hex(blob.slice(0, 4)) !== keyHex) continue;
    if (await crypto.subtle.verify({ name: "Ed25519" }, pub, blob.slice(4), enc.encode(text))) {
      const lines = text.split("\n");
      return [lines[0], Number(lines[1]), b64Decode(lines[2])];
    }
  }
  throw new Error("no valid signature by " + name + " on the checkpoint");
}

function setupProof() {
  const button = document.getElementById("check-proof");
  if (!button) return;
  const out = document.getElementById("proof-result");
  button.addEventListener("click", async () => {
    try {
      const { proof, vkey } = JSON.parse(document.getElementById("proof-data").textContent);
      const root = await rootFromProof(proof.leaf_index, proof.tree_size, b64Decode(proof.leaf_hash), proof.proof.map(b64Decode));
      if (!equalBytes(root, b64Decode(proof.root_hash))) throw new Error("the proof does not lead to the stated root");
      if (!proof.checkpoint) throw new Error("no signed checkpoint covers this tree size yet");
      const [, size, cpRoot] = await openCheckpoint(proof.checkpoint, vkey);
      if (size !== proof.tree_size || !equalBytes(cpRoot, root)) throw new Error("the signed checkpoint has another size or root");
      status(out, "Included: leaf " + proof.leaf_index + " is in the signed tree of size " + size + ".", "ok");
    } catch (err) {
      status(out, "NOT verified: " + err.message, "bad");
    }
  });
}

// RFC 9162 §2.1.4.2: does the proof show the tree (size1, root1) is a prefix of (size2, root2)?
async function verifyConsistency(size1, size2, root1, root2, proof) {
  if (size1 <= 0 || size2 < size1) throw new Error("bad tree sizes");
  if (size1 === size2) {
    if (proof.length || !equalBytes(root1, root2)) throw new Error("same size, different root");
    return;
  }
  if (!proof.length) throw new Error("empty consistency proof");
  const path = (size1 & (size1 - 1)) === 0 ? [root1, ...proof] : proof.slice();
  let fn = size1 - 1, sn = size2 - 1;
  while (fn & 1) { fn >>= 1; sn >>= 1; }
  let fr = path[0], sr = path[0];
  for (const c of path.slice(1)) {
    if (sn === 0) throw new Error("consistency proof too long");
    if ((fn & 1) || fn === sn) {
      fr = await nodeHash(c, fr); sr = await nodeHash(c, sr);
      while (!(fn & 1) && fn !== 0) { fn >>= 1; sn >>= 1; }
    } else {
      sr = await nodeHash(sr, c);
    }
    fn >>= 1; sn >>= 1;
  }
  if (sn !== 0) throw new Error("consistency proof too short");
  if (!equalBytes(fr, root1) || !equalBytes(sr, root2)) throw new Error("the proof does not match the roots");
}

function setupMonitor() {
  const button = document.getElementById("monitor-check");
  if (!button) return;
  const data = JSON.parse(document.getElementById("monitor-data").textContent);
  const out = document.getElementById("monitor-result");
  const slot = "twinspace-audit-monitor:" + data.vkey;
  const show = () => {
    const t = JSON.parse(localStorage.getItem(slot) || "null");
    document.getElementById("monitor-trusted").textContent = t
      ? "tree size " + t.tree_size + ", root " + t.root + " (checked " + t.checked_at + ")" : "nothing yet";
  };
  show();
  document.getElementById("monitor-forget").addEventListener("click", () => { localStorage.removeItem(slot); show(); });
  button.addEventListener("click", async () => {
    try {
      if (!data.latest) throw new Error("the log has no checkpoint yet");
      const [, size, root] = await openCheckpoint(data.latest.note, data.vkey);
      const rootB64 = btoa(String.fromCharCode(...root));
      const trusted = JSON.parse(localStorage.getItem(slot) || "null");
      const keep = () => localStorage.setItem(slot, JSON.stringify({ tree_size: size, root: rootB64,
                                                                     checked_at: new Date().toISOString() }));
      if (!trusted) { keep(); show(); status(out, "Trusting tree size " + size + ", root " + rootB64 + ".", "ok"); return; }
      if (size < trusted.tree_size) throw new Error("ROLLBACK: the log shrank from " + trusted.tree_size + " to " + size + " entries");
      if (size === trusted.tree_size) {
        if (rootB64 !== trusted.root) throw new Error("FORK: tree size " + size + " has another root than the one you trusted");
      } else {
        const res = await fetch(data.consistency + "?first=" + trusted.tree_size + "&second=" + size,
                                { credentials: "same-origin", headers: { "Accept": "application/json", "X-Requested-With": "fetch" } });
        if (!res.ok) throw new Error("the broker gave no consistency proof (" + res.status + ")");
        const p = await res.json();
        try {
          await verifyConsistency(trusted.tree_size, size, b64Decode(trusted.root), root, p.proof.map(b64Decode));
        } catch (err) {
          throw new Error("FORK: tree size " + size + " does not extend your trusted tree of size " + trusted.tree_size + " (" + err.message + ")");
        }
      }
      const grew = size - trusted.tree_size;
      keep(); show();
      status(out, "Consistent: " + (grew ? trusted.tree_size + " → " + size + " entries, append-only" : "unchanged at tree size " + size) + ".", "ok");
    } catch (err) {
      status(out, "ALERT " + err.message + ". Your trusted checkpoint was kept.", "bad");
    }
  });
}

// ---------------------------------------------------------------------------- one click for open data
// On a negotiation opened with ?follow=1 the consumer's steps are taken as they come due: accept the
// offer, verify and sign the agreement (with the key loaded at login), then open the agreement.
function setupFollow() {
  const note = document.getElementById("follow-status");
  if (!note) return;
  const state = note.dataset.state;
  const accept = document.getElementById("accept-offer");
  const sign = document.querySelector(".signer[data-action=verify] .sign-button");
  const link = document.getElementById("agreement-link");
  if (state === "OFFERED" && accept) { note.textContent = "Accepting the offer…"; accept.closest("form").submit(); return; }
  if (state === "AGREED" && sign) { note.textContent = "Checking and signing the agreement…"; sign.click(); return; }
  if (state === "FINALIZED" && link) { window.location = link.href; return; }
  if (state === "TERMINATED") { note.textContent = "The negotiation was terminated."; return; }
  note.textContent = "Waiting for the provider (" + state + ")…";
  setTimeout(() => window.location.reload(), 1500);
}

// ---------------------------------------------------------------------------- confirmations
function setupConfirms() {
  document.querySelectorAll("form.confirm").forEach((form) => {
    form.addEventListener("submit", (ev) => {
      if (!window.confirm(form.dataset.confirm || "Are you sure?")) ev.preventDefault();
    });
  });
}

document.addEventListener("DOMContentLoaded", () => {
  // A page rendered without a session (login form, "please log in" after expiry or logout elsewhere): drop any
  // key kept from an earlier session, so an expired session does not leave a usable signing key behind.
  if (!ORG) clearKeys().catch(() => undefined);
  setupLogin(); setupLogout(); setupSigners(); setupDownloads(); setupMap(); setupVerify(); setupProof(); setupMonitor(); setupConfirms(); setupFollow();
});
