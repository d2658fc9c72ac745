"""The policy enforcement point of a pull (no FastAPI): check the transfer token (once per token) and
the proof of possession (per request), take the broker's decision — a lease still covering this
transfer, or a fresh one — verify it and the agreement bundle offline, then serve exactly the
permitted rows and sign a receipt before the body ends (docs/data-plane.md)."""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from connectors.node.config import NodeConfig
from connectors.node.encode import MEDIA_TYPES, apply_obligations, encode
from connectors.node.leases import Lease, Leases
from twinspace.agreements import verify_bundle
from twinspace.client.broker import BrokerError
from twinspace.crypto import key_id, public_key_from_b64
from twinspace.dataplane import DECISION, RECEIPT, merge_obligations, sign_message, verify_message
from twinspace.errors import (BadGateway, BadRequest, Forbidden, NotFound, ServiceUnavailable, TwinSpaceError,
                              Unauthorized)
from twinspace.transfer_tokens import decode_transfer_token, parse_pop, token_hash, verify_pop

log = logging.getLogger("twinspace.connector")
TOKEN_HEADER = "TwinSpace-Transfer-Token"
POP_HEADER = "TwinSpace-PoP"
FORMATS = tuple(MEDIA_TYPES)


class BrokerProblem(TwinSpaceError):
    """A problem the broker answered, passed on to the consumer with its status and code."""

    def __init__(self, status: int, title: str, detail: str, code: str, extra: dict[str, Any] | None = None):
        super().__init__(detail, code=code, extra=extra)
        self.status = status
        self.title = title


def broker_call(config: NodeConfig, path: str, body: dict[str, Any]) -> Any:
    """POST to the broker; its 4xx problems become the same problem here, everything else a 502/503."""
    try:
        return config.broker_post(path, body)
    except BrokerError as exc:
        problem = exc.problem if isinstance(exc.problem, dict) else {}
        if exc.status == 503:  # the broker is shedding load (or lost a dependency): a retryable answer
            raise ServiceUnavailable("The broker is busy; try again later.", code="broker_busy",
                                     extra={"broker_code": exc.code}) from None
        if exc.status in (401,) or exc.status >= 500:
            raise BadGateway("The broker refused or failed the connector's request.", code="broker_error",
                             extra={"broker_status": exc.status, "broker_code": exc.code}) from None
        if 400 <= exc.status < 500:
            detail = str(problem.get("detail") or problem.get("title") or "The broker refused.")[:500]
            extra = {"reasons": problem["reasons"]} if isinstance(problem.get("reasons"), list) else None
            raise BrokerProblem(exc.status, str(problem.get("title") or "Refused by the broker"), detail,
                                str(exc.code), extra) from None
        raise BadGateway("The broker answered unexpectedly.", code="broker_error") from None
    except TwinSpaceError:
        raise
    except Exception as exc:  # noqa: BLE001 - transport errors
        raise ServiceUnavailable("The broker cannot be reached; try again later.", code="broker_unreachable",
                                 extra={"error": type(exc).__name__}) from None


@dataclass
class Admitted:
    """A pull whose token and proof checked out (no I/O yet): what it asks for, under which token."""

    pid: str
    claims: dict[str, Any]
    fmt: str
    requested: list[str] | None
    limit: int | None

    @property
    def lease_key(self) -> tuple[str, int, str]:
        return self.pid, int(self.claims["gen"]), self.fmt


@dataclass
class Pull:
    """Everything decided before the first byte: what to serve and what the receipt will say. ``body``:
    the whole encoded answer when it is small (served from memory, see ``Enforcer.small_body``)."""

    token: dict[str, Any]
    decision: dict[str, Any]
    table: Any
    fmt: str
    content_hash: str
    receipt_id: str = field(default_factory=lambda: f"rcpt_{uuid.uuid4().hex}")
    body: bytes | None = None
    body_sha256: str | None = None

    @property
    def rows(self) -> int:
        return self.table.num_rows

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES[self.fmt]

    @property
    def leased(self) -> bool:
        return self.decision.get("lease") is True

    def headers(self) -> dict[str, str]:
        return {"X-TwinSpace-Receipt": self.receipt_id, "X-TwinSpace-Rows": str(self.rows),
                "X-TwinSpace-Content-Hash": self.content_hash, "Cache-Control": "no-store"}


class _VerifiedTokens:
    """Transfer tokens already verified, by their exact text, until they expire: a token is reused for
    many pulls (each with its own proof), and its signature is checked once. Bounded."""

    max_entries = 16_384

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens: dict[str, tuple[dict[str, Any], Any, str]] = {}

    def get(self, token: str, leeway: int) -> tuple[dict[str, Any], Any, str] | None:
        hit = self._tokens.get(token)
        if hit is not None and hit[0]["exp"] + leeway <= time.time():
            with self._lock:
                self._tokens.pop(token, None)
            return None
        return hit

    def put(self, token: str, entry: tuple[dict[str, Any], Any, str]) -> None:
        """``entry``: the claims, the consumer's key (``cnf``) and the token's hash (a proof's ``ath``)."""
        with self._lock:
            if len(self._tokens) >= self.max_entries:
                now = time.time()
                self._tokens = {t: v for t, v in self._tokens.items() if v[0]["exp"] > now}
                if len(self._tokens) >= self.max_entries:
                    self._tokens.clear()
            self._tokens[token] = entry


class _Bodies:
    """Small encoded answers by (file version, columns, rows, format): the same pull of a small table is
    encoded once. Bounded in bytes."""

    max_bytes = 32 << 20

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bodies: dict[tuple, tuple[bytes, str]] = {}
        self._size = 0

    def get(self, key: tuple) -> tuple[bytes, str] | None:
        return self._bodies.get(key)

    def put(self, key: tuple, body: bytes, sha: str) -> None:
        with self._lock:
            if self._size + len(body) > self.max_bytes:
                self._bodies.clear()
                self._size = 0
            if key not in self._bodies:
                self._bodies[key] = (body, sha)
                self._size += len(body)


class Enforcer:
    """The PEP of one node. Thread-safe (the stores lock; the caches are guarded)."""

    small_body_rows = 4096  # answers of at most this many rows (and small_body_bytes) are served from memory
    small_body_bytes = 1 << 20

    def __init__(self, config: NodeConfig):
        self.config = config
        self.leases = Leases()
        self._tokens = _VerifiedTokens()
        self._bodies = _Bodies()
        self._plans: dict[tuple, tuple[Any, bytes | None, str | None]] = {}  # (decision, file, query) -> view, body
        self._bundles: dict[tuple[str, str], dict[str, Any]] = {}
        self._held: dict[str, tuple[str, dict[str, Any]]] = {}  # agreement id -> (document sha256, document)
        self._lock = threading.Lock()

    # --- checks -------------------------------------------------------------------------------
    def check_token(self, token: str | None, pid: str) -> dict[str, Any]:
        return self._token(token, pid)[0]

    def _token(self, token: str | None, pid: str) -> tuple[dict[str, Any], Any]:
        """The token's claims and the consumer key it binds (``cnf``), verified once per token."""
        cfg = self.config
        if not token:
            raise Unauthorized(f"A transfer token ({TOKEN_HEADER}) is required.", code="missing_transfer_token")
        hit = self._tokens.get(token, cfg.leeway)
        if hit is None:
            claims = decode_transfer_token(token, cfg.broker_key(), issuer=cfg.broker_issuer,
                                           audience=cfg.endpoint, leeway=cfg.leeway)
            hit = (claims, self._check_claims(claims), token_hash(token))
            self._tokens.put(token, hit)
        claims = hit[0]
        if claims.get("tpid") != pid:
            raise Unauthorized("The transfer token is for another transfer.", code="wrong_transfer")
        return hit

    def _check_claims(self, claims: dict[str, Any]) -> Any:
        cfg = self.config
        if claims.get("prv") != cfg.org_id:
            raise Unauthorized("The transfer token names another provider.", code="wrong_provider")
        asset = claims.get("asset")
        if not isinstance(asset, dict) or not isinstance(asset.get("content_hash"), str):
            raise Unauthorized("The transfer token names no asset content.", code="invalid_transfer_token")
        if not isinstance(claims.get("agr"), str) or not isinstance(claims.get("tpid"), str):
            raise Unauthorized("The transfer token names no agreement.", code="invalid_transfer_token")
        gen = claims.get("gen")
        if not isinstance(gen, int) or isinstance(gen, bool) or gen < 0:
            raise Unauthorized("The transfer token names no generation.", code="invalid_transfer_token")
        cnf = claims["cnf"]
        try:
            key = public_key_from_b64(str(cnf.get("x")))
        except (ValueError, TypeError):
            raise Unauthorized("The transfer token's key is not an Ed25519 key.", code="invalid_transfer_token") from None
        if key_id(key) != cnf.get("kid"):
            raise Unauthorized("The transfer token's key does not match its thumbprint.", code="invalid_transfer_token")
        return key

    def claim_token(self, claims: dict[str, Any]) -> None:
        """Single use of a token (PUSH: the broker's one-shot instruction; pulls reuse tokens)."""
        if not self.config.claims.claim(f"tok:{claims['jti']}", float(claims["exp"]) + self.config.leeway):
            raise Unauthorized("This transfer token was already used; request a new one.",
                               code="replayed_transfer_token")

    def check_pop(self, proof: str | None, claims: dict[str, Any], key: Any, token: str, *, method: str,
                  path: str, ath: str | None = None) -> None:
        cfg = self.config
        if not proof:
            raise Unauthorized(f"A proof of possession ({POP_HEADER}) is required.", code="missing_pop")
        kid, parsed = parse_pop(proof)
        if kid != claims["cnf"].get("kid"):
            raise Unauthorized("The proof of possession is signed by another key than the token's.",
                               code="invalid_pop")
        pop = verify_pop(proof, key, method=method, path=path, token=token, max_age=cfg.pop_max_age,
                         leeway=cfg.leeway, parsed=parsed, ath=ath)
        if not cfg.claims.claim(f"pop:{pop['jti']}", time.time() + cfg.pop_max_age + 2 * cfg.leeway):
            raise Unauthorized("This proof of possession was already used; make a fresh one per request.",
                               code="replayed_pop")

    # --- decisions ----------------------------------------------------------------------------
    def leased(self, admitted: Admitted) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """A lease that still covers this pull (no broker call), or None."""
        lease = self.leases.get(*admitted.lease_key)
        if lease is None:
            return None
        claims = admitted.claims
        if lease.decision.get("agr") != claims["agr"] or lease.decision.get("sub") != claims["sub"]:
            return None
        return lease.decision, self.check_document(lease.document, claims)

    def decide(self, claims: dict[str, Any], pid: str, fmt: str, *, lease: bool = True
               ) -> tuple[dict[str, Any], dict[str, Any]]:
        """A fresh broker decision bound to our nonce and this token; the verified agreement document. An
        allow with ``lease: true`` is kept for the next pulls of this transfer, generation and format (unless
        a revocation arrived while it was being asked for: then it serves this pull only if asked again)."""
        for _ in range(3):
            asked_at = self.leases.now()
            decision, document = self._ask(claims, pid, fmt)
            if not self.leases.stale(pid, asked_at):
                break
        else:
            raise ServiceUnavailable("The transfer is changing at the broker; try again.", code="broker_busy")
        if lease and decision.get("lease") is True and decision.get("allow") is True:
            expires = float(decision["exp"]) - self.config.leeway
            self.leases.put(pid, int(claims["gen"]), fmt, Lease(decision, document, expires), asked_at)
        return decision, document

    def _ask(self, claims: dict[str, Any], pid: str, fmt: str) -> tuple[dict[str, Any], dict[str, Any]]:
        cfg = self.config
        nonce = secrets.token_urlsafe(24)
        # The broker denies when the transfer has moved on (suspended, resumed, ...): earlier tokens die.
        request = {"transfer_id": pid, "token_jti": claims["jti"], "token_generation": claims["gen"], "nonce": nonce,
                   "format": fmt}
        with self._lock:
            held = self._held.get(str(claims["agr"]))
        if held is not None:
            request["agreement_sha256"] = held[0]  # verified before: the broker need not send the bundle
        answer = broker_call(cfg, "/dataplane/decisions", request)
        if not isinstance(answer, dict) or not isinstance(answer.get("decision"), str):
            raise BadGateway("The broker's decision answer is malformed.", code="invalid_decision")
        try:
            decision = verify_message(answer["decision"], cfg.broker_key(), DECISION, audience=cfg.endpoint,
                                      issuer=cfg.broker_issuer, leeway=cfg.leeway)
        except Unauthorized as exc:
            raise BadGateway(f"The broker's decision does not verify ({exc.code}).", code="invalid_decision") from None
        expected = {"nonce": nonce, "token_jti": claims["jti"], "tpid": pid, "agr": claims["agr"],
                    "sub": claims["sub"]}
        wrong = [k for k, v in expected.items() if decision.get(k) != v]
        if decision.get("lease") is True and (decision.get("gen") != claims["gen"] or decision.get("format") != fmt):
            wrong.append("lease scope")
        if wrong:
            raise BadGateway(f"The broker's decision is not for this request ({', '.join(wrong)}).",
                             code="invalid_decision")
        if decision.get("allow") is not True:
            reasons = decision.get("reasons") if isinstance(decision.get("reasons"), list) else []
            raise Forbidden("Access denied by the policy decision: " + ("; ".join(map(str, reasons)) or "no reason given"),
                            code="access_denied", extra={"reasons": reasons, "decision_id": decision.get("decision_id")})
        signed_sha = decision.get("agreement_sha256")
        if answer.get("agreement") is None and held is not None and signed_sha == held[0]:
            document = self.check_document(held[1], claims)  # the broker signed that it decided on this document
        else:
            document = self.check_bundle(answer.get("agreement"), claims)
            if signed_sha is not None and answer["agreement"].get("document_sha256") != signed_sha:
                raise BadGateway("The agreement bundle is not the one the decision names.", code="invalid_agreement")
            with self._lock:
                if len(self._held) > 4096:
                    self._held.clear()
                self._held[str(claims["agr"])] = (answer["agreement"].get("document_sha256"), document)
        return decision, document

    def check_bundle(self, bundle: Any, claims: dict[str, Any]) -> dict[str, Any]:
        cfg = self.config
        if not isinstance(bundle, dict) or not isinstance(bundle.get("document"), dict):
            raise BadGateway("The broker sent no agreement bundle.", code="invalid_agreement")
        counter = bundle.get("countersignature") if isinstance(bundle.get("countersignature"), dict) else {}
        cache_key = (str(claims["agr"]), f"{bundle.get('document_sha256')}:{counter.get('signature')}")
        with self._lock:
            cached = self._bundles.get(cache_key)
        if cached is None:
            report = verify_bundle(bundle, trusted_broker_keys=[cfg.broker_key_b64()])
            if not report["valid"]:
                raise BadGateway("The agreement bundle does not verify: " + "; ".join(report["errors"][:3]),
                                 code="invalid_agreement")
            cached = bundle["document"]
            with self._lock:
                if len(self._bundles) > 1024:
                    self._bundles.clear()
                self._bundles[cache_key] = cached
        return self.check_document(cached, claims)

    def check_document(self, doc: dict[str, Any], claims: dict[str, Any]) -> dict[str, Any]:
        """The verified agreement names this token's agreement, consumer, provider and asset version."""
        cfg = self.config
        asset = doc.get("asset") if isinstance(doc.get("asset"), dict) else {}
        token_asset = claims["asset"]
        problems = []
        if doc.get("id") != claims["agr"]:
            problems.append("agreement id")
        if doc.get("consumer_id") != claims["sub"]:
            problems.append("consumer")
        if doc.get("provider_id") != cfg.org_id:
            problems.append("provider")
        if asset.get("content_hash") != token_asset.get("content_hash"):
            problems.append("content hash")
        for k in ("id", "version"):
            if k in token_asset and asset.get(k) != token_asset.get(k):
                problems.append(f"asset {k}")
        if problems:
            raise Forbidden("The agreement does not match the transfer token (" + ", ".join(problems) + ").",
                            code="agreement_mismatch")
        return doc

    # --- the pull -------------------------------------------------------------------------------
    def admit(self, pid: str, *, token: str | None, proof: str | None, fmt: str, columns: str | None,
              limit: int | None = None) -> Admitted:
        """The checks that need no I/O: the request's shape, the token (verified once per token) and the
        proof (verified and claimed per request). ``limit``: only the first rows (a preview)."""
        cfg = self.config
        if fmt not in FORMATS:
            raise BadRequest(f"Unknown format {fmt!r}; choose one of {', '.join(FORMATS)}.", code="invalid_format")
        if limit is not None and not 0 <= limit <= 10_000_000:
            raise BadRequest("limit is a row count of 0 or more.", code="invalid_limit")
        requested = None
        if columns is not None:
            requested = [c.strip() for c in columns.split(",") if c.strip()]
            if not requested or len(requested) > 1000 or any(len(c) > 256 for c in requested):
                raise BadRequest("columns is a comma-separated list of column names.", code="invalid_columns")
        claims, key, ath = self._token(token, pid)
        self.check_pop(proof, claims, key, token or "", method="GET",
                       path=f"{cfg.path_prefix}/dataplane/transfers/{pid}", ath=ath)
        return Admitted(pid, claims, fmt, requested, limit)

    def plan(self, admitted: Admitted, decision: dict[str, Any], document: dict[str, Any]) -> Pull:
        """What to serve under the decision: the permitted rows and columns, as a lazy view of the file,
        and the whole encoded answer when it is small (encoded once per file version and projection; the
        same pull under the same decision reuses that work)."""
        claims = admitted.claims
        content_hash = claims["asset"]["content_hash"]
        table = self.config.store.open(content_hash)  # lazy: read batch by batch while streaming
        if table is None:
            raise NotFound("The agreed content is not served by this connector.", code="data_not_found")
        key = self._plan_key(admitted, decision, table.identity)
        hit = self._plans.get(key)
        if hit is not None:
            return Pull(token=claims, decision=decision, table=hit[0], fmt=admitted.fmt, content_hash=content_hash,
                        body=hit[1], body_sha256=hit[2])
        pull = self._plan(admitted, decision, document, table)
        if decision.get("lease") is True:
            with self._lock:
                if len(self._plans) > 4096:
                    self._plans.clear()
                self._plans[key] = (pull.table, pull.body, pull.body_sha256)
        return pull

    @staticmethod
    def _plan_key(admitted: Admitted, decision: dict[str, Any], identity: Any) -> tuple:
        return (decision.get("decision_id"), identity, admitted.fmt, admitted.limit,
                tuple(admitted.requested) if admitted.requested is not None else None)

    def has_plan(self, admitted: Admitted, decision: dict[str, Any]) -> bool:
        """``plan`` would only reuse earlier work (no hashing, no encoding): cheap enough for the event loop."""
        content_hash = admitted.claims["asset"]["content_hash"]
        if not self.config.store.is_verified(content_hash):
            return False
        table = self.config.store.open(content_hash)
        return table is not None and self._plan_key(admitted, decision, table.identity) in self._plans

    def _plan(self, admitted: Admitted, decision: dict[str, Any], document: dict[str, Any], table: Any) -> Pull:
        claims = admitted.claims
        content_hash = claims["asset"]["content_hash"]
        obligations = merge_obligations(document.get("obligations") if isinstance(document.get("obligations"), dict)
                                        else None,
                                        decision.get("obligations") if isinstance(decision.get("obligations"), dict)
                                        else None,
                                        {"max_rows": admitted.limit} if admitted.limit is not None else None)
        table = apply_obligations(table, max_rows=obligations["max_rows"], columns=obligations["columns"],
                                  requested_columns=admitted.requested)
        pull = Pull(token=claims, decision=decision, table=table, fmt=admitted.fmt, content_hash=content_hash)
        self.small_body(pull)
        return pull

    def small_body(self, pull: Pull) -> None:
        table = pull.table
        ident = getattr(table, "identity", None)
        if ident is None or table.num_rows > self.small_body_rows or table.file_bytes > self.small_body_bytes:
            return
        key = (ident, tuple(table.column_names), table.offset, table.num_rows, pull.fmt)
        hit = self._bodies.get(key)
        if hit is None:
            body = b"".join(encode(table, pull.fmt))
            hit = (body, hashlib.sha256(body).hexdigest())
            self._bodies.put(key, *hit)
        pull.body, pull.body_sha256 = hit

    def authorise_pull(self, pid: str, *, token: str | None, proof: str | None, fmt: str,
                       columns: str | None, limit: int | None = None) -> Pull:
        """All of it, synchronously (the broker is asked when no lease covers the pull)."""
        admitted = self.admit(pid, token=token, proof=proof, fmt=fmt, columns=columns, limit=limit)
        decided = self.leased(admitted) or self.decide(admitted.claims, pid, fmt)
        return self.plan(admitted, *decided)

    def receipt(self, pull: Pull, *, rows: int, nbytes: int, sha256: str, complete: bool) -> str:
        cfg = self.config
        claims = pull.token
        return sign_message(cfg.private_key, RECEIPT, issuer=cfg.org_id, audience=cfg.broker_issuer, claims={
            "jti": pull.receipt_id, "receipt_id": pull.receipt_id, "kind": "transfer",
            "decision_id": pull.decision.get("decision_id"), "agr": claims["agr"], "tpid": claims["tpid"],
            "sub": claims["sub"], "asset": claims["asset"], "rows": rows, "bytes": nbytes, "sha256": sha256,
            "format": pull.fmt, "complete": complete})

    def finish(self, pull: Pull, *, nbytes: int, sha256: str, complete: bool, loop: Any = None) -> list:
        """Sign the receipt and hand it on; the futures to wait for before the body's end: the receipt
        durable in the outbox (which, the node's writes being in order, makes this pull's proof claim
        durable too), and for a pull decided for itself, recorded by the broker (the next decision counts
        this pull's rows)."""
        receipt = self.receipt(pull, rows=pull.rows, nbytes=nbytes, sha256=sha256, complete=complete)
        if not complete:
            self.config.outbox.add(pull.receipt_id, receipt, "body interrupted")
            return []
        return [self.config.receipts.submit(pull.receipt_id, receipt, wait_delivery=not pull.leased, loop=loop)]

    def stream(self, pull: Pull) -> Iterator[bytes]:
        """The body; after the last chunk (before the generator ends) the receipt is signed and recorded.
        An interrupted body gets a receipt with ``complete: false`` (kept in the outbox)."""
        digest = hashlib.sha256()
        nbytes = 0
        complete = False
        try:
            for chunk in encode(pull.table, pull.fmt):
                digest.update(chunk)
                nbytes += len(chunk)
                yield chunk
            complete = True
        finally:
            try:
                for future in self.finish(pull, nbytes=nbytes, sha256=digest.hexdigest(), complete=complete):
                    future.result(timeout=self.config.broker_timeout + 5)
            except Exception:  # noqa: BLE001 - the body was served; never fail after the fact
                log.exception("receipt for %s could not be recorded", pull.receipt_id)
